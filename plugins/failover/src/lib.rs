//! sharq's built-in `failover` dispatch strategy (active/standby by subscription time) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::failover`, shared with the broker's native path.

wit_bindgen::generate!({ world: "strategy", path: "../../wit" });

sharq_plugin_guest::export_strategy!(sharq_plugin_guest::strategies::failover::Failover);
