//! The WAL record walker against real PostgreSQL 15 WAL, checked against `pg_waldump`:
//! commit/abort counts, times and transaction ids, restore points and the segment switch
//! must agree.

use std::process::Command;

use common::wal::record::summarize;
use pitr_tests::pg::{pg_bin, TestCluster};

/// pg_waldump's records of one segment (rmgr, description) in `dir`.
fn waldump(dir: &std::path::Path, seg: &str) -> Vec<(String, String)> {
    waldump_xids(dir, seg).into_iter().map(|(r, _, d)| (r, d)).collect()
}

/// pg_waldump's records of one segment (rmgr, `tx:` field, description) in `dir`.
fn waldump_xids(dir: &std::path::Path, seg: &str) -> Vec<(String, u32, String)> {
    let out = Command::new(pg_bin().join("pg_waldump")).arg("-p").arg(dir).arg(seg).output().unwrap();
    // pg_waldump exits non-zero at the end of valid WAL; its stdout is still complete.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rmgr = l.split_once("rmgr: ")?.1.split_whitespace().next()?.to_string();
            let tx = l.split_once("tx: ")?.1.split(',').next()?.trim().parse().ok()?;
            let desc = l.split_once("desc: ")?.1.to_string();
            Some((rmgr, tx, desc))
        })
        .collect()
}

/// The xid range `recovery_target_xid` can match in pg_waldump's records: the `tx:` of
/// COMMIT/ABORT, the prepared transaction's xid (`COMMIT_PREPARED 740: …`) of the others.
fn dumped_xid_range(dump: &[(String, u32, String)]) -> Option<(u32, u32)> {
    let xids: Vec<u32> = dump
        .iter()
        .filter(|(r, _, d)| r == "Transaction" && (d.starts_with("COMMIT") || d.starts_with("ABORT")))
        .map(|(_, tx, d)| {
            if d.starts_with("COMMIT_PREPARED") || d.starts_with("ABORT_PREPARED") {
                d.split_whitespace().nth(1).unwrap().trim_end_matches(':').parse().unwrap()
            } else {
                *tx
            }
        })
        .filter(|&x| x != 0)
        .collect();
    Some((*xids.iter().min()?, *xids.iter().max()?))
}

