//! sharq's built-in `hash_clientid` dispatch strategy (publisher affinity by rendezvous hashing) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::hash_clientid`, shared with the broker's native path.

wit_bindgen::generate!({ world: "strategy", path: "../../wit" });

sharq_plugin_guest::export_strategy!(sharq_plugin_guest::strategies::hash_clientid::HashClientId);
