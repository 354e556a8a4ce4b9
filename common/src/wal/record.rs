//! Walking the records of one WAL segment, to summarise what point-in-time recovery planning
//! needs: commit and abort times, restore points, segment switches and timeline switches.
//!
//! Mirrors `XLogRecord` and the block/data headers of `xlogrecord.h` (PostgreSQL 13–17) and
//! the page-continuation rules of `xlogreader.c`. Records are validated like PostgreSQL
//! validates them (page address, `xl_prev` chain, CRC-32C over the body then the header), and
//! the walk stops at the first record that does not check out: the end of valid WAL. A record
//! that starts in this segment but ends in the next one is not seen (its start is reported as
//! `incomplete_tail_at`); continuation bytes of a record from the previous segment are skipped.

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
/// Highest resource manager id of PostgreSQL 13–17 (`RM_MAX_BUILTIN_ID`, logical message = 21).
const RM_MAX_ID: u8 = 21;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
            let xl_prev = Lsn(u64_at(&record, 8));
            let rmid = record[17];
            if rmid > RM_MAX_ID || prev.is_some_and(|p| p != xl_prev) {
                s.stopped = Some(format!("record at {lsn} does not follow the previous one"));
                break;
            }
            let crc = crc32c::crc32c_append(crc32c::crc32c(&record[RECORD_HEADER_SIZE..]), &record[..20]);
            if crc != u32_at(&record, 20) {
                s.stopped = Some(format!("record at {lsn} fails its CRC"));
                break;
            }
            s.first_record.get_or_insert(lsn);
            prev = Some(lsn);
            let end = p;
            s.valid_end = Some(Lsn(self.start.0 + end as u64));
            if self.inspect(&record, lsn, &mut s) {
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
                if matches!(op, 0x00 | 0x20 | 0x30 | 0x40) {
                    if let Some(d) = main_data(rec, self.major).filter(|d| d.len() >= 8) {
                        let t = PgTimestamp(u64_at(d, 0) as i64);
                        s.xact_ends += 1;
                        s.first_xact_time = Some(s.first_xact_time.map_or(t, |x| x.min(t)));
                        s.last_xact_time = Some(s.last_xact_time.map_or(t, |x| x.max(t)));
                    }
                }
            }
            _ => {}
        }
        false
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
