//! sharq's built-in `hash_topic_levels` dispatch strategy (affinity by chosen topic levels) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::hash_topic_levels`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::hash_topic_levels::HashTopicLevels);
