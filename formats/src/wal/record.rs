//! Walking the records of one WAL segment, to summarise what point-in-time recovery planning
//! needs: commit and abort times, restore points, segment switches and timeline switches.
//!
//! Mirrors `XLogRecord` and the block/data headers of `xlogrecord.h` (PostgreSQL 13–18) and
//! the page-continuation rules of `xlogreader.c`. Records are validated like PostgreSQL
//! validates them (page address, `xl_prev` chain, CRC-32C over the body then the header), and
//! the walk stops at the first record that does not check out: the end of valid WAL. A record
//! that starts in this segment but ends in the next one is not seen (its start is reported as
//! `incomplete_tail_at`); continuation bytes of a record from the previous segment are skipped.
//!
//! A [`SegmentSummary`] is stored in the header of every archived segment (see
//! `docs/repository.md`), so its serialized form is compact and keeps only what restore
//! planning needs: short keys, absent fields for `None`/zero/empty, numbers for LSNs and times,
//! and the upper bound of each range as a difference from the lower one.

use serde::{Deserialize, Serialize};

use super::page_header::LONG_HEADER_SIZE;
use super::{u16_at, u32_at, u64_at, LongPageHeader, PgMajor, TimelineId, WalSegmentSize};
use crate::lsn::Lsn;

/// `SizeOfXLogShortPHD`.
const SHORT_HEADER_SIZE: usize = 24;
/// `SizeOfXLogRecord`.
const RECORD_HEADER_SIZE: usize = 24;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_END_OF_RECOVERY: u8 = 0x90;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// `xl_xact_xinfo` flags (`xact.h`) that decide where the two-phase xid sits.
const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
/// PostgreSQL 15 and later.
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;
/// Highest built-in resource manager id of PostgreSQL 13–18 (`RM_MAX_BUILTIN_ID`, logical
/// message = 21).
const RM_MAX_BUILTIN_ID: u8 = 21;
/// Lowest id of an extension's resource manager (`RM_MIN_CUSTOM_ID`, PostgreSQL 15 and later;
/// up to 255).
const RM_MIN_CUSTOM_ID: u8 = 128;

/// Whether `rmid` names a resource manager PostgreSQL `major` accepts (`RmgrIdIsValid`): a
/// built-in one, or from 15 on a custom one; anything else ends the valid WAL.
fn valid_rmid(rmid: u8, major: PgMajor) -> bool {
    rmid <= RM_MAX_BUILTIN_ID || (major.number() >= 15 && rmid >= RM_MIN_CUSTOM_ID)
}

/// A PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgTimestamp(pub i64);

/// Seconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

impl PgTimestamp {
    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0 + PG_EPOCH_UNIX_SECS * 1_000_000
    }

    /// From microseconds since the Unix epoch.
    pub fn from_unix_micros(us: i64) -> Self {
        PgTimestamp(us - PG_EPOCH_UNIX_SECS * 1_000_000)
    }

    /// As a UTC date-time.
    pub fn to_datetime(self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.unix_micros()) * 1000).ok()
    }
}

impl std::fmt::Display for PgTimestamp {
    /// `2026-11-22 07:15:01.123456+00`, the form `recovery_target_time` accepts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fmt =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00");
        match self.to_datetime().and_then(|d| d.format(&fmt).ok()) {
            Some(s) => f.write_str(&s),
            None => write!(f, "<timestamp {}>", self.0),
        }
    }
}

/// A named restore point (`pg_create_restore_point`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// Its name.
    pub name: String,
    /// LSN of the record (recovery to this name stops right after it).
    pub lsn: Lsn,
    /// When it was created.
    pub time: PgTimestamp,
}

