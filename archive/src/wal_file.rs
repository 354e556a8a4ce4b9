//! What a valid WAL file is. `push` refuses a file that breaks a rule (nothing is stored),
//! `verify` reports an archived object that does, and `get` and the prefetch worker never hand
//! one to PostgreSQL: for a segment, PostgreSQL would find "unexpected pageaddr" or "invalid
//! magic number" and end recovery early at that point.
//!
//! A segment (or `.partial` file) is checked by its first page: a long page header of a
//! supported major version, the cluster's system identifier, major version, segment and block
//! size ([`identity`](crate::identity)), a file as long as a segment, the page address its
//! name says, and a timeline no later than its name's (a segment that starts a timeline
//! begins with the parent's page). History files must parse; backup history files start with
//! PostgreSQL's `START WAL LOCATION` line; both are small.

use common::lsn::Lsn;
use common::repository::ClusterInfo;
use common::wal::history::{self, HistoryEntry, HistoryError};
use common::wal::page_header::PageHeaderError;
use common::wal::{LongPageHeader, TimelineId, WalFileKind, WalFileName};

use crate::identity::{self, Mismatch};

/// History and backup history files are small text files; anything larger is not one.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// How a WAL file breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalProblem {
    /// The first page is not a segment's long page header (zeros, an unknown magic, ...).
    #[error("{0}")]
    Header(#[from] PageHeaderError),
    /// The first page belongs to another cluster, or has another geometry.
    #[error("{0}")]
    Identity(#[from] Mismatch),
    /// The file is not as long as a segment.
    #[error("file is {size} bytes but WAL segments of this cluster are {expected} bytes (truncated or damaged file)")]
    Size {
        /// Its length.
        size: u64,
        /// A segment's.
        expected: u64,
    },
    /// The first page is for another WAL position than the name says.
    #[error(
        "first page is for WAL position {found} but the file name says {expected} (misnamed or recycled file, or \
         another segment's content)"
    )]
    PageAddress {
        /// The page's address.
        found: Lsn,
        /// Where the named segment starts.
        expected: Lsn,
    },
    /// The first page is of a timeline after the name's.
    #[error("first page is from timeline {found}, after the file name's timeline {name}")]
    Timeline {
        /// The page's timeline.
        found: TimelineId,
        /// The name's.
        name: TimelineId,
    },
    /// The name does not fit the segment size.
    #[error("{0}")]
    Name(String),
    /// A history or backup history file that is too large to be one.
    #[error("{size} bytes is too large for a {kind} file")]
    TooLarge {
        /// Its length.
        size: u64,
        /// "history" or "backup history".
        kind: &'static str,
    },
    /// A history file that does not parse.
    #[error("{0}")]
    History(#[from] HistoryError),
    /// A backup history file without PostgreSQL's first line.
    #[error("not a backup history file (no START WAL LOCATION line)")]
    NotABackupLabel,
}

impl WalProblem {
    /// Another cluster's WAL (a conflict, not a damaged file): another system or major
    /// version.
    pub fn is_other_cluster(&self) -> bool {
        matches!(self, WalProblem::Identity(m) if !m.is_geometry())
    }
}

/// What a segment's first page says about its cluster.
pub fn identity_of(h: &LongPageHeader) -> ClusterInfo {
    ClusterInfo { system_id: h.system_id, pg_major: h.major, segment_size: h.segment_size, block_size: h.block_size }
}

/// A segment or `.partial` file of `file_size` bytes whose first page is `first_page` (at
/// least its first 40 bytes), against its name only: what a reader without the cluster
/// record checks (`get`, prefetch). Returns the header.
pub fn check_first_page(name: &WalFileName, first_page: &[u8], file_size: u64) -> Result<LongPageHeader, WalProblem> {
    let h = LongPageHeader::parse(first_page)?;
    if h.segment_size.bytes() != file_size {
        return Err(WalProblem::Size { size: file_size, expected: h.segment_size.bytes() });
    }
    let start = name.start_lsn(h.segment_size).map_err(|e| WalProblem::Name(e.to_string()))?.unwrap_or_default();
    if h.page_address != start {
        return Err(WalProblem::PageAddress { found: h.page_address, expected: start });
    }
    if h.timeline > name.timeline {
        return Err(WalProblem::Timeline { found: h.timeline, name: name.timeline });
    }
    Ok(h)
}

/// The same, and against the cluster record `cluster` of cluster `cluster_name`: what `push`
/// and `verify` check. The identity comes first (another cluster's segment is a conflict,
/// whatever else is wrong with it), then the length against the cluster's segment size.
pub fn check_segment(
    cluster_name: &str,
    cluster: &ClusterInfo,
    name: &WalFileName,
    first_page: &[u8],
    file_size: u64,
) -> Result<(), WalProblem> {
    let h = LongPageHeader::parse(first_page)?;
    identity::compare(cluster_name, cluster, &identity_of(&h))?;
    if file_size != cluster.segment_size.bytes() {
        return Err(WalProblem::Size { size: file_size, expected: cluster.segment_size.bytes() });
    }
    check_first_page(name, first_page, file_size).map(|_| ())
}

