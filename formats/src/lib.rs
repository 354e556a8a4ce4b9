//! PostgreSQL's formats as pitr reads them, with no I/O: LSNs ([`lsn`]), WAL file names, page
//! headers, records and their summaries, timeline history files and timeline paths ([`wal`]),
//! backup manifests ([`manifest`]) and tar streams ([`tar`]). The lowest layer: every other
//! crate may use it; it uses none of them.

pub mod lsn;
pub mod manifest;
pub mod tar;
pub mod wal;
