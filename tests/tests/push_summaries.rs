//! `push` stores a WAL summary in each segment's object header, so that a restore can be
//! planned from headers alone: real PostgreSQL 15 WAL (times, restore point, xid range), and
//! synthetic `.partial`, switched and history files.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::codec::{header_len, HEADER_LEN};
use common::lsn::Lsn;
use common::repository::Repository;
use common::retry::RetryPolicy;
use common::storage::read_all;
use common::wal::record::{PgTimestamp, SegmentSummary};
use common::wal::synthetic::{pgbench_like_segment, SegmentBuilder};
use common::wal::{PgMajor, TimelineId, WalFileName, WalSegmentSize};
use pitr_tests::bins;
use pitr_tests::pg::{scratch_dir, TestCluster};
use pitr_tests::repo::TestRepo;

fn now() -> PgTimestamp {
    PgTimestamp::from_unix_micros(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64)
}

fn repository(repo: &TestRepo) -> Repository {
    Repository::new(Arc::clone(&repo.storage), "main", RetryPolicy::with_retries(0))
}

/// The stored summary of `name`; fails the test when the object or its summary is missing.
fn summary(rt: &tokio::runtime::Runtime, repo: &TestRepo, name: &WalFileName) -> SegmentSummary {
    let r = repository(repo);
    match rt.block_on(r.wal_summary(name)).unwrap() {
        Some(Some(s)) => s,
        Some(None) => panic!("{name} is archived without a WAL summary"),
        None => panic!("{name} is not archived"),
    }
}

/// Length of the header frame of `name`'s object.
fn stored_header_len(rt: &tokio::runtime::Runtime, repo: &TestRepo, name: &WalFileName) -> usize {
    let key = repository(repo).wal_key(name);
    header_len(&rt.block_on(read_all(repo.storage.as_ref(), &key)).unwrap()).unwrap()
}

#[test]
fn push_stores_wal_summaries_of_real_postgres_wal() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = TestRepo::local();
    let mut pg = TestCluster::init("summaries", &["archive_mode = on".into(), repo.archive_command()]);
    for (k, v) in &repo.env {
        pg.env(k, v);
    }
    pg.start();
    pg.sql("CREATE TABLE orders(id int, note text)");
    let before = WalFileName::parse(&pg.switch_wal()).unwrap();

    // Everything from here on lands in segments after `before`.
    let t0 = now();
    pg.sql("SELECT pg_create_restore_point('before-drop')");
    let txid: u64 = pg
        .sql("WITH i AS (INSERT INTO orders VALUES (1, 'recorded') RETURNING 1) SELECT txid_current()")
        .parse()
        .unwrap();
    let xid = (txid & 0xFFFF_FFFF) as u32;
    for i in 2..12 {
        pg.sql(&format!("INSERT INTO orders VALUES ({i}, 'more')"));
    }
    pg.sql("DROP TABLE orders");
    let last = WalFileName::parse(&pg.switch_wal()).unwrap();
    let t1 = now();
    pg.wait_archived(&last.to_string(), Duration::from_secs(120));

    let size = WalSegmentSize::DEFAULT;
    let from = before.segment_number(size).unwrap().unwrap() + 1;
    let to = last.segment_number(size).unwrap().unwrap();
    assert!(from <= to, "{before} then {last}");
    let mut xact_ends = 0;
    let mut found_point = None;
    let mut xid_in = None;
    for segno in from..=to {
        let name = WalFileName::segment(TimelineId(1), segno, size);
        let s = summary(&rt, &repo, &name);
        let len = stored_header_len(&rt, &repo, &name);
        eprintln!("{name}: header {len} bytes, {s:?}");
        assert!(len >= HEADER_LEN && len.is_multiple_of(HEADER_LEN), "{len}");
        if s.restore_points.is_empty() {
            assert_eq!(len, HEADER_LEN, "{name}: without restore points the header keeps its usual length");
        }
        xact_ends += s.xact_ends;
        if s.xact_ends > 0 {
            let (first, last) = (s.first_xact_time.unwrap(), s.last_xact_time.unwrap());
            assert!(t0 <= first && first <= last && last <= t1, "{name}: {first}..{last} outside {t0}..{t1}");
        }
        if let Some(p) = s.restore_points.iter().find(|p| p.name == "before-drop") {
            assert!(t0 <= p.time && p.time <= t1, "{p:?}");
            let start = Lsn(segno * size.bytes());
            assert!(start < p.lsn && p.lsn < Lsn(start.0 + size.bytes()), "{p:?} in {name}");
            found_point = Some(name);
        }
        if let (Some(lo), Some(hi)) = (s.xid_min, s.xid_max) {
            if lo <= xid && xid <= hi {
                xid_in = Some(name);
            }
        }
        assert_eq!(s.stopped, None, "the stored form has no diagnostics");
    }
    assert!(xact_ends >= 12, "at least the test's commits: {xact_ends}");
    assert!(found_point.is_some(), "restore point 'before-drop' not found in segments {from:X}..={to:X}");
    assert!(xid_in.is_some(), "xid {xid} is in no stored xid range");
    let s = summary(&rt, &repo, &last);
    assert!(s.switch_at.is_some() && s.valid_end > s.switch_at, "{last} ends with a switch: {s:?}");

    // The segment before: commits, no restore point, a switch; the usual header length.
    let s = summary(&rt, &repo, &before);
    assert!(s.xact_ends > 0 && s.xid_min.is_some() && s.switch_at.is_some(), "{s:?}");
    assert!(s.restore_points.is_empty());
    assert_eq!(stored_header_len(&rt, &repo, &before), HEADER_LEN);
}

