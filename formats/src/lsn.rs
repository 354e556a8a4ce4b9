//! Log sequence numbers: the byte position in PostgreSQL's WAL stream.
//!
//! Mirrors `XLogRecPtr` (`src/include/access/xlogdefs.h`). The text form is `HI/LO`, each half
//! 1–8 hex digits; PostgreSQL 13–18 print it unpadded (`0/1753758`, `LSN_FORMAT_ARGS`), 19 will
//! pad the low half (`0/01753758`). Both parse; [`Display`](std::fmt::Display) emits the `%X/%X`
//! form every supported server accepts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position (`XLogRecPtr`). `Lsn(0)` is `InvalidXLogRecPtr`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Lsn(pub u64);

/// The text could not be read as an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal halves like 0/16B3748")]
pub struct ParseLsnError(pub String);

impl Lsn {
    /// `InvalidXLogRecPtr`.
    pub const INVALID: Lsn = Lsn(0);

    /// The segment number that contains this position (`XLByteToSeg`).
    pub fn segment_number(self, seg_size: crate::wal::WalSegmentSize) -> u64 {
        self.0 / seg_size.bytes()
    }

    /// Offset of this position inside its segment (`XLogSegmentOffset`).
    pub fn segment_offset(self, seg_size: crate::wal::WalSegmentSize) -> u64 {
        self.0 % seg_size.bytes()
    }

    /// The start of the segment containing this position.
    pub fn segment_start(self, seg_size: crate::wal::WalSegmentSize) -> Lsn {
        Lsn(self.0 - self.segment_offset(seg_size))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |h: &str| -> Result<u64, ParseLsnError> {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u64::from_str_radix(h, 16).map_err(|_| err())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

impl From<Lsn> for String {
    fn from(l: Lsn) -> String {
        l.to_string()
    }
}

impl TryFrom<String> for Lsn {
    type Error = ParseLsnError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_both_text_forms() {
        assert_eq!("0/1753758".parse::<Lsn>().unwrap(), Lsn(0x1753758));
        assert_eq!("0/01753758".parse::<Lsn>().unwrap(), Lsn(0x1753758));
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("a/b".parse::<Lsn>().unwrap(), Lsn(0xA_0000_000B));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "/", "0/", "/1", "1", "0/123456789", "g/1", "0/1/2", " 0/1", "+1/1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x1753758).to_string(), "0/1753758");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
    }

    proptest! {
        #[test]
        fn text_round_trip(v: u64) {
            let l = Lsn(v);
            prop_assert_eq!(l.to_string().parse::<Lsn>().unwrap(), l);
            let padded = format!("{:X}/{:08X}", v >> 32, v & 0xFFFF_FFFF);
            prop_assert_eq!(padded.parse::<Lsn>().unwrap(), l);
        }
    }
}
