//! Shared inputs of pitr's criterion benches (`benches/benches/*.rs`): a WAL segment from
//! `PITR_BENCH_SEGMENT`, the segments of a corpus from `PITR_BENCH_CORPUS`, or a deterministic
//! synthetic segment that compresses about like pgbench WAL.

use std::fs;
use std::path::PathBuf;

use common::wal::page_header::LONG_HEADER_SIZE;

/// Size of a default WAL segment.
pub const SEGMENT: usize = 16 << 20;
/// WAL page size.
pub const PAGE: usize = 8192;
/// The name the synthetic segment's header matches.
pub const NAME: &str = "000000010000000000000010";

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A 16 MiB byte stream shaped like pgbench WAL: 24-byte record headers (growing xid and
/// LSN, random CRC), small UPDATE records on `pgbench_accounts` (integer columns, a
/// blank-padded `filler`), and full-page images of such heap pages; a page header every
/// 8 KiB and a PostgreSQL 15 long header first. zstd -3 compresses it about 6-7x.
pub fn synthetic_segment() -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(SEGMENT + PAGE);
    let mut xid = 7_000_000u32;
    let mut aid = 1u32;
    while out.len() < SEGMENT {
        xid += 1;
        let start = out.len();
        out.extend_from_slice(&[0; 4]); // xl_tot_len, patched below
        out.extend_from_slice(&xid.to_le_bytes());
        out.extend_from_slice(&(0x1_0000_0000 + start as u64).to_le_bytes()); // xl_prev
        out.extend_from_slice(&[0x20, 10, 0, 0]); // xl_info, xl_rmid (heap)
        out.extend_from_slice(&(rng.next() as u32).to_le_bytes()); // xl_crc
        if rng.below(8) == 0 {
            // full-page image: a compacted heap page of accounts tuples
            let tuples = 8 + rng.below(24) as u32;
            out.extend_from_slice(&[0xFE, 0, 0x18, 0x1F, 0x7F, 0x06, 0, 0]);
            for _ in 0..tuples {
                out.extend_from_slice(&(xid - rng.below(5000) as u32).to_le_bytes()); // xmin
                out.extend_from_slice(&[0; 4]); // xmax
                out.extend_from_slice(&[0x04, 0, 0x18, 0, 0x02, 0x09, 0, 0]);
                aid = aid.wrapping_add(1 + rng.below(3) as u32);
                out.extend_from_slice(&aid.to_le_bytes());
                out.extend_from_slice(&(aid / 100_000 + 1).to_le_bytes()); // bid
                out.extend_from_slice(&((rng.below(10_001) as i32) - 5000).to_le_bytes()); // abalance
                out.push(0xAB); // varlena header of filler char(84)
                out.extend_from_slice(&[b' '; 84]);
            }
        } else {
            // UPDATE: block reference, offsets, new tuple (aid, bid, abalance) or a commit
            out.extend_from_slice(&[0, 0x20, 0x7F, 0x06, 0, 0, 0x40, 0x06, 0, 0]);
            out.extend_from_slice(&(rng.below(1 << 20) as u32).to_le_bytes()); // block
            out.extend_from_slice(&(rng.below(60) as u16 + 1).to_le_bytes()); // offset
            out.extend_from_slice(&(rng.below(2_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((rng.below(10_001) as i32) - 5000).to_le_bytes());
            out.extend_from_slice(&(rng.next() as u32).to_le_bytes()); // timestamp bits
            out.extend_from_slice(&[0; 6]);
        }
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out.resize(out.len().next_multiple_of(8), 0); // MAXALIGN
    }
    out.truncate(SEGMENT);
    // short page headers: magic 0xD110, XLP_FIRST_IS_CONTRECORD, timeline 1, page address
    for (i, page) in out.chunks_mut(PAGE).enumerate().skip(1) {
        page[0..4].copy_from_slice(&[0x10, 0xD1, 0x01, 0x00]);
        page[4..8].copy_from_slice(&1u32.to_le_bytes());
        page[8..16].copy_from_slice(&(0x1000_0000u64 + (i * PAGE) as u64).to_le_bytes());
        page[16..24].copy_from_slice(&[0x28, 0, 0, 0, 0, 0, 0, 0]);
    }
    // long header of a PostgreSQL 15 segment 000000010000000000000010
    let mut long = [0u8; LONG_HEADER_SIZE];
    long[0..4].copy_from_slice(&[0x10, 0xD1, 0x02, 0x00]);
    long[4..8].copy_from_slice(&1u32.to_le_bytes());
    long[8..16].copy_from_slice(&0x1000_0000u64.to_le_bytes());
    long[24..32].copy_from_slice(&7_310_000_000_000_000_001u64.to_le_bytes());
    long[32..36].copy_from_slice(&(SEGMENT as u32).to_le_bytes());
    long[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
    out[..LONG_HEADER_SIZE].copy_from_slice(&long);
    out
}

/// The segment to measure and a description of it: `PITR_BENCH_SEGMENT`, else synthetic.
pub fn input() -> (Vec<u8>, String) {
    match std::env::var_os("PITR_BENCH_SEGMENT") {
        Some(p) => {
            let data = fs::read(&p).unwrap_or_else(|e| panic!("PITR_BENCH_SEGMENT={}: {e}", p.to_string_lossy()));
            (data, format!("WAL segment {}", p.to_string_lossy()))
        }
        None => (synthetic_segment(), "synthetic 16 MiB segment (set PITR_BENCH_SEGMENT for real WAL)".into()),
    }
}

/// Every segment (24-hex-digit name) in `$PITR_BENCH_CORPUS/wal` (or the directory itself),
/// oldest first; empty when the variable is unset.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let Some(dir) = std::env::var_os("PITR_BENCH_CORPUS").map(PathBuf::from) else { return Vec::new() };
    let dir = if dir.join("wal").is_dir() { dir.join("wal") } else { dir };
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("PITR_BENCH_CORPUS={}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), fs::read(dir.join(&n)).expect("read segment"))).collect()
}
