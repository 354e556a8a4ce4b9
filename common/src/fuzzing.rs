//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`) and of their replay on stable
//! (`tests/tests/fuzz_corpora.rs`): one function per parser of bytes that come from outside
//! (WAL files, history files, backup manifests, tar streams, the server's protocol messages,
//! connection strings, `.pgpass`, stored objects, `pitr.toml`). Each takes arbitrary bytes and
//! must return without panicking: errors are fine. Some also check a property that must hold
//! for every input (a tar stream or the protocol decodes the same however it is cut; a WAL
//! summary round-trips through its stored form); a violation panics, like a crash.
//!
//! [`TARGETS`] lists them by the name of their fuzz target and corpus directory
//! (`fuzz/corpus/<name>/`); [`seed_corpora`] makes the valid inputs the corpora started from.
//! See `docs/fuzzing.md`.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};

use bytes::{Bytes, BytesMut};

use crate::codec::{self, AlignedBuf, CompressOptions, ContentCheck, ObjectHeader};
use crate::lsn::Lsn;
use crate::manifest::Manifest;
use crate::pgwire::{message, pgpass, BaseBackupMessage, ConnParams, FakeEnv, ReplicationMessage};
use crate::tar::{FileDigests, TarReader};
use crate::wal::page_header::{LONG_HEADER_SIZE, XLP_LONG_HEADER};
use crate::wal::record::{self, SegmentSummary};
use crate::wal::synthetic::SegmentBuilder;
use crate::wal::{history, LongPageHeader, PgMajor, SystemId, TimelineId, WalFileName, WalSegmentSize};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by name (the fuzz target's and its corpus directory's).
pub const TARGETS: &[(&str, Target)] = &[
    ("wal_page_header", wal_page_header),
    ("wal_file_name", wal_file_name),
    ("wal_record", wal_record),
    ("wal_history", wal_history),
    ("manifest", manifest),
    ("tar", tar),
    ("pgwire_message", pgwire_message),
    ("replication_message", replication_message),
    ("basebackup_message", basebackup_message),
    ("conninfo", conninfo),
    ("pgpass", pgpass),
    ("codec", codec),
    ("config_toml", config_toml),
    ("repo_location", repo_location),
];

/// The smallest legal WAL segment size: the segment the WAL record target walks.
const FUZZ_SEGMENT: usize = 1 << 20;
/// Page address of the long header that [`wal_record`] supplies: segment 1.
const FUZZ_SEGMENT_START: u64 = FUZZ_SEGMENT as u64;
/// Most bytes a codec target may write while decompressing (a small zstd frame can announce
/// or produce gigabytes; the real callers write to files).
const DECOMPRESS_LIMIT: usize = 64 << 20;

/// Piece lengths (1 to 1024 bytes) to cut a stream of `len` bytes into, drawn from `seed`.
fn pieces(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Mostly small pieces (block edges), sometimes large ones.
        let n = if x & 3 == 0 { 1 + (x >> 8) as usize % 1024 } else { 1 + (x >> 8) as usize % 16 };
        let n = n.min(left);
        out.push(n);
        left -= n;
    }
    out
}

/// `LongPageHeader::parse`; a header that parses re-encodes to itself.
pub fn wal_page_header(data: &[u8]) {
    if let Ok(h) = LongPageHeader::parse(data) {
        let again = LongPageHeader::parse(&h.encode()).expect("an encoded header parses");
        assert_eq!(again, h);
    }
}

/// `WalFileName::parse` (input as UTF-8, lossily) and what a parsed name computes; a name
/// that parses prints as itself.
pub fn wal_file_name(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    if let Ok(n) = WalFileName::parse(&name) {
        assert_eq!(n.to_string(), name);
        for size in [1u64 << 20, 16 << 20, 1 << 30] {
            let size = WalSegmentSize::new(size).expect("valid size");
            let _ = n.segment_number(size);
            let _ = n.start_lsn(size);
        }
        let _ = n.timeline_log_prefix();
    }
}

