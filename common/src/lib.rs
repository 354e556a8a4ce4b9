//! What pitr's programs share above the lower crates, by layer: compression with digests
//! ([`codec`]); the failure vocabulary with the exit-code table ([`exit`]) and retries
//! ([`retry`]); the repository layout ([`repository`]), the backup catalog ([`catalog`]) and who
//! holds what in a repository ([`lease`]), which keys open an encrypted repository
//! ([`encryption`]); the process edge: configuration ([`config`]), what
//! every `main` shares ([`cmdline`]) and logging setup ([`telemetry`]). No module imports one
//! of a higher layer (`tests/tests/architecture.rs`).
//!
//! The lower crates are re-exported under the names the programs use: PostgreSQL's formats
//! ([`lsn`], [`wal`], [`manifest`], [`tar`] from `pitr-formats`), the wire client ([`pgwire`])
//! and the storage backends ([`storage`]).

pub mod catalog;
pub mod cmdline;
pub mod codec;
pub mod config;
pub mod encryption;
pub mod exit;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod lease;
pub mod repository;
pub mod retry;
pub mod telemetry;

// The layers below, under the names the programs use.
pub use formats::{lsn, manifest, tar, wal};
pub use pgwire;
pub use storage;