#[test]
fn push_summarizes_partial_and_switched_segments_but_not_history_files() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = TestRepo::local();
    let dir = scratch_dir("summaries-files");
    let push = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        bins::run({
            let mut c = repo.wal_archiver();
            c.arg("push").arg(&path);
            c
        })
        .ok();
    };

    // A .partial file: its last record continues in a segment that was never written.
    let partial = pgbench_like_segment(3, 5000);
    push("000000010000000000000003.partial", &partial);
    let s = summary(&rt, &repo, &WalFileName::parse("000000010000000000000003.partial").unwrap());
    assert!(s.xact_ends > 10_000 && s.xid_min == Some(5000) && s.valid_end.is_some(), "{s:?}");

    // A switched segment whose tail is recycled garbage: summarized up to the switch.
    let major = PgMajor::from_magic(0xD110).unwrap();
    let mut b = SegmentBuilder::new(major, TimelineId(1), 4, WalSegmentSize::DEFAULT);
    b.xact_end(6000, 830_000_000_000_000, false);
    b.restore_point("nightly", 830_000_000_000_100);
    let switch = b.switch();
    let mut seg = b.finish();
    for (i, byte) in seg.iter_mut().enumerate().skip(64 << 10) {
        *byte = (i * 31 % 251) as u8;
    }
    push("000000010000000000000004", &seg);
    let name = WalFileName::parse("000000010000000000000004").unwrap();
    let s = summary(&rt, &repo, &name);
    assert_eq!((s.xact_ends, s.xid_min, s.switch_at), (1, Some(6000), Some(switch)), "{s:?}");
    assert_eq!(s.restore_points[0].name, "nightly");
    assert_eq!(stored_header_len(&rt, &repo, &name), 2 * HEADER_LEN, "a restore point makes the header longer");

    // History files carry no summary.
    push("00000002.history", b"1\t0/5000000\tno recovery target specified\n");
    let r = repository(&repo);
    assert_eq!(rt.block_on(r.wal_summary(&WalFileName::history(TimelineId(2)))).unwrap(), Some(None));

    // The same files pushed again are recognised as archived (digest of the in-memory copy).
    push("000000010000000000000003.partial", &partial);
    push("000000010000000000000004", &seg);
}
