//! Shared subscriptions: a group, its own queue, and how it hands each message to one member.
//! The registry of groups lives with the topic tree (`routing::router`), whose lock it shares
//! when groups are created and ended.

pub mod group;

pub use group::{AfterLeave, Dispatched, GroupCounters, GroupLimits, MemberStats, SharedGroup};
