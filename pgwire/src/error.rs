//! The replication client's errors, in one type so that callers can decide with
//! [`PgWireError::is_retryable`] whether to reconnect (connection lost, server restarting) or
//! stop and tell the operator (wrong password, bad connection string, a command the server
//! refuses).
//!
//! Server errors keep PostgreSQL's fields (SQLSTATE, severity, message, detail, hint), so that
//! a caller can react to a specific condition, e.g. `58P01` for a WAL segment that is gone.
//! No variant ever carries a password.

use std::fmt;
use std::io;

/// An `ErrorResponse` or `NoticeResponse` from the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// Severity, not localized (`ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, ...).
    pub severity: String,
    /// SQLSTATE code, e.g. `58P01`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// Optional secondary message.
    pub detail: Option<String>,
    /// Optional suggestion.
    pub hint: Option<String>,
    /// Where in the server's call stack (the `CONTEXT` line).
    pub context: Option<String>,
}

impl ServerError {
    /// Reads the fields of an `ErrorResponse`/`NoticeResponse` body.
    pub(crate) fn from_fields<'a>(fields: impl IntoIterator<Item = (u8, &'a [u8])>) -> ServerError {
        let mut e = ServerError::default();
        let mut localized_severity = None;
        for (ty, value) in fields {
            let v = String::from_utf8_lossy(value).into_owned();
            match ty {
                b'S' => localized_severity = Some(v),
                b'V' => e.severity = v,
                b'C' => e.code = v,
                b'M' => e.message = v,
                b'D' => e.detail = Some(v),
                b'H' => e.hint = Some(v),
                b'W' => e.context = Some(v),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized_severity.unwrap_or_default();
        }
        e
    }

    /// Whether a new connection may succeed where this one failed: the server is shutting
    /// down or starting, out of connection slots or resources, or lost the connection.
    pub fn is_retryable(&self) -> bool {
        let c = self.code.as_str();
        c.starts_with("08") // connection exception
            || c.starts_with("53") // insufficient resources (too many connections, out of memory, disk full)
            // admin/crash shutdown, starting up, idle session timeout, serialization, deadlock, lock
            || matches!(c, "57P01" | "57P02" | "57P03" | "57P05" | "40001" | "40P01" | "55P03")
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server error {}: {}", self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Everything that can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgWireError {
    /// The connection string or parameters are unusable.
    #[error("invalid connection parameters: {0}")]
    Config(String),

    /// Reaching the server or talking to it failed at the transport level.
    #[error("{context}: {error}")]
    Io {
        /// What we were doing, naming the server (`connection to server at "db1" port 5432`).
        context: String,
        /// The underlying error (in the message, not also a `source()`: a printed error
        /// chain says it once).
        error: io::Error,
    },

    /// The server closed the connection when a message was expected.
    #[error("{0}: server closed the connection unexpectedly")]
    Closed(String),

    /// Connecting (TCP, TLS and authentication) took longer than `connect_timeout`.
    #[error("{context}: timed out after {seconds} s (connect_timeout)")]
    Timeout {
        /// The server we tried.
        context: String,
        /// The timeout.
        seconds: u64,
    },

    /// TLS was required (`sslmode=require` or stronger) but the server does not offer it.
    #[error("{0}: server does not support SSL, but SSL was required (sslmode)")]
    SslRefused(String),

    /// The TLS handshake failed: certificate not trusted, wrong host name, no common cipher.
    #[error("{context}: TLS handshake failed: {message}")]
    Tls {
        /// The server we tried.
        context: String,
        /// What rustls reported.
        message: String,
    },

    /// Authentication could not be done by this client (no password, unsupported method,
    /// server's SCRAM proof wrong). A password refused by the server is a [`PgWireError::Server`]
    /// with SQLSTATE `28P01`.
    #[error("{context}: {message}")]
    Auth {
        /// The server and user.
        context: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The server answered with an `ErrorResponse` (boxed: it is much larger than the other
    /// variants).
    #[error(transparent)]
    Server(Box<ServerError>),

    /// The server sent something this client did not expect at this point.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl PgWireError {
    /// Whether trying again (usually on a new connection, after a delay) may succeed.
    ///
    /// Yes: connection refused/reset/lost, timeouts, the server shutting down or starting up,
    /// too many connections. No: bad parameters, authentication failures, TLS verification
    /// failures, commands the server refuses (syntax, unsupported), protocol violations.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgWireError::Io { error, .. } => !matches!(
                error.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
            ),
            PgWireError::Closed(_) | PgWireError::Timeout { .. } => true,
            PgWireError::Server(e) => e.is_retryable(),
            PgWireError::Config(_)
            | PgWireError::SslRefused(_)
            | PgWireError::Tls { .. }
            | PgWireError::Auth { .. }
            | PgWireError::Protocol(_) => false,
        }
    }

    /// The SQLSTATE code when the server reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgWireError::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The server's error, when it reported one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            PgWireError::Server(e) => Some(e.as_ref()),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> PgWireError {
        PgWireError::Io { context: context.into(), error: source }
    }
}

impl From<ServerError> for PgWireError {
    fn from(e: ServerError) -> PgWireError {
        PgWireError::Server(Box::new(e))
    }
}

/// Result with [`PgWireError`].
pub type Result<T, E = PgWireError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> PgWireError {
        PgWireError::from(ServerError { code: code.into(), message: "m".into(), ..Default::default() })
    }

    #[test]
    fn retryable_classification() {
        assert!(server("57P01").is_retryable(), "admin shutdown");
        assert!(server("57P03").is_retryable(), "starting up");
        assert!(server("53300").is_retryable(), "too many connections");
        assert!(server("08006").is_retryable());
        assert!(!server("28P01").is_retryable(), "wrong password");
        assert!(!server("28000").is_retryable(), "no pg_hba entry");
        assert!(!server("42601").is_retryable(), "syntax error");
        assert!(!server("0A000").is_retryable());
        assert!(!server("58P01").is_retryable(), "WAL removed");
        assert!(PgWireError::io("c", io::Error::from(io::ErrorKind::ConnectionRefused)).is_retryable());
        assert!(PgWireError::io("c", io::Error::from(io::ErrorKind::NotFound)).is_retryable(), "socket not there yet");
        assert!(!PgWireError::io("c", io::Error::from(io::ErrorKind::PermissionDenied)).is_retryable());
        assert!(PgWireError::Closed("c".into()).is_retryable());
        assert!(!PgWireError::Config("x".into()).is_retryable());
        assert!(!PgWireError::Auth { context: "c".into(), message: "m".into() }.is_retryable());
    }

    #[test]
    fn display_names_code_and_message() {
        let e = ServerError {
            severity: "ERROR".into(),
            code: "58P01".into(),
            message: "could not open file \"pg_wal/00000001.history\": No such file or directory".into(),
            ..Default::default()
        };
        assert_eq!(
            PgWireError::from(e).to_string(),
            "server error 58P01: could not open file \"pg_wal/00000001.history\": No such file or directory"
        );
        let fields: Vec<(u8, &[u8])> =
            vec![(b'S', b"FATAL"), (b'V', b"FATAL"), (b'C', b"28P01"), (b'M', b"password authentication failed")];
        let e = ServerError::from_fields(fields);
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "28P01"));
    }
}
