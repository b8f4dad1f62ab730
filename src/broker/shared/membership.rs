//! How a session joins a shared group: what the group keeps of each member's subscription.

use std::sync::Arc;

use crate::broker::acl::ReadGuard;
use crate::packet::SubscriptionOptions;

/// How a session joins a shared group.
#[derive(Debug, Clone)]
pub struct Membership {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
    /// From the SUBSCRIBE user property `weight`; 1 when absent.
    pub weight: u32,
    /// The SUBSCRIBE's user properties, which contract 0.2.0 strategies see.
    pub user_properties: crate::packet::UserProperties,
    /// The member's read check at delivery; none without an ACL.
    pub read: Option<Arc<ReadGuard>>,
}
