//! End to end: `basebackup create` against a real PostgreSQL 15 archiving through
//! `wal-archiver push`, with an extra tablespace, into a local and an S3 (moto) repository;
//! `list` and `verify` of the result; the stored chunks extracted and checked by PostgreSQL's
//! own `pg_verifybackup`; a damaged chunk found by `verify`; another cluster's server refused
//! before anything is stored; a backup whose WAL never arrives left unrecorded.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::catalog::{self, BackupEntry};
use common::storage::{read_all, Body, ObjectKey, PutMode};
use pitr_tests::bins::{self, Run};
use pitr_tests::pg::{give_to_server_user, pg_bin, scratch_dir, server_user, TestCluster};
use pitr_tests::repo::TestRepo;
use pitr_tests::s3;

/// `basebackup` for `repo`, reaching `cluster` over its Unix socket, run as the server's OS
/// user (as a cron job of the postgres user would), so that what it creates in a local
/// repository stays writable by archive_command.
fn basebackup(repo: &TestRepo, cluster: &TestCluster) -> Command {
    let mut c = bins::basebackup();
    c.envs(repo.env.iter().map(|(k, v)| (k, v)));
    c.env("PITR_DBNAME", format!("host={} port={} user=postgres", cluster.socket_dir.display(), cluster.port));
    if let Some((uid, gid)) = server_user() {
        c.uid(uid).gid(gid);
        c.env("HOME", "/tmp");
    }
    c
}

fn run(mut c: Command, args: &[&str]) -> Run {
    c.args(args);
    bins::run(c)
}

/// Asserts a failure with `code` whose last stderr line (progress lines may precede it) is the
/// one-line error naming `needle`.
fn fails_with(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "wrong exit code: {r:#?}");
    let last = r.stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        last.contains("error:") && last.contains(needle),
        "error line {last:?} does not mention {needle:?}: {r:#?}"
    );
    let errors = r.stderr.lines().filter(|l| l.contains("error")).count();
    assert_eq!(errors, 1, "expected one error line: {:?}", r.stderr);
}

