//! The replication commands and the messages inside their COPY streams, typed: IDENTIFY_SYSTEM
//! (system id as u64: it can exceed i64), SHOW, TIMELINE_HISTORY, START_REPLICATION, the
//! XLogData / keepalive messages of the WAL stream and the standby status update we send back,
//! and the BASE_BACKUP (PostgreSQL 15+) copy-stream messages. All integers are big-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::conn::{Connection, CopyBothStart};
use crate::error::{PgWireError, Result};
use formats::lsn::Lsn;
use formats::wal::WalSegmentSize;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Now, in PostgreSQL's timestamp unit: microseconds since 2000-01-01 UTC.
pub fn pg_now_micros() -> i64 {
    let since_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since_unix.as_micros() as i64 - PG_EPOCH_OFFSET_MICROS
}

/// IDENTIFY_SYSTEM's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifySystem {
    /// The cluster's system identifier (pg_control).
    pub systemid: u64,
    /// The server's current timeline.
    pub timeline: u32,
    /// Current flush position (on a standby: its replay/receive position).
    pub xlogpos: Lsn,
    /// Database name (`None` for physical replication).
    pub dbname: Option<String>,
}

/// TIMELINE_HISTORY's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistoryFile {
    /// `0000000N.history`.
    pub filename: String,
    /// The file's bytes, exactly as on the server.
    pub content: Bytes,
}

fn protocol(msg: impl Into<String>) -> PgWireError {
    PgWireError::Protocol(msg.into())
}

fn field<'a>(row: &'a [Option<String>], i: usize, what: &str) -> Result<&'a str> {
    row.get(i).and_then(|v| v.as_deref()).ok_or_else(|| protocol(format!("{what} is missing or NULL")))
}

impl Connection {
    /// `IDENTIFY_SYSTEM` (replication connections).
    pub async fn identify_system(&mut self) -> Result<IdentifySystem> {
        let sets = self.simple_query("IDENTIFY_SYSTEM").await?;
        let rs = sets.first().ok_or_else(|| protocol("IDENTIFY_SYSTEM returned no result set"))?;
        let row = rs.single_row("IDENTIFY_SYSTEM")?;
        let systemid = field(row, 0, "IDENTIFY_SYSTEM systemid")?;
        let timeline = field(row, 1, "IDENTIFY_SYSTEM timeline")?;
        let xlogpos = field(row, 2, "IDENTIFY_SYSTEM xlogpos")?;
        Ok(IdentifySystem {
            systemid: systemid.parse().map_err(|_| protocol(format!("IDENTIFY_SYSTEM systemid {systemid:?}")))?,
            timeline: timeline.parse().map_err(|_| protocol(format!("IDENTIFY_SYSTEM timeline {timeline:?}")))?,
            xlogpos: xlogpos.parse().map_err(|_| protocol(format!("IDENTIFY_SYSTEM xlogpos {xlogpos:?}")))?,
            dbname: row.get(3).cloned().flatten(),
        })
    }

    /// `SHOW name`: a setting's value as the server prints it (`16MB` for wal_segment_size).
    pub async fn show(&mut self, name: &str) -> Result<String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            return Err(PgWireError::Config(format!("{name:?} is not a setting name")));
        }
        let sets = self.simple_query(&format!("SHOW {name}")).await?;
        let rs = sets.first().ok_or_else(|| protocol("SHOW returned no result set"))?;
        Ok(field(rs.single_row("SHOW")?, 0, "SHOW value")?.to_string())
    }

    /// `SHOW server_version_num` as a number (150020 for 15.20).
    pub async fn server_version_num(&mut self) -> Result<u32> {
        let v = self.show("server_version_num").await?;
        v.trim().parse().map_err(|_| protocol(format!("server_version_num {v:?} is not a number")))
    }

    /// `SHOW wal_segment_size`, validated.
    pub async fn wal_segment_size(&mut self) -> Result<WalSegmentSize> {
        parse_wal_segment_size(&self.show("wal_segment_size").await?)
    }

    /// `TIMELINE_HISTORY tli` (timeline 1 has no history file: the server answers 58P01).
    pub async fn timeline_history(&mut self, timeline: u32) -> Result<TimelineHistoryFile> {
        let sets = self.simple_query(&format!("TIMELINE_HISTORY {timeline}")).await?;
        let rs = sets.first().ok_or_else(|| protocol("TIMELINE_HISTORY returned no result set"))?;
        let (row, raw) = match (rs.rows.as_slice(), rs.raw_rows.as_slice()) {
            ([row], [raw]) => (row, raw),
            _ => return Err(protocol("TIMELINE_HISTORY did not return one row")),
        };
        Ok(TimelineHistoryFile {
            filename: field(row, 0, "TIMELINE_HISTORY filename")?.to_string(),
            content: raw.get(1).cloned().flatten().ok_or_else(|| protocol("TIMELINE_HISTORY content is NULL"))?,
        })
    }

    /// `START_REPLICATION [SLOT slot] PHYSICAL start [TIMELINE tli]`. Start at a segment
    /// boundary (as pg_receivewal does).
    pub async fn start_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: Option<u32>,
    ) -> Result<CopyBothStart> {
        let mut cmd = String::from("START_REPLICATION");
        if let Some(slot) = slot {
            if slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(PgWireError::Config(format!(
                    "invalid replication slot name {slot:?}: use lower case letters, digits and underscores"
                )));
            }
            cmd.push_str(&format!(" SLOT {slot}"));
        }
        cmd.push_str(&format!(" PHYSICAL {start}"));
        if let Some(tli) = timeline {
            cmd.push_str(&format!(" TIMELINE {tli}"));
        }
        self.start_copy_both(&cmd).await
    }
}

