//! The server a base backup or the streaming receiver talks to: what it says about itself
//! over a replication connection (`IDENTIFY_SYSTEM`, the version, segment and block size),
//! asked the same way by both, and checked against the repository's cluster record
//! ([`identity`](crate::identity)) before anything is stored.

use common::lsn::Lsn;
use common::pgwire::{Connection, PgWireError};
use common::repository::ClusterInfo;
use common::wal::{PgMajor, SystemId, TimelineId};

/// What a server said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its cluster's identity (system identifier, major version, segment and block size).
    pub identity: ClusterInfo,
    /// `server_version_num` (e.g. 150018).
    pub version_num: u32,
    /// The timeline it is on.
    pub timeline: TimelineId,
    /// Its current WAL position (`IDENTIFY_SYSTEM`'s xlogpos).
    pub position: Lsn,
}

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The connection or a command failed (the caller decides about retrying, from the
    /// error itself).
    #[error("{0}")]
    Wire(#[from] PgWireError),
    /// A major version pitr does not support.
    #[error("{0}")]
    Unsupported(String),
    /// An answer that is not what a PostgreSQL server says.
    #[error("{0}")]
    BadAnswer(String),
}

/// Asks the server on `conn` (a physical replication connection) who it is.
pub async fn probe(conn: &mut Connection) -> Result<Server, ProbeError> {
    let ident = conn.identify_system().await?;
    let version_num = conn.server_version_num().await?;
    let pg_major = PgMajor::try_from(version_num / 10000).map_err(ProbeError::Unsupported)?;
    let segment_size = conn.wal_segment_size().await?;
    let block = conn.show("wal_block_size").await?;
    let block_size: u32 =
        block.trim().parse().map_err(|_| ProbeError::BadAnswer(format!("wal_block_size {block:?} is not a number")))?;
    Ok(Server {
        identity: ClusterInfo { system_id: SystemId(ident.systemid), pg_major, segment_size, block_size },
        version_num,
        timeline: TimelineId(ident.timeline),
        position: ident.xlogpos,
    })
}
