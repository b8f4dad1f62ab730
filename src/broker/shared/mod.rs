//! Shared subscriptions: a group, its own queue, and how it hands each message to one member.
//! The registry of groups lives with the topic tree (`routing::router`), whose lock it shares
//! when groups are created and ended.

pub mod backlog;
pub mod backlog_index;
pub mod counters;
pub mod group;
pub mod membership;

pub use backlog_index::BacklogIndex;
pub use counters::{GroupCounters, GroupDrop, Redelivery};
pub use group::{
    AfterLeave, Dispatched, GroupLimits, GroupView, MemberStats, MemberView, SharedGroup,
};
pub use membership::Membership;
