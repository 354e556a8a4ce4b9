//! End to end: point-in-time restores with `pitr-restore` from backups taken by `basebackup`
//! and WAL archived by `wal-archiver push`, on real PostgreSQL 15, local and S3 (moto)
//! repositories.
//!
//! Marker rows: after a backup, row A commits, the test records time T, LSN L and a restore
//! point, then row B commits well apart; restoring to T, L, A's xid or the restore point gives
//! A without B, and restoring to the latest WAL gives both. Timelines: a restore to T promoted
//! (timeline 2) keeps archiving; a restore to a time on timeline 2 follows it. Refusals: a
//! target before the oldest backup, a missing segment, a target beyond the archived WAL, a
//! damaged backup, a non-empty directory: each refused with one clear line and nothing
//! written. The restored cluster passes pg_amcheck.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pitr_tests::bins::{self, Run};
use pitr_tests::pg::{as_server_user, free_port, give_to_server_user, pg_bin, scratch_dir, server_user, TestCluster};
use pitr_tests::repo::TestRepo;
use pitr_tests::s3;

/// Runs `cmd` as the server's OS user with the repository's environment.
fn as_postgres(mut c: Command, repo: &TestRepo) -> Command {
    c.envs(repo.env.iter().map(|(k, v)| (k, v)));
    if let Some((uid, gid)) = server_user() {
        c.uid(uid).gid(gid);
        c.env("HOME", "/tmp");
    }
    c
}

fn basebackup(repo: &TestRepo, cluster: &TestCluster) -> String {
    let mut c = as_postgres(bins::basebackup(), repo);
    c.env("PITR_DBNAME", format!("host={} port={} user=postgres", cluster.socket_dir.display(), cluster.port));
    c.args(["create", "--wal-timeout", "60"]);
    bins::run(c).ok().trim().to_string()
}

fn pitr_restore(repo: &TestRepo, args: &[&str]) -> Run {
    let mut c = as_postgres(bins::pitr_restore(), repo);
    c.env("PGUSER", "postgres");
    c.args(args);
    bins::run(c)
}

/// Asserts a failure with `code` whose one error line names `needle`.
fn refused(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "wrong exit code: {r:#?}");
    let errors: Vec<&str> = r.stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line: {r:#?}");
    assert!(errors[0].contains(needle), "error line {:?} does not mention {needle:?}", errors[0]);
}

