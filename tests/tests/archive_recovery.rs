//! End to end: a real PostgreSQL 15 archives through `wal-archiver push`, and a cluster
//! restored from a base backup recovers through `wal-archiver get`, with the repository on
//! local disk and on a real S3 server (moto).

use std::path::Path;
use std::time::Duration;

use pitr_tests::pg::{as_server_user, pg_bin, scratch_dir, TestCluster};
use pitr_tests::repo::TestRepo;
use pitr_tests::{bins, s3};

/// Archives pgbench WAL, checks every archived segment comes back byte-identical, then
/// recovers a base backup to the end of the archive and compares the data.
fn archive_then_recover(repo: &TestRepo, label: &str) {
    let mut primary = TestCluster::init(label, &["archive_mode = on".into(), repo.archive_command()]);
    for (k, v) in &repo.env {
        primary.env(k, v);
    }
    primary.start();

    // A base backup that needs the archive (no WAL inside it).
    let backup_dir = scratch_dir(&format!("{label}-backup"));
    let backup = backup_dir.path().join("data");
    let out = as_server_user(pg_bin().join("pg_basebackup"))
        .args(["-h", primary.socket_dir.to_str().unwrap(), "-p", &primary.port.to_string(), "-U", "postgres"])
        .args(["-D", backup.to_str().unwrap(), "-X", "none", "-c", "fast", "--no-sync"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));

    primary.pgbench(&["-i", "-s", "2", "-q"]);
    let mut last = String::new();
    for _ in 0..2 {
        primary.pgbench(&["-n", "-t", "300", "-c", "2"]);
        last = primary.switch_wal();
    }
    primary.wait_archived(&last, Duration::from_secs(120));
    let expected = primary.sql("SELECT count(*), sum(abalance) FROM pgbench_accounts");
    let history_rows = primary.sql("SELECT count(*) FROM pgbench_history");

    // Every segment PostgreSQL marked archived is in the repository, byte-identical.
    let status = primary.data.join("pg_wal/archive_status");
    let mut checked = 0;
    let fetch_dir = scratch_dir(&format!("{label}-fetch"));
    for entry in std::fs::read_dir(&status).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        let Some(seg) = name.strip_suffix(".done") else { continue };
        let original = primary.data.join("pg_wal").join(seg);
        if !original.exists() {
            continue; // recycled after archiving
        }
        let dest = fetch_dir.path().join(seg);
        bins::run({
            let mut c = repo.wal_archiver();
            c.args(["get", seg, dest.to_str().unwrap()]);
            c
        })
        .ok();
        assert!(same_file(&original, &dest), "{seg} fetched from the repository differs from pg_wal");
        checked += 1;
    }
    assert!(checked >= 3, "expected several archived segments, checked {checked}");

    // Recover the base backup through restore_command to the end of the archive.
    TestCluster::append_conf(
        &backup,
        &["archive_mode = off".into(), repo.restore_command(), "recovery_target_action = 'promote'".into()],
    );
    std::fs::write(backup.join("recovery.signal"), b"").unwrap();
    pitr_tests::pg::give_to_server_user(backup_dir.path());
    let mut restored = TestCluster::existing(backup.clone(), backup_dir.path().to_path_buf());
    for (k, v) in &repo.env {
        restored.env(k, v);
    }
    restored.start();
    restored.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(120));
    assert_eq!(restored.sql("SELECT count(*), sum(abalance) FROM pgbench_accounts"), expected);
    assert_eq!(restored.sql("SELECT count(*) FROM pgbench_history"), history_rows);
    let log = restored.log();
    assert!(log.contains("restored log file"), "recovery used restore_command:\n{log}");
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn local_repository_archives_and_recovers() {
    let repo = TestRepo::local();
    archive_then_recover(&repo, "local");
    // The repository recorded the cluster's identity on the first push.
    let info = std::fs::read_to_string(repo.dir.as_ref().unwrap().join("main/cluster.json")).unwrap();
    assert!(info.contains("\"pg_major\": 15"), "{info}");
}

#[test]
fn s3_repository_archives_and_recovers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt.block_on(TestRepo::s3(s3::moto()));
    archive_then_recover(&repo, "s3");
    let keys = rt.block_on(repo.snapshot());
    assert!(keys.keys().any(|k| k.ends_with("main/cluster.json")), "{:?}", keys.keys().collect::<Vec<_>>());
}