/// A WAL chunk of the replication stream (`'w'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// Where `data` starts in the WAL.
    pub wal_start: Lsn,
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// Server clock, microseconds since 2000-01-01 UTC.
    pub send_time: i64,
    /// The WAL bytes (a slice of the read buffer, no copy).
    pub data: Bytes,
}

impl XLogData {
    /// The position just after this chunk.
    pub fn end(&self) -> Lsn {
        Lsn(self.wal_start.0 + self.data.len() as u64)
    }
}

/// The primary's keepalive (`'k'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// Server clock, microseconds since 2000-01-01 UTC.
    pub send_time: i64,
    /// The server wants a status update now (else it ends the connection at
    /// `wal_sender_timeout`).
    pub reply_requested: bool,
}

/// A CopyData message of the START_REPLICATION stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL.
    XLogData(XLogData),
    /// Keepalive.
    Keepalive(PrimaryKeepalive),
}

impl ReplicationMessage {
    /// Parses a CopyData payload of the WAL stream.
    pub fn parse(mut payload: Bytes) -> Result<ReplicationMessage> {
        let kind = payload.first().copied();
        match kind {
            Some(b'w') if payload.len() >= 25 => {
                payload.advance(1);
                let wal_start = Lsn(payload.get_u64());
                let wal_end = Lsn(payload.get_u64());
                let send_time = payload.get_i64();
                // The chunk must end inside the LSN space: its end is computed by every reader.
                if wal_start.0.checked_add(payload.len() as u64).is_none() {
                    return Err(protocol(format!("WAL chunk at {wal_start} runs past the last LSN")));
                }
                Ok(ReplicationMessage::XLogData(XLogData { wal_start, wal_end, send_time, data: payload }))
            }
            Some(b'k') if payload.len() >= 18 => {
                payload.advance(1);
                Ok(ReplicationMessage::Keepalive(PrimaryKeepalive {
                    wal_end: Lsn(payload.get_u64()),
                    send_time: payload.get_i64(),
                    reply_requested: payload.get_u8() != 0,
                }))
            }
            Some(k @ (b'w' | b'k')) => {
                Err(protocol(format!("truncated replication message {:?} of {} bytes", k as char, payload.len())))
            }
            Some(k) => Err(protocol(format!("unknown replication message type {:?}", k as char))),
            None => Err(protocol("empty CopyData in the replication stream")),
        }
    }
}

/// The standby status update (`'r'`) a receiver sends: what it wrote, flushed durably and
/// applied. Report `flush` only for WAL that is durable: the primary releases WAL of a slot
/// and counts synchronous commits by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Last byte + 1 received and written.
    pub write: Lsn,
    /// Last byte + 1 durably stored (0 = none reported).
    pub flush: Lsn,
    /// Last byte + 1 applied (an archiver reports 0).
    pub apply: Lsn,
    /// Client clock, microseconds since 2000-01-01 UTC.
    pub client_time: i64,
    /// Ask the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// A status update stamped with the current time.
    pub fn new(write: Lsn, flush: Lsn, apply: Lsn) -> StandbyStatusUpdate {
        StandbyStatusUpdate { write, flush, apply, client_time: pg_now_micros(), reply_requested: false }
    }

    /// The CopyData payload (34 bytes).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(34);
        b.put_u8(b'r');
        b.put_u64(self.write.0);
        b.put_u64(self.flush.0);
        b.put_u64(self.apply.0);
        b.put_i64(self.client_time);
        b.put_u8(self.reply_requested as u8);
        b.freeze()
    }
}