/// A restored server: where it is and how to query it.
struct Restored {
    data: PathBuf,
    socket: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Restored {
    fn sql(&self, sql: &str) -> String {
        let out = as_server_user(pg_bin().join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.socket.to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn markers(&self) -> String {
        self.sql("SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM marks")
    }

    fn stop(&self) {
        let _ = as_server_user(pg_bin().join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "-t", "60", "stop"])
            .output();
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Restores with `args` into a new directory and starts the server (`--start`): the drill
/// waits for the target; returns the running server and pitr-restore's output. The restored
/// server does not archive (as in a restore drill), so it adds no timeline to the repository.
fn restore_and_start(repo: &TestRepo, label: &str, args: &[&str]) -> (Restored, Run) {
    let mut all = vec!["--set", "archive_mode=off"];
    all.extend_from_slice(args);
    restore_and_start_archiving(repo, label, &all)
}

/// [`restore_and_start`] keeping the backup's archive settings: once promoted, the server
/// archives its new timeline into the same repository.
fn restore_and_start_archiving(repo: &TestRepo, label: &str, args: &[&str]) -> (Restored, Run) {
    let dir = scratch_dir(label);
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let port = free_port();
    let d = data.display().to_string();
    let sock = dir.path().display().to_string();
    let ts_map = format!("{}={}", TS_OID.with(|o| o.borrow().clone()), dir.path().join("ts").display());
    let mut all = vec!["--pgdata", &d, "--start", "--start-timeout", "120", "--tablespace", &ts_map];
    let port_s = format!("port={port}");
    let sock_s = format!("unix_socket_directories={sock}");
    all.extend(["--set", &port_s, "--set", &sock_s, "--set", "listen_addresses="]);
    all.extend_from_slice(args);
    let r = pitr_restore(repo, &all);
    let restored = Restored { data, socket: dir.path().to_path_buf(), port, _dir: dir };
    assert_eq!(r.code, 0, "restore {args:?} failed: {r:#?}\nserver log:\n{}", server_log(&restored.data));
    (restored, r)
}

fn server_log(data: &Path) -> String {
    std::fs::read_to_string(data.join("pitr-restore-server.log")).unwrap_or_default()
}

/// What the primary recorded around the marker rows.
struct Markers {
    before_backup: String,
    t: String,
    lsn: String,
    xid_a: String,
}

/// A primary archiving into `repo`, with pgbench data and a table in tablespace `extra`
/// (whose directory stays in use, so restores relocate it with `--tablespace`).
fn primary(repo: &TestRepo, label: &str) -> (TestCluster, tempfile::TempDir) {
    let mut c = TestCluster::init(label, &["archive_mode = on".into(), repo.archive_command()]);
    for (k, v) in &repo.env {
        c.env(k, v);
    }
    c.start();
    let (ts_dir, oid) = c.create_tablespace("extra");
    c.sql("CREATE TABLE in_extra TABLESPACE extra AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 5000) g");
    c.sql("CREATE INDEX ON in_extra (id) TABLESPACE extra");
    c.pgbench(&["-i", "-s", "2", "-q"]);
    TS_OID.with(|o| *o.borrow_mut() = oid);
    (c, ts_dir)
}

thread_local! {
    /// The oid of the primary's tablespace in this test's thread.
    static TS_OID: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Backup, then A, T/L/restore point, B, C well apart; everything archived.
fn backup_and_markers(repo: &TestRepo, c: &TestCluster) -> (String, Markers) {
    let before_backup = c.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    let id = basebackup(repo, c);
    c.sql("CREATE TABLE marks (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    let out = c.sql("INSERT INTO marks (name) VALUES ('A') RETURNING txid_current()");
    let xid_a = out.lines().next().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let t = c.sql("SELECT clock_timestamp()");
    let lsn = c.sql("SELECT pg_current_wal_lsn()");
    c.sql("SELECT pg_create_restore_point('before-b')");
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("INSERT INTO marks (name) VALUES ('B')");
    c.pgbench(&["-t", "200", "-c", "2"]);
    std::thread::sleep(Duration::from_millis(200));
    c.sql("INSERT INTO marks (name) VALUES ('C')");
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));
    (id, Markers { before_backup, t, lsn, xid_a })
}

/// The marker scenarios against one repository; `all` adds the LSN, xid and name targets and
/// the timeline scenario.
fn marker_scenarios(repo: &TestRepo, label: &str, all: bool) -> (TestCluster, Markers, tempfile::TempDir) {
    let (c, ts_dir) = primary(repo, label);
    let (_id, m) = backup_and_markers(repo, &c);

    // plan first: it names the backup and the WAL, and writes nothing.
    let r = pitr_restore(repo, &["plan", "--target-time", &m.t]);
    let out = r.ok();
    assert!(out.contains("backup:") && out.contains("WAL:"), "{out}");

    let (s, r) = restore_and_start(repo, &format!("{label}-time"), &["--target-time", &m.t]);
    assert_eq!(s.markers(), "A", "restore to T: {r:#?}");
    assert!(r.stdout.contains("server promoted") && r.stdout.contains("last transaction recovered"), "{r:#?}");
    // Fast promotion: paused at the target, then promoted by pitr-restore, without the
    // end-of-recovery checkpoint that the promote action waits for.
    let log = server_log(&s.data);
    assert!(log.contains("received promote request"), "{log}");
    assert!(!log.contains("end-of-recovery immediate wait"), "{log}");
    let auto = std::fs::read_to_string(s.data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("recovery_target_action = 'pause'") && auto.contains("pg_ctl promote"), "{auto}");
    // Large files went to disk with O_DIRECT (this machine's file systems support it), so
    // recovery does not prefetch pages that are not cached.
    assert!(!r.stdout.contains(", 0.0 MB of it with O_DIRECT"), "{r:#?}");
    assert!(auto.contains("recovery_prefetch = 'off'"), "{auto}");
    s.sql("CREATE TABLE written_after_promotion (x int)");
    drop(s);

    let (s, _) = restore_and_start(repo, &format!("{label}-latest"), &[]);
    assert_eq!(s.markers(), "A,B,C", "restore to the latest WAL");
    assert_eq!(s.sql("SELECT count(*), sum(id) FROM in_extra WHERE note = md5(id::text)"), "5000|12502500");
    let link = std::fs::read_link(s.data.join("pg_tblspc").join(TS_OID.with(|o| o.borrow().clone()))).unwrap();
    assert_eq!(link, s.data.parent().unwrap().join("ts"), "the tablespace was relocated");
    // The restored cluster is sound: pg_amcheck over every relation and index.
    let out = as_server_user(pg_bin().join("pg_amcheck"))
        .args(["--install-missing", "-h", s.socket.to_str().unwrap(), "-p", &s.port.to_string()])
        .args(["-U", "postgres", "--heapallindexed", "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(s);

    if all {
        // The operator's own hot_standby setting: the server promotes itself at the target.
        let (s, _) =
            restore_and_start(repo, &format!("{label}-lsn"), &["--target-lsn", &m.lsn, "--set", "hot_standby=on"]);
        assert_eq!(s.markers(), "A", "restore to L");
        let log = server_log(&s.data);
        assert!(log.contains("end-of-recovery immediate wait") && !log.contains("received promote request"), "{log}");
        drop(s);
        // Every file through the page cache: recovery prefetches as PostgreSQL's default.
        let (s, r) = restore_and_start(repo, &format!("{label}-xid"), &["--target-xid", &m.xid_a, "--buffered-io"]);
        assert_eq!(s.markers(), "A", "restore to A's xid");
        assert!(r.stdout.contains(", 0.0 MB of it with O_DIRECT"), "{r:#?}");
        let auto = std::fs::read_to_string(s.data.join("postgresql.auto.conf")).unwrap();
        assert!(!auto.contains("recovery_prefetch"), "{auto}");
        drop(s);
        let (s, _) = restore_and_start(
            repo,
            &format!("{label}-name"),
            &["--target-name", "before-b", "--target-action", "pause"],
        );
        assert_eq!(s.markers(), "A", "restore to the restore point");
        assert_eq!(s.sql("SELECT pg_is_in_recovery()"), "t", "paused at the target, still in recovery");
        drop(s);
    }
    (c, m, ts_dir)
}

#[test]
fn local_point_in_time_restores_timelines_and_refusals() {
    let repo = TestRepo::local();
    let (primary, m, _ts) = marker_scenarios(&repo, "pitr-local", true);

    // Timelines: restore to T and promote (timeline 2), keep writing and archiving there.
    let (tl2, _) = restore_and_start_archiving(&repo, "pitr-tl2", &["--target-time", &m.t]);
    // The timeline it writes on (after a fast promotion the control file's last checkpoint
    // is still the one of timeline 1 until the background checkpoint completes).
    assert_eq!(tl2.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    tl2.sql("INSERT INTO marks (name) VALUES ('D')");
    std::thread::sleep(Duration::from_millis(1100));
    let t2 = tl2.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    tl2.sql("INSERT INTO marks (name) VALUES ('E')");
    tl2.sql("SELECT pg_switch_wal()");
    let seg = tl2.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    tl2.sql("SELECT pg_switch_wal()");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tl2.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < seg {
        assert!(std::time::Instant::now() < deadline, "timeline 2 not archived: {}", server_log(&tl2.data));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Meanwhile timeline 1 goes on too (the old primary), with later commits.
    primary.sql("INSERT INTO marks (name) VALUES ('F')");
    let seg1 = primary.switch_wal();
    primary.wait_archived(&seg1, Duration::from_secs(60));

    let plan = pitr_restore(&repo, &["plan", "--target-time", &t2]);
    assert!(plan.ok().contains("timelines:     1 → 2"), "{plan:#?}");
    let (s, _) = restore_and_start(&repo, "pitr-tl2-time", &["--target-time", &t2]);
    assert_eq!(s.markers(), "A,D", "timeline 2 at T2: A and D, not B/C (timeline 1 after the fork) nor E");
    drop(s);
    let (s, _) = restore_and_start(&repo, "pitr-tl1-latest", &["--target-timeline", "1"]);
    assert_eq!(s.markers(), "A,B,C,F", "timeline 1 followed explicitly");
    drop(s);
    drop(tl2);

    // Refusals: nothing is written, one clear line each.
    let dir = scratch_dir("pitr-refused");
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let d = data.display().to_string();
    let r = pitr_restore(&repo, &["--pgdata", &d, "--target-time", &m.before_backup]);
    refused(&r, 10, "before the end of the oldest usable backup");
    assert!(!data.exists(), "nothing written");
    let r = pitr_restore(&repo, &["--pgdata", &d, "--target-time", "2999-01-01 00:00:00+00"]);
    refused(&r, 10, "beyond the archived WAL");
    assert!(!data.exists());
    let r = pitr_restore(&repo, &["--pgdata", &d, "--target-time", "2026-01-01 00:00:00"]);
    refused(&r, 2, "no time zone");

    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("keep-me"), b"x").unwrap();
    give_to_server_user(dir.path());
    let r = pitr_restore(&repo, &["--pgdata", &d]);
    refused(&r, 4, "is not empty");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1, "left as it was");
    std::fs::remove_dir_all(&data).unwrap();

    // A missing segment between the backup and the target.
    let repo_dir = repo.dir.clone().unwrap();
    let first: Vec<String> = std::fs::read_dir(repo_dir.join("main/wal/0000000100000000"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names: Vec<&String> = first.iter().filter(|n| n.len() == 28).collect();
    names.sort();
    let victim = names[names.len() - 2].clone();
    let hidden = repo_dir.join("hidden-segment");
    std::fs::rename(repo_dir.join("main/wal/0000000100000000").join(&victim), &hidden).unwrap();
    let r = pitr_restore(&repo, &["--pgdata", &d, "--target-timeline", "1"]);
    refused(&r, 10, &format!("{} is missing", victim.trim_end_matches(".zst")));
    assert!(!data.exists());
    std::fs::rename(&hidden, repo_dir.join("main/wal/0000000100000000").join(&victim)).unwrap();

    // A damaged backup: the restore fails with exit 6 and removes what it wrote.
    let backups = repo_dir.join("main/backups");
    let id = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| !n.ends_with(".json"))
        .unwrap();
    let chunk = backups.join(&id).join("base.tar").join("000000.zst");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&chunk, &bytes).unwrap();
    let ts = dir.path().join("ts");
    let ts_map = format!("{}={}", TS_OID.with(|o| o.borrow().clone()), ts.display());
    let r = pitr_restore(&repo, &["--pgdata", &d, "--target-timeline", "1", "--tablespace", &ts_map]);
    refused(&r, 6, "is damaged");
    assert!(!data.exists() && !ts.exists(), "the partial restore was removed");

    // Retention after the fork: a newer backup on timeline 1 (the old primary went on) is the
    // newest by time, but timeline 2, the newest timeline, can only be restored from the
    // backup it was restored from: `--keep-backups 1` keeps both.
    let first = id;
    let second = basebackup(&repo, &primary);
    let out = basebackup_cmd(&repo, &["expire", "--keep-backups", "1", "--dry-run", "--json"]).ok().to_string();
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["kept"], serde_json::json!([first, second]), "{report}");
    assert_eq!(report["expired"], serde_json::json!([]), "{report}");
    assert!(report["timelines"].as_str().unwrap().starts_with("1 → 2"), "{report}");
}

#[test]
fn s3_point_in_time_restores() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt.block_on(TestRepo::s3(s3::moto()));
    marker_scenarios(&repo, "pitr-s3", false);
}

/// `basebackup` with `args`, as the server's user.
fn basebackup_cmd(repo: &TestRepo, args: &[&str]) -> Run {
    let mut c = as_postgres(bins::basebackup(), repo);
    c.args(args);
    bins::run(c)
}

/// Retention on an S3 repository: `expire --keep-backups 1` removes the older backup and the
/// WAL before the newer one's first segment, and everything the policy keeps still restores;
/// a time only the expired backup could reach is refused.
#[test]
fn expire_keeps_every_restore_the_policy_promises() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt.block_on(TestRepo::s3(s3::s3s_fs()));
    let (c, _ts) = primary(&repo, "expire-s3");
    c.sql("CREATE TABLE marks (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    let old = basebackup(&repo, &c);
    c.sql("INSERT INTO marks (name) VALUES ('A')");
    std::thread::sleep(Duration::from_millis(1100));
    let between = c.sql("SELECT clock_timestamp()");
    c.pgbench(&["-t", "200", "-c", "2"]);
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1100));
    let new = basebackup(&repo, &c);
    assert!(old < new, "{old} {new}");
    c.sql("INSERT INTO marks (name) VALUES ('B')");
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));
    // Before: restoring to a time between the two backups works from the old one.
    let r = pitr_restore(&repo, &["plan", "--target-time", &between]);
    assert!(r.ok().contains(&old), "{r:#?}");

