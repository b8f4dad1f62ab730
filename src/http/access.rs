//! Who may use the HTTP side. First, every request must name a host this server answers to
//! (see [`super::host`]). The dashboard's own files and the API's description are public
//! (they hold no data: the page asks for the token to show anything off loopback). Reading
//! (metrics, the API's GETs, the live feed) is open on a loopback address; anything else needs
//! the bearer token `http.token` (made at start when the config leaves it empty) or a user named
//! in `http.users` with their `[auth]` password over HTTP Basic. Every call that changes
//! something needs one of them, in the `Authorization` header, and is logged; only the live
//! feed takes the token in the query string. HTTP Basic failures are limited per address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::HttpState;
use crate::broker::Credentials;

/// What anyone may fetch: the dashboard's files and the API's description.
const PUBLIC: [&str; 4] = ["/", "/app.js", "/app.css", "/api/v1/openapi.json"];
/// The one route that takes the token in the query string.
const LIVE_FEED: &str = "/api/v1/live";

/// Who a request was made by, for the log.
#[derive(Debug, Clone)]
enum Caller {
    Token,
    User(String),
}

/// Checks the `Host` and the caller of every request; see the module's doc for the rules.
pub async fn check(State(http): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if let Err(refusal) = check_host(&http, &request, peer) {
        return refusal;
    }
    let mutating = !matches!(*request.method(), Method::GET | Method::HEAD);
    if !mutating && PUBLIC.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let in_query = query_token(request.uri().query());
    if in_query.is_some()
        && !(*request.method() == Method::GET && request.uri().path() == LIVE_FEED)
    {
        // A URL ends up in proxies' and servers' logs and in browser history: only the live
        // feed, which EventSource opens without a way to set headers, takes the token there.
        return unauthorized("the token is accepted in the query string only by `GET /api/v1/live`; send `Authorization: Bearer <http.token>`");
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| in_query.map(|t| format!("Bearer {t}")));
    let caller = match identify(&http, presented, peer).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    let needs_caller = mutating || !http.loopback;
    if needs_caller && caller.is_none() {
        return unauthorized(
            "this needs `Authorization: Bearer <http.token>` (or HTTP Basic as one of http.users)",
        );
    }
    if !mutating {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let who = match &caller {
        Some(Caller::User(user)) => user.clone(),
        _ => "token".to_owned(),
    };
    tracing::info!(%method, %path, caller = %who, status = response.status().as_u16(), "admin API call");
    response
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sharq\""),
    );
    response
}

/// Refuses a request whose `Host` (or absolute URI) names a host this server does not answer
/// to: 421 Misdirected Request, which says just that (403 would read as missing credentials).
#[allow(clippy::result_large_err)]
fn check_host(http: &HttpState, request: &Request, peer: Option<IpAddr>) -> Result<(), Response> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::bad_request("more than one Host header").into_response());
    }
    let in_uri = request.uri().authority().map(|a| a.as_str());
    if header.is_none() && in_uri.is_none() {
        return Err(ApiError::bad_request("HTTP/1.1 needs a Host header").into_response());
    }
    let header_allowed =
        header.is_none_or(|h| h.to_str().is_ok_and(|text| http.hosts.allows(text)));
    if header_allowed && in_uri.is_none_or(|a| http.hosts.allows(a)) {
        return Ok(());
    }
    if let Some(suppressed) = http.refusal_log.allow() {
        // The name may be anything a client sent: escaped by Debug, and cut short.
        let host: String = header
            .and_then(|h| h.to_str().ok())
            .or(in_uri)
            .unwrap_or("(not text)")
            .chars()
            .take(100)
            .collect();
        tracing::info!(peer = ?peer, host = ?host, path = %request.uri().path(), suppressed, "HTTP request refused: its Host is not localhost, the listen address or one of http.allowed_hosts");
    }
    Err(ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "this server does not answer to the name in the Host header (DNS rebinding defence); if it should, add the name to http.allowed_hosts",
    )
    .into_response())
}

/// The caller the request proves to be, if any; the refusal for credentials that are wrong
/// (rather than absent), or for HTTP Basic from an address with too many failures.
#[allow(clippy::result_large_err)]
async fn identify(
    http: &HttpState,
    presented: Option<String>,
    peer: Option<IpAddr>,
) -> Result<Option<Caller>, Response> {
    let Some(presented) = presented else {
        return Ok(None);
    };
    let wrong = || ApiError::new(StatusCode::UNAUTHORIZED, "wrong credentials").into_response();
    if let Some(token) = presented.strip_prefix("Bearer ") {
        if bool::from(token.trim().as_bytes().ct_eq(http.token.as_bytes())) {
            return Ok(Some(Caller::Token));
        }
        return Err(wrong());
    }
    let Some(basic) = presented.strip_prefix("Basic ") else {
        return Err(wrong());
    };
    // Refused before the password is looked at: while an address is limited, a right
    // guess must look the same as a wrong one.
    if let Some(retry_after) = http.basic_failures.limited(peer, Instant::now()) {
        if let Some(suppressed) = http.refusal_log.allow() {
            tracing::warn!(peer = ?peer, suppressed, "HTTP Basic refused: too many failures from this address");
        }
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed HTTP Basic attempts from this address; try again later",
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
        return Err(response);
    }
    match check_basic(http, basic).await {
        Ok(Some(user)) => Ok(Some(Caller::User(user))),
        Ok(None) => {
            http.basic_failures.failed(peer, Instant::now());
            Err(wrong())
        }
        Err(e) => Err(e.into_response()),
    }
}

