//! PostgreSQL's WAL vocabulary: timelines, segment sizes, file names and page headers.
//!
//! Only what an archiver needs to name, validate and place WAL files; record-level parsing
//! lives elsewhere. Every size is a parameter: nothing here assumes 16 MiB segments.

pub mod file_name;
pub mod history;
pub mod page_header;
pub mod record;
#[cfg(any(test, feature = "test-support"))]
pub mod synthetic;
pub mod timeline_path;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use file_name::{WalFileKind, WalFileName};
pub use page_header::{LongPageHeader, PgMajor};

/// Little-endian field readers for on-disk WAL structures (callers check lengths first).
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// A timeline id (`TimeLineID`). Timeline 0 does not exist.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimelineId({})", self.0)
    }
}

/// The size of one WAL segment file: a power of two from 1 MiB to 1 GiB
/// (`IsValidWalSegSize` in `xlog_internal.h`), fixed per cluster at initdb.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct WalSegmentSize(u64);

/// A segment size that PostgreSQL would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL segment size {0} bytes: must be a power of two between 1 MiB and 1 GiB")]
pub struct InvalidSegmentSize(pub u64);

impl WalSegmentSize {
    /// The default chosen by initdb.
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(16 * 1024 * 1024);

    /// Validates `bytes` like `IsValidWalSegSize`.
    pub fn new(bytes: u64) -> Result<Self, InvalidSegmentSize> {
        if bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes) {
            Ok(WalSegmentSize(bytes))
        } else {
            Err(InvalidSegmentSize(bytes))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per 4 GiB "xlogid" (`XLogSegmentsPerXLogId`): the modulus of the third
    /// field of a segment file name.
    pub fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / self.0
    }
}

impl TryFrom<u64> for WalSegmentSize {
    type Error = InvalidSegmentSize;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        WalSegmentSize::new(v)
    }
}

impl From<WalSegmentSize> for u64 {
    fn from(s: WalSegmentSize) -> u64 {
        s.0
    }
}

impl fmt::Debug for WalSegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalSegmentSize({self})")
    }
}

impl fmt::Display for WalSegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 30 {
            write!(f, "{}GB", self.0 >> 30)
        } else {
            write!(f, "{}MB", self.0 >> 20)
        }
    }
}

impl FromStr for WalSegmentSize {
    type Err = InvalidSegmentSize;

    /// Parses `SHOW wal_segment_size` output (`16MB`, `1GB`) or a plain byte count.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bytes = if let Some(n) = s.strip_suffix("MB") {
            n.trim().parse::<u64>().ok().and_then(|n| n.checked_mul(1 << 20))
        } else if let Some(n) = s.strip_suffix("GB") {
            n.trim().parse::<u64>().ok().and_then(|n| n.checked_mul(1 << 30))
        } else {
            s.parse::<u64>().ok()
        };
        WalSegmentSize::new(bytes.unwrap_or(0))
    }
}

/// A cluster's system identifier (`pg_control.system_identifier`); it may exceed `i64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes() {
        assert_eq!("16MB".parse::<WalSegmentSize>().unwrap().bytes(), 16 << 20);
        assert_eq!("1GB".parse::<WalSegmentSize>().unwrap().bytes(), 1 << 30);
        assert_eq!("1048576".parse::<WalSegmentSize>().unwrap().bytes(), 1 << 20);
        assert!("3MB".parse::<WalSegmentSize>().is_err());
        assert!("2GB".parse::<WalSegmentSize>().is_err());
        assert!("512kB".parse::<WalSegmentSize>().is_err());
        assert_eq!(WalSegmentSize::DEFAULT.segments_per_xlog_id(), 256);
        assert_eq!(WalSegmentSize::DEFAULT.to_string(), "16MB");
    }
}
