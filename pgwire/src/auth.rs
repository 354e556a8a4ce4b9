//! The authentication exchange after the startup packet: trust, cleartext password, MD5 and
//! SCRAM-SHA-256 (with `tls-server-end-point` channel binding over TLS when the server offers
//! SCRAM-SHA-256-PLUS), with the password from the connection string, `PGPASSWORD` or the
//! password file. The hashing and SCRAM state machine are postgres-protocol's.
//!
//! Methods this client cannot do (GSSAPI, SSPI, ...) fail with a message naming the
//! pg_hba.conf methods that work.

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

use crate::conninfo::{ChannelBindingMode, ConnParams, Password, Target};
use crate::error::{PgWireError, Result};
use crate::message::{AuthRequest, BackendMessage};
use crate::pgpass::password_from_file;

const SCRAM: &str = "SCRAM-SHA-256";
const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

fn auth_err(params: &ConnParams, target: &Target, message: impl Into<String>) -> PgWireError {
    PgWireError::Auth {
        context: format!("connection to {target} as user \"{}\"", params.user),
        message: message.into(),
    }
}

/// The password: connection string / `PGPASSWORD`, else the password file.
fn password(params: &ConnParams, target: &Target) -> Result<Password> {
    if let Some(p) = &params.password {
        return Ok(p.clone());
    }
    if let Some(file) = &params.passfile {
        if let Some(p) =
            password_from_file(file, &target.pgpass_host(), target.port, params.pgpass_dbname(), &params.user)
        {
            return Ok(p);
        }
    }
    let file = params.passfile.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "~/.pgpass".into());
    Err(auth_err(
        params,
        target,
        format!(
            "the server requested password authentication, but no password was supplied: set PGPASSWORD, add a \
             line for this server to the password file {file} (or PGPASSFILE), or give password= in the connection string"
        ),
    ))
}

/// What the exchange needs of a connection (implemented by `conn::Connection`, which calls
/// [`authenticate`]; this module does not import it back).
pub(crate) trait Channel {
    /// Whether the connection is encrypted (SCRAM channel binding needs TLS).
    fn is_tls(&self) -> bool;
    /// The next message from the server.
    async fn next_message(&mut self) -> Result<BackendMessage>;
    /// Encodes one message with `f` and sends it.
    async fn send_raw(&mut self, f: impl FnOnce(&mut bytes::BytesMut) -> std::io::Result<()>) -> Result<()>;
}

/// Runs the exchange up to AuthenticationOk.
pub(crate) async fn authenticate(
    conn: &mut impl Channel,
    params: &ConnParams,
    target: &Target,
    tls_end_point: Option<Vec<u8>>,
) -> Result<()> {
    let tls = conn.is_tls();
    let mut scram: Option<ScramSha256> = None;
    let mut scram_done = false;
    loop {
        let msg = conn.next_message().await?;
        let req = match msg {
            BackendMessage::Authentication(r) => r,
            BackendMessage::Error(e) => return Err(PgWireError::from(e)),
            BackendMessage::Notice(n) => {
                tracing::info!(code = %n.code, "server: {}", n.message);
                continue;
            }
            BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized } => {
                tracing::debug!(newest_minor, ?unrecognized, "server negotiated the protocol version");
                continue;
            }
            other => return Err(PgWireError::Protocol(format!("unexpected {other:?} during authentication"))),
        };
        match req {
            AuthRequest::Ok => {
                if scram.is_some() && !scram_done {
                    return Err(auth_err(
                        params,
                        target,
                        "the server ended SCRAM authentication without proving it knows the password",
                    ));
                }
                return Ok(());
            }
            AuthRequest::Cleartext => {
                if !tls {
                    tracing::debug!("server asked for the password in clear text over an unencrypted connection");
                }
                let pw = password(params, target)?;
                conn.send_raw(|b| frontend::password_message(pw.expose().as_bytes(), b)).await?;
            }
            AuthRequest::Md5(salt) => {
                let pw = password(params, target)?;
                let hash = md5_hash(params.user.as_bytes(), pw.expose().as_bytes(), salt);
                conn.send_raw(|b| frontend::password_message(hash.as_bytes(), b)).await?;
            }
            AuthRequest::Sasl(mechanisms) => {
                let has = |m: &str| mechanisms.iter().any(|x| x == m);
                let plus_possible = tls && has(SCRAM_PLUS) && tls_end_point.is_some();
                let (mechanism, binding) = if plus_possible && params.channel_binding != ChannelBindingMode::Disable {
                    (SCRAM_PLUS, ChannelBinding::tls_server_end_point(tls_end_point.clone().unwrap_or_default()))
                } else if params.channel_binding == ChannelBindingMode::Require {
                    return Err(auth_err(
                        params,
                        target,
                        "channel_binding=require, but the server or connection does not support channel binding \
                         (it needs TLS and SCRAM-SHA-256-PLUS)",
                    ));
                } else if has(SCRAM) {
                    // "y" tells a TLS server that we could bind but it did not offer to; a
                    // server that does offer -PLUS would take "y" as a downgrade attack, so
                    // then we say "n" (we cannot bind with this certificate, or chose not to).
                    let binding = if tls && !has(SCRAM_PLUS) && params.channel_binding != ChannelBindingMode::Disable {
                        ChannelBinding::unrequested()
                    } else {
                        ChannelBinding::unsupported()
                    };
                    (SCRAM, binding)
                } else {
                    return Err(auth_err(
                        params,
                        target,
                        format!(
                            "the server offered SASL mechanisms {mechanisms:?}, none of which this client supports"
                        ),
                    ));
                };
                let pw = password(params, target)?;
                let s = ScramSha256::new(pw.expose().as_bytes(), binding);
                conn.send_raw(|b| frontend::sasl_initial_response(mechanism, s.message(), b)).await?;
                scram = Some(s);
            }
            AuthRequest::SaslContinue(data) => {
                let s =
                    scram.as_mut().ok_or_else(|| PgWireError::Protocol("SASL continue without SASL start".into()))?;
                s.update(&data).map_err(|e| auth_err(params, target, format!("invalid SCRAM server message: {e}")))?;
                let reply = s.message().to_vec();
                conn.send_raw(|b| frontend::sasl_response(&reply, b)).await?;
            }
            AuthRequest::SaslFinal(data) => {
                let s = scram.as_mut().ok_or_else(|| PgWireError::Protocol("SASL final without SASL start".into()))?;
                s.finish(&data).map_err(|e| {
                    auth_err(
                        params,
                        target,
                        format!("the server's SCRAM signature is wrong ({e}): not the expected server"),
                    )
                })?;
                scram_done = true;
            }
            AuthRequest::Unsupported(method) => {
                return Err(auth_err(
                    params,
                    target,
                    format!(
                        "the server requested {method} authentication, which is not supported: use trust, peer, \
                         password, md5 or scram-sha-256 for this client in pg_hba.conf"
                    ),
                ))
            }
        }
    }
}
