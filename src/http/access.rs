//! Who may use the HTTP side. The dashboard's own files and the API's description are public
//! (they hold no data: the page asks for the token to show anything off loopback). Reading
//! (metrics, the API's GETs, the live feed) is open on a loopback address; anything else needs
//! the bearer token `http.token` (made at start when the config leaves it empty) or a user named
//! in `http.users` with their `[auth]` password over HTTP Basic. Every call that changes
//! something needs one of them and is logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use bytestring::ByteString;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::HttpState;
use crate::broker::Credentials;

/// What anyone may fetch: the dashboard's files and the API's description.
const PUBLIC: [&str; 4] = ["/", "/app.js", "/app.css", "/api/v1/openapi.json"];

/// Who a request was made by, for the log.
#[derive(Debug, Clone)]
enum Caller {
    Token,
    User(String),
}

/// Checks the caller of every request; see the module's doc for the rules.
pub async fn check(State(http): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let mutating = !matches!(*request.method(), Method::GET | Method::HEAD);
    if !mutating && PUBLIC.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            // EventSource cannot set headers: the live feed may carry the token in the query.
            query_token(request.uri().query()).map(|t| format!("Bearer {t}"))
        });
    let caller = match identify(&http, presented).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let needs_caller = mutating || !http.loopback;
    if needs_caller && caller.is_none() {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this needs `Authorization: Bearer <http.token>` (or HTTP Basic as one of http.users)",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"sharq\""),
        );
        return response;
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

/// The caller the request proves to be, if any; an error for credentials that are wrong
/// (rather than absent).
async fn identify(http: &HttpState, presented: Option<String>) -> Result<Option<Caller>, ApiError> {
    let Some(presented) = presented else {
        return Ok(None);
    };
    let wrong = || ApiError::new(StatusCode::UNAUTHORIZED, "wrong credentials");
    if let Some(token) = presented.strip_prefix("Bearer ") {
        if bool::from(token.trim().as_bytes().ct_eq(http.token.as_bytes())) {
            return Ok(Some(Caller::Token));
        }
        return Err(wrong());
    }
    if let Some(basic) = presented.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .map_err(|_| wrong())?;
        let decoded = String::from_utf8(decoded).map_err(|_| wrong())?;
        let (user, password) = decoded.split_once(':').ok_or_else(wrong)?;
        if !http.broker.config.http.users.iter().any(|u| u == user) {
            return Err(wrong());
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
        return if accepted {
            Ok(Some(Caller::User(user)))
        } else {
            Err(wrong())
        };
    }
    Err(wrong())
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
}