/// What a segment holds, for planning a recovery without downloading WAL again.
///
/// Serialized in the compact stored form of [`stored::Summary`]: `first_record`,
/// `incomplete_tail_at` and `stopped` are not stored (they read back as `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "stored::Summary", from = "stored::Summary")]
pub struct SegmentSummary {
    /// Start LSN of the first record that starts in the segment.
    pub first_record: Option<Lsn>,
    /// End of the last valid record that ends in the segment.
    pub valid_end: Option<Lsn>,
    /// Start of a record that begins here and continues in the next segment.
    pub incomplete_tail_at: Option<Lsn>,
    /// Transaction commits and aborts (the records a time target is compared with).
    pub xact_ends: u32,
    /// Earliest commit/abort time.
    pub first_xact_time: Option<PgTimestamp>,
    /// Latest commit/abort time.
    pub last_xact_time: Option<PgTimestamp>,
    /// Smallest transaction id ended by a commit or abort record here: the id that
    /// `recovery_target_xid` is compared with (`recoveryStopsBefore`): the record's `xl_xid`
    /// for COMMIT and ABORT (for the rollback of a subtransaction, the subtransaction's id,
    /// which recovery compares too), the prepared transaction's id from the record body for
    /// COMMIT PREPARED and ABORT PREPARED. Plain numeric order: when xids wrap around inside
    /// the segment, `xid_min..=xid_max` still holds every xid seen but is not tight.
    pub xid_min: Option<u32>,
    /// Largest such transaction id.
    pub xid_max: Option<u32>,
    /// Restore points created here.
    pub restore_points: Vec<RestorePoint>,
    /// The segment ends early with an `XLOG_SWITCH` at this LSN.
    pub switch_at: Option<Lsn>,
    /// A timeline switch (end of recovery) recorded here: (this timeline, previous timeline).
    pub timeline_switch: Option<(TimelineId, TimelineId)>,
    /// Why the walk stopped before the end of the segment, if it did.
    pub stopped: Option<String>,
}

/// The segment's first page is not a valid long page header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable WAL segment: {0}")]
pub struct RecordError(pub String);

fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

/// Summarises a whole segment held in memory (`seg.len()` must be the segment size).
pub fn summarize(seg: &[u8]) -> Result<SegmentSummary, RecordError> {
    let long = LongPageHeader::parse(seg).map_err(|e| RecordError(e.to_string()))?;
    let seg_size = long.segment_size;
    if seg.len() as u64 != seg_size.bytes() {
        return Err(RecordError(format!("{} bytes, expected {}", seg.len(), seg_size.bytes())));
    }
    // Every byte of the segment must have an LSN: a damaged header can claim a page address
    // so close to the end of the LSN space that the walker's positions would overflow.
    if long.page_address.0.checked_add(seg_size.bytes()).is_none() {
        return Err(RecordError(format!("page address {} is past the last segment", long.page_address)));
    }
    let mut w = Walker { seg, start: long.page_address, block: long.block_size as usize, major: long.major, seg_size };
    Ok(w.run())
}

struct Walker<'a> {
    seg: &'a [u8],
    start: Lsn,
    block: usize,
    major: PgMajor,
    #[allow(dead_code)]
    seg_size: WalSegmentSize,
}

