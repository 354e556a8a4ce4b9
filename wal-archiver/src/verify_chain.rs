//! The chain rule of `verify`, as a pure function of what is archived: which segments every
//! timeline must hold so that a restore can follow it, and which of them are missing.
//!
//! A timeline's WAL must be contiguous from the start of the checked range (or from where the
//! timeline begins: the segment holding its switch point, per its history file) up to its
//! end: for a timeline that a later history file names as a parent, the segment before the
//! one holding its earliest switch point (recovery reads the switch segment from the child
//! timeline, `XLogFileReadAnyTLI`), or its last archived segment if that is later (a parent
//! that went on after the switch, e.g. an old primary that kept running, is a history that
//! `--target-timeline` can follow, so a hole in it is a gap too). A timeline above 1 with WAL but no history file has unknown ancestry,
//! which recovery cannot follow.

use std::collections::{BTreeMap, BTreeSet};

use common::wal::history::{self, HistoryEntry};
use common::wal::{TimelineId, WalSegmentSize};

/// What the repository holds, as the chain check needs it.
#[derive(Debug, Clone, Default)]
pub struct Archived {
    /// Segment numbers archived on each timeline: complete segments and `.partial` files.
    pub segments: BTreeMap<TimelineId, BTreeSet<u64>>,
    /// The history files in the repository: their entries, `None` for one that is damaged.
    pub histories: BTreeMap<TimelineId, Option<Vec<HistoryEntry>>>,
}

/// One timeline as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineChain {
    /// The timeline.
    pub tli: TimelineId,
    /// The segment where it begins (the one holding its switch point; 0 for timeline 1),
    /// `None` when its history file is missing or damaged.
    pub begins: Option<u64>,
    /// Segments archived on it from the start of the range on: first, last, how many.
    pub archived: Option<(u64, u64, usize)>,
    /// The segments that must be archived on it, `None` when none must.
    pub required: Option<(u64, u64)>,
}

/// Segments `first..=last` of a timeline are required and missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The timeline.
    pub tli: TimelineId,
    /// First missing segment number.
    pub first: u64,
    /// Last missing segment number.
    pub last: u64,
}

/// The outcome of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// Every timeline with WAL in the range, a requirement, or a history file, in order.
    pub timelines: Vec<TimelineChain>,
    /// The missing stretches, by timeline and position.
    pub gaps: Vec<Gap>,
    /// Timelines above 1 that hold (or need) WAL but have no history file.
    pub missing_histories: Vec<TimelineId>,
}

