//! sharq's built-in `random` dispatch strategy (a uniformly random online member, seeded from the `seed` param) as a component
//! exporting `sharq:dispatch/select-member`. All logic lives in
//! `sharq_strategies::random`, shared with the broker's native path.

sharq_sdk::export_contract!(sharq_strategies::random::Random);
