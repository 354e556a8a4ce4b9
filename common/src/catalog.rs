//! The backup catalog: what a finished base backup is, as recorded in the repository.
//!
//! Layout (beside the WAL of [`repository`](crate::repository)):
//! ```text
//! <cluster>/backups/<id>/<archive>/<NNNNNN>.zst   the archive's tar stream in chunks, codec format
//! <cluster>/backups/<id>/backup_manifest.zst      the server's manifest, codec format
//! <cluster>/backups/<id>/reservation.json         who took the id (created FIRST, create-if-absent)
//! <cluster>/backups/<id>.json                     this catalog entry, written LAST
//! ```
//! A backup without its catalog entry does not exist: readers list `backups/*.json` and
//! ignore chunk objects without one (an interrupted backup leaves only garbage to expire).
//! `<id>` is the UTC start time `YYYYMMDDTHHMMSSZ`, so ids sort in time order. Each archive
//! (`base.tar`, `<oid>.tar` per tablespace) is cut into chunks at arbitrary byte offsets;
//! concatenating the decompressed chunks in order gives the server's tar stream byte for
//! byte, and chunks compress, upload, download and decompress independently (in parallel).
//! Each chunk's codec header names it `<id>/<archive>/<NNNNNN>` (the manifest's:
//! `<id>/backup_manifest`), so an object found under another key than its own is detected.
//! The helpers below read the catalog the way every reader must: list `backups/` to enumerate,
//! then GET each entry by its exact key.

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;
use crate::repository::{Repository, RepositoryError};
use crate::retry::retry;
use crate::wal::{SystemId, TimelineId};
use storage::{read_all, ObjectInfo, ObjectKey};

/// Catalog format version written by this pitr.
pub const CATALOG_VERSION: u32 = 1;

/// One archive of a backup (the main data directory or one tablespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// Archive name as the server sent it: `base.tar` or `<oid>.tar`.
    pub name: String,
    /// Tablespace oid; `None` for the main data directory.
    pub tablespace_oid: Option<u32>,
    /// Tablespace location on the source server; `None` for the main data directory.
    pub tablespace_path: Option<String>,
    /// Number of chunk objects (`000000.zst` …).
    pub chunks: u32,
    /// Bytes of the uncompressed tar stream.
    pub raw_bytes: u64,
    /// Bytes stored (sum of the chunk objects).
    pub stored_bytes: u64,
}

/// A finished base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEntry {
    /// Catalog format version.
    pub version: u32,
    /// Backup id (`YYYYMMDDTHHMMSSZ`, UTC start time).
    pub id: String,
    /// Label given to BASE_BACKUP.
    pub label: String,
    /// System identifier of the source cluster.
    #[serde(with = "crate::catalog::sysid_text")]
    pub system_id: SystemId,
    /// `server_version_num` of the source server (e.g. 150018).
    pub server_version_num: u32,
    /// WAL segment size of the source cluster.
    pub segment_size: u64,
    /// Backup start (redo) LSN and timeline, from BASE_BACKUP's first result set.
    pub start_lsn: Lsn,
    /// Timeline at start.
    pub start_timeline: TimelineId,
    /// Backup end LSN and timeline, from BASE_BACKUP's last result set: the backup is
    /// consistent once WAL up to here is replayed.
    pub stop_lsn: Lsn,
    /// Timeline at stop.
    pub stop_timeline: TimelineId,
    /// Start time (UTC, RFC 3339), of the pitr host.
    pub start_time: String,
    /// Stop time (UTC, RFC 3339), of the pitr host.
    pub stop_time: String,
    /// The archives, in the order the server sent them.
    pub archives: Vec<ArchiveEntry>,
    /// SHA-256 of the manifest (its `Manifest-Checksum`).
    pub manifest_checksum: String,
    /// The WAL files (first and last segment name) that make the backup consistent; all were
    /// confirmed in the repository before this entry was written.
    pub wal_start_segment: String,
    /// Last WAL segment needed.
    pub wal_stop_segment: String,
    /// Sum of `raw_bytes` of all archives.
    pub raw_bytes: u64,
    /// Sum of `stored_bytes` of all archives and the manifest.
    pub stored_bytes: u64,
}

pub(crate) mod sysid_text {
    use crate::wal::SystemId;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &SystemId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.0.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(SystemId).map_err(serde::de::Error::custom)
    }
}

/// Key of a backup's catalog entry.
pub fn entry_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/backups/{id}.json")
}