/// `wal::record::summarize` over a 1 MiB segment (the smallest legal size, so that a run is
/// fast). When the input starts with a supported page magic it is the segment itself (its
/// header's segment size field is forced to 1 MiB; the rest of the segment is zeros);
/// otherwise a valid long header (PostgreSQL 15, 8 KiB pages, segment 1 of timeline 1) is
/// put before it. The summary must round-trip through its stored form.
pub fn wal_record(data: &[u8]) {
    // The length check of the real input (almost never the segment size).
    let _ = record::summarize(data);
    let mut seg = vec![0u8; FUZZ_SEGMENT];
    let own_header = data.len() >= 2 && PgMajor::from_magic(u16::from_le_bytes([data[0], data[1]])).is_some();
    if own_header {
        let n = data.len().min(FUZZ_SEGMENT);
        seg[..n].copy_from_slice(&data[..n]);
        seg[32..36].copy_from_slice(&(FUZZ_SEGMENT as u32).to_le_bytes());
    } else {
        seg[..LONG_HEADER_SIZE].copy_from_slice(&fuzz_segment_header().encode());
        let n = data.len().min(FUZZ_SEGMENT - LONG_HEADER_SIZE);
        seg[LONG_HEADER_SIZE..LONG_HEADER_SIZE + n].copy_from_slice(&data[..n]);
    }
    let Ok(s) = record::summarize(&seg) else { return };
    let json = serde_json::to_vec(&s).expect("a summary serializes");
    let back: SegmentSummary = serde_json::from_slice(&json).expect("a stored summary reads back");
    assert_eq!(back, SegmentSummary { first_record: None, incomplete_tail_at: None, stopped: None, ..s });
}

fn fuzz_segment_header() -> LongPageHeader {
    LongPageHeader {
        major: PgMajor::from_magic(0xD110).expect("PostgreSQL 15 magic"),
        info: XLP_LONG_HEADER,
        timeline: TimelineId(1),
        page_address: Lsn(FUZZ_SEGMENT_START),
        system_id: SystemId(7_310_000_000_000_000_001),
        segment_size: WalSegmentSize::new(FUZZ_SEGMENT as u64).expect("1 MiB is a valid size"),
        block_size: 8192,
    }
}

/// `wal::history::parse`: the first byte picks the timeline of the file, the rest is its
/// content; entries that parse are ordered and below that timeline.
pub fn wal_history(data: &[u8]) {
    let Some((&t, content)) = data.split_first() else { return };
    let timeline = TimelineId(u32::from(t) + 1);
    if let Ok(entries) = history::parse(timeline, content) {
        assert!(entries.windows(2).all(|w| w[0].parent < w[1].parent && w[0].switch_point <= w[1].switch_point));
        assert!(entries.iter().all(|e| e.parent.0 > 0 && e.parent < timeline));
        let _ = history::ended_at(entries[0].parent, [entries.as_slice()]);
    }
}

/// `Manifest::parse`, as given and once more with its `Manifest-Checksum` line replaced by
/// the right checksum (so that mutations get past the checksum to the file list); a manifest
/// that parses is compared with an empty backup and with one holding exactly its files.
pub fn manifest(data: &[u8]) {
    let check = |m: Manifest| {
        let _ = m.check_files(&BTreeMap::new());
        let all = m
            .files
            .iter()
            .map(|f| (f.path.clone(), crate::tar::FileDigest { size: f.size, crc32c: 0 }))
            .collect::<BTreeMap<_, _>>();
        let _ = m.check_files(&all);
        m.files.iter().for_each(|f| drop(f.path_lossy()));
    };
    if let Ok(m) = Manifest::parse(data) {
        check(m);
    }
    if let Ok(sum) = crate::manifest::content_checksum(data) {
        let Some(cut) =
            data.iter().rposition(|&b| b == b'\n').and_then(|last| data[..last].iter().rposition(|&b| b == b'\n'))
        else {
            return;
        };
        let mut fixed = data[..=cut].to_vec();
        fixed.extend_from_slice(format!("\"Manifest-Checksum\": \"{sum}\"}}\n").as_bytes());
        if let Ok(m) = Manifest::parse(&fixed) {
            check(m);
        }
    }
}

