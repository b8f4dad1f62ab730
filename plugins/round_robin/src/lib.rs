//! sharq's built-in `round_robin` dispatch strategy (one exact rotation per group) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::round_robin`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::round_robin::RoundRobin);
