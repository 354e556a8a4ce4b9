//! Which WAL a base backup needs: every segment from the one holding its start (redo) LSN to
//! the one holding the last byte before its stop LSN (PostgreSQL's `XLByteToSeg(start)` and
//! `XLByteToPrevSeg(stop)`). `basebackup create` waits for them before it records the backup
//! and writes their names into the catalog entry; `verify` checks them, the planner starts
//! recovery at the first, and `expire` keeps WAL from the lowest first segment of the kept
//! backups on. They all read the range from here.

use common::catalog::BackupEntry;
use common::lsn::Lsn;
use common::wal::{WalFileName, WalSegmentSize};

/// First and last segment numbers of the WAL from `start` to `stop`.
pub fn segment_range(start: Lsn, stop: Lsn, size: WalSegmentSize) -> (u64, u64) {
    let first = start.segment_number(size);
    let last = Lsn(stop.0.saturating_sub(1)).segment_number(size).max(first);
    (first, last)
}

/// The WAL a recorded backup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupWal {
    /// The first segment (on the backup's start timeline).
    pub first: WalFileName,
    /// Its number.
    pub first_segno: u64,
    /// The last segment (on the backup's stop timeline).
    pub last: WalFileName,
    /// Its number.
    pub last_segno: u64,
    /// The cluster's segment size.
    pub size: WalSegmentSize,
}

/// A catalog entry whose WAL range cannot be read (damage to the entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backup {id}: {what} in its catalog entry")]
pub struct BadRange {
    /// The backup.
    pub id: String,
    /// What is wrong.
    pub what: String,
}

impl BackupWal {
    /// The range recorded in backup `e`'s catalog entry (its `wal_start_segment` and
    /// `wal_stop_segment`, which `create` confirmed in the repository).
    pub fn of(e: &BackupEntry) -> Result<BackupWal, BadRange> {
        let bad = |what: String| BadRange { id: e.id.clone(), what };
        let size = WalSegmentSize::new(e.segment_size).map_err(|err| bad(err.to_string()))?;
        let parse = |field: &str, text: &str| {
            let name = WalFileName::parse(text).map_err(|_| bad(format!("{field} {text:?}")))?;
            let segno = name.segment_number(size).ok().flatten().ok_or_else(|| bad(format!("{field} {text:?}")))?;
            Ok::<_, BadRange>((name, segno))
        };
        let (first, first_segno) = parse("first WAL segment", &e.wal_start_segment)?;
        let (last, last_segno) = parse("last WAL segment", &e.wal_stop_segment)?;
        Ok(BackupWal { first, first_segno, last, last_segno, size })
    }

    /// The range backup `e` needs, from its LSNs (what the planner uses: also for entries
    /// whose recorded names it does not need).
    pub fn from_lsns(e: &BackupEntry, size: WalSegmentSize) -> BackupWal {
        let (first_segno, last_segno) = segment_range(e.start_lsn, e.stop_lsn, size);
        BackupWal {
            first: WalFileName::segment(e.start_timeline, first_segno, size),
            first_segno,
            last: WalFileName::segment(e.stop_timeline, last_segno, size),
            last_segno,
            size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_follow_postgres() {
        let s = WalSegmentSize::DEFAULT;
        assert_eq!(segment_range(l("0/3000028"), l("0/3000100"), s), (3, 3));
        assert_eq!(segment_range(l("0/3000028"), l("0/5000000"), s), (3, 4), "stop at a boundary");
        assert_eq!(segment_range(l("0/3000028"), l("0/5000001"), s), (3, 5));
        assert_eq!(segment_range(l("1/FF000028"), l("2/100"), s), (0x1FF, 0x200));
    }
}