/// Checks the chain of every timeline from segment `from` on. `must_hold` lists segments
/// that must be archived whatever the archive's extent (a backup's last segment): each
/// extends its timeline's required stretch to itself.
pub fn check(archived: &Archived, size: WalSegmentSize, from: u64, must_hold: &[(TimelineId, u64)]) -> Chain {
    let empty = BTreeSet::new();
    let mut tlis: BTreeSet<TimelineId> = archived.segments.keys().copied().collect();
    tlis.extend(archived.histories.keys().copied());
    tlis.extend(archived.histories.values().flatten().flatten().map(|e| e.parent));
    tlis.extend(must_hold.iter().map(|(t, _)| *t));
    let parsed = || archived.histories.values().flatten().map(Vec::as_slice);

    let mut out = Chain::default();
    for tli in tlis {
        let present = archived.segments.get(&tli).unwrap_or(&empty);
        let history = archived.histories.get(&tli);
        let begins = match history {
            _ if tli.0 == 1 => Some(0),
            Some(Some(h)) => h.last().map(|e| e.switch_point.segment_number(size)),
            _ => None,
        };
        let needs_wal = !present.is_empty() || must_hold.iter().any(|(t, _)| *t == tli);
        if tli.0 > 1 && history.is_none() && needs_wal {
            out.missing_histories.push(tli);
        }
        // Where the timeline stops being required: its last archived segment, and for a
        // parent at least the segment before its earliest switch segment. WAL a parent goes
        // on with after the switch (an old primary that kept running) is a history of its
        // own that `--target-timeline` can follow, so holes in it count too.
        let end = match history::ended_at(tli, parsed()) {
            Some(switch) => switch.segment_number(size).checked_sub(1).max(present.last().copied()),
            None => present.last().copied(),
        };
        let end = must_hold.iter().filter(|(t, _)| *t == tli).map(|(_, s)| Some(*s)).fold(end, Option::max);
        // Unknown beginning: from its first segment archived or needed, so that only holes
        // count.
        let first_known = must_hold.iter().filter(|(t, _)| *t == tli).map(|(_, s)| *s).chain(present.first().copied());
        let begin = begins.or_else(|| first_known.min()).unwrap_or(0);
        let lo = from.max(begin);
        let required = end.filter(|&hi| hi >= lo).map(|hi| (lo, hi));
        if let Some((lo, hi)) = required {
            let mut next = lo;
            for &s in present.range(lo..=hi) {
                if s > next {
                    out.gaps.push(Gap { tli, first: next, last: s - 1 });
                }
                next = s + 1;
            }
            if next <= hi {
                out.gaps.push(Gap { tli, first: next, last: hi });
            }
        }
        let in_range: Vec<u64> = present.range(from..).copied().collect();
        let archived_in_range = match (in_range.first(), in_range.last()) {
            (Some(&a), Some(&b)) => Some((a, b, in_range.len())),
            _ => None,
        };
        if archived_in_range.is_some() || required.is_some() || history.is_some() {
            out.timelines.push(TimelineChain { tli, begins, archived: archived_in_range, required });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: WalSegmentSize = WalSegmentSize::DEFAULT;

    fn t(n: u32) -> TimelineId {
        TimelineId(n)
    }

    fn entry(parent: u32, switch: &str) -> HistoryEntry {
        HistoryEntry { parent: t(parent), switch_point: switch.parse().unwrap(), reason: String::new() }
    }

    fn archived(segments: &[(u32, &[u64])], histories: &[(u32, Option<Vec<HistoryEntry>>)]) -> Archived {
        Archived {
            segments: segments.iter().map(|(tli, s)| (t(*tli), s.iter().copied().collect())).collect(),
            histories: histories.iter().map(|(tli, h)| (t(*tli), h.clone())).collect(),
        }
    }

    fn gap(tli: u32, first: u64, last: u64) -> Gap {
        Gap { tli: t(tli), first, last }
    }

    #[test]
    fn a_contiguous_timeline_has_no_gaps() {
        let a = archived(&[(1, &[3, 4, 5, 6])], &[]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!(c.gaps, vec![]);
        assert_eq!(c.missing_histories, vec![]);
        assert_eq!(
            c.timelines,
            vec![TimelineChain { tli: t(1), begins: Some(0), archived: Some((3, 6, 4)), required: Some((3, 6)) }]
        );
    }

    #[test]
    fn every_hole_is_one_gap() {
        let a = archived(&[(1, &[3, 5, 6, 9, 10])], &[]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!(c.gaps, vec![gap(1, 4, 4), gap(1, 7, 8)]);
        // Before the range nothing is required: starting at 5 only 7..8 are missing.
        assert_eq!(check(&a, SIZE, 5, &[]).gaps, vec![gap(1, 7, 8)]);
        // A range that starts before the first archived segment: those are missing too.
        assert_eq!(check(&a, SIZE, 1, &[]).gaps, vec![gap(1, 1, 2), gap(1, 4, 4), gap(1, 7, 8)]);
    }

    #[test]
    fn a_timeline_switch_is_followed() {
        // A promotion inside segment 5: timeline 1 ends with 5.partial, timeline 2 starts at
        // 5.
        let two = Some(vec![entry(1, "0/5000100")]);
        let a = archived(&[(1, &[3, 4, 5]), (2, &[5, 6, 7])], &[(2, two.clone())]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!(c.gaps, vec![]);
        assert_eq!(c.timelines[0].required, Some((3, 5)));
        assert_eq!(c.timelines[1].begins, Some(5));
        assert_eq!(c.timelines[1].required, Some((5, 7)));

        // Timeline 1 also went on after the switch (the old primary): a hole in what it
        // archived there is a gap of that history.
        let a = archived(&[(1, &[3, 4, 5, 6, 7, 9]), (2, &[5, 6, 7])], &[(2, two.clone())]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!(c.gaps, vec![gap(1, 8, 8)]);
        assert_eq!(c.timelines[0].required, Some((3, 9)));

        // A hole on either side of the switch is a gap.
        let a = archived(&[(1, &[3, 5]), (2, &[5, 7])], &[(2, two.clone())]);
        assert_eq!(check(&a, SIZE, 3, &[]).gaps, vec![gap(1, 4, 4), gap(2, 6, 6)]);

        // The parent is required up to its switch point even where nothing of it is archived
        // (switch at a segment boundary: 6 comes from timeline 2).
        let a = archived(&[(1, &[3]), (2, &[6, 7])], &[(2, Some(vec![entry(1, "0/6000000")]))]);
        assert_eq!(check(&a, SIZE, 3, &[]).gaps, vec![gap(1, 4, 5)]);

        // Three timelines: 3 forks from 2, whose history file is also archived.
        let three = Some(vec![entry(1, "0/5000100"), entry(2, "0/8000000")]);
        let a = archived(&[(1, &[3, 4]), (2, &[5, 6, 7, 8]), (3, &[8, 9])], &[(2, two), (3, three)]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!(c.gaps, vec![]);
        let required: Vec<_> = c.timelines.iter().map(|tl| (tl.tli.0, tl.required)).collect();
        assert_eq!(required, vec![(1, Some((3, 4))), (2, Some((5, 8))), (3, Some((8, 9)))]);
    }

    #[test]
    fn a_timeline_without_history_is_reported() {
        let a = archived(&[(1, &[3, 4]), (3, &[6, 7, 9])], &[]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!(c.missing_histories, vec![t(3)]);
        assert_eq!(c.timelines[1].begins, None);
        // Its beginning is unknown: only holes after its first segment are gaps.
        assert_eq!(c.gaps, vec![gap(3, 8, 8)]);

        // A damaged history file is not missing (it is reported as damaged), but its
        // beginning is unknown as well.
        let a = archived(&[(1, &[3, 4]), (3, &[6, 7])], &[(3, None)]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!((c.missing_histories, c.gaps), (vec![], vec![]));
        assert_eq!(c.timelines[1].begins, None);

        // A history file whose timeline has no WAL yet (just promoted) is fine.
        let a = archived(&[(1, &[3, 4])], &[(2, Some(vec![entry(1, "0/5000000")]))]);
        let c = check(&a, SIZE, 3, &[]);
        assert_eq!((c.missing_histories, c.gaps), (vec![], vec![]));
        assert_eq!(c.timelines[1], TimelineChain { tli: t(2), begins: Some(5), archived: None, required: None });
    }

    #[test]
    fn the_range_starts_at_the_oldest_backup_and_reaches_its_end() {
        // Segments before the range are neither listed nor required.
        let a = archived(&[(1, &[1, 4, 5, 6])], &[]);
        let c = check(&a, SIZE, 4, &[]);
        assert_eq!(c.gaps, vec![]);
        assert_eq!(c.timelines[0].archived, Some((4, 6, 3)));
        // A backup whose WAL goes further than the archive: the rest is missing.
        let c = check(&a, SIZE, 4, &[(t(1), 4), (t(1), 8)]);
        assert_eq!(c.gaps, vec![gap(1, 7, 8)]);
        // A backup on a timeline with no WAL at all (and, above 1, no history).
        let c = check(&a, SIZE, 4, &[(t(2), 8), (t(2), 9)]);
        assert_eq!(c.gaps, vec![gap(2, 8, 9)]);
        assert_eq!(c.missing_histories, vec![t(2)]);
    }
}
