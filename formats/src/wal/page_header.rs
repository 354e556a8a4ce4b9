//! The long page header at the start of every WAL segment, and what it tells about the file.
//!
//! Mirrors `XLogLongPageHeaderData` (`xlog_internal.h`, identical in PostgreSQL 13–18):
//! little-endian on disk, 40 bytes. pitr supports only little-endian hosts, so a magic that
//! matches only byte-swapped is refused like any unknown magic.

use serde::{Deserialize, Serialize};

use super::{u16_at, u32_at, u64_at, SystemId, TimelineId, WalSegmentSize};
use crate::lsn::Lsn;

/// `SizeOfXLogLongPHD`.
pub const LONG_HEADER_SIZE: usize = 40;
/// `XLP_LONG_HEADER`.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_ALL_FLAGS` for PostgreSQL 13–18.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// A supported PostgreSQL major version, identified by its `XLOG_PAGE_MAGIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PgMajor(u32);

/// `XLOG_PAGE_MAGIC` of each supported release (a development or early beta magic of a major,
/// e.g. 17beta1's 0xD115, is refused; 18's betas already had 0xD118).
const MAGICS: [(u16, u32); 6] = [(0xD106, 13), (0xD10D, 14), (0xD110, 15), (0xD113, 16), (0xD116, 17), (0xD118, 18)];

impl PgMajor {
    /// The major version for a page magic, if it is a supported release.
    pub fn from_magic(magic: u16) -> Option<PgMajor> {
        MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, v)| PgMajor(*v))
    }

    /// The page magic of this major version.
    pub fn magic(self) -> u16 {
        MAGICS.iter().find(|(_, v)| *v == self.0).map(|(m, _)| *m).unwrap_or(0)
    }

    /// The major version number (13–18).
    pub fn number(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for PgMajor {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if MAGICS.iter().any(|(_, m)| *m == v) {
            Ok(PgMajor(v))
        } else {
            Err(format!("PostgreSQL {v} is not supported (13 to 18 are)"))
        }
    }
}

impl From<PgMajor> for u32 {
    fn from(v: PgMajor) -> u32 {
        v.0
    }
}

impl std::fmt::Display for PgMajor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The decoded long header of a segment's first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// Major version derived from `xlp_magic`.
    pub major: PgMajor,
    /// `xlp_info`.
    pub info: u16,
    /// `xlp_tli`: timeline of the first record that starts on the page (may be the parent's).
    pub timeline: TimelineId,
    /// `xlp_pageaddr`: LSN of this page.
    pub page_address: Lsn,
    /// `xlp_sysid`.
    pub system_id: SystemId,
    /// `xlp_seg_size`.
    pub segment_size: WalSegmentSize,
    /// `xlp_xlog_blcksz`.
    pub block_size: u32,
}

/// Why the first bytes of a file are not a WAL segment's long page header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageHeaderError {
    /// Fewer than 40 bytes.
    #[error("file is too short for a WAL page header ({0} bytes)")]
    TooShort(usize),
    /// All zeros: a recycled or pre-allocated file that PostgreSQL never wrote.
    #[error("the first page is all zeros: this is not a written WAL segment")]
    Zeroed,
    /// Unknown magic.
    #[error("page magic 0x{0:04X} is not the WAL magic of PostgreSQL 13 to 18")]
    UnknownMagic(u16),
    /// Flags say this is not a long header, or carry unknown bits.
    #[error("page flags 0x{0:04X} are not those of a segment's first page")]
    BadFlags(u16),
    /// Segment size in the header is not a valid size.
    #[error("header segment size {0} is not a valid WAL segment size")]
    BadSegmentSize(u32),
    /// Block size is not a power of two between 1 and 64 KiB.
    #[error("header block size {0} is not a valid WAL block size")]
    BadBlockSize(u32),
}

