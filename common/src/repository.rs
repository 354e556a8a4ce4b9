//! The repository's key layout and the cluster record, on top of any [`Storage`].
//!
//! ```text
//! <cluster>/cluster.json                                  system id, major version, sizes
//! <cluster>/wal/<TTTTTTTTXXXXXXXX>/<segment>.zst           segments, .partial and .backup files
//! <cluster>/wal/<TTTTTTTT>.history.zst                    timeline history files
//! <cluster>/receiver/<segment>.partial.zst                 the receiver's growing segment (replaced)
//! ```
//! (`<prefix>/` of an `s3://bucket/prefix` URL comes before all of it.) Every WAL object is
//! in the [`codec`](crate::codec) format, so its raw size, digest and (for segments) WAL
//! summary are in its header: the first [`HEADER_LEN`] bytes, rarely more. Documented for
//! operators in `docs/repository.md`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec::{header_len, ObjectHeader, HEADER_LEN};
use crate::lsn::Lsn;
use crate::retry::{retry, RetryPolicy};
use crate::wal::history::{self, HistoryEntry};
use crate::wal::record::SegmentSummary;
use crate::wal::{PgMajor, SystemId, TimelineId, WalFileKind, WalFileName, WalSegmentSize};
use storage::{read_all, Body, ObjectKey, PutMode, Storage, StorageError};

/// What the repository knows about the cluster whose WAL it holds; written once, by the
/// first push, and checked by every later one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// `pg_control`'s system identifier, as a decimal string (it may exceed 2^53).
    #[serde(with = "sysid_text")]
    pub system_id: SystemId,
    /// PostgreSQL major version.
    pub pg_major: PgMajor,
    /// WAL segment size in bytes.
    pub segment_size: WalSegmentSize,
    /// WAL block size in bytes.
    pub block_size: u32,
}

mod sysid_text {
    use super::SystemId;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &SystemId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.0.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(SystemId).map_err(serde::de::Error::custom)
    }
}

/// A cluster's part of a repository.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    cluster: String,
    retry: RetryPolicy,
}

/// Validates a cluster name: 1–64 of `[A-Za-z0-9_.-]`, not starting with a dot, not `_pitr`
/// (the repository's own records: the encryption record).
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name != "_pitr"
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// What an object is, as far as its S3 storage class is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectClass {
    /// A WAL segment (`<cluster>/wal/<TTTTTTTTXXXXXXXX>/<segment>.zst`).
    Wal,
    /// The data of a base backup: its chunks and manifest (`<cluster>/backups/<id>/….zst`).
    Backup,
}

/// The class of the object at `key` (relative to the repository's prefix); `None` for the
/// small objects that are read often and stay in the bucket's default class: the cluster
/// record, history files, catalog entries, reservations, leases, the receiver's partials.
pub fn object_class(key: &str) -> Option<ObjectClass> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [_, "wal", dir, name] if dir.len() == 16 && name.ends_with(".zst") => Some(ObjectClass::Wal),
        [_, "backups", _, .., name] if parts.len() >= 4 && name.ends_with(".zst") => Some(ObjectClass::Backup),
        _ => None,
    }
}

/// Whether S3 Object Lock (when configured) locks the object at `key` (relative to the
/// repository's prefix): the objects pitr never replaces and deletes only by retention, i.e.
/// WAL and history files under `wal/`, a backup's chunks and manifest, and catalog entries.
/// Not locked: what pitr replaces or deletes in normal operation (the receiver's partial
/// segment, uploaded again every second; restore leases; reservations, removed with a failed
/// backup), and the cluster record (never deleted, and read by every push).
pub fn locked_object(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [_, "wal", name] => name.ends_with(".history.zst"),
        [_, "backups", name] => name.ends_with(".json"),
        _ => object_class(key).is_some(),
    }
}