    let wal_names = || -> Vec<String> {
        let mut c = as_postgres(bins::wal_archiver(), &repo);
        c.args(["list", "--json"]);
        let out = bins::run(c).ok().to_string();
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].as_str().unwrap().to_string())
            .collect()
    };
    let before = wal_names();

    let r = basebackup_cmd(&repo, &["expire"]);
    refused(&r, 2, "no retention policy");
    let out = basebackup_cmd(&repo, &["expire", "--keep-backups", "1", "--dry-run"]).ok().to_string();
    assert!(out.contains(&format!("expire  {old}")) && out.contains("dry run: nothing deleted"), "{out}");
    assert_eq!(wal_names(), before, "a dry run deletes nothing");
    assert_eq!(basebackup_cmd(&repo, &["list", "--json"]).ok().lines().count(), 2);

    let out = basebackup_cmd(&repo, &["expire", "--keep-backups", "1", "--json"]).ok().to_string();
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["expired"][0]["id"], old.as_str(), "{report}");
    assert_eq!(report["kept"], serde_json::json!([new]), "{report}");
    let first_kept = report["wal_keep_from"].as_str().unwrap().to_string();
    assert!(report["wal_files"].as_u64().unwrap() > 0, "{report}");
    let after = wal_names();
    assert!(after.iter().all(|n| n.ends_with(".history") || n[..24] >= first_kept[..]), "{first_kept}: {after:?}");
    assert!(after.contains(&first_kept), "{after:?}");
    let listed = basebackup_cmd(&repo, &["list", "--json"]).ok().to_string();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(&new));
    basebackup_cmd(&repo, &["verify", "--all"]).ok();
    // The WAL that is left is a sound chain from the kept backup on (wal-archiver verify
    // starts where the oldest backup does, and reads every object).
    let mut v = as_postgres(bins::wal_archiver(), &repo);
    v.arg("verify");
    let out = bins::run(v).ok().to_string();
    assert!(out.contains(&format!("WAL from {first_kept}")) && out.trim_end().ends_with("OK"), "{out}");

    // What the policy keeps restores; what only the expired backup reached is refused.
    let (s, _) = restore_and_start(&repo, "expire-latest", &[]);
    assert_eq!(s.markers(), "A,B");
    drop(s);
    let r = pitr_restore(&repo, &["plan", "--target-time", &between]);
    refused(&r, 10, "before the end of the oldest usable backup");
}