impl LongPageHeader {
    /// Decodes the first 40 bytes of a segment.
    pub fn parse(bytes: &[u8]) -> Result<Self, PageHeaderError> {
        if bytes.len() < LONG_HEADER_SIZE {
            return Err(PageHeaderError::TooShort(bytes.len()));
        }
        let b = &bytes[..LONG_HEADER_SIZE];
        if b.iter().all(|&x| x == 0) {
            return Err(PageHeaderError::Zeroed);
        }
        let magic = u16_at(b, 0);
        let major = PgMajor::from_magic(magic).ok_or(PageHeaderError::UnknownMagic(magic))?;
        let info = u16_at(b, 2);
        if info & XLP_LONG_HEADER == 0 || info & !XLP_ALL_FLAGS != 0 {
            return Err(PageHeaderError::BadFlags(info));
        }
        let seg = u32_at(b, 32);
        let segment_size = WalSegmentSize::new(u64::from(seg)).map_err(|_| PageHeaderError::BadSegmentSize(seg))?;
        let block_size = u32_at(b, 36);
        if !block_size.is_power_of_two() || !(1024..=65536).contains(&block_size) {
            return Err(PageHeaderError::BadBlockSize(block_size));
        }
        Ok(LongPageHeader {
            major,
            info,
            timeline: TimelineId(u32_at(b, 4)),
            page_address: Lsn(u64_at(b, 8)),
            system_id: SystemId(u64_at(b, 24)),
            segment_size,
            block_size,
        })
    }

    /// Encodes a header (for tests and fixtures).
    pub fn encode(&self) -> [u8; LONG_HEADER_SIZE] {
        let mut b = [0u8; LONG_HEADER_SIZE];
        b[0..2].copy_from_slice(&self.major.magic().to_le_bytes());
        b[2..4].copy_from_slice(&self.info.to_le_bytes());
        b[4..8].copy_from_slice(&self.timeline.0.to_le_bytes());
        b[8..16].copy_from_slice(&self.page_address.0.to_le_bytes());
        b[24..32].copy_from_slice(&self.system_id.0.to_le_bytes());
        b[32..36].copy_from_slice(&(self.segment_size.bytes() as u32).to_le_bytes());
        b[36..40].copy_from_slice(&self.block_size.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first 40 bytes of a real PostgreSQL 15 segment (reference notes, §4.3).
    const PG15: [u8; 40] = [
        0x10, 0xd1, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x43, 0x2f, 0x6e, 0x60, 0x99, 0x67, 0x02, 0x6b, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x20, 0x00, 0x00,
    ];

    #[test]
    fn decodes_a_real_pg15_header() {
        let h = LongPageHeader::parse(&PG15).unwrap();
        assert_eq!(h.major.number(), 15);
        assert_eq!(h.timeline, TimelineId(1));
        assert_eq!(h.page_address, Lsn(0x0100_0000));
        assert_eq!(h.system_id, SystemId(7710839420457201475));
        assert_eq!(h.segment_size, WalSegmentSize::DEFAULT);
        assert_eq!(h.block_size, 8192);
        assert_eq!(h.encode()[..4], PG15[..4]);
        assert_eq!(LongPageHeader::parse(&h.encode()).unwrap(), h);
    }

    #[test]
    fn refuses_what_is_not_a_header() {
        assert_eq!(LongPageHeader::parse(&[0; 40]), Err(PageHeaderError::Zeroed));
        assert_eq!(LongPageHeader::parse(&PG15[..39]), Err(PageHeaderError::TooShort(39)));
        let mut swapped = PG15;
        swapped.swap(0, 1);
        assert!(matches!(LongPageHeader::parse(&swapped), Err(PageHeaderError::UnknownMagic(_))));
        let mut short = PG15;
        short[2] = 0x01;
        assert!(matches!(LongPageHeader::parse(&short), Err(PageHeaderError::BadFlags(_))));
        let mut seg = PG15;
        seg[34] = 0x03;
        assert!(matches!(LongPageHeader::parse(&seg), Err(PageHeaderError::BadSegmentSize(_))));
    }

    #[test]
    fn every_supported_magic() {
        for (magic, v) in MAGICS {
            assert_eq!(PgMajor::from_magic(magic).unwrap().number(), v);
            assert_eq!(PgMajor(v).magic(), magic);
        }
        assert!(PgMajor::from_magic(0xD115).is_none(), "17beta1/2's magic is refused");
        assert!(PgMajor::from_magic(0xD117).is_none(), "18devel's magic is refused");
        assert!(PgMajor::from_magic(0xD120).is_none(), "19 is not supported yet");
        assert!(PgMajor::try_from(12).unwrap_err().contains("13 to 18"));
        assert!(PgMajor::try_from(19).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LongPageHeader::parse(&b);
        }
    }
}
