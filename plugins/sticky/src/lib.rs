//! sharq's built-in `sticky` dispatch strategy (stays on one member until it leaves or goes offline) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::sticky`, shared with the broker's native path.

wit_bindgen::generate!({ world: "strategy", path: "../../wit" });

sharq_plugin_guest::export_strategy!(sharq_plugin_guest::strategies::sticky::Sticky);
