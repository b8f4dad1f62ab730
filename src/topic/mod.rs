//! Topic names, topic filters, shared-subscription syntax and the subscription tree.
//!
//! `filter` validates names and plain filters, `share` recognises `$share/` and `$queue/` (and,
//! when configured, `$share:`), `tree` maps stored filters to the broker's per-filter state
//! and answers "who matches".

mod filter;
mod share;
mod tree;

pub use filter::{filter_matches, validate_filter, validate_topic_name, TopicError};
pub use share::{
    parse_subscription, parse_subscription_with, session_key, validate_share_name, ShareSyntax,
    SubscriptionFilter, QUEUE_GROUP,
};
pub use tree::TopicTree;

/// xxh3-64 (seed 0): the hash the strategy contract promises for topics and publishers, and
/// the one `ordered_by` keys use, so a strategy and a group's ordering agree on a key.
pub fn key_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
