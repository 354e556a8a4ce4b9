//! Synthetic WAL files for tests that need many or odd segments fast: a valid long page
//! header (as PostgreSQL 15 writes it) followed by deterministic, compressible filler.

use common::lsn::Lsn;
use common::wal::{LongPageHeader, PgMajor, SystemId, TimelineId, WalFileName, WalSegmentSize};

/// The system id used by [`segment`] unless told otherwise.
pub const SYSTEM_ID: u64 = 7_310_000_000_000_000_001;

/// A 16 MiB PostgreSQL 15 segment `segno` of timeline `tli` for system `sysid`, and its name.
pub fn segment(sysid: u64, tli: u32, segno: u64) -> (String, Vec<u8>) {
    let size = WalSegmentSize::DEFAULT;
    let header = LongPageHeader {
        major: PgMajor::from_magic(0xD110).unwrap(),
        info: 0x0002,
        timeline: TimelineId(tli),
        page_address: Lsn(segno * size.bytes()),
        system_id: SystemId(sysid),
        segment_size: size,
        block_size: 8192,
    };
    let mut data = vec![0u8; size.bytes() as usize];
    let mut x = segno.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in data.chunks_mut(64).take(1 << 17) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk[..8].copy_from_slice(&x.to_le_bytes());
    }
    data[..40].copy_from_slice(&header.encode());
    (WalFileName::segment(TimelineId(tli), segno, size).to_string(), data)
}
