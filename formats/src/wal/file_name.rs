//! WAL file names as PostgreSQL's archiver and startup process use them.
//!
//! Mirrors `XLogFileName`, `TLHistoryFileName`, `BackupHistoryFileName` and the `.partial`
//! suffix (`xlog_internal.h`). A segment name is `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then
//! the segment number split by `XLogSegmentsPerXLogId`, so turning a name into an LSN needs
//! the segment size. Names are upper-case hex; anything else is refused.

use std::fmt;

use super::{InvalidSegmentSize, TimelineId, WalSegmentSize};
use crate::lsn::Lsn;

/// What kind of file a WAL archive name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalFileKind {
    /// A complete segment: `000000010000000000000003`.
    Segment,
    /// A segment that ended early (promotion, or the receiver's growing segment):
    /// `000000010000000000000003.partial`.
    Partial,
    /// A timeline history file: `00000002.history`.
    History,
    /// A backup history file: `000000010000000000000003.00000028.backup`.
    Backup,
}

/// A parsed WAL archive file name. The segment fields are kept as written (`log`, `seg`)
/// so that no segment size is needed to parse or print a name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalFileName {
    /// Timeline (for a history file: the timeline it describes).
    pub timeline: TimelineId,
    /// High field of the segment name (`segno / XLogSegmentsPerXLogId`); 0 for history files.
    pub log: u32,
    /// Low field of the segment name (`segno % XLogSegmentsPerXLogId`); 0 for history files.
    pub seg: u32,
    /// What the name denotes.
    pub kind: WalFileKind,
    /// For a `.backup` file: the start LSN's offset within the segment.
    pub backup_offset: u32,
}

