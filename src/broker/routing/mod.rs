//! Where a published message goes: the message as the broker holds it, the topic tree and the
//! groups registry, the one constructor of a delivery, and the retained store.

pub mod delivery;
pub mod message;
pub mod retain;
pub mod router;