/// A primary archiving into `repo`, with pgbench data and a table in an extra tablespace.
fn primary(repo: &TestRepo, label: &str) -> (TestCluster, tempfile::TempDir) {
    let mut c = TestCluster::init(label, &["archive_mode = on".into(), repo.archive_command()]);
    for (k, v) in &repo.env {
        c.env(k, v);
    }
    c.start();
    let (ts_dir, _) = c.create_tablespace("extra");
    c.sql("CREATE TABLE in_extra (id int, note text) TABLESPACE extra");
    c.sql("INSERT INTO in_extra SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    c.pgbench(&["-i", "-s", "5", "-q"]);
    (c, ts_dir)
}

fn entry(repo: &TestRepo, rt: &tokio::runtime::Runtime, id: &str) -> BackupEntry {
    let key = ObjectKey::new(catalog::entry_key("main", id)).unwrap();
    let bytes = rt.block_on(read_all(repo.storage.as_ref(), &key)).expect("catalog entry");
    serde_json::from_slice(&bytes).unwrap()
}

/// Decompresses an archive's chunks into one tar file and extracts it into `dest`.
fn extract(repo: &TestRepo, rt: &tokio::runtime::Runtime, e: &BackupEntry, archive: &str, dest: &Path) {
    let a = e.archives.iter().find(|a| a.name == archive).unwrap();
    let tar_path = dest.with_extension("tar");
    let mut tar = std::fs::File::create(&tar_path).unwrap();
    for n in 0..a.chunks {
        let key = ObjectKey::new(catalog::chunk_key("main", &e.id, archive, n)).unwrap();
        let obj = rt.block_on(read_all(repo.storage.as_ref(), &key)).unwrap();
        common::codec::decompress(&obj[..], &mut tar).unwrap();
    }
    drop(tar);
    assert_eq!(std::fs::metadata(&tar_path).unwrap().len(), a.raw_bytes);
    std::fs::create_dir_all(dest).unwrap();
    let out = Command::new("tar").arg("-xf").arg(&tar_path).arg("-C").arg(dest).output().unwrap();
    assert!(out.status.success(), "tar -x {archive}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&tar_path).unwrap();
}

/// Extracts the backup as a plain data directory (tablespaces linked under pg_tblspc, as
/// pg_verifybackup expects them) and runs `pg_verifybackup -n` against the stored manifest.
fn pg_verifybackup(repo: &TestRepo, rt: &tokio::runtime::Runtime, e: &BackupEntry) {
    let dir = scratch_dir("verifybackup");
    let data = dir.path().join("data");
    extract(repo, rt, e, "base.tar", &data);
    for a in e.archives.iter().filter(|a| a.tablespace_oid.is_some()) {
        let oid = a.tablespace_oid.unwrap();
        let ts = dir.path().join(format!("ts-{oid}"));
        extract(repo, rt, e, &a.name, &ts);
        std::os::unix::fs::symlink(&ts, data.join("pg_tblspc").join(oid.to_string())).unwrap();
    }
    let key = ObjectKey::new(catalog::manifest_key("main", &e.id)).unwrap();
    let obj = rt.block_on(read_all(repo.storage.as_ref(), &key)).unwrap();
    let manifest: PathBuf = dir.path().join("backup_manifest");
    let mut f = std::fs::File::create(&manifest).unwrap();
    common::codec::decompress(&obj[..], &mut f).unwrap();
    give_to_server_user(dir.path());
    let out =
        Command::new(pg_bin().join("pg_verifybackup")).args(["-n", "-m"]).arg(&manifest).arg(&data).output().unwrap();
    assert!(
        out.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully verified"));
    let label = std::fs::read_to_string(data.join("backup_label")).unwrap();
    assert!(label.contains(&format!("LABEL: {}\n", e.label)), "{label}");
    assert!(std::fs::read_to_string(data.join("tablespace_map")).unwrap().contains("/ts"));
}

/// create, list (table and JSON), verify, pg_verifybackup on the extracted chunks.
fn create_list_verify(repo: &TestRepo, label: &str) -> (TestCluster, BackupEntry, tempfile::TempDir) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (cluster, ts_dir) = primary(repo, label);
    let r = run(basebackup(repo, &cluster), &["create", "--wal-timeout", "60", "--label", "nightly"]);
    let id = r.ok().trim().to_string();
    assert!(catalog::valid_backup_id(&id), "stdout is the backup id: {r:#?}");
    let e = entry(repo, &rt, &id);
    assert_eq!(e.label, "nightly");
    assert_eq!(e.archives.len(), 2, "{e:#?}");
    assert_eq!(e.archives[1].name, "base.tar", "tablespaces first, base last");
    assert!(e.archives[0].tablespace_path.as_deref().unwrap().ends_with("/ts"));
    assert!(e.archives[1].chunks >= 2, "pgbench -s 5 spans several 32 MiB chunks: {e:#?}");
    assert!(e.stored_bytes * 2 < e.raw_bytes, "compressed: {e:#?}");
    assert!(e.start_lsn < e.stop_lsn);
    let sysid = cluster.sql("SELECT system_identifier FROM pg_control_system()");
    assert_eq!(e.system_id.0.to_string(), sysid);

    let table = run(basebackup(repo, &cluster), &["list"]);
    let table = table.ok();
    assert!(table.contains(&id) && table.contains(&e.start_lsn.to_string()) && table.contains("1 backups"), "{table}");
    let json = run(basebackup(repo, &cluster), &["list", "--json"]);
    let lines: Vec<&str> = json.ok().lines().collect();
    assert_eq!(lines.len(), 1);
    let listed: BackupEntry = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(listed.id, id);
    assert_eq!(listed.stop_lsn, e.stop_lsn);

    let v = run(basebackup(repo, &cluster), &["verify", &id]);
    assert!(v.ok().contains(&format!("{id}: ok")), "{v:#?}");
    let v = run(basebackup(repo, &cluster), &["verify", "--all"]);
    assert!(v.ok().contains(&format!("{id}: ok")), "{v:#?}");

    pg_verifybackup(repo, &rt, &e);
    (cluster, e, ts_dir)
}

#[test]
fn local_backup_lists_verifies_and_detects_damage() {
    let repo = TestRepo::local();
    let (cluster, e, _ts) = create_list_verify(&repo, "bb-local");

    // A flipped byte in the middle of a stored chunk.
    let chunk = repo.dir.as_ref().unwrap().join(catalog::chunk_key("main", &e.id, "base.tar", 1));
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&chunk, bytes).unwrap();
    let r = run(basebackup(&repo, &cluster), &["verify", &e.id]);
    fails_with(&r, 6, "chunk 000001");
    assert!(r.stderr.contains(&e.id) && r.stderr.contains("base.tar"), "{r:#?}");
}

#[test]
fn s3_backup_lists_and_verifies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt.block_on(TestRepo::s3(s3::moto()));
    let (cluster, e, _ts) = create_list_verify(&repo, "bb-s3");
    // A missing chunk is damage too.
    let key = ObjectKey::new(catalog::chunk_key("main", &e.id, &e.archives[0].name, 0)).unwrap();
    rt.block_on(repo.storage.delete(&key)).unwrap();
    let r = run(basebackup(&repo, &cluster), &["verify"]);
    fails_with(&r, 6, "is missing from the repository");
}

