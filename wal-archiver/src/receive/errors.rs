//! How a session of the receiver ends or fails, and which failures are worth a new session.
//! A leaf: the other parts of the receiver use it; it uses none of them.

use common::exit::{Failure, FailureKind};
use common::pgwire::PgWireError;
use common::retry::Backoff;
use std::time::Duration;

/// The pauses between the receiver's sessions, and between its uploader's attempts: 1 s,
/// doubling to 30 s, back to 1 s once WAL flows again.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
}

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

/// A failure whose cause may pass by itself (the repository unreachable, a local read failed)
/// is worth a new session; any other stops the receiver. Decided by the failure's own
/// property, never by its exit code.
impl From<Failure> for SessionError {
    fn from(f: Failure) -> Self {
        if f.is_transient() {
            SessionError::Retry(f)
        } else {
            SessionError::Fatal(f)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_follows_the_cause_not_the_exit_code() {
        let retry = |f| matches!(SessionError::from(f), SessionError::Retry(_));
        assert!(retry(Failure::msg(FailureKind::Storage, "503").transient()));
        assert!(retry(Failure::msg(FailureKind::LocalIo, "EIO").transient()));
        assert!(!retry(Failure::msg(FailureKind::Storage, "a refusal")));
        assert!(!retry(Failure::msg(FailureKind::Conflict, "another cluster")));
        let e = common::storage::StorageError::Remote {
            op: "put",
            key: "k".into(),
            message: "503".into(),
            retryable: true,
        };
        assert!(retry(Failure::from(e)));
        let e = common::storage::StorageError::AlreadyExists { key: "k".into() };
        assert!(!retry(Failure::from(e)));
    }
}
