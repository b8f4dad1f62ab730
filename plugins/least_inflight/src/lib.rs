//! sharq's built-in `least_inflight` dispatch strategy (the member with the most free window) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::least_inflight`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::least_inflight::LeastInflight);
