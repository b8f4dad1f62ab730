//! Where a published message goes: the topic tree and the groups registry, and the retained
//! store.

pub mod retain;
pub mod router;
