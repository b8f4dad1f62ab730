//! Authentication of a connection: CONNECT's user name and password, the SCRAM-SHA-256
//! exchange of MQTT 5 enhanced authentication (CONNECT, AUTH 0x18 … CONNACK), and
//! re-authentication (AUTH 0x19 … AUTH 0x00) on an accepted connection.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use bytestring::ByteString;

use crate::packet::{Auth, AuthProperties, Connect, Packet, ReasonCode};

use crate::broker::auth::scram::{self, ScramError, ScramExchange};
use crate::broker::auth::Credentials;
use crate::broker::net::connection::Connection;
use crate::broker::net::error::ConnectionError;

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

/// What authentication decided about a CONNECT.
#[derive(Debug)]
pub(crate) enum ConnectAuth {
    /// Go on with CONNECT; for SCRAM, the CONNACK carries the method and server-final.
    Accepted {
        method: Option<ByteString>,
        data: Option<Bytes>,
    },
    /// A refusing CONNACK is in the write buffer, or the client went away.
    Refused,
}

impl Connection {
    /// Authenticates a CONNECT: a SCRAM exchange if it names SCRAM-SHA-256 (reading the
    /// client's AUTH packets by `deadline`), its user name and password otherwise.
    pub(crate) async fn authenticate_connect(
        &mut self,
        connect: &Connect,
        deadline: tokio::time::Instant,
    ) -> Result<ConnectAuth, ConnectionError> {
        match &connect.properties.authentication_method {
            None => self.authenticate_password(connect).await,
            Some(method) if &**method == scram::METHOD => {
                self.authenticate_scram(connect, method.clone(), deadline)
                    .await
            }
            // A method we do not offer: refused as the spec says [MQTT-4.12.0-1].
            Some(_) => {
                self.refuse(ReasonCode::BAD_AUTHENTICATION_METHOD);
                Ok(ConnectAuth::Refused)
            }
        }
    }

