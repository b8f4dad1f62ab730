//! The broker's HTTP side, `[http] listen`: Prometheus metrics at `/metrics`, the admin API
//! under `/api/v1` and the live dashboard at `/`, served by axum on the broker's runtime with
//! the page's files inside the binary.

mod access;
mod api;
mod error;
pub mod host;
mod live;
mod metrics;
pub mod views;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use prometheus_client::registry::Registry;

use crate::broker::BrokerState;
use crate::log_limit::LogLimit;

/// What every handler shares.
pub struct HttpState {
    pub broker: Arc<BrokerState>,
    /// The bearer token in force: `http.token`, or the one made at start.
    token: String,
    /// Listening on a loopback address: reading needs no credentials.
    loopback: bool,
    /// The `Host` names requests may carry.
    hosts: host::HostPolicy,
    /// HTTP Basic failures per source address.
    basic_failures: access::FailureLimit,
    /// Refused `Host` headers and rate-limited addresses, logged at most once a second.
    refusal_log: LogLimit,
    registry: Registry,
}

/// A running HTTP server.
#[derive(Debug, Clone)]
pub struct HttpServer {
    pub address: SocketAddr,
    /// The bearer token mutating calls need.
    pub token: String,
    /// True when the config set no token and this one was made at start.
    pub token_generated: bool,
}

impl HttpServer {
    /// The dashboard's address, with the token in the fragment (never sent to the server,
    /// read by the page) when it was made at start and so cannot be known otherwise.
    pub fn dashboard_url(&self) -> String {
        if self.token_generated {
            format!("http://{}/#token={}", self.address, self.token)
        } else {
            format!("http://{}/", self.address)
        }
    }
}

/// Binds `[http] listen` (if set) and serves until the broker shuts down.
pub async fn start(broker: Arc<BrokerState>) -> io::Result<Option<HttpServer>> {
    let settings = &broker.config.http;
    if settings.listen.is_empty() {
        return Ok(None);
    }
    let address: SocketAddr = settings.listen.parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("http.listen {:?}: {e}", settings.listen),
        )
    })?;
    let loopback = address.ip().is_loopback();
    if !loopback && settings.token.is_empty() && settings.users.is_empty() {
        // Config::validate refuses this too; a Config built in code may not have been.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "http.listen {address} is not a loopback address: set http.token (or http.users)"
            ),
        ));
    }
    let (token, token_generated) = if settings.token.is_empty() {
        (access::generate_token(), true)
    } else {
        (settings.token.clone(), false)
    };
    let socket = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("http.listen: cannot listen on {address}: {e}"),
        )
    })?;
    let bound = socket.local_addr()?;
    let state = Arc::new(HttpState {
        registry: metrics::registry(broker.clone()),
        broker: broker.clone(),
        token: token.clone(),
        loopback,
        hosts: host::HostPolicy::new(address.ip(), &settings.allowed_hosts),
        basic_failures: access::FailureLimit::default(),
        refusal_log: LogLimit::new(Duration::from_secs(1)),
    });
    let app = routes(state);
    let shutdown = broker.shutdown.clone();
    tokio::spawn(async move {
        // The peer's address, for the per-address limit on HTTP Basic failures.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(socket, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    let server = HttpServer {
        address: bound,
        token,
        token_generated,
    };
    tracing::info!(address = %bound, dashboard = %server.dashboard_url(), "serving HTTP: dashboard at /, metrics at /metrics, admin API at /api/v1");
    Ok(Some(server))
}

fn routes(state: Arc<HttpState>) -> Router {
    let api = Router::new()
        .route("/groups", get(api::list_groups).post(api::declare_group))
        .route(
            "/groups/{group}",
            get(api::group_detail).delete(api::undeclare_group),
        )
        .route(
            "/groups/{group}/strategy",
            put(api::set_strategy).delete(api::clear_strategy),
        )
        .route("/groups/{group}/purge", post(api::purge_group))
        .route("/clients", get(api::list_clients))
        .route("/clients/{client_id}", get(api::client_detail))
        .route(
            "/clients/{client_id}/disconnect",
            post(api::disconnect_client),
        )
        .route("/reload", post(api::reload_config))
        .route("/events", get(api::recent_events))
        .route("/live", get(live::live))
        .route("/openapi.json", get(openapi))
        .fallback(api::not_found);
    Router::new()
        .route("/", get(|| asset(INDEX_HTML, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/metrics", get(scrape))
        .nest("/api/v1", api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::check,
        ))
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const OPENAPI: &str = include_str!("assets/openapi.json");

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn openapi() -> Response {
    asset(OPENAPI, "application/json").await
}

async fn scrape(
    axum::extract::State(http): axum::extract::State<Arc<HttpState>>,
    headers: HeaderMap,
) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    match metrics::encode(&http.registry, openmetrics) {
        Ok(text) => {
            let content_type = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
            .into_response(),
    }
}