/// `TarReader::feed` with [`FileDigests`]: the first byte picks how the rest of the input is
/// cut into pieces; the outcome must be the same as for the stream fed whole.
pub fn tar(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let run = |cuts: &[usize]| -> (Result<(), String>, BTreeMap<Vec<u8>, crate::tar::FileDigest>, u64) {
        let mut r = TarReader::new();
        let mut v = FileDigests::new();
        let mut at = 0;
        let mut result = Ok(());
        for &n in cuts {
            if let Err(e) = r.feed(&stream[at..at + n], &mut v) {
                result = Err(e.to_string());
                break;
            }
            at += n;
        }
        if result.is_ok() {
            result = r.finish().map_err(|e| e.to_string());
            let _ = r.is_complete();
        }
        (result, v.files, r.members())
    };
    let whole = run(&[stream.len()]);
    let cut = run(&pieces(seed, stream.len()));
    assert_eq!(whole, cut, "the outcome depends on how the stream is cut");
}

/// `pgwire::message::decode` until it needs more bytes or fails, over the input fed whole and
/// fed in pieces (the first byte picks them): the same messages and the same error.
pub fn pgwire_message(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let decode_all = |buf: &mut BytesMut, out: &mut Vec<String>| -> bool {
        loop {
            match message::decode(buf) {
                Ok(Some(m)) => out.push(format!("{m:?}")),
                Ok(None) => return true,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return false;
                }
            }
        }
    };
    let mut whole = Vec::new();
    decode_all(&mut BytesMut::from(stream), &mut whole);
    let mut cut = Vec::new();
    let mut buf = BytesMut::new();
    let mut at = 0;
    for n in pieces(seed, stream.len()) {
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        if !decode_all(&mut buf, &mut cut) {
            break;
        }
    }
    assert_eq!(whole, cut, "the messages depend on how the stream is cut");
}

/// `ReplicationMessage::parse` of a CopyData payload.
pub fn replication_message(data: &[u8]) {
    if let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::parse(Bytes::copy_from_slice(data)) {
        let _ = x.end();
    }
}

/// `BaseBackupMessage::parse` of a CopyData payload.
pub fn basebackup_message(data: &[u8]) {
    let _ = BaseBackupMessage::parse(Bytes::copy_from_slice(data));
}

/// `parse_conninfo`, then `ConnParams::parse_with_env` with a made-up environment (a user,
/// a home, `PGHOST`/`PGPORT` set) and with an empty one.
pub fn conninfo(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = crate::pgwire::conninfo::parse_conninfo(s);
    let env = FakeEnv::new()
        .user("fuzz")
        .home("/nonexistent/fuzz")
        .var("PGHOST", "/tmp,db.example")
        .var("PGPORT", "5433,5434")
        .var("PGSSLMODE", "prefer")
        .dir("/var/run/postgresql");
    for env in [env, FakeEnv::new()] {
        if let Ok(p) = ConnParams::parse_with_env(s, &env) {
            let _ = p.describe();
            let _ = p.pgpass_dbname();
        }
    }
}

/// `pgpass::parse_pgpass` and a lookup in what it parsed.
pub fn pgpass(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let entries = pgpass::parse_pgpass(&text);
    let _ = pgpass::lookup(&entries, "localhost", 5432, "postgres", "postgres");
}

/// A writer that refuses to hold more than [`DECOMPRESS_LIMIT`] bytes.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > DECOMPRESS_LIMIT {
            return Err(io::Error::other("fuzz target's output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stored object: `header_len`, `ObjectHeader::decode`, `decompress` (streaming, into
/// memory) and `decompress_in_memory` with both checks. An object that decompresses
/// gives the same header and content both ways.
pub fn codec(data: &[u8]) {
    let _ = codec::header_len(data);
    let decoded = ObjectHeader::decode(data);
    if let Ok(h) = &decoded {
        assert_eq!(ObjectHeader::decode(&h.encode().expect("a decoded header encodes")).ok().as_ref(), Some(h));
    }
    let mut out = Capped(Vec::new());
    let streamed = codec::decompress(data, &mut out);
    for check in [ContentCheck::Digest, ContentCheck::FrameChecksum] {
        let mut raw = AlignedBuf::default();
        let in_memory = codec::decompress_in_memory(data, &mut raw, check);
        if let (Ok(a), Ok(b)) = (&streamed, &in_memory) {
            assert_eq!(a, b);
            assert_eq!(out.0, raw.as_slice());
        }
    }
}

/// `pitr.toml`: `toml::from_str::<FileConfig>`, then `RepoLocation::parse` of its `repo`.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = toml::from_str::<crate::config::FileConfig>(text) {
        if let Some(repo) = c.repo {
            let _ = crate::config::RepoLocation::parse(&repo);
        }
    }
}