/// The newest backup lost a chunk (as a concurrent create's cleanup once did to a recorded
/// backup): the planner skips it, names it, and restores from the older backup, which reaches
/// the latest WAL too; asked for by id, the damaged backup is an error (6), nothing written.
#[test]
fn a_damaged_newest_backup_is_skipped() {
    let repo = TestRepo::local();
    let (c, _ts) = primary(&repo, "skip-damaged");
    c.sql("CREATE TABLE marks (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    let old = basebackup(&repo, &c);
    c.sql("INSERT INTO marks (name) VALUES ('A')");
    std::thread::sleep(Duration::from_millis(1100));
    let new = basebackup(&repo, &c);
    c.sql("INSERT INTO marks (name) VALUES ('B')");
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));
    let chunk = repo.dir.as_ref().unwrap().join(format!("main/backups/{new}/base.tar/000000.zst"));
    std::fs::remove_file(&chunk).unwrap();

    let r = pitr_restore(&repo, &["plan"]);
    let out = r.ok();
    assert!(out.contains(&format!("backup:        {old}")), "{out}");
    assert!(out.contains(&format!("skipped:       damaged backup {new}")) && out.contains("is missing"), "{out}");
    let dir = scratch_dir("skip-damaged-explicit");
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let r = pitr_restore(&repo, &["--pgdata", data.to_str().unwrap(), "--backup", &new]);
    refused(&r, 6, &format!("backup {new}"));
    assert!(!data.exists(), "nothing written");
    let (s, r) = restore_and_start(&repo, "skip-damaged-latest", &[]);
    assert!(r.stderr.contains(&format!("skipped:       damaged backup {new}")), "{r:#?}");
    assert_eq!(s.markers(), "A,B");
}

