//! How a session of the receiver ends or fails, and which failures are worth a new session.
//! A leaf: the other parts of the receiver use it; it uses none of them.

use common::exit::{Failure, FailureKind};
use common::pgwire::PgWireError;

/// How one session ended, when it did not fail.
pub(super) enum SessionEnd {
    /// Stopped on request, cleanly.
    Stopped,
    /// The timeline ended; the spool now follows the next one.
    TimelineSwitched,
}

/// A session failure: retry after a pause, or give up.
pub(super) enum SessionError {
    Retry(Failure),
    Fatal(Failure),
}

impl From<Failure> for SessionError {
    fn from(f: Failure) -> Self {
        match f.kind {
            FailureKind::Storage | FailureKind::LocalIo => SessionError::Retry(f),
            _ => SessionError::Fatal(f),
        }
    }
}

pub(super) fn pg_error(what: &str, e: PgWireError) -> SessionError {
    let removed = e.server_error().is_some_and(|s| s.message.contains("has already been removed"));
    let slot_busy = e.sqlstate() == Some("55006");
    let f = Failure::msg(
        if matches!(e, PgWireError::Config(_)) { FailureKind::Config } else { FailureKind::Server },
        format!("{what}: {e}"),
    );
    if removed {
        SessionError::Fatal(Failure::msg(
            FailureKind::Server,
            format!(
                "{what}: {e}: the server no longer has the WAL the archive needs next; archive it with \
                 archive_command (`wal-archiver push`), or use a replication slot (--slot) so the server keeps it. \
                 The receiver never skips WAL"
            ),
        ))
    } else if e.is_retryable() || slot_busy {
        SessionError::Retry(f)
    } else {
        SessionError::Fatal(f)
    }
}

pub(super) enum Flow {
    Continue,
    /// The server's CopyDone.
    ServerDone,
    /// CommandComplete inside the COPY: the walsender is exiting (server shutdown).
    ServerClosing,
}

pub(super) fn local(e: std::io::Error) -> SessionError {
    SessionError::Fatal(Failure::msg(FailureKind::LocalIo, e))
}
