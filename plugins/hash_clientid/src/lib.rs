//! sharq's built-in `hash_clientid` dispatch strategy (publisher affinity by rendezvous hashing) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::hash_clientid`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::hash_clientid::HashClientId);