/// A restore to the latest WAL whose recovery ends short of what the plan found archived
/// (here a restore_command that reports one segment absent, as an old or wrapped
/// wal-archiver might) is a failure (exit 9) and the server is stopped, never a success that
/// says "promoted" with commits missing.
#[test]
fn a_short_recovery_to_latest_fails() {
    let repo = TestRepo::local();
    let (c, _ts) = primary(&repo, "short-latest");
    c.sql("CREATE TABLE marks (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    basebackup(&repo, &c);
    c.sql("INSERT INTO marks (name) VALUES ('A')");
    c.switch_wal();
    c.sql("INSERT INTO marks (name) VALUES ('B')");
    let victim = c.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));

    let dir = scratch_dir("short-latest-restore");
    let wrapper = dir.path().join("wal-archiver-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nargs=(\"$@\")\nif [ \"${{args[${{#args[@]}}-2]}}\" = {victim} ]; then exit 1; fi\nexec {} \"$@\"\n",
            bins::bin("wal-archiver").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let ts_map = format!("{}={}", TS_OID.with(|o| o.borrow().clone()), dir.path().join("ts").display());
    let mut args = bins::start_args(&data, 120);
    args.extend(["--tablespace".into(), ts_map, "--wal-archiver".into(), wrapper.display().to_string()]);
    let r = pitr_restore(&repo, &args.iter().map(String::as_str).collect::<Vec<_>>());
    refused(&r, 9, "short of the end of the archived WAL");
    assert!(r.stderr.contains("the server was stopped"), "{r:#?}");
    assert!(!data.join("postmaster.pid").exists(), "the server is not running");
    let log = server_log(&data);
    assert!(!log.contains(&format!("restored log file \"{victim}\"")), "the victim was never restored: {log}");
}