    async fn authenticate_password(
        &mut self,
        connect: &Connect,
    ) -> Result<ConnectAuth, ConnectionError> {
        let authenticator = self.broker.authenticator();
        let username_from_certificate = matches!(
            self.certificate_username,
            crate::broker::net::connection::CertificateUsername::Verified(_)
        );
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
            Ok(()) => Ok(ConnectAuth::Accepted {
                method: None,
                data: None,
            }),
            Err(code) => {
                self.auth_failed(
                    &connect.client_id,
                    connect.username.as_deref(),
                    code,
                    "wrong credentials",
                );
                self.refuse(code);
                Ok(ConnectAuth::Refused)
            }
        }
    }

    async fn authenticate_scram(
        &mut self,
        connect: &Connect,
        method: ByteString,
        deadline: tokio::time::Instant,
    ) -> Result<ConnectAuth, ConnectionError> {
        let client_id = &connect.client_id;
        let Some(client_first) = &connect.properties.authentication_data else {
            let code = ReasonCode::NOT_AUTHORIZED;
            self.auth_failed(client_id, None, code, "SCRAM without client-first");
            self.refuse(code);
            return Ok(ConnectAuth::Refused);
        };
        let authenticator = self.broker.authenticator();
        let (exchange, server_first) =
            match scram::start(client_first, |user| authenticator.scram_credentials(user)) {
                Ok(started) => started,
                Err(e) => return Ok(self.scram_refused(connect, None, &e)),
            };
        // A CONNECT may name a user as well; it must be the one SCRAM proves.
        if connect
            .username
            .as_ref()
            .is_some_and(|name| **name != *exchange.username())
        {
            let code = ReasonCode::BAD_USER_NAME_OR_PASSWORD;
            self.auth_failed(
                client_id,
                Some(exchange.username()),
                code,
                "CONNECT user name differs from SCRAM's",
            );
            self.refuse(code);
            return Ok(ConnectAuth::Refused);
        }
        let username = exchange.username().to_owned();
        self.send_auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            &method,
            server_first.into(),
        );
        self.flush().await?;
        let auth = match self.read_connect_phase_packet(deadline).await? {
            Some(Packet::Auth(auth)) => auth,
            // Gone, out of time, or shutting down: nobody to answer.
            None | Some(Packet::Disconnect(_)) => return Ok(ConnectAuth::Refused),
            Some(_) => {
                self.refuse(ReasonCode::PROTOCOL_ERROR);
                return Ok(ConnectAuth::Refused);
            }
        };
        if auth.reason_code != ReasonCode::CONTINUE_AUTHENTICATION
            || auth.properties.authentication_method.as_ref() != Some(&method)
        {
            self.refuse(ReasonCode::PROTOCOL_ERROR);
            return Ok(ConnectAuth::Refused);
        }
        let client_final = auth.properties.authentication_data.unwrap_or_default();
        match exchange.finish(&client_final) {
            Ok(server_final) => {
                self.auth = AuthState {
                    method: Some(method.clone()),
                    username: Some(username),
                    exchange: None,
                };
                Ok(ConnectAuth::Accepted {
                    method: Some(method),
                    data: Some(server_final.into()),
                })
            }
            Err(e) => Ok(self.scram_refused(connect, Some(&username), &e)),
        }
    }

    fn scram_refused(
        &mut self,
        connect: &Connect,
        username: Option<&str>,
        error: &ScramError,
    ) -> ConnectAuth {
        let code = error.reason_code();
        let why = match error {
            ScramError::InvalidProof => "SCRAM: wrong password, unknown user, or no SCRAM keys",
            _ => "SCRAM exchange refused",
        };
        self.auth_failed(&connect.client_id, username, code, why);
        self.refuse(code);
        ConnectAuth::Refused
    }

    /// AUTH after CONNACK: a re-authentication with the method of CONNECT [MQTT-4.12.1-1]. It
    /// runs while other packets go on; a failure ends the connection with DISCONNECT 0x87
    /// (0x86 is not a DISCONNECT reason code) [MQTT-4.12.1-2].
    pub(crate) fn handle_auth(&mut self, auth: Auth) -> Result<(), ConnectionError> {
        let Some(method) = self.auth.method.clone() else {
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
        match (auth.reason_code, self.auth.exchange.take()) {
            (ReasonCode::RE_AUTHENTICATE, None) => {
                let authenticator = self.broker.authenticator();
                let (exchange, server_first) =
                    match scram::start(&data, |user| authenticator.scram_credentials(user)) {
                        Ok(started) => started,
                        Err(e) => return Err(self.reauth_failed(None, &e.to_string())),
                    };
                if self.auth.username.as_deref() != Some(exchange.username()) {
                    let user = exchange.username().to_owned();
                    return Err(self.reauth_failed(Some(&user), "another user than CONNECT's"));
                }
                self.auth.exchange = Some(exchange);
                self.send_auth(
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
                        tracing::debug!(peer = %self.peer, user, "re-authenticated");
                        self.send_auth(ReasonCode::SUCCESS, &method, server_final.into());
                        Ok(())
                    }
                    Err(e) => Err(self.reauth_failed(Some(&user), &e.to_string())),
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

    fn reauth_failed(&mut self, username: Option<&str>, why: &str) -> ConnectionError {
        let client_id = self
            .client
            .as_ref()
            .map(|c| c.session.client_id.clone())
            .unwrap_or_default();
        self.auth_failed(&client_id, username, ReasonCode::NOT_AUTHORIZED, why);
        ConnectionError::Refused {
            code: ReasonCode::NOT_AUTHORIZED,
            message: "re-authentication failed",
        }
    }

    fn send_auth(&mut self, code: ReasonCode, method: &ByteString, data: Bytes) {
        self.send(&Packet::Auth(Auth {
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
        &self,
        client_id: &ByteString,
        username: Option<&str>,
        code: ReasonCode,
        why: &str,
    ) {
        self.broker
            .stats
            .auth_failed
            .fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.broker.auth_failure_log.allow() {
            tracing::warn!(
                client_id = %client_id,
                user = username.unwrap_or(""),
                peer = %self.peer,
                code = %code,
                suppressed,
                "authentication failed: {why}"
            );
        }
    }
}
