//! What pitr's programs share: the PostgreSQL WAL vocabulary ([`lsn`], [`wal`]), the storage
//! trait and its backends ([`storage`]), compression with digests ([`codec`]), the repository
//! layout ([`repository`]), the backup catalog ([`catalog`]), PostgreSQL's backup manifest
//! ([`manifest`]), a streaming tar reader ([`tar`]), configuration ([`config`]), who holds what in a repository ([`lease`]), what every `main` shares ([`cmdline`]), retries
//! ([`retry`]), exit codes ([`exit`]) and logging setup ([`telemetry`]).

pub mod catalog;
pub mod cmdline;
pub mod codec;
pub mod config;
pub mod exit;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod lease;
pub mod lsn;
pub mod manifest;
pub mod pgwire;
pub mod repository;
pub mod retry;
pub mod storage;
pub mod tar;
pub mod telemetry;
pub mod wal;