impl Walker<'_> {
    /// Checks the header of the page at `off`; returns its size and flags.
    fn page(&self, off: usize) -> Result<(usize, u16, u32), String> {
        let p = &self.seg[off..];
        let magic = u16_at(p, 0);
        if magic != self.major.magic() {
            return Err(format!("page at {} has magic 0x{magic:04X}", Lsn(self.start.0 + off as u64)));
        }
        let addr = u64_at(p, 8);
        if addr != self.start.0 + off as u64 {
            return Err(format!("page at {} claims address {}", Lsn(self.start.0 + off as u64), Lsn(addr)));
        }
        let info = u16_at(p, 2);
        let size = if off == 0 { LONG_HEADER_SIZE } else { SHORT_HEADER_SIZE };
        Ok((size, info, u32_at(p, 16)))
    }

    fn run(&mut self) -> SegmentSummary {
        let mut s = SegmentSummary::default();
        let (hsize, info, rem) = match self.page(0) {
            Ok(h) => h,
            Err(e) => {
                s.stopped = Some(e);
                return s;
            }
        };
        // Skip the tail of a record that began in an earlier segment.
        let mut pos = hsize;
        if info & XLP_FIRST_IS_CONTRECORD != 0 {
            let mut rem = rem as usize;
            loop {
                let page_end = (pos / self.block + 1) * self.block;
                if pos + rem <= page_end {
                    pos = maxalign(pos + rem);
                    break;
                }
                rem -= page_end - pos;
                if page_end >= self.seg.len() {
                    s.stopped = Some("a record spans the whole segment".into());
                    return s;
                }
                match self.page(page_end) {
                    Ok((h, _, _)) => pos = page_end + h,
                    Err(e) => {
                        s.stopped = Some(e);
                        return s;
                    }
                }
            }
        }
        let mut prev: Option<Lsn> = None;
        let mut record = Vec::new();
        loop {
            // Step over the end of a page and the next page's header.
            if pos % self.block == 0 {
                if pos >= self.seg.len() {
                    break;
                }
                match self.page(pos) {
                    Ok((h, _, _)) => pos += h,
                    Err(e) => {
                        s.stopped = Some(e);
                        break;
                    }
                }
            }
            let lsn = Lsn(self.start.0 + pos as u64);
            let tot_len = u32_at(self.seg, pos) as usize;
            if tot_len == 0 {
                s.stopped = Some(format!("no record at {lsn} (end of WAL)"));
                break;
            }
            if tot_len < RECORD_HEADER_SIZE {
                s.stopped = Some(format!("invalid record length {tot_len} at {lsn}"));
                break;
            }
            let page_end = (pos / self.block + 1) * self.block;
            let (rec, p): (&[u8], usize) = if pos + tot_len <= page_end {
                // Most records lie within their page: read them in place.
                (&self.seg[pos..pos + tot_len], pos + tot_len)
            } else {
                // Gather the record across pages.
                record.clear();
                let mut p = pos;
                let mut need = tot_len;
                let mut complete = true;
                while need > 0 {
                    let page_end = (p / self.block + 1) * self.block;
                    let take = need.min(page_end - p);
                    record.extend_from_slice(&self.seg[p..p + take]);
                    need -= take;
                    p += take;
                    if need > 0 {
                        if p >= self.seg.len() {
                            complete = false;
                            break;
                        }
                        match self.page(p) {
                            Ok((h, info, rem)) if info & XLP_FIRST_IS_CONTRECORD != 0 && rem as usize == need => p += h,
                            Ok(_) => {
                                s.stopped = Some(format!("record at {lsn} is not continued on the next page"));
                                return self.finish(s);
                            }
                            Err(e) => {
                                s.stopped = Some(e);
                                return self.finish(s);
                            }
                        }
                    }
                }
                if !complete {
                    s.incomplete_tail_at = Some(lsn);
                    break;
                }
                (&record[..], p)
            };
            let xl_prev = Lsn(u64_at(rec, 8));
            let rmid = rec[17];
            if !valid_rmid(rmid, self.major) || prev.is_some_and(|p| p != xl_prev) {
                s.stopped = Some(format!("record at {lsn} does not follow the previous one"));
                break;
            }
            let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[RECORD_HEADER_SIZE..]), &rec[..20]);
            if crc != u32_at(rec, 20) {
                s.stopped = Some(format!("record at {lsn} fails its CRC"));
                break;
            }
            s.first_record.get_or_insert(lsn);
            prev = Some(lsn);
            let end = p;
            s.valid_end = Some(Lsn(self.start.0 + end as u64));
            if self.inspect(rec, lsn, &mut s) {
                s.switch_at = Some(lsn);
                break;
            }
            pos = maxalign(end);
            if pos >= self.seg.len() {
                break;
            }
        }
        self.finish(s)
    }

    fn finish(&self, s: SegmentSummary) -> SegmentSummary {
        s
    }

    /// Records what matters of one record; returns true for `XLOG_SWITCH`.
    fn inspect(&self, rec: &[u8], lsn: Lsn, s: &mut SegmentSummary) -> bool {
        let info = rec[16];
        let rmid = rec[17];
        match (rmid, info & 0xF0) {
            (RM_XLOG_ID, XLOG_SWITCH) => return true,
            (RM_XLOG_ID, XLOG_RESTORE_POINT) => {
                if let Some(d) = main_data(rec, self.major) {
                    if d.len() >= 8 + 64 {
                        let raw = &d[8..72];
                        let name = String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(64)])
                            .into_owned();
                        s.restore_points.push(RestorePoint { name, lsn, time: PgTimestamp(u64_at(d, 0) as i64) });
                    }
                }
            }
            (RM_XLOG_ID, XLOG_END_OF_RECOVERY) => {
                if let Some(d) = main_data(rec, self.major).filter(|d| d.len() >= 16) {
                    s.timeline_switch = Some((TimelineId(u32_at(d, 8)), TimelineId(u32_at(d, 12))));
                }
            }
            (RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN) => {
                if let Some(d) = main_data(rec, self.major).filter(|d| d.len() >= 16) {
                    let (this, prev) = (u32_at(d, 8), u32_at(d, 12));
                    if this != prev {
                        s.timeline_switch = Some((TimelineId(this), TimelineId(prev)));
                    }
                }
            }
            (RM_XACT_ID, _) => {
                let op = info & XLOG_XACT_OPMASK;
                if matches!(
                    op,
                    XLOG_XACT_COMMIT | XLOG_XACT_ABORT | XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_ABORT_PREPARED
                ) {
                    if let Some(d) = main_data(rec, self.major).filter(|d| d.len() >= 8) {
                        let t = PgTimestamp(u64_at(d, 0) as i64);
                        s.xact_ends += 1;
                        s.first_xact_time = Some(s.first_xact_time.map_or(t, |x| x.min(t)));
                        s.last_xact_time = Some(s.last_xact_time.map_or(t, |x| x.max(t)));
                        let xid = match op {
                            XLOG_XACT_COMMIT | XLOG_XACT_ABORT => Some(u32_at(rec, 4)),
                            _ => twophase_xid(d, info, op == XLOG_XACT_COMMIT_PREPARED, self.major),
                        };
                        // InvalidTransactionId: a commit record without an xid (e.g. only
                        // invalidations); no recovery target can name it.
                        if let Some(x) = xid.filter(|&x| x != 0) {
                            s.xid_min = Some(s.xid_min.map_or(x, |m| m.min(x)));
                            s.xid_max = Some(s.xid_max.map_or(x, |m| m.max(x)));
                        }
                    }
                }
            }
            _ => {}
        }
        false
    }
}