/// A history or backup history file's size, before it is read.
pub fn check_small_size(name: &WalFileName, size: u64) -> Result<(), WalProblem> {
    if size > MAX_SMALL_FILE {
        let kind = if name.kind == WalFileKind::History { "history" } else { "backup history" };
        return Err(WalProblem::TooLarge { size, kind });
    }
    Ok(())
}

/// A history or backup history file's content; a history file's entries.
pub fn check_small(name: &WalFileName, content: &[u8]) -> Result<Option<Vec<HistoryEntry>>, WalProblem> {
    check_small_size(name, content.len() as u64)?;
    match name.kind {
        WalFileKind::History => Ok(Some(history::parse(name.timeline, content)?)),
        WalFileKind::Backup if content.starts_with(b"START WAL LOCATION:") => Ok(None),
        WalFileKind::Backup => Err(WalProblem::NotABackupLabel),
        WalFileKind::Segment | WalFileKind::Partial => Ok(None),
    }
}

/// The raw size an archived object of WAL file `name` must record in its header.
pub fn check_stored_size(cluster: &ClusterInfo, name: &WalFileName, raw_size: u64) -> Result<(), WalProblem> {
    match name.kind {
        WalFileKind::Segment | WalFileKind::Partial if raw_size != cluster.segment_size.bytes() => {
            Err(WalProblem::Size { size: raw_size, expected: cluster.segment_size.bytes() })
        }
        WalFileKind::Segment | WalFileKind::Partial => Ok(()),
        WalFileKind::History | WalFileKind::Backup => check_small_size(name, raw_size),
    }
}

#[cfg(test)]
mod tests {
    use common::wal::{PgMajor, SystemId, WalSegmentSize};

    use super::*;

    const SIZE: u64 = 16 << 20;

    fn header(tli: u32, segno: u64, sysid: u64) -> [u8; 40] {
        LongPageHeader {
            major: PgMajor::from_magic(0xD110).unwrap(),
            info: 0x0002,
            timeline: TimelineId(tli),
            page_address: Lsn(segno * SIZE),
            system_id: SystemId(sysid),
            segment_size: WalSegmentSize::DEFAULT,
            block_size: 8192,
        }
        .encode()
    }

    fn cluster() -> ClusterInfo {
        identity_of(&LongPageHeader::parse(&header(1, 1, 42)).unwrap())
    }

    fn name(s: &str) -> WalFileName {
        WalFileName::parse(s).unwrap()
    }

    #[test]
    fn a_first_page_against_its_name() {
        let h = header(1, 1, 42);
        assert!(check_first_page(&name("000000010000000000000001"), &h, SIZE).is_ok());
        assert!(check_first_page(&name("000000010000000000000001.partial"), &h, SIZE).is_ok());
        assert!(check_first_page(&name("000000020000000000000001"), &h, SIZE).is_ok(), "the parent's page");
        let e = check_first_page(&name("000000010000000000000002"), &h, SIZE).unwrap_err();
        assert!(matches!(e, WalProblem::PageAddress { .. }) && e.to_string().contains("misnamed"), "{e}");
        let later = header(3, 1, 42);
        assert!(matches!(
            check_first_page(&name("000000020000000000000001"), &later, SIZE),
            Err(WalProblem::Timeline { .. })
        ));
        assert!(matches!(
            check_first_page(&name("000000010000000000000001"), &h, SIZE - 8192),
            Err(WalProblem::Size { .. })
        ));
        let e = check_first_page(&name("000000010000000000000001"), &[0; 40], SIZE).unwrap_err();
        assert!(e.to_string().contains("all zeros"), "{e}");
    }

    #[test]
    fn a_segment_against_the_cluster() {
        let n = name("000000010000000000000001");
        assert!(check_segment("main", &cluster(), &n, &header(1, 1, 42), SIZE).is_ok());
        let e = check_segment("main", &cluster(), &n, &header(1, 1, 43), SIZE).unwrap_err();
        assert!(e.is_other_cluster() && e.to_string().contains("belongs to database system 43"), "{e}");
        let e = check_segment("main", &cluster(), &n, &header(1, 1, 42), 1 << 20).unwrap_err();
        assert!(!e.is_other_cluster() && e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn small_files() {
        let h = name("00000002.history");
        assert_eq!(check_small(&h, b"1\t0/3000000\tno recovery target specified\n").unwrap().unwrap().len(), 1);
        assert!(matches!(check_small(&h, b"garbage"), Err(WalProblem::History(_))));
        let b = name("000000010000000000000003.00000028.backup");
        assert!(check_small(&b, b"START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n").is_ok());
        assert_eq!(check_small(&b, b"x"), Err(WalProblem::NotABackupLabel));
        assert!(matches!(check_small_size(&h, MAX_SMALL_FILE + 1), Err(WalProblem::TooLarge { .. })));
        assert!(check_stored_size(&cluster(), &name("000000010000000000000001"), SIZE).is_ok());
        assert!(check_stored_size(&cluster(), &name("000000010000000000000001"), 5).is_err());
        assert!(check_stored_size(&cluster(), &h, 100).is_ok());
    }
}
