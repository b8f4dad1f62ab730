//! sharq's built-in `hash_topic` dispatch strategy (topic affinity by rendezvous hashing) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::hash_topic`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::hash_topic::HashTopic);
