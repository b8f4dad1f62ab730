//! What a packet handler works with. The connection task (`net/connection/`) owns one
//! `ConnectionCtx` per connection and passes it to every handler, as mini-redis passes the
//! database and the connection to `Command::apply`: `handle::publish::handle(ctx, packet)`.
//!
//! Handlers do no I/O. They read and change this state and leave their answers in `out`; the
//! connection task reads the socket, calls them, and writes what they left.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tokio::sync::{oneshot, Notify};

use crate::packet::{ProtocolVersion, ReasonCode};

use crate::broker::acl::PublishCache;
use crate::broker::auth::scram::ScramExchange;
use crate::broker::handle::error::ConnectionError;
use crate::broker::handle::outbound::Outbound;
use crate::broker::session::Session;
use crate::broker::BrokerState;

/// The client behind a connection, once CONNECT was accepted.
pub(crate) struct Client {
    pub session: Arc<Session>,
    /// This connection's attachment to the session: acknowledgements only count from the
    /// connection attached now.
    pub generation: u64,
    /// Woken when the session has something for this connection to send.
    pub notify: Arc<Notify>,
    /// Says why another connection (or an operator) took the session over.
    pub kicked: oneshot::Receiver<ReasonCode>,
}

/// What a connection knows of its client's authentication.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    /// CONNECT's Authentication Method, which every AUTH must repeat [MQTT-4.12.1-1]; none
    /// when the client connected with a plain user name and password.
    pub method: Option<ByteString>,
    /// The user name the client proved in its SCRAM exchange, which a re-authentication must
    /// keep: the rest of the broker took the connection to be that user.
    pub username: Option<String>,
    /// A re-authentication waiting for client-final.
    pub exchange: Option<ScramExchange>,
}

/// One connection's protocol state, as the handlers see it.
pub(crate) struct ConnectionCtx {
    pub broker: Arc<BrokerState>,
    /// Set by CONNECT's handler once it accepted the client.
    pub client: Option<Client>,
    /// Topic aliases the client set on this connection (they do not outlive it).
    pub topic_aliases: HashMap<u16, ByteString>,
    /// As CONNECT (or our Server Keep Alive) set it; none when off.
    pub keep_alive: Option<Duration>,
    /// The client's Request Problem Information: false forbids reason strings on most packets.
    pub request_problem_information: bool,
    /// Set by the DISCONNECT handler; the connection ends after the current read.
    pub disconnect_received: Option<ReasonCode>,
    /// The username the client authenticated with, for the ACL.
    pub username: Option<ByteString>,
    /// This connection's publish decisions by topic under the ACL in force.
    pub acl_cache: PublishCache,
    /// The authentication method and user of enhanced authentication, for re-authentication.
    pub auth: AuthState,
    /// What is to be written to the client, and who the client is: the peer and listener the
    /// log lines name are kept there, once per connection (see `peer`, `listener`).
    pub out: Outbound,
}

impl ConnectionCtx {
    /// The state of a connection that has not sent CONNECT yet.
    pub fn new(broker: Arc<BrokerState>, peer: SocketAddr, listener: Arc<str>) -> ConnectionCtx {
        let out = Outbound::new(listener, peer, broker.journal.clone());
        ConnectionCtx {
            broker,
            client: None,
            topic_aliases: HashMap::new(),
            keep_alive: None,
            request_problem_information: true,
            disconnect_received: None,
            username: None,
            acl_cache: PublishCache::default(),
            auth: AuthState::default(),
            out,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.out.peer()
    }

    /// The listener the connection came from, as logs name it (`tls 127.0.0.1:8883`).
    pub fn listener(&self) -> &str {
        self.out.listener()
    }

    /// The protocol version CONNECT asked for (3.1.1 before it).
    pub fn version(&self) -> ProtocolVersion {
        self.out.version()
    }

    /// The session of an accepted client.
    pub fn session(&self) -> Result<Arc<Session>, ConnectionError> {
        self.client
            .as_ref()
            .map(|c| c.session.clone())
            .ok_or(ConnectionError::Protocol("packet before CONNECT"))
    }

    /// The session and this connection's generation on it: acknowledgements only count from
    /// the connection attached to the session now.
    pub fn session_generation(&self) -> Result<(Arc<Session>, u64), ConnectionError> {
        self.client
            .as_ref()
            .map(|c| (c.session.clone(), c.generation))
            .ok_or(ConnectionError::Protocol("packet before CONNECT"))
    }
}
