//! The timeline path recovery follows: the target timeline and its ancestors from its history
//! file, each valid for a range of LSNs, and which timeline's file PostgreSQL reads for each
//! segment (`XLogFileReadAnyTLI`: the newest timeline on the path that began at or before the
//! segment, so the segment holding a switch point comes from the child timeline). Restores
//! plan along it; retention keeps the backups that lie on it.

use super::history::HistoryEntry;
use super::{TimelineId, WalSegmentSize};
use crate::lsn::Lsn;

/// One timeline on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathEntry {
    /// The timeline.
    pub tli: TimelineId,
    /// First LSN on it (0 for the first timeline).
    pub begin: Lsn,
    /// The switch point to the next timeline on the path; `None` for the target timeline.
    pub end: Option<Lsn>,
}

/// The target timeline and its ancestors, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePath {
    /// The timelines, oldest first; the last one is the target.
    pub entries: Vec<PathEntry>,
}

impl TimelinePath {
    /// The path to `target` given its history file's entries (empty for timeline 1).
    pub fn new(target: TimelineId, history: &[HistoryEntry]) -> TimelinePath {
        let mut entries = Vec::with_capacity(history.len() + 1);
        let mut begin = Lsn(0);
        for h in history {
            entries.push(PathEntry { tli: h.parent, begin, end: Some(h.switch_point) });
            begin = h.switch_point;
        }
        entries.push(PathEntry { tli: target, begin, end: None });
        TimelinePath { entries }
    }

    /// The target timeline.
    pub fn target(&self) -> TimelineId {
        self.entries.last().map(|e| e.tli).unwrap_or(TimelineId(1))
    }

    /// The entry of `tli`, when it is on the path.
    pub fn entry(&self, tli: TimelineId) -> Option<&PathEntry> {
        self.entries.iter().find(|e| e.tli == tli)
    }

    /// True when WAL at `lsn` written on `tli` is part of this path (`begin <= lsn <= end`).
    pub fn holds(&self, tli: TimelineId, lsn: Lsn) -> bool {
        self.entry(tli).is_some_and(|e| e.begin <= lsn && e.end.is_none_or(|end| lsn <= end))
    }

    /// The timeline whose file PostgreSQL reads for segment `segno`.
    pub fn tli_for_segment(&self, segno: u64, size: WalSegmentSize) -> TimelineId {
        self.entries
            .iter()
            .rev()
            .find(|e| e.begin.segment_number(size) <= segno)
            .map(|e| e.tli)
            .unwrap_or_else(|| self.target())
    }

    /// "1 → 2 (at 0/5000000) → 3 (at ...)".
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.entries.iter().enumerate() {
            if i == 0 {
                out.push_str(&e.tli.to_string());
            } else {
                out.push_str(&format!(" → {} (from {})", e.tli, e.begin));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    #[test]
    fn path_and_segment_timelines() {
        let size = WalSegmentSize::DEFAULT;
        let one = TimelinePath::new(TimelineId(1), &[]);
        assert_eq!(one.tli_for_segment(7, size), TimelineId(1));
        assert!(one.holds(TimelineId(1), lsn("5/0")));
        let h = [
            HistoryEntry { parent: TimelineId(1), switch_point: lsn("0/5000100"), reason: String::new() },
            HistoryEntry { parent: TimelineId(2), switch_point: lsn("0/9000000"), reason: String::new() },
        ];
        let p = TimelinePath::new(TimelineId(3), &h);
        assert_eq!(p.target(), TimelineId(3));
        assert_eq!(p.tli_for_segment(4, size), TimelineId(1));
        assert_eq!(p.tli_for_segment(5, size), TimelineId(2), "the switch segment comes from the child");
        assert_eq!(p.tli_for_segment(8, size), TimelineId(2));
        assert_eq!(p.tli_for_segment(9, size), TimelineId(3));
        assert!(p.holds(TimelineId(1), lsn("0/5000100")));
        assert!(!p.holds(TimelineId(1), lsn("0/5000101")), "timeline 1 past its switch point is another history");
        assert!(p.holds(TimelineId(2), lsn("0/6000000")));
        assert!(!p.holds(TimelineId(4), lsn("0/6000000")));
        assert_eq!(p.describe(), "1 → 2 (from 0/5000100) → 3 (from 0/9000000)");
    }
}