impl Repository {
    /// The part of `storage` that belongs to `cluster`.
    pub fn new(storage: Arc<dyn Storage>, cluster: &str, retry: RetryPolicy) -> Self {
        Repository { storage, cluster: cluster.to_string(), retry }
    }

    /// The backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The retry policy for calls on this repository.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    fn key(&self, rest: &str) -> ObjectKey {
        ObjectKey::new(format!("{}/{rest}", self.cluster)).expect("cluster names and WAL names make valid keys")
    }

    /// Key of the cluster record.
    pub fn cluster_info_key(&self) -> ObjectKey {
        self.key("cluster.json")
    }

    /// Key of a WAL file.
    pub fn wal_key(&self, name: &WalFileName) -> ObjectKey {
        match name.kind {
            WalFileKind::History => self.key(&format!("wal/{name}.zst")),
            _ => self.key(&format!("wal/{}/{name}.zst", name.timeline_log_prefix())),
        }
    }

    /// Key of the streaming receiver's growing segment `name` (a segment or `.partial`
    /// name): `<cluster>/receiver/<segment>.partial.zst`. Outside `wal/`: the receiver
    /// replaces it as the segment grows and removes it once the complete segment is stored.
    pub fn receiver_partial_key(&self, name: &WalFileName) -> ObjectKey {
        ObjectKey::new(format!("{}{}.zst", self.receiver_prefix(), name.with_kind(WalFileKind::Partial)))
            .expect("cluster names and WAL names make valid keys")
    }

    /// Prefix under which the receiver's partial objects live.
    pub fn receiver_prefix(&self) -> String {
        format!("{}/receiver/", self.cluster)
    }

    /// The object at `key`, decompressed and verified: its header and raw bytes, `None` when
    /// it does not exist.
    pub async fn read_object(&self, key: &ObjectKey) -> Result<Option<(ObjectHeader, Vec<u8>)>, RepositoryError> {
        let obj = match retry(self.retry, "read object", || read_all(self.storage.as_ref(), key)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut raw = Vec::new();
        let header = crate::codec::decompress(&obj[..], &mut raw)
            .map_err(|e| RepositoryError::Corrupt(format!("{key}: {e}")))?;
        Ok(Some((header, raw)))
    }

    /// The parsed history file of timeline `tli`, `None` when it is not archived.
    pub async fn history(&self, tli: TimelineId) -> Result<Option<Vec<HistoryEntry>>, RepositoryError> {
        let name = WalFileName::history(tli);
        let key = self.wal_key(&name);
        let Some((header, raw)) = self.read_object(&key).await? else {
            return Ok(None);
        };
        check_names(&key, &header, &name.to_string())?;
        history::parse(tli, &raw).map(Some).map_err(|e| RepositoryError::Corrupt(format!("archived {name}: {e}")))
    }

    /// Where timeline `tli` ended according to the repository's history files (see
    /// [`history::timeline_end`]).
    pub async fn timeline_end(&self, tli: TimelineId) -> Result<Option<Lsn>, RepositoryError> {
        history::timeline_end(tli, |t| self.history(t)).await
    }

    /// Prefix under which all WAL objects live.
    pub fn wal_prefix(&self) -> String {
        format!("{}/wal/", self.cluster)
    }

    /// The cluster record, if one was written.
    pub async fn cluster_info(&self) -> Result<Option<ClusterInfo>, RepositoryError> {
        let key = self.cluster_info_key();
        match retry(self.retry, "read cluster record", || read_all(self.storage.as_ref(), &key)).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| RepositoryError::Corrupt(format!("{key} is unreadable: {e}"))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records `info` as the cluster's identity unless one is recorded already; returns the
    /// record that is in force (which may differ from `info`: the caller must compare).
    pub async fn register_cluster(&self, info: &ClusterInfo) -> Result<ClusterInfo, RepositoryError> {
        let key = self.cluster_info_key();
        let body = serde_json::to_vec_pretty(info).map_err(|e| RepositoryError::Corrupt(e.to_string()))?;
        let put = retry(self.retry, "write cluster record", || {
            self.storage.put(&key, Body::Bytes(body.clone().into()), PutMode::CreateNew)
        })
        .await;
        match put {
            Ok(()) => Ok(info.clone()),
            Err(StorageError::AlreadyExists { .. }) => {
                self.cluster_info().await?.ok_or_else(|| RepositoryError::Corrupt(format!("{key} vanished")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The header of a stored WAL file, or `None` when the exact key does not exist.
    /// An object whose header names another file (one object copied or renamed over
    /// another's key) is damaged: `get` would otherwise serve another segment's WAL under this
    /// name, and the planner would take its summary for this segment's.
    pub async fn wal_header(&self, name: &WalFileName) -> Result<Option<ObjectHeader>, RepositoryError> {
        let key = self.wal_key(name);
        let header = self.object_header(&key).await?;
        if let Some(h) = &header {
            check_names(&key, h, &name.to_string())?;
        }
        Ok(header)
    }

    /// The WAL summary stored with a segment or `.partial` file, without downloading it:
    /// `None` when the object does not exist, `Some(None)` when it exists without a summary
    /// (history and `.backup` files, objects archived before summaries existed, a summary too
    /// large for a header), `Some(Some(summary))` otherwise.
    pub async fn wal_summary(&self, name: &WalFileName) -> Result<Option<Option<SegmentSummary>>, RepositoryError> {
        Ok(self.wal_header(name).await?.map(|h| h.wal))
    }

    /// The header of any object in the [`codec`](crate::codec) format, or `None` when the
    /// exact key does not exist: one ranged read of [`HEADER_LEN`] bytes, and a second one
    /// only for a longer header.
    pub async fn object_header(&self, key: &ObjectKey) -> Result<Option<ObjectHeader>, RepositoryError> {
        let corrupt = |e: crate::codec::CodecError| RepositoryError::Corrupt(format!("{key}: {e}"));
        let first = match retry(self.retry, "read object header", || self.storage.read_range(key, 0..HEADER_LEN as u64))
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = header_len(&first).map_err(corrupt)?;
        if len <= first.len() {
            return ObjectHeader::decode(&first).map(Some).map_err(corrupt);
        }
        let rest = match retry(self.retry, "read object header", || {
            self.storage.read_range(key, first.len() as u64..len as u64)
        })
        .await
        {
            Ok(b) => b,
            // Deleted between the two reads: as absent as it gets.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut whole = Vec::with_capacity(len);
        whole.extend_from_slice(&first);
        whole.extend_from_slice(&rest);
        ObjectHeader::decode(&whole).map(Some).map_err(corrupt)
    }
}

/// Checks that the object at `key` holds the file `expected` by its header's name.
pub fn check_names(key: &ObjectKey, header: &ObjectHeader, expected: &str) -> Result<(), RepositoryError> {
    if header.name == expected {
        Ok(())
    } else {
        Err(RepositoryError::Corrupt(format!(
            "{key} holds {:?}, not {expected:?} (an object stored under another file's name)",
            header.name
        )))
    }
}

/// The WAL file a listed key holds: the name of its last `/`-separated part without `.zst`,
/// when that is a WAL file name (keys under `wal/` and `receiver/`; anything else is `None`).
pub fn wal_file_of_key(key: &ObjectKey) -> Option<WalFileName> {
    let file = key.as_str().rsplit('/').next()?.strip_suffix(".zst")?;
    WalFileName::parse(file).ok()
}

/// Repository-level failures.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something stored is damaged or not in pitr's format.
    #[error("repository object is damaged: {0}")]
    Corrupt(String),
}

impl From<RepositoryError> for crate::exit::Failure {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::Storage(s) => s.into(),
            e @ RepositoryError::Corrupt(_) => crate::exit::Failure::new(crate::exit::FailureKind::Corrupt, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::TimelineId;
    use storage::memory::MemoryStorage;

    fn repo() -> Repository {
        Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0))
    }

    #[test]
    fn key_layout() {
        let r = repo();
        let seg = WalFileName::parse("000000010000000A000000FF").unwrap();
        assert_eq!(r.wal_key(&seg).as_str(), "main/wal/000000010000000A/000000010000000A000000FF.zst");
        let p = seg.with_kind(WalFileKind::Partial);
        assert_eq!(r.wal_key(&p).as_str(), "main/wal/000000010000000A/000000010000000A000000FF.partial.zst");
        let h = WalFileName::history(TimelineId(2));
        assert_eq!(r.wal_key(&h).as_str(), "main/wal/00000002.history.zst");
        assert_eq!(r.cluster_info_key().as_str(), "main/cluster.json");
    }

    #[tokio::test]
    async fn first_registration_wins() {
        let r = repo();
        assert_eq!(r.cluster_info().await.unwrap(), None);
        let a = ClusterInfo {
            system_id: SystemId(u64::MAX - 1),
            pg_major: PgMajor::from_magic(0xD110).unwrap(),
            segment_size: WalSegmentSize::DEFAULT,
            block_size: 8192,
        };
        let b = ClusterInfo { system_id: SystemId(7), ..a.clone() };
        assert_eq!(r.register_cluster(&a).await.unwrap(), a);
        assert_eq!(r.register_cluster(&b).await.unwrap(), a, "second registration returns the first");
        assert_eq!(r.cluster_info().await.unwrap(), Some(a));
    }

    async fn store(r: &Repository, name: &WalFileName, wal: Option<SegmentSummary>) -> ObjectHeader {
        let mut obj = std::io::Cursor::new(Vec::new());
        let data = vec![7u8; 4096];
        let h = crate::codec::compress_with_summary(
            &data,
            &mut std::io::empty(),
            &mut obj,
            &name.to_string(),
            Some(data.len() as u64),
            wal,
            crate::codec::CompressOptions::default(),
        )
        .unwrap();
        r.storage().put(&r.wal_key(name), Body::Bytes(obj.into_inner().into()), PutMode::CreateNew).await.unwrap();
        h
    }

    #[tokio::test]
    async fn headers_and_summaries_with_one_read_or_two() {
        use crate::lsn::Lsn;
        use crate::wal::record::{PgTimestamp, RestorePoint};
        use storage::faulty::FaultyStorage;

        let storage = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let r = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let short = WalFileName::parse("000000010000000000000003").unwrap();
        let long = WalFileName::parse("000000010000000000000004").unwrap();
        let old = WalFileName::parse("000000010000000000000005").unwrap();
        let absent = WalFileName::parse("000000010000000000000006").unwrap();
        let small = SegmentSummary { xact_ends: 3, xid_min: Some(10), xid_max: Some(12), ..Default::default() };
        let big = SegmentSummary {
            restore_points: (0..10)
                .map(|i| RestorePoint {
                    name: format!("point {i} {}", "x".repeat(40)),
                    lsn: Lsn(i),
                    time: PgTimestamp(0),
                })
                .collect(),
            ..small.clone()
        };
        let h_short = store(&r, &short, Some(small.clone())).await;
        let h_long = store(&r, &long, Some(big.clone())).await;
        let h_old = store(&r, &old, None).await;
        assert!(h_long.encoded_len() > HEADER_LEN);

        let calls = storage.calls();
        assert_eq!(r.wal_header(&short).await.unwrap(), Some(h_short));
        assert_eq!(storage.calls() - calls, 1, "a usual header takes one ranged read");
        let calls = storage.calls();
        assert_eq!(r.wal_header(&long).await.unwrap(), Some(h_long));
        assert_eq!(storage.calls() - calls, 2, "a long header takes a second read");
        assert_eq!(r.wal_header(&old).await.unwrap(), Some(h_old));

        assert_eq!(r.wal_summary(&short).await.unwrap(), Some(Some(small)));
        assert_eq!(r.wal_summary(&long).await.unwrap(), Some(Some(big)));
        assert_eq!(r.wal_summary(&old).await.unwrap(), Some(None), "stored without a summary");
        assert_eq!(r.wal_summary(&absent).await.unwrap(), None, "not stored");

        // Not a pitr object: damaged, not absent.
        let junk = WalFileName::parse("000000010000000000000007").unwrap();
        r.storage().put(&r.wal_key(&junk), Body::Bytes(vec![1u8; 300].into()), PutMode::CreateNew).await.unwrap();
        assert!(matches!(r.wal_summary(&junk).await, Err(RepositoryError::Corrupt(_))));
    }

    #[test]
    fn wal_files_of_listed_keys() {
        let r = repo();
        let seg = WalFileName::parse("000000010000000A000000FF").unwrap();
        for name in [seg, seg.with_kind(WalFileKind::Partial), WalFileName::history(TimelineId(3))] {
            assert_eq!(wal_file_of_key(&r.wal_key(&name)), Some(name));
        }
        assert_eq!(wal_file_of_key(&r.receiver_partial_key(&seg)), Some(seg.with_kind(WalFileKind::Partial)));
        for other in ["main/cluster.json", "main/wal/0000000100000000/junk.zst", "main/wal/00000002.history"] {
            assert_eq!(wal_file_of_key(&ObjectKey::new(other).unwrap()), None, "{other}");
        }
    }

    #[test]
    fn cluster_names() {
        assert!(valid_cluster_name("main"));
        assert!(valid_cluster_name("db-1.prod_eu"));
        for bad in ["_pitr", "", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_cluster_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn object_classes_follow_the_layout() {
        let repo = Repository::new(Arc::new(storage::memory::MemoryStorage::new()), "main", RetryPolicy::default());
        let seg = WalFileName::parse("000000010000000000000003").unwrap();
        let hist = WalFileName::parse("00000002.history").unwrap();
        assert_eq!(object_class(repo.wal_key(&seg).as_str()), Some(ObjectClass::Wal));
        assert_eq!(object_class(repo.wal_key(&hist).as_str()), None, "history files stay at hand");
        assert_eq!(object_class(repo.receiver_partial_key(&seg).as_str()), None);
        let id = "20261205T083549Z";
        assert_eq!(object_class(&crate::catalog::chunk_key("main", id, "base.tar", 0)), Some(ObjectClass::Backup));
        assert_eq!(object_class(&crate::catalog::manifest_key("main", id)), Some(ObjectClass::Backup));
        assert_eq!(object_class(&crate::catalog::entry_key("main", id)), None);
        assert_eq!(object_class(&crate::catalog::reservation_key("main", id)), None);
        assert_eq!(object_class("main/cluster.json"), None);
    }

    /// Object Lock covers what pitr never replaces nor deletes outside retention.
    #[test]
    fn locked_objects_follow_the_layout() {
        let repo = Repository::new(Arc::new(storage::memory::MemoryStorage::new()), "main", RetryPolicy::default());
        let seg = WalFileName::parse("000000010000000000000003").unwrap();
        let partial = WalFileName::parse("000000010000000000000003.partial").unwrap();
        let hist = WalFileName::parse("00000002.history").unwrap();
        let id = "20261205T083549Z";
        for locked in [
            repo.wal_key(&seg).to_string(),
            repo.wal_key(&partial).to_string(),
            repo.wal_key(&hist).to_string(),
            crate::catalog::chunk_key("main", id, "base.tar", 0),
            crate::catalog::manifest_key("main", id),
            crate::catalog::entry_key("main", id),
        ] {
            assert!(locked_object(&locked), "{locked}");
        }
        for free in [
            repo.receiver_partial_key(&seg).to_string(),
            crate::catalog::reservation_key("main", id),
            "main/leases/restore-0123abcd.json".to_string(),
            "main/cluster.json".to_string(),
        ] {
            assert!(!locked_object(&free), "{free}");
        }
    }
}