impl crate::conn::ConnectionWriter {
    /// Sends a standby status update.
    pub async fn send_status_update(&mut self, update: &StandbyStatusUpdate) -> Result<()> {
        self.send_copy_data(&update.encode()).await
    }
}

impl Connection {
    /// Sends a standby status update.
    pub async fn send_status_update(&mut self, update: &StandbyStatusUpdate) -> Result<()> {
        self.send_copy_data(&update.encode()).await
    }
}

/// A CopyData message of BASE_BACKUP's single COPY OUT on PostgreSQL 15+. (On 13/14 each
/// archive is its own COPY OUT of raw tar bytes, without these type bytes.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseBackupMessage {
    /// `'n'`: a new archive starts (`base.tar`, `16389.tar`, ...); tablespace path empty for
    /// the main data directory.
    NewArchive {
        /// Archive file name.
        name: String,
        /// Tablespace location (empty for base).
        tablespace_path: String,
    },
    /// `'m'`: the backup manifest follows.
    ManifestStart,
    /// `'d'`: bytes of the current archive or of the manifest.
    Data(Bytes),
    /// `'p'`: bytes done so far (uncompressed).
    Progress(u64),
}

impl BaseBackupMessage {
    /// Parses a CopyData payload of BASE_BACKUP (15+).
    pub fn parse(mut payload: Bytes) -> Result<BaseBackupMessage> {
        let Some(&kind) = payload.first() else {
            return Err(protocol("empty CopyData in BASE_BACKUP"));
        };
        payload.advance(1);
        match kind {
            b'd' => Ok(BaseBackupMessage::Data(payload)),
            b'm' => Ok(BaseBackupMessage::ManifestStart),
            b'p' if payload.len() >= 8 => Ok(BaseBackupMessage::Progress(payload.get_u64())),
            b'n' => {
                let mut strings = payload.split(|b| *b == 0);
                let name = strings.next().map(|s| String::from_utf8_lossy(s).into_owned());
                let path = strings.next().map(|s| String::from_utf8_lossy(s).into_owned());
                match (name, path) {
                    (Some(name), Some(tablespace_path)) if !name.is_empty() => {
                        Ok(BaseBackupMessage::NewArchive { name, tablespace_path })
                    }
                    _ => Err(protocol("malformed BASE_BACKUP new-archive message")),
                }
            }
            k => Err(protocol(format!("unknown BASE_BACKUP message type {:?}", k as char))),
        }
    }
}

