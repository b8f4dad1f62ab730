//! Authentication of a connection: CONNECT's user name and password, the SCRAM-SHA-256
//! exchange of MQTT 5 enhanced authentication (CONNECT, AUTH 0x18 … CONNACK), and
//! re-authentication (AUTH 0x19 … AUTH 0x00) on an accepted connection.
//!
//! Like every handler, this does no I/O: when the exchange before CONNACK needs the client's
//! next AUTH, [`authenticate_connect`] returns [`ConnectAuth::Challenge`] with server-first in
//! the write buffer, and the connect phase (`net/connection/connect.rs`) writes it, reads the
//! reply within the connect deadline and hands it to [`continue_connect`].

use std::sync::atomic::Ordering;

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::{Auth, AuthProperties, Connect, Packet, ReasonCode};

use crate::broker::auth::scram::{self, ScramError, ScramExchange};
use crate::broker::auth::Credentials;
use crate::broker::handle::connect::refuse;
use crate::broker::handle::context::{AuthState, ConnectionCtx};
use crate::broker::handle::error::ConnectionError;

/// What authentication decided about a CONNECT, so far.
#[derive(Debug)]
pub(crate) enum ConnectAuth {
    /// Go on with CONNECT; for SCRAM, the CONNACK carries the method and server-final.
    Accepted {
        method: Option<ByteString>,
        data: Option<Bytes>,
    },
    /// Server-first is in the write buffer; the client's answer decides ([`continue_connect`]).
    /// Boxed: the exchange is large, and most connections never hold one.
    Challenge(Box<ScramChallenge>),
    /// A refusing CONNACK is in the write buffer, or the client went away.
    Refused,
}

/// A SCRAM exchange before CONNACK that waits for client-final.
#[derive(Debug)]
pub(crate) struct ScramChallenge {
    exchange: ScramExchange,
    method: ByteString,
    /// CONNECT's client id, for the log line of a failure.
    client_id: ByteString,
}

/// Authenticates a CONNECT: a SCRAM exchange if it names SCRAM-SHA-256, its user name and
/// password otherwise. `username_from_certificate`: the user name is the verified client
/// certificate's, not the client's word.
pub(crate) async fn authenticate_connect(
    ctx: &mut ConnectionCtx,
    connect: &Connect,
    username_from_certificate: bool,
) -> ConnectAuth {
    match &connect.properties.authentication_method {
        None => authenticate_password(ctx, connect, username_from_certificate).await,
        Some(method) if &**method == scram::METHOD => start_scram(ctx, connect, method.clone()),
        // A method we do not offer: refused as the spec says [MQTT-4.12.0-1].
        Some(_) => {
            refuse(ctx, ReasonCode::BAD_AUTHENTICATION_METHOD);
            ConnectAuth::Refused
        }
    }
}

async fn authenticate_password(
    ctx: &mut ConnectionCtx,
    connect: &Connect,
    username_from_certificate: bool,
) -> ConnectAuth {
    let authenticator = ctx.broker.authenticator();
    let result = if connect.username.is_some() && connect.password.is_some() {
        // A password hash (argon2 takes tens of milliseconds) must not hold up the other
        // connections of this worker thread.
        let client_id = connect.client_id.clone();
        let username = connect.username.clone();
        let password = connect.password.clone();
        tokio::task::spawn_blocking(move || {
            authenticator.authenticate(Credentials {
                client_id: &client_id,
                username: username.as_ref(),
                password: password.as_ref(),
                username_from_certificate,
            })
        })
        .await
        .unwrap_or(Err(ReasonCode::UNSPECIFIED_ERROR))
    } else {
        authenticator.authenticate(Credentials {
            client_id: &connect.client_id,
            username: connect.username.as_ref(),
            password: connect.password.as_ref(),
            username_from_certificate,
        })
    };
    match result {
        Ok(()) => ConnectAuth::Accepted {
            method: None,
            data: None,
        },
        Err(code) => {
            auth_failed(
                ctx,
                &connect.client_id,
                connect.username.as_deref(),
                code,
                "wrong credentials",
            );
            refuse(ctx, code);
            ConnectAuth::Refused
        }
    }
}

/// CONNECT's client-first: answers server-first, or refuses.
fn start_scram(ctx: &mut ConnectionCtx, connect: &Connect, method: ByteString) -> ConnectAuth {
    let client_id = &connect.client_id;
    let Some(client_first) = &connect.properties.authentication_data else {
        let code = ReasonCode::NOT_AUTHORIZED;
        auth_failed(ctx, client_id, None, code, "SCRAM without client-first");
        refuse(ctx, code);
        return ConnectAuth::Refused;
    };
    let authenticator = ctx.broker.authenticator();
    let (exchange, server_first) =
        match scram::start(client_first, |user| authenticator.scram_credentials(user)) {
            Ok(started) => started,
            Err(e) => return scram_refused(ctx, client_id, None, &e),
        };
    // A CONNECT may name a user as well; it must be the one SCRAM proves.
    if connect
        .username
        .as_ref()
        .is_some_and(|name| **name != *exchange.username())
    {
        let code = ReasonCode::BAD_USER_NAME_OR_PASSWORD;
        auth_failed(
            ctx,
            client_id,
            Some(exchange.username()),
            code,
            "CONNECT user name differs from SCRAM's",
        );
        refuse(ctx, code);
        return ConnectAuth::Refused;
    }
    send_auth(
        ctx,
        ReasonCode::CONTINUE_AUTHENTICATION,
        &method,
        server_first.into(),
    );
    ConnectAuth::Challenge(Box::new(ScramChallenge {
        exchange,
        method,
        client_id: client_id.clone(),
    }))
}

