//! sharq's built-in `sticky` dispatch strategy (stays on one member until it leaves or goes offline) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::sticky`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::sticky::Sticky);
