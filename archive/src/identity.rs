//! Which cluster something belongs to. The repository's cluster record (`cluster.json`:
//! system identifier, major version, segment and block size) is written by the first writer
//! and every later one is checked against it: a WAL file's first page (`push`, `verify`), a
//! server (`basebackup create`, `receive`). Two clusters must never share one cluster name.

use common::repository::{ClusterInfo, Repository, RepositoryError};

/// How what was found differs from the cluster record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Another database system (another `initdb`).
    #[error("belongs to database system {found}, but cluster {cluster:?} in this repository is system {recorded}")]
    System {
        /// The cluster's name in the repository.
        cluster: String,
        /// What was found.
        found: common::wal::SystemId,
        /// What the record says.
        recorded: common::wal::SystemId,
    },
    /// Another PostgreSQL major version (an upgrade).
    #[error(
        "is PostgreSQL {found}, but cluster {cluster:?} in this repository is PostgreSQL {recorded} (after a major \
         upgrade, archive under a new --cluster)"
    )]
    Major {
        /// The cluster's name in the repository.
        cluster: String,
        /// What was found.
        found: common::wal::PgMajor,
        /// What the record says.
        recorded: common::wal::PgMajor,
    },
    /// Another WAL segment or block size.
    #[error("has {found} WAL segments of {found_block}-byte blocks, but cluster {cluster:?} in this repository has {recorded} and {recorded_block}")]
    Geometry {
        /// The cluster's name in the repository.
        cluster: String,
        /// Segment size found.
        found: common::wal::WalSegmentSize,
        /// Block size found.
        found_block: u32,
        /// Segment size recorded.
        recorded: common::wal::WalSegmentSize,
        /// Block size recorded.
        recorded_block: u32,
    },
}

impl Mismatch {
    /// Whether this is the same cluster in another shape (a segment or block size that does
    /// not fit): a damaged or misnamed input rather than another cluster.
    pub fn is_geometry(&self) -> bool {
        matches!(self, Mismatch::Geometry { .. })
    }
}

/// Compares `found` with the cluster record `recorded` of cluster `cluster`.
pub fn compare(cluster: &str, recorded: &ClusterInfo, found: &ClusterInfo) -> Result<(), Mismatch> {
    let cluster = cluster.to_string();
    if found.system_id != recorded.system_id {
        return Err(Mismatch::System { cluster, found: found.system_id, recorded: recorded.system_id });
    }
    if found.pg_major != recorded.pg_major {
        return Err(Mismatch::Major { cluster, found: found.pg_major, recorded: recorded.pg_major });
    }
    if found.segment_size != recorded.segment_size || found.block_size != recorded.block_size {
        return Err(Mismatch::Geometry {
            cluster,
            found: found.segment_size,
            found_block: found.block_size,
            recorded: recorded.segment_size,
            recorded_block: recorded.block_size,
        });
    }
    Ok(())
}

/// Why [`check_or_register`] failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The repository's cluster is another one.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    /// The cluster record could not be read or written.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Checks `found` against the repository's cluster record, writing the record first when
/// there is none (create-if-absent: of two first writers, the second is checked against the
/// first one's record). Returns the record in force.
pub async fn check_or_register(repo: &Repository, found: &ClusterInfo) -> Result<ClusterInfo, IdentityError> {
    let recorded = match repo.cluster_info().await? {
        Some(c) => c,
        None => repo.register_cluster(found).await?,
    };
    compare(repo.cluster(), &recorded, found)?;
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::wal::{PgMajor, SystemId, WalSegmentSize};

    use super::*;

    fn info(sysid: u64) -> ClusterInfo {
        ClusterInfo {
            system_id: SystemId(sysid),
            pg_major: PgMajor::from_magic(0xD110).unwrap(),
            segment_size: WalSegmentSize::DEFAULT,
            block_size: 8192,
        }
    }

    #[test]
    fn each_difference_is_named() {
        let r = info(1);
        assert!(compare("main", &r, &r).is_ok());
        let e = compare("main", &r, &info(2)).unwrap_err();
        assert!(e.to_string().contains("belongs to database system 2") && e.to_string().contains("is system 1"), "{e}");
        let major = ClusterInfo { pg_major: PgMajor::from_magic(0xD116).unwrap(), ..r.clone() };
        assert!(matches!(compare("main", &r, &major), Err(Mismatch::Major { .. })));
        let geo = ClusterInfo { block_size: 16384, ..r.clone() };
        let e = compare("main", &r, &geo).unwrap_err();
        assert!(e.is_geometry() && e.to_string().contains("16384-byte blocks"), "{e}");
    }

    #[tokio::test]
    async fn the_first_writer_registers_and_later_ones_are_checked() {
        let repo = Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0));
        assert_eq!(check_or_register(&repo, &info(7)).await.unwrap(), info(7));
        assert!(check_or_register(&repo, &info(7)).await.is_ok());
        assert!(matches!(
            check_or_register(&repo, &info(8)).await,
            Err(IdentityError::Mismatch(Mismatch::System { .. }))
        ));
    }
}
