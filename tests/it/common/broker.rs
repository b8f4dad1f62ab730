//! A broker inside the test process, on an ephemeral port of 127.0.0.1, and a store directory
//! written as an earlier run would have left it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sharq::broker::BrokerState;
use sharq::{Broker, Config};

use super::{http, wait_until, TIMEOUT};

/// A per-call strategy deadline no healthy call reaches, however busy the machine: the default
/// 20 ms of wall-clock time can pass while the test process is descheduled, and a timed-out
/// call hands its message to the fallback round robin, which would falsify any test of a
/// distribution. Tests about deadlines set their own.
pub const TEST_PLUGIN_DEADLINE_MS: u64 = 5000;

/// A broker serving on an ephemeral port of 127.0.0.1, stopped when dropped.
pub struct TestBroker {
    pub broker: Broker,
    addr: SocketAddr,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::with(|_| {}).await
    }

    /// Starts with the default configuration changed by `configure`. `$SYS` is off unless
    /// `configure` turns it on; strategy calls get [`TEST_PLUGIN_DEADLINE_MS`] unless
    /// `configure` says otherwise.
    pub async fn with(configure: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config::default();
        config.server.listeners = vec!["127.0.0.1:0".parse().unwrap()];
        config.server.sys_interval_secs = 0;
        config.shared.plugin_deadline_ms = TEST_PLUGIN_DEADLINE_MS;
        configure(&mut config);
        TestBroker::from_config(config).await
    }

    /// Like [`TestBroker::with`], with the HTTP side on an ephemeral loopback port and the
    /// token [`http::TOKEN`].
    pub async fn with_http(configure: impl FnOnce(&mut Config)) -> TestBroker {
        TestBroker::with(|c| {
            c.http.listen = "127.0.0.1:0".into();
            c.http.token = http::TOKEN.into();
            configure(c);
        })
        .await
    }

    /// Starts with `config` exactly as given (it must listen on one ephemeral port).
    pub async fn from_config(config: Config) -> TestBroker {
        init_tracing();
        let broker = tokio::time::timeout(TIMEOUT, Broker::start(config))
            .await
            .expect("broker start timed out")
            .expect("broker start failed");
        let addr = broker.local_addrs()[0];
        TestBroker { broker, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> &Arc<BrokerState> {
        self.broker.state()
    }

    /// The HTTP side's address and token (the config must set `http.listen`).
    pub fn http(&self) -> (SocketAddr, String) {
        let http = self.broker.http().expect("the config sets no http.listen");
        (http.address, http.token.clone())
    }

    pub async fn shutdown(&self) {
        self.broker.shutdown(Duration::from_secs(2)).await;
    }

    /// Waits until the broker has settled the end of `client_id`'s connection: its session is
    /// offline (kept for a later connection) or gone. The broker closes a socket before it
    /// detaches the session, so a client seeing the close (or having sent DISCONNECT) is not
    /// enough.
    pub async fn wait_session_offline(&self, client_id: &str) {
        let state = self.broker.state();
        wait_until(TIMEOUT, &format!("session {client_id} offline"), || {
            state
                .session(client_id)
                .is_none_or(|session| !session.is_online())
        })
        .await
    }

    /// Waits until `client_id`'s session has ended.
    pub async fn wait_session_ended(&self, client_id: &str) {
        let state = self.broker.state();
        wait_until(TIMEOUT, &format!("session {client_id} ended"), || {
            state.session(client_id).is_none()
        })
        .await
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.broker.state().shutdown.cancel();
    }
}

fn init_tracing() {
    // RUST_LOG=sharq=debug cargo test ... shows the broker's view of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// Writes session records into a store directory as an earlier run would have left them.
pub fn store_sessions(
    dir: &std::path::Path,
    sessions: Vec<(String, sharq::broker::store::encoding::StoredSession)>,
) {
    use sharq::broker::store::redb_backend::RedbBackend;
    use sharq::broker::store::{encoding, Op, StoreBackend};
    let store = RedbBackend::open(dir, true).unwrap();
    let ops: Vec<Op> = sessions
        .iter()
        .map(|(client_id, record)| Op::PutSession {
            client_id: Arc::from(client_id.as_str()),
            value: encoding::encode_session(record),
        })
        .collect();
    store.commit(&ops, encoding::unix_now_ms(), 1).unwrap();
    store.close();
}
