//! sharq: an MQTT 3.1.1 / 5.0 broker whose shared-subscription dispatch is programmable.

pub mod codec;
pub mod packet;
pub mod topic;
