//! One file per control packet a client sends, as the protocol names them: each adds the
//! `handle_*` method for its packet to the connection.

mod ack;
pub(crate) mod auth;
mod connect;
mod disconnect;
mod ping;
mod publish;
mod subscribe;
