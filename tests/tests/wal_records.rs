//! The WAL record walker against real PostgreSQL 15 WAL, checked against `pg_waldump`:
//! commit/abort counts and times, restore points and the segment switch must agree.

use std::process::Command;

use common::wal::record::summarize;
use pitr_tests::pg::{pg_bin, TestCluster};

/// pg_waldump's records of one segment (rmgr, description) in `dir`.
fn waldump(dir: &std::path::Path, seg: &str) -> Vec<(String, String)> {
    let out = Command::new(pg_bin().join("pg_waldump")).arg("-p").arg(dir).arg(seg).output().unwrap();
    // pg_waldump exits non-zero at the end of valid WAL; its stdout is still complete.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rmgr = l.split_once("rmgr: ")?.1.split_whitespace().next()?.to_string();
            let desc = l.split_once("desc: ")?.1.to_string();
            Some((rmgr, desc))
        })
        .collect()
}

#[test]
fn summaries_agree_with_pg_waldump() {
    let mut pg = TestCluster::init("records", &[]);
    pg.start();
    pg.sql("CREATE TABLE t(i int, pad text)");
    // Commits, an abort, a long record spanning pages, restore points, then a switch.
    for i in 0..50 {
        pg.sql(&format!("INSERT INTO t SELECT {i}, repeat('x', 3000) FROM generate_series(1, 20)"));
    }
    pg.sql("BEGIN; INSERT INTO t VALUES (-1, 'aborted'); ROLLBACK");
    pg.sql("SELECT pg_create_restore_point('before-incident')");
    pg.sql("INSERT INTO t VALUES (999, 'after')");
    pg.sql("SELECT pg_create_restore_point('second point')");
    let seg = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("SELECT pg_switch_wal()");
    pg.sql("CHECKPOINT");

    let pg_wal = pg.data.join("pg_wal");
    let bytes = std::fs::read(pg_wal.join(&seg)).unwrap();
    let s = summarize(&bytes).unwrap();
    let dump = waldump(&pg_wal, &seg);

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
        .map(|(_, d)| d.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" "))
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
        let dumped = waldump(&pg_wal, seg)
            .iter()
            .filter(|(r, d)| r == "Transaction" && (d.starts_with("COMMIT") || d.starts_with("ABORT")))
            .count() as u32;
        assert_eq!(s.xact_ends, dumped, "{seg}: {s:#?}");
        assert!(s.stopped.is_none() || seg == &current, "{seg} walk stopped early: {s:#?}");
        total += s.xact_ends;
    }
    assert!(total >= 1000, "pgbench committed at least 1000 transactions, saw {total}");
}