/// The name is not one of PostgreSQL's WAL archive file names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalFileNameError {
    /// Not of any recognised form.
    #[error(
        "{0:?} is not a WAL file name: expected 24 upper-case hex digits (optionally with \
         .partial or .NNNNNNNN.backup) or NNNNNNNN.history"
    )]
    Malformed(String),
    /// Timeline 0 does not exist.
    #[error("{0:?} names timeline 0, which PostgreSQL never uses")]
    TimelineZero(String),
    /// The low field is out of range for the segment size.
    #[error("{name:?} is not a valid segment name for {size} segments (third field must be < {max:X})")]
    OutOfRange {
        /// The name.
        name: String,
        /// The segment size.
        size: WalSegmentSize,
        /// The exclusive maximum of the third field.
        max: u64,
    },
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl WalFileName {
    /// Parses a file name (no directory part).
    pub fn parse(name: &str) -> Result<Self, WalFileNameError> {
        let malformed = || WalFileNameError::Malformed(name.to_string());
        let (kind, stem, backup_offset) = if let Some(t) = name.strip_suffix(".history") {
            let tli = hex8(t).ok_or_else(malformed)?;
            if tli == 0 {
                return Err(WalFileNameError::TimelineZero(name.to_string()));
            }
            return Ok(WalFileName::history(TimelineId(tli)));
        } else if let Some(s) = name.strip_suffix(".partial") {
            (WalFileKind::Partial, s, 0)
        } else if let Some(s) = name.strip_suffix(".backup") {
            let (seg, off) = s.split_once('.').ok_or_else(malformed)?;
            (WalFileKind::Backup, seg, hex8(off).ok_or_else(malformed)?)
        } else {
            (WalFileKind::Segment, name, 0)
        };
        if stem.len() != 24 || !stem.is_ascii() {
            return Err(malformed());
        }
        let tli = hex8(&stem[0..8]).ok_or_else(malformed)?;
        let log = hex8(&stem[8..16]).ok_or_else(malformed)?;
        let seg = hex8(&stem[16..24]).ok_or_else(malformed)?;
        if tli == 0 {
            return Err(WalFileNameError::TimelineZero(name.to_string()));
        }
        Ok(WalFileName { timeline: TimelineId(tli), log, seg, kind, backup_offset })
    }

    /// The history file of `timeline`.
    pub fn history(timeline: TimelineId) -> Self {
        WalFileName { timeline, log: 0, seg: 0, kind: WalFileKind::History, backup_offset: 0 }
    }

    /// The complete segment `segno` of `timeline` (`XLogFileName`).
    pub fn segment(timeline: TimelineId, segno: u64, size: WalSegmentSize) -> Self {
        let per = size.segments_per_xlog_id();
        WalFileName {
            timeline,
            log: (segno / per) as u32,
            seg: (segno % per) as u32,
            kind: WalFileKind::Segment,
            backup_offset: 0,
        }
    }

    /// The same segment with another kind (e.g. the `.partial` of a segment).
    pub fn with_kind(self, kind: WalFileKind) -> Self {
        WalFileName { kind, ..self }
    }

    /// The segment number this name denotes, checking the third field against the segment
    /// size. History files have none.
    pub fn segment_number(&self, size: WalSegmentSize) -> Result<Option<u64>, WalFileNameError> {
        if self.kind == WalFileKind::History {
            return Ok(None);
        }
        let per = size.segments_per_xlog_id();
        if u64::from(self.seg) >= per {
            return Err(WalFileNameError::OutOfRange { name: self.to_string(), size, max: per });
        }
        Ok(Some(u64::from(self.log) * per + u64::from(self.seg)))
    }

    /// The LSN where this segment starts.
    pub fn start_lsn(&self, size: WalSegmentSize) -> Result<Option<Lsn>, WalFileNameError> {
        Ok(self.segment_number(size)?.map(|n| Lsn(n * size.bytes())))
    }

    /// `TTTTTTTTXXXXXXXX`: timeline and high field, the directory that groups the segments
    /// of one 4 GiB stretch of one timeline in the repository.
    pub fn timeline_log_prefix(&self) -> String {
        format!("{:08X}{:08X}", self.timeline.0, self.log)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == WalFileKind::History {
            return write!(f, "{:08X}.history", self.timeline.0);
        }
        write!(f, "{:08X}{:08X}{:08X}", self.timeline.0, self.log, self.seg)?;
        match self.kind {
            WalFileKind::Partial => f.write_str(".partial"),
            WalFileKind::Backup => write!(f, ".{:08X}.backup", self.backup_offset),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalFileName({self})")
    }
}

impl From<InvalidSegmentSize> for WalFileNameError {
    fn from(e: InvalidSegmentSize) -> Self {
        WalFileNameError::Malformed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEG16: WalSegmentSize = WalSegmentSize::DEFAULT;

    #[test]
    fn parses_every_kind() {
        let s = WalFileName::parse("000000010000000A000000FF").unwrap();
        assert_eq!((s.timeline, s.log, s.seg, s.kind), (TimelineId(1), 0xA, 0xFF, WalFileKind::Segment));
        assert_eq!(s.segment_number(SEG16).unwrap(), Some(0xA * 256 + 0xFF));
        assert_eq!(s.start_lsn(SEG16).unwrap(), Some("A/FF000000".parse().unwrap()));

        let p = WalFileName::parse("000000020000000000000007.partial").unwrap();
        assert_eq!(p.kind, WalFileKind::Partial);
        assert_eq!(p.to_string(), "000000020000000000000007.partial");

        let h = WalFileName::parse("0000000A.history").unwrap();
        assert_eq!((h.timeline, h.kind), (TimelineId(10), WalFileKind::History));
        assert_eq!(h.to_string(), "0000000A.history");

        let b = WalFileName::parse("000000010000000000000003.00000028.backup").unwrap();
        assert_eq!((b.kind, b.backup_offset), (WalFileKind::Backup, 0x28));
        assert_eq!(b.to_string(), "000000010000000000000003.00000028.backup");
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "00000001000000000000000g",
            "00000001000000000000000a",
            "000000000000000000000001",
            "00000000.history",
            "1.history",
            "000000010000000000000001.part",
            "000000010000000000000001.backup",
            "RECOVERYXLOG",
            "../000000010000000000000001",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn third_field_depends_on_segment_size() {
        let n = WalFileName::parse("0000000100000000000000FF").unwrap();
        assert!(n.segment_number(SEG16).is_ok());
        let seg64 = WalSegmentSize::new(64 << 20).unwrap();
        assert!(n.segment_number(seg64).is_err(), "64 MiB segments have only 64 per xlogid");
        let seg1g = WalSegmentSize::new(1 << 30).unwrap();
        let n = WalFileName::segment(TimelineId(3), 9, seg1g);
        assert_eq!(n.to_string(), "000000030000000200000001");
    }

    proptest! {
        #[test]
        fn segment_round_trip(tli in 1u32.., segno in 0u64..(1 << 40), shift in 20u32..=30) {
            let size = WalSegmentSize::new(1 << shift).unwrap();
            let segno = segno % (u64::from(u32::MAX) * size.segments_per_xlog_id());
            let name = WalFileName::segment(TimelineId(tli), segno, size);
            let parsed = WalFileName::parse(&name.to_string()).unwrap();
            prop_assert_eq!(parsed, name);
            prop_assert_eq!(parsed.segment_number(size).unwrap(), Some(segno));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = WalFileName::parse(&s);
        }
    }
}
