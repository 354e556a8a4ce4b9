//! Exit codes, derived from error kinds in this one place.
//!
//! PostgreSQL reads them: for `archive_command` any non-zero status means "try again later"
//! (above 125 it also restarts the archiver, so push stays below that). For
//! `restore_command`, 1 means "this file does not exist" and ends or redirects recovery,
//! while anything above 125 aborts recovery: so `get` reports every failure other than a
//! certain absence as `200 + code` (see [`Failure::get_exit_code`]).

use std::fmt;

/// What went wrong, as far as the exit status is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The requested file is certainly not in the repository (`get`).
    NotFound = 1,
    /// Command-line usage error.
    Usage = 2,
    /// The input file is not what it claims to be (bad name, header, size, system id).
    Invalid = 3,
    /// The repository already holds different content under this name, or belongs to
    /// another cluster.
    Conflict = 4,
    /// The repository could not be reached or answered with errors, after retries.
    Storage = 5,
    /// An object in the repository is damaged (digest, size or decompression failure).
    Corrupt = 6,
    /// The configuration is unusable (missing repository, bad URL, bad file).
    Config = 7,
    /// A local file could not be read or written.
    LocalIo = 8,
    /// PostgreSQL could not be reached, refused the connection (authentication, pg_hba), or
    /// failed a command (e.g. BASE_BACKUP).
    Server = 9,
    /// A restore was refused before anything was written: no backup precedes the target, WAL
    /// between the backup and the target is missing, or the target lies beyond the archive.
    Refused = 10,
    /// The repository is encrypted and the configured key cannot open it: no key is
    /// configured, the key is not one of the repository's, or a key is configured for a
    /// repository that is not encrypted.
    Key = 11,
}

impl FailureKind {
    /// Every kind, in the order of their codes: the one table that `--help`, the README and
    /// `docs/exit-codes.md` are tested against.
    pub const ALL: [FailureKind; 11] = [
        FailureKind::NotFound,
        FailureKind::Usage,
        FailureKind::Invalid,
        FailureKind::Conflict,
        FailureKind::Storage,
        FailureKind::Corrupt,
        FailureKind::Config,
        FailureKind::LocalIo,
        FailureKind::Server,
        FailureKind::Refused,
        FailureKind::Key,
    ];

    /// The exit status for this kind.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Its name in `docs/exit-codes.md`.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::NotFound => "not found",
            FailureKind::Usage => "usage",
            FailureKind::Invalid => "invalid input",
            FailureKind::Conflict => "conflict",
            FailureKind::Storage => "storage",
            FailureKind::Corrupt => "corrupt",
            FailureKind::Config => "configuration",
            FailureKind::LocalIo => "local I/O",
            FailureKind::Server => "server",
            FailureKind::Refused => "refused",
            FailureKind::Key => "encryption key",
        }
    }
}

/// An error with the kind that decides the exit status.
#[derive(Debug)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// The error chain, printed on one line.
    pub error: anyhow::Error,
    /// See [`Failure::is_transient`].
    transient: bool,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, error: impl Into<anyhow::Error>) -> Self {
        Failure { kind, error: error.into(), transient: false }
    }

    /// A failure of `kind` with a message.
    pub fn msg(kind: FailureKind, message: impl fmt::Display) -> Self {
        Failure { kind, error: anyhow::anyhow!("{message}"), transient: false }
    }

    /// Marks the cause as one that may pass by itself: see [`Failure::is_transient`].
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// Whether the cause may pass by itself, without anyone changing the configuration or the
    /// data: a repository that could not be reached or answered with errors after the
    /// request's retries, a local file that could not be read or written, a server that
    /// closed the connection. A daemon (the receiver) tries again later after such a failure
    /// and stops after any other. Set where the failure is built from its cause (the `From`
    /// conversions below from each layer's error, or [`Failure::transient`]), never derived
    /// from the kind: moving a failure to another exit code does not change what is retried.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The same failure (kind, transience) with `context` before its message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Failure { error: self.error.context(context.to_string()), ..self }
    }

    /// Exit status for commands other than `get`.
    pub fn exit_code(&self) -> u8 {
        self.kind.code()
    }

    /// Exit status for `get`: 1 only for a certain absence, `200 + code` otherwise, so that
    /// PostgreSQL aborts recovery instead of ending it at the wrong point.
    pub fn get_exit_code(&self) -> u8 {
        match self.kind {
            FailureKind::NotFound => 1,
            k => 200 + k.code(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl From<storage::StorageError> for Failure {
    fn from(e: storage::StorageError) -> Self {
        use storage::StorageError as E;
        let kind = match &e {
            E::NotFound { .. } => FailureKind::NotFound,
            E::AlreadyExists { .. } => FailureKind::Conflict,
            E::InvalidKey(_) => FailureKind::Invalid,
            E::Io { .. } | E::Remote { .. } => FailureKind::Storage,
            E::Config(_) => FailureKind::Config,
            E::Damaged { .. } => FailureKind::Corrupt,
            E::KeyUnavailable { .. } => FailureKind::Key,
        };
        // An answer about the object (absent, present, a bad name) will be the same next time;
        // a failed request or I/O may not.
        let transient = matches!(e, E::Io { .. } | E::Remote { .. });
        Failure { transient, ..Failure::new(kind, e) }
    }
}

impl From<crate::codec::CodecError> for Failure {
    fn from(e: crate::codec::CodecError) -> Self {
        use crate::codec::CodecError as E;
        let kind = match &e {
            E::Io(_) => FailureKind::LocalIo,
            _ => FailureKind::Corrupt,
        };
        let transient = matches!(e, E::Io(_));
        Failure { transient, ..Failure::new(kind, e) }
    }
}

impl From<crate::pgwire::PgWireError> for Failure {
    fn from(e: crate::pgwire::PgWireError) -> Self {
        let kind = match &e {
            crate::pgwire::PgWireError::Config(_) => FailureKind::Config,
            _ => FailureKind::Server,
        };
        let transient = e.is_retryable();
        Failure { transient, ..Failure::new(kind, e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_never_says_missing_for_other_failures() {
        for (i, k) in FailureKind::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(k.code()), i + 1, "ALL is in the order of the codes");
            if k == FailureKind::NotFound {
                continue;
            }
            assert!(Failure::msg(k, "x").get_exit_code() > 125, "{k:?}");
            assert!(Failure::msg(k, "x").exit_code() <= 125, "{k:?}");
        }
        assert_eq!(Failure::msg(FailureKind::NotFound, "x").get_exit_code(), 1);
    }

    #[test]
    fn transience_comes_from_the_cause_not_the_kind() {
        use storage::StorageError;
        let io = || std::io::Error::other("disk gone");
        let remote = StorageError::Remote { op: "put", key: "k".into(), message: "503".into(), retryable: true };
        assert!(Failure::from(remote).is_transient());
        assert!(Failure::from(StorageError::Io { op: "read", path: "k".into(), error: io() }).is_transient());
        assert!(!Failure::from(StorageError::NotFound { key: "k".into() }).is_transient());
        assert!(!Failure::from(StorageError::AlreadyExists { key: "k".into() }).is_transient());
        assert!(Failure::from(crate::codec::CodecError::Io(io())).is_transient());
        assert!(!Failure::msg(FailureKind::Storage, "x").is_transient(), "a kind alone says nothing");
        let f = Failure::msg(FailureKind::LocalIo, "x").transient().context("reading y");
        assert!(f.is_transient() && f.kind == FailureKind::LocalIo);
        assert_eq!(f.to_string(), "reading y: x");
    }
}
