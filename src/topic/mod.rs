//! Topic names, topic filters, shared-subscription syntax and the subscription tree.
//!
//! `filter` validates names and plain filters, `share` recognises `$share/` and `$queue/` (and,
//! when configured, `$share:`), `tree` maps stored filters to the broker's per-filter state
//! and answers "who matches".

mod filter;
mod share;
mod tree;

pub use filter::{validate_filter, validate_topic_name, TopicError};
pub use share::{
    parse_subscription, parse_subscription_with, session_key, validate_share_name, ShareSyntax,
    SubscriptionFilter, QUEUE_GROUP,
};
pub use tree::TopicTree;
