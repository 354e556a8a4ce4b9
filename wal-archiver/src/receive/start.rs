//! Where streaming starts: after the newest complete segment archived (or spooled) for the
//! timeline, else the replication slot's restart_lsn, else the server's position; and the
//! replication slot commands.

use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::pgwire::Connection;
use common::repository::{wal_file_of_key, Repository};
use common::retry::retry;
use common::wal::{TimelineId, WalFileKind, WalFileName, WalSegmentSize};

use super::errors::{pg_error, SessionError};
use super::spool;

/// `CREATE_REPLICATION_SLOT name PHYSICAL RESERVE_WAL`; an existing slot is fine.
pub(super) async fn create_slot(conn: &mut Connection, slot: &str) -> Result<(), SessionError> {
    valid_slot(slot)?;
    match conn.simple_query(&format!("CREATE_REPLICATION_SLOT {slot} PHYSICAL RESERVE_WAL")).await {
        Ok(_) => {
            tracing::info!(slot, "created the replication slot");
            Ok(())
        }
        Err(e) if e.sqlstate() == Some("42710") => Ok(()),
        Err(e) => Err(pg_error(&format!("cannot create replication slot {slot:?}"), e)),
    }
}

pub(super) fn valid_slot(slot: &str) -> Result<(), SessionError> {
    if slot.is_empty()
        || slot.len() > 63
        || !slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(SessionError::Fatal(Failure::msg(
            FailureKind::Usage,
            format!(
                "invalid replication slot name {slot:?}: use at most 63 lower case letters, digits and underscores"
            ),
        )));
    }
    Ok(())
}

/// `READ_REPLICATION_SLOT` (15+): the slot's restart_lsn; `None` for a slot that does not
/// exist or has not reserved WAL.
pub(super) async fn read_slot(conn: &mut Connection, slot: &str) -> Result<Option<Lsn>, SessionError> {
    valid_slot(slot)?;
    let sets = conn
        .simple_query(&format!("READ_REPLICATION_SLOT {slot}"))
        .await
        .map_err(|e| pg_error("READ_REPLICATION_SLOT", e))?;
    let Some(rs) = sets.first() else { return Ok(None) };
    let Some(lsn) = rs.get(0, "restart_lsn") else { return Ok(None) };
    Ok(lsn.parse::<Lsn>().ok().filter(|l| *l != Lsn::INVALID))
}

