//! sharq's built-in `failover` dispatch strategy (active/standby by subscription time) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::failover`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::failover::Failover);
