//! sharq's built-in `weighted` dispatch strategy (smooth weighted round robin) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::weighted`, shared with the broker's native path.

wit_bindgen::generate!({ world: "strategy", path: "../../wit" });

sharq_plugin_guest::export_strategy!(sharq_plugin_guest::strategies::weighted::Weighted);