/// `basebackup expire` while a restore from the backup it would expire is replaying WAL: the
/// restore's lease keeps that backup and its WAL, and the restore reaches its target; once the
/// restore is over, the next expire removes them.
#[test]
fn expire_during_a_restore_keeps_what_the_restore_uses() {
    let repo = TestRepo::local();
    let (c, _ts) = primary(&repo, "expire-during");
    c.sql("CREATE TABLE marks (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    let old = basebackup(&repo, &c);
    c.sql("INSERT INTO marks (name) VALUES ('A')");
    for _ in 0..4 {
        c.pgbench(&["-t", "100", "-c", "2"]);
        c.switch_wal();
    }
    std::thread::sleep(Duration::from_millis(1100));
    let between = c.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("INSERT INTO marks (name) VALUES ('B')");
    let new = basebackup(&repo, &c);
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));

    // restore_command that takes its time, so that expire runs while recovery reads WAL.
    let dir = scratch_dir("expire-during-restore");
    let slow = dir.path().join("slow-wal-archiver");
    std::fs::write(&slow, format!("#!/bin/bash\nsleep 0.7\nexec {} \"$@\"\n", bins::bin("wal-archiver").display()))
        .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let port = free_port();
    let ts_map = format!("{}={}", TS_OID.with(|o| o.borrow().clone()), dir.path().join("ts").display());
    let mut cmd = as_postgres(bins::pitr_restore(), &repo);
    cmd.env("PGUSER", "postgres")
        .args(["--pgdata", data.to_str().unwrap(), "--start", "--start-timeout", "180", "--tablespace", &ts_map])
        .args(["--target-time", &between, "--wal-archiver", slow.to_str().unwrap()])
        .args(["--set", &format!("port={port}"), "--set", &format!("unix_socket_directories={}", dir.path().display())])
        .args(["--set", "listen_addresses=", "--set", "archive_mode=off"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait until recovery is running (the server log exists and names a restored segment).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server_log(&data).contains("restored log file") {
        assert!(std::time::Instant::now() < deadline, "recovery did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = basebackup_cmd(&repo, &["expire", "--keep-backups", "1"]).ok().to_string();
    assert!(out.contains(&format!("kept    {old}  because a restore in progress uses it")), "{out}");
    let r: Run = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 0, "{r:#?}\n{}", server_log(&data));
    let restored = Restored { data, socket: dir.path().to_path_buf(), port, _dir: dir };
    assert_eq!(restored.markers(), "A");
    drop(restored);

    // The restore is over: its lease is gone, and the old backup goes now.
    let out = basebackup_cmd(&repo, &["expire", "--keep-backups", "1", "--json"]).ok().to_string();
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["expired"][0]["id"], old.as_str(), "{report}");
    assert_eq!(report["kept"], serde_json::json!([new]), "{report}");
}