/// Parses `SHOW wal_segment_size` output (`16MB`, `1GB`, `512kB`) into bytes, checking that it
/// is a power of two between 1 MB and 1 GB (pg_basebackup's `RetrieveWalSegSize`).
pub fn parse_wal_segment_size(text: &str) -> Result<WalSegmentSize> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| protocol(format!("wal_segment_size {text:?} is not a size")))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return Err(protocol(format!("wal_segment_size {text:?} has an unknown unit"))),
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| protocol(format!("wal_segment_size {text:?} is too large")))?;
    WalSegmentSize::new(bytes).map_err(|e| protocol(format!("server's wal_segment_size {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_and_keepalive() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&0x1_0000_0000u64.to_be_bytes());
        w.extend_from_slice(&0x1_0000_0100u64.to_be_bytes());
        w.extend_from_slice(&42i64.to_be_bytes());
        w.extend_from_slice(b"walbytes");
        let ReplicationMessage::XLogData(x) = ReplicationMessage::parse(Bytes::from(w)).unwrap() else { panic!() };
        assert_eq!(x.wal_start, Lsn(0x1_0000_0000));
        assert_eq!(x.wal_end.to_string(), "1/100");
        assert_eq!(x.send_time, 42);
        assert_eq!(&x.data[..], b"walbytes");
        assert_eq!(x.end(), Lsn(0x1_0000_0008));

        let mut k = vec![b'k'];
        k.extend_from_slice(&5u64.to_be_bytes());
        k.extend_from_slice(&7i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            ReplicationMessage::parse(Bytes::from(k)).unwrap(),
            ReplicationMessage::Keepalive(PrimaryKeepalive { wal_end: Lsn(5), send_time: 7, reply_requested: true })
        );
        assert!(ReplicationMessage::parse(Bytes::from_static(b"k\x00")).is_err());
        assert!(ReplicationMessage::parse(Bytes::from_static(b"z")).is_err());
        assert!(ReplicationMessage::parse(Bytes::new()).is_err());
    }

    /// Found by fuzzing (fuzz/corpus/replication_message): a chunk starting near the last LSN
    /// made `XLogData::end` overflow.
    #[test]
    fn xlogdata_past_the_last_lsn_is_a_protocol_error() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&(u64::MAX - 4).to_be_bytes());
        w.extend_from_slice(&u64::MAX.to_be_bytes());
        w.extend_from_slice(&0i64.to_be_bytes());
        w.extend_from_slice(b"abcd");
        let ReplicationMessage::XLogData(x) = ReplicationMessage::parse(Bytes::from(w.clone())).unwrap() else {
            panic!()
        };
        assert_eq!(x.end(), Lsn(u64::MAX));
        w.push(b'e');
        assert!(matches!(ReplicationMessage::parse(Bytes::from(w)), Err(PgWireError::Protocol(_))));
    }

    #[test]
    fn status_update_layout() {
        let u =
            StandbyStatusUpdate { write: Lsn(1), flush: Lsn(2), apply: Lsn(0), client_time: 3, reply_requested: true };
        let b = u.encode();
        assert_eq!(b.len(), 34);
        assert_eq!(b[0], b'r');
        assert_eq!(&b[1..9], &1u64.to_be_bytes());
        assert_eq!(&b[9..17], &2u64.to_be_bytes());
        assert_eq!(&b[17..25], &0u64.to_be_bytes());
        assert_eq!(&b[25..33], &3i64.to_be_bytes());
        assert_eq!(b[33], 1);
        // 2020-01-01 is 20 years after PostgreSQL's epoch.
        assert!(pg_now_micros() > 20 * 365 * 86_400 * 1_000_000);
    }

    #[test]
    fn base_backup_messages() {
        assert_eq!(
            BaseBackupMessage::parse(Bytes::from_static(b"nbase.tar\x00\x00")).unwrap(),
            BaseBackupMessage::NewArchive { name: "base.tar".into(), tablespace_path: String::new() }
        );
        assert_eq!(
            BaseBackupMessage::parse(Bytes::from_static(b"n16389.tar\x00/srv/ts\x00")).unwrap(),
            BaseBackupMessage::NewArchive { name: "16389.tar".into(), tablespace_path: "/srv/ts".into() }
        );
        assert_eq!(BaseBackupMessage::parse(Bytes::from_static(b"m")).unwrap(), BaseBackupMessage::ManifestStart);
        assert_eq!(
            BaseBackupMessage::parse(Bytes::from_static(b"dxyz")).unwrap(),
            BaseBackupMessage::Data(Bytes::from_static(b"xyz"))
        );
        let mut p = vec![b'p'];
        p.extend_from_slice(&1234u64.to_be_bytes());
        assert_eq!(BaseBackupMessage::parse(Bytes::from(p)).unwrap(), BaseBackupMessage::Progress(1234));
        assert!(BaseBackupMessage::parse(Bytes::from_static(b"n")).is_err());
        assert!(BaseBackupMessage::parse(Bytes::from_static(b"p\x00")).is_err());
    }

    #[test]
    fn wal_segment_sizes() {
        assert_eq!(parse_wal_segment_size("16MB").unwrap().bytes(), 16 << 20);
        assert_eq!(parse_wal_segment_size("1GB").unwrap().bytes(), 1 << 30);
        assert_eq!(parse_wal_segment_size("1024kB").unwrap().bytes(), 1 << 20);
        assert!(parse_wal_segment_size("3MB").is_err());
        assert!(parse_wal_segment_size("2GB").is_err());
        assert!(parse_wal_segment_size("512kB").is_err());
        assert!(parse_wal_segment_size("16XB").is_err());
        assert!(parse_wal_segment_size("MB").is_err());
    }
}
