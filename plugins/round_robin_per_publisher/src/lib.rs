//! sharq's built-in `round_robin_per_publisher` dispatch strategy (one rotation per publisher) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::round_robin_per_publisher`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::round_robin_per_publisher::RoundRobinPerPublisher);