#[test]
fn another_clusters_server_is_refused_before_anything_is_stored() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = TestRepo::local();
    let record =
        br#"{ "system_id": "7000000000000000001", "pg_major": 15, "segment_size": 16777216, "block_size": 8192 }"#;
    let key = ObjectKey::new("main/cluster.json").unwrap();
    rt.block_on(repo.storage.put(&key, Body::Bytes(record.to_vec().into()), PutMode::CreateNew)).unwrap();
    give_to_server_user(repo.dir.as_ref().unwrap());
    let before: BTreeMap<_, _> = rt.block_on(repo.snapshot());

    let mut c = TestCluster::init("bb-other", &[]);
    c.start();
    let r = run(basebackup(&repo, &c), &["create"]);
    fails_with(&r, 4, "7000000000000000001");
    assert_eq!(rt.block_on(repo.snapshot()), before, "nothing stored");
}

#[test]
fn a_backup_whose_wal_is_not_archived_is_not_recorded() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = TestRepo::local();
    let mut c = TestCluster::init("bb-nowal", &["archive_mode = off".into()]);
    c.start();
    c.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let r = run(basebackup(&repo, &c), &["create", "--wal-timeout", "2"]);
    fails_with(&r, 1, "did not reach the repository within 2 s");
    let left: Vec<String> = rt.block_on(repo.snapshot()).into_keys().collect();
    assert_eq!(left, vec!["main/cluster.json".to_string()], "only the cluster record remains");
    let l = run(basebackup(&repo, &c), &["list", "--json"]);
    assert_eq!(l.ok(), "");
}

/// Backups started at the same moment (cron and an operator, two hosts) each get an id of
/// their own, and every backup that exits 0 restores: rounds of three parallel creates, then
/// `verify --all` finds every recorded backup complete. Before ids were reserved, two creates
/// in one second shared an id and the loser's cleanup deleted chunks of the winner's
/// recorded backup.
#[test]
fn parallel_creates_never_break_a_recorded_backup() {
    let repo = TestRepo::local();
    let (cluster, _ts) = primary(&repo, "parallel");
    let mut ids = Vec::new();
    for round in 0..2 {
        let children: Vec<_> = (0..3)
            .map(|_| {
                let mut c = basebackup(&repo, &cluster);
                c.args(["create", "--wal-timeout", "60"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        for child in children {
            let r: Run = child.wait_with_output().unwrap().into();
            assert_eq!(r.code, 0, "round {round}: {r:#?}");
            ids.push(r.stdout.trim().to_string());
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "every create has an id of its own: {ids:?}");
    let r = run(basebackup(&repo, &cluster), &["verify", "--all"]);
    assert_eq!(r.code, 0, "{r:#?}");
    let listed = run(basebackup(&repo, &cluster), &["list"]);
    for id in &ids {
        assert!(listed.ok().contains(id.as_str()), "{id} listed");
    }

    // `verify --all` reports every damaged backup, not only the first: one loses a chunk,
    // another a byte of its manifest.
    let backups = repo.dir.as_ref().unwrap().join("main/backups");
    std::fs::remove_file(backups.join(&unique[1]).join("base.tar/000000.zst")).unwrap();
    let manifest = backups.join(&unique[4]).join("backup_manifest.zst");
    let mut b = std::fs::read(&manifest).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x55;
    std::fs::write(&manifest, b).unwrap();
    let r = run(basebackup(&repo, &cluster), &["verify", "--all"]);
    fails_with(&r, 6, &format!("2 of 6 backups are damaged: {}, {}", unique[1], unique[4]));
    for (i, id) in unique.iter().enumerate() {
        let want = if i == 1 || i == 4 { format!("{id}: DAMAGED") } else { format!("{id}: ok") };
        assert!(r.stdout.contains(&want), "{want}: {r:#?}");
    }
}