/// The prepared transaction's xid in the main data of a COMMIT PREPARED or ABORT PREPARED
/// record (`ParseCommitRecord` / `ParseAbortRecord`): after `xact_time`, `xinfo` and the
/// optional arrays that `xinfo` announces. `None` when the record has none or is too short.
fn twophase_xid(d: &[u8], info: u8, commit: bool, major: PgMajor) -> Option<u32> {
    if info & XLOG_XACT_HAS_INFO == 0 {
        return None;
    }
    let xinfo = u32_at(d.get(8..12)?, 0);
    let mut p = 12usize;
    // An array: a 4-byte count, then that many items of `item` bytes.
    let array = |p: usize, item: usize| -> Option<usize> {
        let n = u32_at(d.get(p..p + 4)?, 0) as usize;
        p.checked_add(4)?.checked_add(n.checked_mul(item)?)
    };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        p += 8; // dbId, tsId
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        p = array(p, 4)?; // TransactionId
    }
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        p = array(p, 12)?; // RelFileNode / RelFileLocator
    }
    if major.number() >= 15 && xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        // xl_xact_stats_item: kind, dboid, objoid (15-17); kind, dboid, objid_lo, objid_hi (18)
        p = array(p, if major.number() >= 18 { 16 } else { 12 })?;
    }
    if commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        p = array(p, 16)?; // SharedInvalidationMessage
    }
    if xinfo & XACT_XINFO_HAS_TWOPHASE == 0 {
        return None;
    }
    Some(u32_at(d.get(p..p.checked_add(4)?)?, 0))
}

