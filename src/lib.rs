//! sharq: an MQTT 3.1.1 / 5.0 broker whose shared-subscription dispatch is programmable.

pub mod broker;
pub mod client_id_pattern;
pub mod clock;
pub mod codec;
pub mod config;
pub mod http;
pub(crate) mod log_limit;
pub mod packet;
pub mod reload;
pub mod scaffold;
pub mod server;
pub mod strategy;
pub mod tls;
pub mod topic;

pub use config::Config;
pub use server::Broker;
