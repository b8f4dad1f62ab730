//! sharq's built-in `weighted` dispatch strategy (smooth weighted round robin) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::weighted`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::weighted::Weighted);
