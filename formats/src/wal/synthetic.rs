//! Building valid WAL segments record by record, for tests and benches of the record walker
//! ([`record`](super::record)) without a PostgreSQL server.
//!
//! Records carry main data only (no block references), with a correct `xl_prev` chain and
//! CRC-32C, laid out across pages like PostgreSQL lays them out (`XLP_FIRST_IS_CONTRECORD`
//! and `xlp_rem_len` on continuation pages, MAXALIGNed record starts). What the builder does
//! not write stays zero, which the walker reads as the end of WAL.

use super::page_header::LONG_HEADER_SIZE;
use super::{LongPageHeader, PgMajor, SystemId, TimelineId, WalSegmentSize};
use crate::lsn::Lsn;

const SHORT_HEADER_SIZE: usize = 24;
const RECORD_HEADER_SIZE: usize = 24;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
/// `RM_XLOG_ID` and `RM_XACT_ID`.
pub const RM_XLOG: u8 = 0;
/// `RM_XACT_ID`.
pub const RM_XACT: u8 = 1;
/// `RM_HEAP_ID`.
pub const RM_HEAP: u8 = 10;

/// A segment being written.
#[derive(Debug)]
pub struct SegmentBuilder {
    seg: Vec<u8>,
    start: Lsn,
    block: usize,
    major: PgMajor,
    timeline: TimelineId,
    pos: usize,
    prev: Option<Lsn>,
}

impl SegmentBuilder {
    /// An empty segment `segno` (8 KiB pages) of `timeline`, PostgreSQL `major`.
    pub fn new(major: PgMajor, timeline: TimelineId, segno: u64, size: WalSegmentSize) -> Self {
        let start = Lsn(segno * size.bytes());
        let mut seg = vec![0u8; size.bytes() as usize];
        let long = LongPageHeader {
            major,
            info: XLP_LONG_HEADER,
            timeline,
            page_address: start,
            system_id: SystemId(7_310_000_000_000_000_001),
            segment_size: size,
            block_size: 8192,
        };
        seg[..LONG_HEADER_SIZE].copy_from_slice(&long.encode());
        SegmentBuilder { seg, start, block: 8192, major, timeline, pos: LONG_HEADER_SIZE, prev: None }
    }