/// Where to start streaming: after the newest complete segment of `tli` that is archived
/// (LIST for a candidate, confirmed and extended by exact-key probes) or spooled; else the
/// slot's restart_lsn; else the server's position. Always a segment start, never beyond the
/// server's position.
pub async fn start_position(
    repo: &Repository,
    spool_dir: &std::path::Path,
    tli: TimelineId,
    seg_size: WalSegmentSize,
    server_pos: Lsn,
    slot_restart: Option<Lsn>,
) -> Result<(Lsn, &'static str), Failure> {
    let server_seg = server_pos.segment_number(seg_size);
    let exists = |segno: u64| {
        let name = WalFileName::segment(tli, segno, seg_size);
        async move { repo.wal_header(&name).await.map(|h| h.is_some()) }
    };

    // Candidates: the newest listed segment of this timeline, and the segment before the
    // server's current one (where an up-to-date archive_command would be).
    let prefix = repo.wal_prefix();
    let listed = retry(repo.retry_policy(), "list WAL", || repo.storage().list(&prefix)).await?;
    let newest_listed = listed
        .iter()
        .filter_map(|o| {
            let name = wal_file_of_key(&o.key)?;
            (name.kind == WalFileKind::Segment && name.timeline == tli).then_some(name)
        })
        .filter_map(|n| n.segment_number(seg_size).ok().flatten())
        .filter(|&s| s <= server_seg)
        .max();
    let mut newest: Option<u64> = None;
    if let Some(s) = newest_listed {
        if exists(s).await? {
            newest = Some(s);
        }
    }
    if server_seg > 0 && newest.is_none_or(|n| n < server_seg - 1) && exists(server_seg - 1).await? {
        newest = Some(server_seg - 1);
    }
    // Listings may lag: probe forward by exact key.
    if let Some(mut n) = newest {
        while n < server_seg && exists(n + 1).await? {
            n += 1;
        }
        newest = Some(n);
    }
    let mut why = "after the newest segment archived";
    // Complete segments still waiting in the spool count as received.
    let content = spool::scan(spool_dir).map_err(|e| Failure::msg(FailureKind::LocalIo, e).transient())?;
    let on_tli = |files: &[(WalFileName, std::path::PathBuf)]| {
        files
            .iter()
            .filter(|(n, _)| n.timeline == tli)
            .filter_map(|(n, _)| n.segment_number(seg_size).ok().flatten())
            .filter(|&s| s <= server_seg)
            .max()
    };
    let spooled = on_tli(&content.complete);
    if spooled > newest {
        newest = spooled;
        why = "after the newest segment in the spool";
    }
    // A segment being received when the receiver last stopped (its spool file, or its
    // partial object if the spool is gone): start again at its beginning, never after it.
    let prefix = repo.receiver_prefix();
    let receiver_objects = retry(repo.retry_policy(), "list partial objects", || repo.storage().list(&prefix)).await?;
    let partial_object = receiver_objects
        .iter()
        .filter_map(|o| {
            let name = wal_file_of_key(&o.key)?;
            (name.kind == WalFileKind::Partial && name.timeline == tli).then_some(name)
        })
        .filter_map(|n| n.segment_number(seg_size).ok().flatten())
        .filter(|&s| s <= server_seg)
        .max();
    let growing = on_tli(&content.partial).max(partial_object);
    let server_start = server_pos.segment_start(seg_size);
    let start = match (newest, growing, slot_restart) {
        (n, Some(g), _) if n.is_none_or(|n| g > n) => {
            (Lsn(g * seg_size.bytes()), "the segment that was being received when the receiver stopped")
        }
        (Some(n), _, _) => (Lsn((n + 1) * seg_size.bytes()), why),
        (None, _, Some(slot)) => (slot.segment_start(seg_size), "the replication slot's restart_lsn"),
        (None, _, None) => (server_start, "the server's current position: nothing archived on this timeline yet"),
    };
    Ok((start.0.min(server_start), start.1))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{Body, PutMode};

    fn repo() -> Repository {
        Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0))
    }

    async fn put(r: &Repository, name: &str) {
        let name = WalFileName::parse(name).unwrap();
        let mut obj = std::io::Cursor::new(Vec::new());
        let data = vec![1u8; 64];
        common::codec::compress(
            &data,
            &mut std::io::empty(),
            &mut obj,
            &name.to_string(),
            Some(64),
            common::codec::CompressOptions::default(),
        )
        .unwrap();
        r.storage().put(&r.wal_key(&name), Body::Bytes(obj.into_inner().into()), PutMode::CreateNew).await.unwrap();
    }

    #[tokio::test]
    async fn start_positions() {
        let seg = WalSegmentSize::DEFAULT;
        let spool = tempfile::tempdir().unwrap();
        let tli = TimelineId(1);
        let at = |segno: u64, off: u64| Lsn(segno * seg.bytes() + off);
        let r = repo();
        // Nothing archived: the slot, else the server's segment start.
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), None).await.unwrap().0, at(9, 0));
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), Some(at(4, 7))).await.unwrap().0, at(4, 0));
        // Archived 3..=5 on timeline 1 and 8 on timeline 2: start at 6.
        for n in ["000000010000000000000003", "000000010000000000000004", "000000010000000000000005"] {
            put(&r, n).await;
        }
        put(&r, "000000020000000000000008").await;
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), Some(at(4, 7))).await.unwrap().0, at(6, 0));
        // The segment before the server's one is found by exact key even if never listed
        // first; and what the spool holds counts.
        put(&r, "000000010000000000000008").await;
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), None).await.unwrap().0, at(9, 0));
        std::fs::write(spool.path().join("000000010000000000000009"), b"x").unwrap();
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(10, 0), None).await.unwrap().0, at(10, 0));
        // A segment that was being received: started again from its beginning, even when
        // the server has moved on.
        std::fs::write(spool.path().join("00000001000000000000000A.partial"), b"x").unwrap();
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(12, 9), None).await.unwrap().0, at(10, 0));
        // Or, with the spool gone, its partial object in the repository.
        let r2 = repo();
        let key = common::storage::ObjectKey::new("main/receiver/000000010000000000000007.partial.zst").unwrap();
        r2.storage().put(&key, Body::Bytes(vec![0u8; 8].into()), PutMode::CreateNew).await.unwrap();
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(start_position(&r2, empty.path(), tli, seg, at(12, 9), None).await.unwrap().0, at(7, 0));
        // Never beyond the server.
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(7, 5), None).await.unwrap().0, at(6, 0));
    }
}
