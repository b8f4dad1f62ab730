//! sharq's built-in `least_inflight` dispatch strategy (the member with the most free window) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::least_inflight`, shared with the broker's native path.

wit_bindgen::generate!({ world: "strategy", path: "../../wit" });

sharq_plugin_guest::export_strategy!(sharq_plugin_guest::strategies::least_inflight::LeastInflight);