/// The client's answer to server-first: `reply` is its next packet, none if it closed, ran out
/// of time or the broker is shutting down.
pub(crate) fn continue_connect(
    ctx: &mut ConnectionCtx,
    challenge: Box<ScramChallenge>,
    reply: Option<Packet>,
) -> ConnectAuth {
    let ScramChallenge {
        exchange,
        method,
        client_id,
    } = *challenge;
    let auth = match reply {
        Some(Packet::Auth(auth)) => auth,
        // Gone, out of time, or shutting down: nobody to answer.
        None | Some(Packet::Disconnect(_)) => return ConnectAuth::Refused,
        Some(_) => {
            refuse(ctx, ReasonCode::PROTOCOL_ERROR);
            return ConnectAuth::Refused;
        }
    };
    if auth.reason_code != ReasonCode::CONTINUE_AUTHENTICATION
        || auth.properties.authentication_method.as_ref() != Some(&method)
    {
        refuse(ctx, ReasonCode::PROTOCOL_ERROR);
        return ConnectAuth::Refused;
    }
    let username = exchange.username().to_owned();
    let client_final = auth.properties.authentication_data.unwrap_or_default();
    match exchange.finish(&client_final) {
        Ok(server_final) => {
            ctx.auth = AuthState {
                method: Some(method.clone()),
                username: Some(username),
                exchange: None,
            };
            ConnectAuth::Accepted {
                method: Some(method),
                data: Some(server_final.into()),
            }
        }
        Err(e) => scram_refused(ctx, &client_id, Some(&username), &e),
    }
}

fn scram_refused(
    ctx: &mut ConnectionCtx,
    client_id: &ByteString,
    username: Option<&str>,
    error: &ScramError,
) -> ConnectAuth {
    let code = error.reason_code();
    let why = match error {
        ScramError::InvalidProof => "SCRAM: wrong password, unknown user, or no SCRAM keys",
        _ => "SCRAM exchange refused",
    };
    auth_failed(ctx, client_id, username, code, why);
    refuse(ctx, code);
    ConnectAuth::Refused
}

/// AUTH after CONNACK: a re-authentication with the method of CONNECT [MQTT-4.12.1-1]. It
/// runs while other packets go on; a failure ends the connection with DISCONNECT 0x87
/// (0x86 is not a DISCONNECT reason code) [MQTT-4.12.1-2].
pub(crate) fn reauthenticate(ctx: &mut ConnectionCtx, auth: Auth) -> Result<(), ConnectionError> {
    let Some(method) = ctx.auth.method.clone() else {
        return Err(ConnectionError::Protocol(
            "AUTH without an authentication method",
        ));
    };
    if auth.properties.authentication_method.as_ref() != Some(&method) {
        return Err(ConnectionError::Protocol(
            "AUTH with another authentication method than CONNECT's",
        ));
    }
    let data = auth.properties.authentication_data.unwrap_or_default();
    match (auth.reason_code, ctx.auth.exchange.take()) {
        (ReasonCode::RE_AUTHENTICATE, None) => {
            let authenticator = ctx.broker.authenticator();
            let (exchange, server_first) =
                match scram::start(&data, |user| authenticator.scram_credentials(user)) {
                    Ok(started) => started,
                    Err(e) => return Err(reauth_failed(ctx, None, &e.to_string())),
                };
            if ctx.auth.username.as_deref() != Some(exchange.username()) {
                let user = exchange.username().to_owned();
                return Err(reauth_failed(
                    ctx,
                    Some(&user),
                    "another user than CONNECT's",
                ));
            }
            ctx.auth.exchange = Some(exchange);
            send_auth(
                ctx,
                ReasonCode::CONTINUE_AUTHENTICATION,
                &method,
                server_first.into(),
            );
            Ok(())
        }
        (ReasonCode::CONTINUE_AUTHENTICATION, Some(exchange)) => {
            let user = exchange.username().to_owned();
            match exchange.finish(&data) {
                Ok(server_final) => {
                    tracing::debug!(peer = %ctx.peer(), user, "re-authenticated");
                    send_auth(ctx, ReasonCode::SUCCESS, &method, server_final.into());
                    Ok(())
                }
                Err(e) => Err(reauth_failed(ctx, Some(&user), &e.to_string())),
            }
        }
        (ReasonCode::RE_AUTHENTICATE, Some(_)) => Err(ConnectionError::Protocol(
            "re-authentication while one is under way",
        )),
        _ => Err(ConnectionError::Protocol(
            "AUTH reason code out of sequence",
        )),
    }
}

fn reauth_failed(ctx: &ConnectionCtx, username: Option<&str>, why: &str) -> ConnectionError {
    let client_id = ctx
        .client
        .as_ref()
        .map(|c| c.session.client_id.clone())
        .unwrap_or_default();
    auth_failed(ctx, &client_id, username, ReasonCode::NOT_AUTHORIZED, why);
    ConnectionError::Refused {
        code: ReasonCode::NOT_AUTHORIZED,
        message: "re-authentication failed",
    }
}

fn send_auth(ctx: &mut ConnectionCtx, code: ReasonCode, method: &ByteString, data: Bytes) {
    ctx.out.send(&Packet::Auth(Auth {
        reason_code: code,
        properties: AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: Some(data),
            ..AuthProperties::default()
        },
    }));
}

/// Counts a failed login and logs it, at most once a second (a client can fail as fast as
/// it connects). Never logs a password.
fn auth_failed(
    ctx: &ConnectionCtx,
    client_id: &ByteString,
    username: Option<&str>,
    code: ReasonCode,
    why: &str,
) {
    ctx.broker.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = ctx.broker.auth_failure_log.allow() {
        tracing::warn!(
            client_id = %client_id,
            user = username.unwrap_or(""),
            peer = %ctx.peer(),
            code = %code,
            suppressed,
            "authentication failed: {why}"
        );
    }
}
