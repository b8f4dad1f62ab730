//! Topic names, topic filters, shared-subscription syntax and the subscription tree.
//!
//! STUB: the topic helper replaces this module; the signatures are the contract.

mod filter;
mod tree;

pub use filter::{
    parse_subscription, validate_filter, validate_topic_name, SubscriptionFilter, TopicError,
};
pub use tree::TopicTree;