/// `RepoLocation::parse` (input as UTF-8, lossily); a location that parses prints as a
/// location that parses to the same.
pub fn repo_location(data: &[u8]) {
    let url = String::from_utf8_lossy(data);
    if let Ok(l) = crate::config::RepoLocation::parse(&url) {
        if let crate::config::RepoLocation::S3 { .. } = l {
            assert_eq!(crate::config::RepoLocation::parse(&l.to_string()).as_ref(), Ok(&l));
        }
    }
}

/// Valid inputs for every target, by target name and file name: what the corpora were
/// seeded with (the fuzz crate's `seed_corpora` example writes them).
pub fn seed_corpora() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| out.push((target, format!("seed-{name}"), bytes));

    // WAL: headers of each supported version; names; small segments.
    for magic in [0xD106u16, 0xD10D, 0xD110, 0xD113, 0xD116, 0xD118] {
        let mut h = fuzz_segment_header();
        h.major = PgMajor::from_magic(magic).expect("supported magic");
        add("wal_page_header", &format!("pg{}", h.major), h.encode().to_vec());
    }
    for name in [
        "000000010000000000000001",
        "00000002000000A3000000FF",
        "000000010000000000000003.partial",
        "000000010000000000000003.00000028.backup",
        "00000003.history",
    ] {
        add("wal_file_name", name, name.as_bytes().to_vec());
    }
    let size = WalSegmentSize::new(FUZZ_SEGMENT as u64).expect("1 MiB is a valid size");
    let major = PgMajor::from_magic(0xD110).expect("PostgreSQL 15 magic");
    let trim = |mut v: Vec<u8>| {
        let end = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        v.truncate(end);
        v
    };
    let t0 = 830_000_000_000_000i64;
    let mut b = SegmentBuilder::new(major, TimelineId(1), 1, size);
    b.xact_end(1000, t0, false);
    b.xact_end(1001, t0 + 1, true);
    b.restore_point("before-drop", t0 + 2);
    b.prepared_end(0, 700, t0 + 3, false, &[701, 702]);
    b.prepared_end(0, 702, t0 + 4, true, &[]);
    b.switch();
    let seg = trim(b.finish());
    add("wal_record", "xacts-own-header", seg.clone());
    add("wal_record", "xacts", seg[LONG_HEADER_SIZE..].to_vec());
    // A record that crosses into the second page.
    let mut b = SegmentBuilder::new(major, TimelineId(1), 1, size);
    b.filler(5, 8000, 1);
    b.xact_end(5, t0, false);
    let seg = trim(b.finish());
    add("wal_record", "page-crossing", seg[LONG_HEADER_SIZE..].to_vec());
    // End of recovery (a timeline switch), on PostgreSQL 13.
    let mut b = SegmentBuilder::new(PgMajor::from_magic(0xD106).expect("13"), TimelineId(2), 1, size);
    let mut eor = t0.to_le_bytes().to_vec();
    eor.extend_from_slice(&2u32.to_le_bytes());
    eor.extend_from_slice(&1u32.to_le_bytes());
    b.record(crate::wal::synthetic::RM_XLOG, 0x90, 0, &eor);
    add("wal_record", "end-of-recovery-pg13", trim(b.finish()));

    add("wal_history", "tl2", b"\x011\t0/3000000\tno recovery target specified\n".to_vec());
    add(
        "wal_history",
        "tl4",
        b"\x03# comment\n1\t0/3000000\tno recovery target specified\n\n2\t0/5000148\tbefore 2026-01-01 00:00:00+00\n"
            .to_vec(),
    );

    // Manifests (as PostgreSQL 15 and 17 write them).
    add("manifest", "pg15", sample_manifest(1, &[("PG_VERSION", b"15\n"), ("global/pg_control", b"ctl")], false));
    add("manifest", "pg17-encoded-path", sample_manifest(2, &[("PG_VERSION", b"17\n")], true));

    // Tar: what PostgreSQL writes, then GNU long names and pax records (first byte: the cuts).
    {
        use crate::tar::testing::member;
        let mut t = vec![0x5A];
        member(&mut t, b"base/", b'5', b"");
        member(&mut t, b"base/1/1259", b'0', &[7u8; 700]);
        member(&mut t, b"PG_VERSION", b'0', b"15\n");
        member(&mut t, b"empty", b'0', b"");
        member(&mut t, b"pg_wal", b'2', b"");
        t.extend_from_slice(&[0u8; 1024]);
        add("tar", "postgres", t);
        let mut t = vec![0x07];
        let mut long = vec![b'a'; 150];
        long.push(0);
        member(&mut t, b"././@LongLink", b'L', &long);
        member(&mut t, b"short", b'0', b"xyz");
        member(&mut t, b"pax", b'x', b"21 path=pax/name.txt\n12 size=5\n");
        member(&mut t, b"ignored", b'0', b"hello");
        member(&mut t, b"global", b'g', b"9 a=bcd\n");
        t.extend_from_slice(&[0u8; 1024]);
        add("tar", "long-names-pax", t);
    }

    // Protocol messages: a startup exchange, a query's answer, the COPY BOTH of replication.
    let frame = |tag: u8, body: &[u8]| {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let mut s = vec![0x33];
    s.extend(frame(b'R', &10i32.to_be_bytes().iter().chain(b"SCRAM-SHA-256\0\0").copied().collect::<Vec<_>>()));
    s.extend(frame(b'R', &0i32.to_be_bytes()));
    s.extend(frame(b'S', b"server_version\x0016.4\0"));
    s.extend(frame(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
    s.extend(frame(b'v', &[0, 0, 0, 0, 0, 0, 0, 1, b'_', b'p', b'q', b'_', b'.', b'x', 0]));
    s.extend(frame(b'Z', b"I"));
    add("pgwire_message", "startup", s);
    let mut s = vec![0x11];
    let mut rd = vec![0, 1];
    rd.extend_from_slice(b"systemid\0");
    rd.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]);
    s.extend(frame(b'T', &rd));
    s.extend(frame(b'D', &[0, 2, 0, 0, 0, 3, b'1', b'2', b'3', 0xFF, 0xFF, 0xFF, 0xFF]));
    s.extend(frame(b'C', b"SELECT 1\0"));
    s.extend(frame(b'N', b"SNOTICE\0C00000\0Mhello\0\0"));
    s.extend(frame(b'E', b"SERROR\0C42601\0Msyntax error\0\0"));
    s.extend(frame(b'W', &[0, 0, 0]));
    s.extend(frame(b'd', b"w0123456789abcdef01234567WAL"));
    s.extend(frame(b'c', b""));
    s.extend(frame(b'H', &[0, 0, 0]));
    add("pgwire_message", "query-and-copy", s);

    let mut w = vec![b'w'];
    w.extend_from_slice(&0x0100_0000u64.to_be_bytes());
    w.extend_from_slice(&0x0100_2000u64.to_be_bytes());
    w.extend_from_slice(&830_000_000_000_000i64.to_be_bytes());
    w.extend_from_slice(b"some WAL bytes");
    add("replication_message", "xlogdata", w);
    let mut k = vec![b'k'];
    k.extend_from_slice(&0x0100_2000u64.to_be_bytes());
    k.extend_from_slice(&830_000_000_000_000i64.to_be_bytes());
    k.push(1);
    add("replication_message", "keepalive", k);
    add("basebackup_message", "new-archive", b"nbase.tar\0\0".to_vec());
    add("basebackup_message", "tablespace", b"n16389.tar\0/srv/ts1\0".to_vec());
    add("basebackup_message", "manifest", b"m".to_vec());
    add("basebackup_message", "data", b"dtar bytes".to_vec());
    add("basebackup_message", "progress", b"p\0\0\0\0\0\x01\0\0".to_vec());

    for (name, s) in [
        ("kv", "host=/var/run/postgresql port=5433 user=replicator dbname='my db' sslmode=verify-full"),
        ("uri", "postgresql://rep%40x:p%2Fw@[::1]:5433,db2:5434/postgres?application_name=a&ssl=true"),
        ("bare", "postgres"),
        ("options", "hostaddr=127.0.0.1 target_session_attrs=read-write connect_timeout=10 channel_binding=require"),
    ] {
        add("conninfo", name, s.as_bytes().to_vec());
    }
    add("pgpass", "entries", b"# comment\nlocalhost:5432:*:postgres:secret\n*:*:*:rep\\:l:pa\\\\ss:word\n".to_vec());

    // Stored objects: a WAL segment with its summary, a file, an empty one.
    for (name, content, wal) in [
        ("wal", &b"WAL bytes "[..], true),
        ("file", &b"content of a file, content of a file"[..], false),
        ("empty", &b""[..], false),
    ] {
        let summary = wal.then(|| SegmentSummary { xact_ends: 2, xid_min: Some(5), ..SegmentSummary::default() });
        let mut obj = Cursor::new(Vec::new());
        let mut src = content;
        let size = Some(content.len() as u64);
        codec::compress_with_summary(&[], &mut src, &mut obj, name, size, summary, CompressOptions::default())
            .expect("compressing into memory");
        add("codec", name, obj.into_inner());
    }

    add(
        "config_toml",
        "full",
        b"repo = \"s3://my-bucket/pitr/main\"\ncluster = \"main\"\ncompress-level = 3\ns3-path-style = true\n\
          pgdata = \"/var/lib/postgresql/16/main\"\nkeep-within = \"7d\"\nmetrics-listen = \"127.0.0.1:9187\"\n"
            .to_vec(),
    );
    add("config_toml", "local", b"repo = \"/var/lib/pitr\"\nretries = 5\n".to_vec());
    for (name, s) in [("s3", "s3://my-bucket/a/b"), ("file", "file:///var/lib/pitr"), ("path", "relative/dir")] {
        add("repo_location", name, s.as_bytes().to_vec());
    }
    out
}