/// The stored form of a [`SegmentSummary`] (documented in `docs/repository.md`, "WAL
/// summary"). Every field may be absent. LSNs are plain numbers; `dt`, `dx` and `s` are
/// differences (wrapping, so any summary round-trips exactly) from `t`, `x` and `e`.
pub mod stored {
    use serde::{Deserialize, Serialize};

    use super::{PgTimestamp, RestorePoint, SegmentSummary, TimelineId};
    use crate::lsn::Lsn;

    /// A [`SegmentSummary`] as stored.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Summary {
        /// `xact_ends`.
        #[serde(skip_serializing_if = "is_zero")]
        pub n: u32,
        /// `first_xact_time` (µs since 2000-01-01 UTC).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub t: Option<i64>,
        /// `last_xact_time - first_xact_time` (µs).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub dt: Option<u64>,
        /// `xid_min`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub x: Option<u32>,
        /// `xid_max - xid_min`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub dx: Option<u32>,
        /// `valid_end`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub e: Option<u64>,
        /// `valid_end - switch_at` (the length of the `XLOG_SWITCH` record).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub s: Option<u64>,
        /// `timeline_switch`: [this timeline, previous timeline].
        #[serde(skip_serializing_if = "Option::is_none")]
        pub tl: Option<[u32; 2]>,
        /// `restore_points`.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub rp: Vec<Point>,
    }

    /// A [`RestorePoint`] as stored.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Point {
        /// Name.
        pub n: String,
        /// LSN.
        pub l: u64,
        /// Time (µs since 2000-01-01 UTC).
        pub t: i64,
    }

    fn is_zero(n: &u32) -> bool {
        *n == 0
    }

    impl From<SegmentSummary> for Summary {
        fn from(s: SegmentSummary) -> Summary {
            let t = s.first_xact_time.map(|t| t.0);
            let x = s.xid_min;
            let e = s.valid_end.map(|l| l.0);
            Summary {
                n: s.xact_ends,
                t,
                dt: s.last_xact_time.map(|l| l.0.wrapping_sub(t.unwrap_or(0)) as u64),
                x,
                dx: s.xid_max.map(|m| m.wrapping_sub(x.unwrap_or(0))),
                e,
                s: s.switch_at.map(|l| e.unwrap_or(0).wrapping_sub(l.0)),
                tl: s.timeline_switch.map(|(this, prev)| [this.0, prev.0]),
                rp: s.restore_points.into_iter().map(|r| Point { n: r.name, l: r.lsn.0, t: r.time.0 }).collect(),
            }
        }
    }

    impl From<Summary> for SegmentSummary {
        fn from(w: Summary) -> SegmentSummary {
            SegmentSummary {
                first_record: None,
                valid_end: w.e.map(Lsn),
                incomplete_tail_at: None,
                xact_ends: w.n,
                first_xact_time: w.t.map(PgTimestamp),
                last_xact_time: w.dt.map(|d| PgTimestamp(w.t.unwrap_or(0).wrapping_add(d as i64))),
                xid_min: w.x,
                xid_max: w.dx.map(|d| w.x.unwrap_or(0).wrapping_add(d)),
                restore_points: w
                    .rp
                    .into_iter()
                    .map(|p| RestorePoint { name: p.n, lsn: Lsn(p.l), time: PgTimestamp(p.t) })
                    .collect(),
                switch_at: w.s.map(|d| Lsn(w.e.unwrap_or(0).wrapping_sub(d))),
                timeline_switch: w.tl.map(|[this, prev]| (TimelineId(this), TimelineId(prev))),
                stopped: None,
            }
        }
    }
}