/// Key of chunk `n` of `archive` in backup `id`.
pub fn chunk_key(cluster: &str, id: &str, archive: &str, n: u32) -> String {
    format!("{cluster}/backups/{id}/{archive}/{n:06}.zst")
}

/// Key of the object that reserves backup id `id` for one `basebackup create` (created
/// create-if-absent before anything else of the backup is stored; see `basebackup create`).
pub fn reservation_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/backups/{id}/reservation.json")
}

/// Key of a backup's manifest.
pub fn manifest_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/backups/{id}/backup_manifest.zst")
}

/// Prefix of everything a cluster's backups store.
pub fn backups_prefix(cluster: &str) -> String {
    format!("{cluster}/backups/")
}

/// Whether `id` has the form of a backup id (`YYYYMMDDTHHMMSSZ`).
pub fn valid_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The backup id of a catalog entry's key (`<cluster>/backups/<id>.json`), if it is one.
pub fn id_of_entry_key<'a>(cluster: &str, key: &'a str) -> Option<&'a str> {
    let id = key.strip_prefix(cluster)?.strip_prefix("/backups/")?.strip_suffix(".json")?;
    valid_backup_id(id).then_some(id)
}

/// The id of a backup starting at `t` (UTC, second precision).
pub fn backup_id(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The catalog entry of backup `id`, or `None` when its exact key does not exist.
pub async fn read_entry(repo: &Repository, id: &str) -> Result<Option<BackupEntry>, RepositoryError> {
    let key = ObjectKey::new(entry_key(repo.cluster(), id))?;
    match retry(repo.retry_policy(), "read backup entry", || read_all(repo.storage().as_ref(), &key)).await {
        Ok(bytes) => {
            let e = parse_entry(&key, &bytes)?;
            // Another backup's entry copied over this key would make a restore of "this"
            // backup read that one's chunks under this id's name checks, and fail late.
            if e.id != id {
                return Err(RepositoryError::Corrupt(format!(
                    "{key} is the catalog entry of backup {}, not {id}",
                    e.id
                )));
            }
            Ok(Some(e))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn parse_entry(key: &ObjectKey, bytes: &[u8]) -> Result<BackupEntry, RepositoryError> {
    let e: BackupEntry =
        serde_json::from_slice(bytes).map_err(|e| RepositoryError::Corrupt(format!("{key} is unreadable: {e}")))?;
    if e.version > CATALOG_VERSION {
        return Err(RepositoryError::Corrupt(format!(
            "{key} has catalog version {}, newer than this pitr ({CATALOG_VERSION})",
            e.version
        )));
    }
    Ok(e)
}

/// Reads an object of a recorded backup (a chunk or the manifest) whole; a missing one is
/// damage to that backup (exit 6), other failures are the repository's.
pub async fn read_backup_object(
    repo: &Repository,
    key: &ObjectKey,
    id: &str,
    what: &str,
) -> Result<bytes::Bytes, crate::exit::Failure> {
    use crate::exit::{Failure, FailureKind};
    match retry(repo.retry_policy(), "read backup object", || read_all(repo.storage().as_ref(), key)).await {
        Ok(b) => Ok(b),
        Err(storage::StorageError::NotFound { .. }) => Err(Failure::msg(
            FailureKind::Corrupt,
            format!("backup {id}: {what} ({key}) is missing from the repository"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// One object a recorded backup consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupObject {
    /// Its key.
    pub key: ObjectKey,
    /// The name its codec header carries: `<id>/<archive>/<NNNNNN>` or `<id>/backup_manifest`.
    pub name: String,
}

/// Every object of backup `id` with `archives`: each archive's chunks in order, then the
/// manifest.
pub fn backup_objects(
    cluster: &str,
    id: &str,
    archives: &[ArchiveEntry],
) -> Result<Vec<BackupObject>, RepositoryError> {
    let mut out = Vec::new();
    for a in archives {
        for n in 0..a.chunks {
            let key = ObjectKey::new(chunk_key(cluster, id, &a.name, n))?;
            out.push(BackupObject { key, name: format!("{id}/{}/{n:06}", a.name) });
        }
    }
    out.push(BackupObject { key: ObjectKey::new(manifest_key(cluster, id))?, name: format!("{id}/backup_manifest") });
    Ok(out)
}

/// Object header reads in flight at once in [`missing_objects`].
const PARALLEL_CHECKS: usize = 16;

/// The objects of backup `id` with `archives` that are missing, or that hold something else
/// than their key says (by their header's name), each with what is wrong; empty when every
/// one is there.
/// Exact-key reads of each object's header (a few hundred bytes each, [`PARALLEL_CHECKS`] at
/// a time), never a listing: what `basebackup create` checks before it writes the catalog
/// entry, and what the planner checks before it chooses a backup.
pub async fn missing_objects(
    repo: &Repository,
    id: &str,
    archives: &[ArchiveEntry],
) -> Result<Vec<String>, RepositoryError> {
    let objects = backup_objects(repo.cluster(), id, archives)?;
    let mut problems = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = objects.into_iter();
    loop {
        while tasks.len() < PARALLEL_CHECKS {
            let Some(o) = pending.next() else { break };
            let repo = repo.clone();
            tasks.spawn(async move {
                match repo.object_header(&o.key).await {
                    Ok(Some(h)) if h.name == o.name => Ok(None),
                    Ok(Some(h)) => Ok(Some(format!("{} holds {:?}, not {:?}", o.key, h.name, o.name))),
                    Ok(None) => Ok(Some(format!("{} is missing", o.key))),
                    Err(RepositoryError::Corrupt(m)) => Ok(Some(m)),
                    Err(err) => Err(err),
                }
            });
        }
        match tasks.join_next().await {
            None => break,
            Some(r) => {
                let r = r.map_err(|err| RepositoryError::Corrupt(format!("check task: {err}")))?;
                if let Some(p) = r? {
                    problems.push(p);
                }
            }
        }
    }
    problems.sort();
    Ok(problems)
}

/// Every finished backup of the repository's cluster, sorted by id: the catalog entries
/// found by listing `backups/`, each read by its exact key (chunk objects without an entry
/// are ignored).
pub async fn list_entries(repo: &Repository) -> Result<Vec<BackupEntry>, RepositoryError> {
    let prefix = backups_prefix(repo.cluster());
    let objects = retry(repo.retry_policy(), "list backups", || repo.storage().list(&prefix)).await?;
    entries_listed(repo, &objects).await
}

/// The catalog entries among `objects` (a listing of `backups/`), each read by its exact
/// key, sorted by id: [`list_entries`] for a caller that needs the listing itself as well.
pub async fn entries_listed(repo: &Repository, objects: &[ObjectInfo]) -> Result<Vec<BackupEntry>, RepositoryError> {
    let mut ids: Vec<String> =
        objects.iter().filter_map(|o| id_of_entry_key(repo.cluster(), o.key.as_str())).map(String::from).collect();
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        // Listed a moment ago: if it is gone now, it was expired meanwhile.
        if let Some(e) = read_entry(repo, &id).await? {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_round_trip() {
        assert_eq!(entry_key("main", "20261122T075600Z"), "main/backups/20261122T075600Z.json");
        assert_eq!(
            chunk_key("main", "20261122T075600Z", "base.tar", 7),
            "main/backups/20261122T075600Z/base.tar/000007.zst"
        );
        let e = BackupEntry {
            version: CATALOG_VERSION,
            id: "20261122T075600Z".into(),
            label: "x".into(),
            system_id: SystemId(u64::MAX),
            server_version_num: 150018,
            segment_size: 16 << 20,
            start_lsn: "0/3000028".parse().unwrap(),
            start_timeline: TimelineId(1),
            stop_lsn: "0/3000100".parse().unwrap(),
            stop_timeline: TimelineId(1),
            start_time: "2026-11-22T07:56:00Z".into(),
            stop_time: "2026-11-22T07:56:05Z".into(),
            archives: vec![],
            manifest_checksum: "00".into(),
            wal_start_segment: "000000010000000000000003".into(),
            wal_stop_segment: "000000010000000000000003".into(),
            raw_bytes: 0,
            stored_bytes: 0,
        };
        assert_eq!(backup_id(time::macros::datetime!(2026-11-22 07:56:00 UTC)), "20261122T075600Z");
        assert!(valid_backup_id("20261122T075600Z"));
        assert!(!valid_backup_id("20261122T075600"));
        assert_eq!(id_of_entry_key("main", "main/backups/20261122T075600Z.json"), Some("20261122T075600Z"));
        assert_eq!(id_of_entry_key("main", "main/backups/20261122T075600Z/base.tar/000000.zst"), None);
        assert_eq!(id_of_entry_key("main", "other/backups/20261122T075600Z.json"), None);
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains("\"18446744073709551615\""), "system id as text");
        assert_eq!(serde_json::from_str::<BackupEntry>(&j).unwrap(), e);
    }
}
