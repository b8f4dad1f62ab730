//! sharq's built-in `round_robin` dispatch strategy (one exact rotation per group) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::round_robin`, shared with the broker's native path.

wit_bindgen::generate!({ world: "strategy", path: "../../wit" });

sharq_plugin_guest::export_strategy!(sharq_plugin_guest::strategies::round_robin::RoundRobin);