/// The main data of a record: the last bytes, whose length the data header gives after
/// the block headers (`DecodeXLogRecord`).
fn main_data(rec: &[u8], major: PgMajor) -> Option<&[u8]> {
    let tot = rec.len();
    let mut p = RECORD_HEADER_SIZE;
    let mut main_len = 0usize;
    while p < tot {
        let id = rec[p];
        match id {
            255 => {
                main_len = *rec.get(p + 1)? as usize;
                break;
            }
            254 => {
                main_len = u32_at(rec.get(p..p + 5)?, 1) as usize;
                break;
            }
            253 => p += 3,
            252 => p += 5,
            0..=32 => {
                let fork_flags = *rec.get(p + 1)?;
                p += 4;
                if fork_flags & 0x10 != 0 {
                    let bimg_info = *rec.get(p + 4)?;
                    p += 5;
                    let compressed = if major.number() >= 15 { bimg_info & 0x1C != 0 } else { bimg_info & 0x02 != 0 };
                    if bimg_info & 0x01 != 0 && compressed {
                        p += 2;
                    }
                }
                if fork_flags & 0x80 == 0 {
                    p += 12;
                }
                p += 4;
            }
            _ => return None,
        }
    }
    if main_len > tot - RECORD_HEADER_SIZE {
        return None;
    }
    Some(&rec[tot - main_len..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = PgTimestamp(0);
        assert_eq!(t.to_string(), "2000-01-01 00:00:00.000000+00");
        let t = PgTimestamp::from_unix_micros(1_795_000_000_123_456);
        assert_eq!(t.unix_micros(), 1_795_000_000_123_456);
        assert_eq!(t.to_string(), "2026-11-18 11:06:40.123456+00");
    }

    use crate::wal::synthetic::{pgbench_like_segment, SegmentBuilder};

    fn builder() -> SegmentBuilder {
        SegmentBuilder::new(PgMajor::from_magic(0xD110).unwrap(), TimelineId(1), 3, WalSegmentSize::DEFAULT)
    }

    #[test]
    fn xid_range_covers_commits_aborts_and_prepared_transactions() {
        let mut b = builder();
        let t0 = 830_000_000_000_000;
        for (i, xid) in (1000..1010).enumerate() {
            b.filler(xid, 120, i as u64);
            b.xact_end(xid, t0 + i as i64, false);
        }
        b.xact_end(999, t0 - 5, true); // an abort, earliest time
        b.xact_end(0, t0 + 50, false); // a commit without xid: counted, no xid
        let rp = b.restore_point("before-drop", t0 + 60);
        // COMMIT PREPARED of 700 (with subxacts and invalidations before the xid) by a session
        // without its own xid; ABORT PREPARED of 2000.
        b.prepared_end(0, 700, t0 + 70, false, &[701, 702, 703]);
        b.prepared_end(0, 2000, t0 + 80, true, &[]);
        let sw = b.switch();
        let s = summarize(&b.finish()).unwrap();
        assert_eq!(s.stopped, None, "{s:#?}");
        assert_eq!(s.xact_ends, 14);
        assert_eq!((s.xid_min, s.xid_max), (Some(700), Some(2000)));
        assert_eq!(s.first_xact_time, Some(PgTimestamp(t0 - 5)));
        assert_eq!(s.last_xact_time, Some(PgTimestamp(t0 + 80)));
        assert_eq!(
            s.restore_points,
            [RestorePoint { name: "before-drop".into(), lsn: rp, time: PgTimestamp(t0 + 60) }]
        );
        assert_eq!(s.switch_at, Some(sw));
        assert!(s.valid_end.unwrap() > sw);

        // Only plain commits: the record's own xid.
        let mut b = builder();
        b.xact_end(42, t0, false);
        b.xact_end(41, t0, false);
        let s = summarize(&b.finish()).unwrap();
        assert_eq!((s.xid_min, s.xid_max), (Some(41), Some(42)));
        // No transaction ends: no range.
        let mut b = builder();
        b.filler(5, 100, 1);
        let s = summarize(&b.finish()).unwrap();
        assert_eq!((s.xact_ends, s.xid_min, s.xid_max), (0, None, None));
    }

    #[test]
    fn twophase_xid_follows_the_optional_arrays() {
        let major15 = PgMajor::from_magic(0xD110).unwrap();
        let major14 = PgMajor::from_magic(0xD10D).unwrap();
        let mut d = 123i64.to_le_bytes().to_vec();
        let xinfo = XACT_XINFO_HAS_SUBXACTS | XACT_XINFO_HAS_DROPPED_STATS | XACT_XINFO_HAS_TWOPHASE;
        d.extend_from_slice(&xinfo.to_le_bytes());
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&77u32.to_le_bytes()); // one subxact
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&[9; 12]); // one dropped-stats item (15+)
        d.extend_from_slice(&555u32.to_le_bytes());
        assert_eq!(twophase_xid(&d, 0xB0, true, major15), Some(555));
        assert_eq!(twophase_xid(&d, 0x30, true, major15), None, "no XLOG_XACT_HAS_INFO");
        assert_ne!(twophase_xid(&d, 0xB0, true, major14), Some(555), "no dropped stats before 15");
        assert_eq!(twophase_xid(&d[..d.len() - 1], 0xB0, true, major15), None, "truncated");
        let mut huge = d.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(twophase_xid(&huge, 0xB0, true, major15), None, "count beyond the record");

        // PostgreSQL 18's dropped-stats items are 16 bytes (a 64-bit object id).
        let major18 = PgMajor::from_magic(0xD118).unwrap();
        let mut d18 = d[..d.len() - 4 - 12].to_vec();
        d18.extend_from_slice(&[9; 16]);
        d18.extend_from_slice(&753u32.to_le_bytes());
        assert_eq!(twophase_xid(&d18, 0xB0, true, major18), Some(753));
        assert_ne!(twophase_xid(&d18, 0xB0, true, major15), Some(753), "17's item size misreads 18");
        assert_ne!(twophase_xid(&d, 0xB0, true, major18), Some(555), "18's item size misreads 17");
    }

    #[test]
    fn custom_resource_managers_are_valid_from_15_on() {
        let m = |magic| PgMajor::from_magic(magic).unwrap();
        for rmid in [0, 1, 21] {
            assert!(valid_rmid(rmid, m(0xD106)) && valid_rmid(rmid, m(0xD118)));
        }
        for rmid in [22, 100, 127] {
            assert!(!valid_rmid(rmid, m(0xD110)) && !valid_rmid(rmid, m(0xD118)), "{rmid}");
        }
        for rmid in [128, 200, 255] {
            assert!(valid_rmid(rmid, m(0xD110)) && valid_rmid(rmid, m(0xD118)), "{rmid}");
            assert!(!valid_rmid(rmid, m(0xD106)) && !valid_rmid(rmid, m(0xD10D)), "{rmid}");
        }
    }

    #[test]
    fn stored_form_is_compact_and_round_trips() {
        assert_eq!(serde_json::to_string(&SegmentSummary::default()).unwrap(), "{}");
        let s = SegmentSummary {
            first_record: Some(Lsn(0x1A3_5F00_0028)),
            valid_end: Some(Lsn(0x1A3_5FFF_FFD8)),
            incomplete_tail_at: Some(Lsn(0x1A3_5FFF_FFD8)),
            xact_ends: 21345,
            first_xact_time: Some(PgTimestamp(830_000_000_123_456)),
            last_xact_time: Some(PgTimestamp(830_000_012_123_456)),
            xid_min: Some(1_234_567_890),
            xid_max: Some(1_234_599_999),
            restore_points: vec![RestorePoint {
                name: "before \"drop\"".into(),
                lsn: Lsn(0x1A3_5F10_0000),
                time: PgTimestamp(830_000_001_000_000),
            }],
            switch_at: Some(Lsn(0x1A3_5FFF_FFC0)),
            timeline_switch: Some((TimelineId(3), TimelineId(2))),
            stopped: Some("diagnostic".into()),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"n":21345,"t":830000000123456,"dt":12000000,"x":1234567890,"dx":32109,"e":1801201909720,"s":24,"tl":[3,2],"rp":[{"n":"before \"drop\"","l":1801186181120,"t":830000001000000}]}"#
        );
        let back: SegmentSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SegmentSummary { first_record: None, incomplete_tail_at: None, stopped: None, ..s });
        // Unknown keys are ignored, missing ones are None/zero/empty.
        let back: SegmentSummary = serde_json::from_str(r#"{"n":2,"future":[1]}"#).unwrap();
        assert_eq!(back, SegmentSummary { xact_ends: 2, ..SegmentSummary::default() });
        // Inconsistent summaries (an upper bound without a lower one) still round-trip exactly.
        let odd = SegmentSummary {
            last_xact_time: Some(PgTimestamp(-5)),
            xid_max: Some(9),
            switch_at: Some(Lsn(u64::MAX)),
            ..SegmentSummary::default()
        };
        let back: SegmentSummary = serde_json::from_str(&serde_json::to_string(&odd).unwrap()).unwrap();
        assert_eq!(back, odd);
    }

    #[test]
    fn a_record_continuing_into_the_next_segment_keeps_the_summary_of_what_is_valid() {
        let s = summarize(&pgbench_like_segment(3, 5000)).unwrap();
        assert_eq!(s.stopped, None, "{s:?}");
        assert!(s.incomplete_tail_at.is_some(), "{s:?}");
        assert!(s.xact_ends > 10_000, "{s:?}");
        assert_eq!(s.xid_min, Some(5000));
        assert_eq!(s.xid_max, Some(5000 + s.xact_ends - 1));
        assert_eq!(s.last_xact_time.unwrap().0 - s.first_xact_time.unwrap().0, 2_000 * i64::from(s.xact_ends - 1));
    }

    /// Found by fuzzing (fuzz/corpus/wal_record): a long header whose page address is in the
    /// last segment's worth of the LSN space made the walker's `start + offset` overflow.
    #[test]
    fn a_page_address_at_the_end_of_the_lsn_space_is_refused() {
        let size = WalSegmentSize::new(1 << 20).unwrap();
        for addr in [u64::MAX - 0xFF, u64::MAX - (1 << 20) + 1, u64::MAX] {
            let mut b = SegmentBuilder::new(PgMajor::from_magic(0xD110).unwrap(), TimelineId(1), 0, size);
            b.xact_end(7, 0, false);
            let mut seg = b.finish();
            seg[8..16].copy_from_slice(&addr.to_le_bytes());
            let e = summarize(&seg).unwrap_err();
            assert!(e.0.contains("past the last segment"), "{e}");
        }
        // The last segment of the LSN space is still walked (to its end of WAL here).
        let mut seg = SegmentBuilder::new(PgMajor::from_magic(0xD110).unwrap(), TimelineId(1), 0, size).finish();
        seg[8..16].copy_from_slice(&(u64::MAX - (2 << 20) + 1).to_le_bytes());
        assert!(summarize(&seg).is_ok());
    }

    #[test]
    fn zero_and_garbage_segments_do_not_panic() {
        assert!(summarize(&vec![0u8; 1 << 20]).is_err());
        let mut seg = vec![0u8; 16 << 20];
        let h = LongPageHeader {
            major: PgMajor::from_magic(0xD110).unwrap(),
            info: 2,
            timeline: TimelineId(1),
            page_address: Lsn(16 << 20),
            system_id: super::super::SystemId(1),
            segment_size: WalSegmentSize::DEFAULT,
            block_size: 8192,
        };
        seg[..40].copy_from_slice(&h.encode());
        let s = summarize(&seg).unwrap();
        assert_eq!(s.first_record, None);
        assert!(s.stopped.unwrap().contains("end of WAL"));
        for (i, b) in seg.iter_mut().enumerate().skip(40) {
            *b = (i * 31 % 251) as u8;
        }
        let s = summarize(&seg).unwrap();
        assert!(s.stopped.is_some());
    }
}