/// The user HTTP Basic `basic` (base64 of `user:password`) proves to be, if it does.
async fn check_basic(http: &HttpState, basic: &str) -> Result<Option<String>, ApiError> {
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
        return Ok(None);
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Ok(None);
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return Ok(None);
    };
    if !http.broker.config.http.users.iter().any(|u| u == user) {
        return Ok(None);
    }
    let authenticator = http.broker.authenticator();
    let (user, password) = (user.to_owned(), password.to_owned());
    let checked = user.clone();
    // A password hash takes tens of milliseconds: off the async workers.
    let accepted = tokio::task::spawn_blocking(move || {
        let client_id = ByteString::from_static("");
        let username = ByteString::from(checked);
        let password = Bytes::from(password);
        authenticator
            .authenticate(Credentials {
                client_id: &client_id,
                username: Some(&username),
                password: Some(&password),
                username_from_certificate: false,
            })
            .is_ok()
    })
    .await?;
    Ok(accepted.then_some(user))
}

/// Failed HTTP Basic attempts per source address (an IPv6 address by its /64, which one
/// host usually has whole): after [`MAX_BASIC_FAILURES`] within [`BASIC_WINDOW`] of the
/// first, HTTP Basic from there is refused with 429 until the window ends.
#[derive(Debug, Default)]
pub struct FailureLimit {
    /// A leaf lock, held for a map operation only.
    windows: Mutex<HashMap<IpAddr, FailureWindow>>,
}

#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    started: Instant,
    failures: u32,
}

pub const MAX_BASIC_FAILURES: u32 = 5;
pub const BASIC_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once. When that many are within their window, addresses not among
/// them are refused too (a flood from many addresses must not grow the map, nor wipe the
/// record of the one guessing); the bearer token still works.
const MAX_TRACKED: usize = 10_000;

impl FailureLimit {
    /// How long until `peer` may try HTTP Basic again, if it may not now.
    pub fn limited(&self, peer: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let key = address_key(peer);
        let mut windows = self.windows.lock();
        match windows.get(&key) {
            Some(w) if now.duration_since(w.started) >= BASIC_WINDOW => {
                windows.remove(&key);
                None
            }
            Some(w) if w.failures >= MAX_BASIC_FAILURES => {
                Some(BASIC_WINDOW - now.duration_since(w.started))
            }
            Some(_) => None,
            None if windows.len() >= MAX_TRACKED => {
                windows.retain(|_, w| now.duration_since(w.started) < BASIC_WINDOW);
                (windows.len() >= MAX_TRACKED).then_some(BASIC_WINDOW)
            }
            None => None,
        }
    }

    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) {
        let key = address_key(peer);
        let mut windows = self.windows.lock();
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&key) {
            windows.retain(|_, w| now.duration_since(w.started) < BASIC_WINDOW);
            if windows.len() >= MAX_TRACKED {
                return;
            }
        }
        let window = windows.entry(key).or_insert(FailureWindow {
            started: now,
            failures: 0,
        });
        if now.duration_since(window.started) >= BASIC_WINDOW {
            *window = FailureWindow {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }
}

fn address_key(peer: Option<IpAddr>) -> IpAddr {
    match peer {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
        Some(v4) => v4,
        // Always known with the server's connect info; one shared bucket otherwise.
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode)
}

/// Decodes `%XX` escapes (tokens are URL-safe, but a browser may escape anyway).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            (b'+', _) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A token for a broker whose config sets none: 24 random bytes, URL-safe base64.
pub fn generate_token() -> String {
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_in_the_query_are_found_and_decoded() {
        assert_eq!(
            super::query_token(Some("a=1&token=ab%2Dc")),
            Some("ab-c".into())
        );
        assert_eq!(super::query_token(Some("a=1")), None);
        assert_eq!(super::query_token(None), None);
        assert_ne!(super::generate_token(), super::generate_token());
    }

    #[test]
    fn basic_failures_are_limited_per_address_and_window() {
        use super::{FailureLimit, BASIC_WINDOW, MAX_BASIC_FAILURES};
        use std::time::{Duration, Instant};
        let limit = FailureLimit::default();
        let start = Instant::now();
        let one = Some("192.0.2.1".parse().unwrap());
        let other = Some("192.0.2.2".parse().unwrap());
        for _ in 0..MAX_BASIC_FAILURES {
            assert_eq!(limit.limited(one, start), None);
            limit.failed(one, start);
        }
        let later = start + Duration::from_secs(10);
        assert_eq!(
            limit.limited(one, later),
            Some(BASIC_WINDOW - Duration::from_secs(10))
        );
        assert_eq!(limit.limited(other, later), None);
        // One host's IPv6 addresses share their /64.
        let v6 = |a: &str| Some(a.parse().unwrap());
        for _ in 0..MAX_BASIC_FAILURES {
            limit.failed(v6("2001:db8:1:2::1"), start);
        }
        assert!(limit.limited(v6("2001:db8:1:2::ffff"), later).is_some());
        assert!(limit.limited(v6("2001:db8:1:3::1"), later).is_none());
        // The window ends.
        assert_eq!(limit.limited(one, start + BASIC_WINDOW), None);
    }
}