/// A manifest as PostgreSQL writes it, with a correct checksum.
fn sample_manifest(version: u32, files: &[(&str, &[u8])], encoded: bool) -> Vec<u8> {
    use sha2::Digest;
    let mut m = format!("{{ \"PostgreSQL-Backup-Manifest-Version\": {version},\n");
    if version >= 2 {
        m.push_str("\"System-Identifier\": 7310000000000000001,\n");
    }
    m.push_str("\"Files\": [\n");
    for (i, (path, content)) in files.iter().enumerate() {
        if i > 0 {
            m.push_str(",\n");
        }
        let path = if encoded {
            format!("\"Encoded-Path\": \"{}\"", hex::encode(path))
        } else {
            format!("\"Path\": \"{path}\"")
        };
        m.push_str(&format!(
            "{{ {path}, \"Size\": {}, \"Last-Modified\": \"2026-11-22 03:56:08 GMT\", \
             \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
            content.len(),
            crate::manifest::crc32c_hex(crc32c::crc32c(content))
        ));
    }
    m.push_str(
        "\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }\n],\n",
    );
    let sum = hex::encode(sha2::Sha256::digest(m.as_bytes()));
    m.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_valid_where_they_should_be() {
        let seeds = seed_corpora();
        for (target, _) in TARGETS {
            assert!(seeds.iter().any(|(t, _, _)| t == target), "no seed for {target}");
        }
        for (target, name, bytes) in &seeds {
            let f = TARGETS.iter().find(|(t, _)| t == target).map(|(_, f)| *f).expect("a known target");
            f(bytes);
            match *target {
                "manifest" => assert!(Manifest::parse(bytes).is_ok(), "{name}"),
                "codec" => assert!(codec::decompress(&bytes[..], &mut Vec::new()).is_ok(), "{name}"),
                "wal_page_header" => assert!(LongPageHeader::parse(bytes).is_ok(), "{name}"),
                "wal_file_name" => assert!(WalFileName::parse(std::str::from_utf8(bytes).unwrap()).is_ok(), "{name}"),
                _ => {}
            }
        }
    }
}