#[test]
fn summaries_agree_with_pg_waldump() {
    let mut pg = TestCluster::init("records", &["max_prepared_transactions = 4".into()]);
    pg.start();
    pg.sql("CREATE TABLE t(i int, pad text)");
    // A transaction prepared in an earlier segment, committed in this one: its xid is the
    // smallest here, and only the COMMIT PREPARED record body names it.
    pg.sql("BEGIN; INSERT INTO t VALUES (-2, 'prepared early'); PREPARE TRANSACTION 'early'");
    let early: u32 = pg.sql("SELECT transaction FROM pg_prepared_xacts WHERE gid = 'early'").parse().unwrap();
    pg.sql("SELECT pg_switch_wal()");
    // Commits, an abort, prepared transactions, a long record spanning pages, restore points,
    // then a switch.
    for i in 0..50 {
        pg.sql(&format!("INSERT INTO t SELECT {i}, repeat('x', 3000) FROM generate_series(1, 20)"));
    }
    pg.sql("BEGIN; INSERT INTO t VALUES (-1, 'aborted'); ROLLBACK");
    pg.sql("COMMIT PREPARED 'early'");
    pg.sql("BEGIN; INSERT INTO t VALUES (-3, 'prepared late'); PREPARE TRANSACTION 'late'");
    let late: u32 = pg.sql("SELECT transaction FROM pg_prepared_xacts WHERE gid = 'late'").parse().unwrap();
    pg.sql("ROLLBACK PREPARED 'late'");
    pg.sql("SELECT pg_create_restore_point('before-incident')");
    pg.sql("INSERT INTO t VALUES (999, 'after')");
    pg.sql("SELECT pg_create_restore_point('second point')");
    let seg = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("SELECT pg_switch_wal()");
    pg.sql("CHECKPOINT");

    let pg_wal = pg.data.join("pg_wal");
    let bytes = std::fs::read(pg_wal.join(&seg)).unwrap();
    let s = summarize(&bytes).unwrap();
    let dump_xids = waldump_xids(&pg_wal, &seg);
    let dump = waldump(&pg_wal, &seg);
    assert!(dump.iter().any(|(_, d)| d.starts_with(&format!("COMMIT_PREPARED {early}: "))), "{dump:#?}");
    assert_eq!(s.xid_min.zip(s.xid_max), dumped_xid_range(&dump_xids), "{s:#?}");
    assert_eq!(s.xid_min, Some(early), "only the COMMIT PREPARED body names the oldest xid");
    assert!(s.xid_max.unwrap() > late, "later commits have later xids: {s:#?}");

    let xact_ends =
        dump.iter().filter(|(r, d)| r == "Transaction" && (d.starts_with("COMMIT") || d.starts_with("ABORT"))).count()
            as u32;
    // pg_waldump counts records that start in the segment, like the walker.
    assert_eq!(s.xact_ends, xact_ends, "commit/abort count: {s:#?}");
    assert!(xact_ends >= 52);
    let names: Vec<&str> = s.restore_points.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["before-incident", "second point"]);
    let dumped_rp: Vec<&String> =
        dump.iter().filter(|(r, _)| r == "XLOG").map(|(_, d)| d).filter(|d| d.starts_with("RESTORE_POINT")).collect();
    assert_eq!(dumped_rp.len(), 2);
    assert!(s.switch_at.is_some(), "segment ends with a switch: {s:#?}");
    assert!(s.stopped.is_none(), "walk ended at the switch, not on an error: {s:#?}");

    // The first and last commit times are those pg_waldump prints (it prints UTC at µs).
    let times: Vec<String> = dump
        .iter()
        .filter(|(r, d)| r == "Transaction" && (d.starts_with("COMMIT") || d.starts_with("ABORT")))
        .map(|(_, d)| d.split_whitespace().skip(1).filter(|w| !w.ends_with(':')).take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let ours = |t: common::wal::record::PgTimestamp| t.to_string().trim_end_matches("+00").to_string();
    assert_eq!(times.iter().min().unwrap(), &ours(s.first_xact_time.unwrap()));
    assert_eq!(times.iter().max().unwrap(), &ours(s.last_xact_time.unwrap()));
}

#[test]
fn every_pgbench_segment_agrees_with_pg_waldump() {
    let mut pg = TestCluster::init("records-bench", &["full_page_writes = on".into()]);
    pg.start();
    pg.pgbench(&["-i", "-s", "3", "-q"]);
    pg.pgbench(&["-n", "-t", "500", "-c", "2"]);
    let current = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("SELECT pg_switch_wal()");
    let pg_wal = pg.data.join("pg_wal");
    let mut segs: Vec<String> = std::fs::read_dir(&pg_wal)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.as_str() <= current.as_str())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    let mut total = 0;
    for seg in &segs {
        let s = summarize(&std::fs::read(pg_wal.join(seg)).unwrap()).unwrap();
        let dump = waldump_xids(&pg_wal, seg);
        let dumped = dump
            .iter()
            .filter(|(r, _, d)| r == "Transaction" && (d.starts_with("COMMIT") || d.starts_with("ABORT")))
            .count() as u32;
        assert_eq!(s.xact_ends, dumped, "{seg}: {s:#?}");
        let ours = s.xid_min.zip(s.xid_max);
        assert_eq!(ours, dumped_xid_range(&dump), "{seg}: xid range");
        assert!(s.stopped.is_none() || seg == &current, "{seg} walk stopped early: {s:#?}");
        total += s.xact_ends;
    }
    assert!(total >= 1000, "pgbench committed at least 1000 transactions, saw {total}");
}
