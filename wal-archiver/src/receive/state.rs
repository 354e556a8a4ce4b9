//! What the receiver's tasks share: the positions (received, fsynced, stored) and why the
//! receiver stops. Below every other part of the receiver; imports none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::lsn::Lsn;

/// Which durability the flush position reported to the server stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsynced in the local spool.
    Spool,
    /// stored in the repository (complete segments, and the receiver's partial object).
    Repository,
}

/// The receiver's positions, shared by the reader, the uploader and the status task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Positions {
    /// End of the WAL received and written to the spool.
    pub written: Lsn,
    /// End of the WAL fsynced in the spool.
    pub synced: Lsn,
    /// End of the WAL stored in the repository (contiguously from the start).
    pub uploaded: Lsn,
}

impl Positions {
    /// The flush position to report for `durability`.
    pub fn flush(&self, durability: Durability) -> Lsn {
        match durability {
            Durability::Spool => self.synced,
            Durability::Repository => self.uploaded.min(self.synced),
        }
    }
}

/// Why the receiver stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Keep going.
    Running,
    /// SIGTERM or SIGINT.
    Signal,
    /// A task failed for good (see the failure slot).
    Fatal,
}

/// Options of `wal-archiver receive`.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// libpq connection string (replication=true is added).
    pub conninfo: common::config::ConnString,
    /// Physical replication slot.
    pub slot: Option<String>,
    /// Create the slot if it does not exist.
    pub create_slot: bool,
    /// Spool directory.
    pub spool: PathBuf,
    /// How often the growing partial segment is uploaded.
    pub partial_interval: Duration,
    /// What `flush` means.
    pub durability: Durability,
    /// Longest time between two status updates.
    pub status_interval: Duration,
    /// Where to serve `/metrics` and `/health`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// The default spool directory for a cluster name.
pub fn default_spool(cluster: &str) -> PathBuf {
    PathBuf::from("/var/spool/pitr").join(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_by_durability() {
        let p = Positions { written: Lsn(30), synced: Lsn(20), uploaded: Lsn(10) };
        assert_eq!(p.flush(Durability::Spool), Lsn(20));
        assert_eq!(p.flush(Durability::Repository), Lsn(10));
    }
}
