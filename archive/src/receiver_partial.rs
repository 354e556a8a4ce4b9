//! When the streaming receiver's partial segment may serve a restore. The receiver uploads
//! the segment it is receiving as `<cluster>/receiver/<segment>.partial.zst` (valid WAL, then
//! zeros); where the archived WAL ends, `get` serves it under the segment's name and the
//! planner counts it as the archive's last segment. Both must agree, or a plan promises WAL
//! that `get` then refuses: the rule is here.
//!
//! The object must hold exactly that segment's `.partial` (its header's name), and the
//! segment's timeline must not have ended before the segment's end: once a history file says
//! timeline T forked at an LSN inside or before the segment, T's partial object is stale (its
//! WAL after the fork was never part of any history a restore follows).

use common::lsn::Lsn;
use common::wal::{WalFileKind, WalFileName, WalSegmentSize};

/// The name the partial object for `segment` carries in its header.
pub fn object_name(segment: &WalFileName) -> String {
    segment.with_kind(WalFileKind::Partial).to_string()
}

/// Whether the partial object for segment number `segno` may serve, given where the history
/// files say its timeline ended (`None`: it has not).
pub fn may_serve(timeline_end: Option<Lsn>, segno: u64, size: WalSegmentSize) -> bool {
    timeline_end.is_none_or(|end| end >= Lsn((segno + 1) * size.bytes()))
}

#[cfg(test)]
mod tests {
    use common::wal::TimelineId;

    use super::*;

    #[test]
    fn a_timeline_that_ended_before_the_segment_end_is_stale() {
        let size = WalSegmentSize::DEFAULT;
        let seg = size.bytes();
        assert!(may_serve(None, 5, size));
        assert!(may_serve(Some(Lsn(6 * seg)), 5, size), "ended exactly at the segment's end");
        assert!(!may_serve(Some(Lsn(6 * seg - 1)), 5, size), "ended inside the segment");
        assert!(!may_serve(Some(Lsn(2 * seg)), 5, size), "ended before it");
        let name = WalFileName::segment(TimelineId(1), 5, size);
        assert_eq!(object_name(&name), "000000010000000000000005.partial");
    }
}