    /// LSN where the next record would start.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.start.0 + self.pos as u64)
    }

    /// Whether no further record can start in this segment.
    pub fn is_full(&self) -> bool {
        self.pos >= self.seg.len()
    }

    /// Appends a record with `main` as its main data; returns its LSN. A record that does not
    /// fit is cut at the end of the segment (it would continue in the next one).
    pub fn record(&mut self, rmid: u8, info: u8, xid: u32, main: &[u8]) -> Lsn {
        let mut rec = vec![0u8; RECORD_HEADER_SIZE];
        if main.len() <= 255 {
            rec.extend_from_slice(&[255, main.len() as u8]);
        } else {
            rec.push(254);
            rec.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        rec.extend_from_slice(main);
        let tot_len = rec.len() as u32;
        rec[0..4].copy_from_slice(&tot_len.to_le_bytes());
        rec[4..8].copy_from_slice(&xid.to_le_bytes());
        rec[8..16].copy_from_slice(&self.prev.unwrap_or_default().0.to_le_bytes());
        rec[16] = info;
        rec[17] = rmid;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[RECORD_HEADER_SIZE..]), &rec[..20]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());

        self.page_header_if_needed(0, 0);
        let lsn = self.next_lsn();
        let mut left = &rec[..];
        while !left.is_empty() && self.pos < self.seg.len() {
            if self.pos.is_multiple_of(self.block) {
                self.page_header_if_needed(XLP_FIRST_IS_CONTRECORD, left.len() as u32);
            }
            let page_end = (self.pos / self.block + 1) * self.block;
            let n = left.len().min(page_end - self.pos);
            self.seg[self.pos..self.pos + n].copy_from_slice(&left[..n]);
            self.pos += n;
            left = &left[n..];
        }
        self.pos = (self.pos + 7) & !7;
        self.prev = Some(lsn);
        lsn
    }

    /// Writes the short header of the page starting at the current position, if it does.
    fn page_header_if_needed(&mut self, info: u16, rem_len: u32) {
        if !self.pos.is_multiple_of(self.block) || self.pos >= self.seg.len() || self.pos == 0 {
            return;
        }
        let h = &mut self.seg[self.pos..self.pos + SHORT_HEADER_SIZE];
        h[0..2].copy_from_slice(&self.major.magic().to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&self.timeline.0.to_le_bytes());
        h[8..16].copy_from_slice(&(self.start.0 + self.pos as u64).to_le_bytes());
        h[16..20].copy_from_slice(&rem_len.to_le_bytes());
        self.pos += SHORT_HEADER_SIZE;
    }

    /// A plain `COMMIT` (or `ABORT` when `abort`) of `xid` at `time` (µs since 2000-01-01),
    /// without `xinfo`.
    pub fn xact_end(&mut self, xid: u32, time: i64, abort: bool) -> Lsn {
        self.record(RM_XACT, if abort { 0x20 } else { 0x00 }, xid, &time.to_le_bytes())
    }

    /// `COMMIT PREPARED` (or `ABORT PREPARED`) of the prepared transaction `prepared_xid`,
    /// written by a session whose own xid is `xid` (0 usually), with `subxacts` and, for a
    /// commit, `invals` invalidation messages before the two-phase part, as PostgreSQL lays
    /// them out.
    pub fn prepared_end(&mut self, xid: u32, prepared_xid: u32, time: i64, abort: bool, subxacts: &[u32]) -> Lsn {
        let mut d = time.to_le_bytes().to_vec();
        let mut xinfo: u32 = 1 << 4; // XACT_XINFO_HAS_TWOPHASE
        let mut body = Vec::new();
        body.extend_from_slice(&[0x34, 0x12, 0, 0, 0x78, 0x56, 0, 0]); // dbinfo
        xinfo |= 1; // XACT_XINFO_HAS_DBINFO
        if !subxacts.is_empty() {
            xinfo |= 1 << 1;
            body.extend_from_slice(&(subxacts.len() as u32).to_le_bytes());
            for s in subxacts {
                body.extend_from_slice(&s.to_le_bytes());
            }
        }
        if !abort {
            xinfo |= 1 << 3; // two invalidation messages
            body.extend_from_slice(&2u32.to_le_bytes());
            body.extend_from_slice(&[0xEE; 32]);
        }
        body.extend_from_slice(&prepared_xid.to_le_bytes());
        d.extend_from_slice(&xinfo.to_le_bytes());
        d.extend_from_slice(&body);
        self.record(RM_XACT, 0x80 | if abort { 0x40 } else { 0x30 }, xid, &d)
    }

    /// `pg_create_restore_point(name)` at `time`.
    pub fn restore_point(&mut self, name: &str, time: i64) -> Lsn {
        let mut d = time.to_le_bytes().to_vec();
        let mut n = [0u8; 64];
        n[..name.len().min(63)].copy_from_slice(&name.as_bytes()[..name.len().min(63)]);
        d.extend_from_slice(&n);
        self.record(RM_XLOG, 0x70, 0, &d)
    }

    /// `XLOG_SWITCH`: the rest of the segment is unused (left zero here).
    pub fn switch(&mut self) -> Lsn {
        let lsn = self.record(RM_XLOG, 0x40, 0, &[]);
        self.pos = self.seg.len();
        lsn
    }

    /// A heap-like record of `len` bytes of main data (filler for realistic segments).
    pub fn filler(&mut self, xid: u32, len: usize, seed: u64) -> Lsn {
        let mut x = seed | 1;
        let d: Vec<u8> = (0..len)
            .map(|i| {
                if i % 8 == 0 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                }
                // mostly small values, like tuple data
                if i % 4 == 0 {
                    (x >> (i % 8)) as u8 & 0x3F
                } else {
                    0
                }
            })
            .collect();
        self.record(RM_HEAP, 0x00, xid, &d)
    }

    /// The segment's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.seg
    }
}

/// A 16 MiB PostgreSQL 15 segment full of valid records shaped like pgbench traffic: per
/// transaction a few heap records (60–250 bytes) and a commit, one time every 2 ms, xids
/// from `first_xid`; a larger record every so often crosses pages. The last record continues
/// into the next segment.
pub fn pgbench_like_segment(segno: u64, first_xid: u32) -> Vec<u8> {
    let major = PgMajor::from_magic(0xD110).expect("PostgreSQL 15 magic");
    let mut b = SegmentBuilder::new(major, TimelineId(1), segno, WalSegmentSize::DEFAULT);
    let mut xid = first_xid;
    let mut time = 830_000_000_000_000i64;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    while !b.is_full() {
        for k in 0..4u64 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let len = if seed >> 60 == 0 { 3000 } else { 60 + (seed >> 33) as usize % 190 };
            b.filler(xid, len, seed ^ k);
            if b.is_full() {
                break;
            }
        }
        if b.is_full() {
            break;
        }
        b.xact_end(xid, time, false);
        xid = xid.wrapping_add(1);
        time += 2_000;
    }
    b.finish()
}
