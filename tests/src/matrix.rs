//! The version matrix: the core end-to-end scenarios against a real server of one PostgreSQL
//! major (13 to 18), each run by `tests/tests/versions.rs` for every major in
//! [`crate::pg::MAJORS`]. The full suite runs against Debian's PostgreSQL 15; these keep the
//! other majors honest on what pitr is for:
//!
//! - [`archive_and_fetch`]: `archive_command` push and `restore_command` get are
//!   byte-identical on real WAL (and a history file);
//! - [`backup_and_point_in_time`]: `basebackup create`, then `pitr-restore --target-time`
//!   with marker rows before and after the target, and again on the timeline the first
//!   restore forked (the planner follows the history file);
//! - [`synchronous_receiver`]: `wal-archiver receive` as the synchronous standby with the
//!   repository as its durability, the primary killed with SIGKILL, and every acknowledged
//!   commit restored from the repository alone;
//! - [`prepared_transaction_target`]: the xid of a prepared transaction that drops tables is
//!   in the WAL summaries (its commit record's layout differs by major), so a restore can
//!   target it.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins::{self, Run};
use crate::pg::{as_server_user, free_port, give_to_server_user, pg_bin, scratch_dir, server_bin, TestCluster};
use crate::receiver::{wait_streaming, ReceiverProc};
use crate::repo::TestRepo;

/// A primary of `major` archiving into `repo` through `archive_command` (plus `extra`
/// settings), started.
fn primary(major: u32, label: &str, repo: &TestRepo, archive_command: String, extra: &[String]) -> TestCluster {
    let mut conf = vec!["archive_mode = on".to_string(), archive_command];
    conf.extend_from_slice(extra);
    let mut c = TestCluster::init_major(major, &format!("pg{major}-{label}"), &conf);
    for (k, v) in &repo.env {
        c.env(k, v);
    }
    c.start();
    let version = c.sql("SHOW server_version_num");
    assert_eq!(version.len(), 6, "{version}");
    assert_eq!(&version[..2], major.to_string(), "the server is PostgreSQL {major}");
    c
}

/// `basebackup create` of `cluster` into `repo` (as the server's OS user, like the archiver
/// that writes there, or as ourselves next to a receiver we run); the backup id.
fn create_backup(repo: &TestRepo, cluster: &TestCluster, as_server: bool) -> String {
    let mut c = if as_server { repo.as_server_user(bins::basebackup()) } else { bins::basebackup() };
    c.envs(repo.env.iter().map(|(k, v)| (k, v)));
    c.env("PITR_DBNAME", format!("host={} port={} user=postgres", cluster.socket_dir.display(), cluster.port));
    c.args(["create", "--wal-timeout", "120"]);
    bins::run(c).ok().trim().to_string()
}

/// A server `pitr-restore --start` restored and left running.
struct Restored {
    data: PathBuf,
    socket: PathBuf,
    port: u16,
    bin: PathBuf,
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

    fn marks(&self) -> String {
        self.sql("SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM marks")
    }

    fn switch_and_wait_archived(&self) {
        self.sql("CREATE TABLE IF NOT EXISTS switch_marker(i int); INSERT INTO switch_marker VALUES (1)");
        let seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let last = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if last.len() == seg.len() && last >= seg {
                return;
            }
            assert!(Instant::now() < deadline, "{seg} not archived by the restored server:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.data.join("pitr-restore-server.log")).unwrap_or_default()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = as_server_user(self.bin.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "-t", "60", "stop"])
            .output();
    }
}

/// `pitr-restore --start` of `major` with `args` into a new directory; `archive` keeps the
/// backup's archive settings (the promoted server archives its timeline into `repo`).
fn restore(major: u32, repo: &TestRepo, label: &str, args: &[&str], archive: bool) -> (Restored, Run) {
    let dir = scratch_dir(&format!("pg{major}-{label}"));
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let port = free_port();
    let bin = server_bin(major);
    let mut c = repo.as_server_user(bins::pitr_restore());
    c.args(["--pgdata", data.to_str().unwrap(), "--start", "--start-timeout", "180"]);
    c.args(["--pg-bin", bin.to_str().unwrap()]);
    c.args(["--set", &format!("port={port}"), "--set", &format!("unix_socket_directories={}", dir.path().display())]);
    c.args(["--set", "listen_addresses="]);
    if !archive {
        c.args(["--set", "archive_mode=off"]);
    }
    c.args(args);
    let r = bins::run(c);
    let restored = Restored { data, socket: dir.path().to_path_buf(), port, bin, _dir: dir };
    assert_eq!(r.code, 0, "PostgreSQL {major}: restore {args:?} failed: {r:#?}\nserver log:\n{}", restored.log());
    (restored, r)
}

/// Push and get are byte-identical on real WAL of `major`, history files included: every
/// segment PostgreSQL archived (a copy kept by the archive_command itself) comes back from
/// `get` with the same bytes.
pub fn archive_and_fetch(major: u32) {
    let repo = TestRepo::local();
    let work = scratch_dir(&format!("pg{major}-copies"));
    let copies = work.path().join("copies");
    fs::create_dir(&copies).unwrap();
    give_to_server_user(work.path());
    let command =
        format!("archive_command = '{} push %p && cp %p {}/%f'", bins::bin("wal-archiver").display(), copies.display());
    let c = primary(major, "archive", &repo, command, &[]);
    c.pgbench(&["-i", "-s", "2", "-q"]);
    c.sql("CHECKPOINT");
    c.pgbench(&["-t", "300", "-c", "2"]);
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(120));

    let mut names: Vec<String> =
        fs::read_dir(&copies).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(names.len() >= 3, "PostgreSQL {major} archived {names:?}");
    let out = work.path().join("fetched");
    for name in &names {
        let mut g = repo.as_server_user(bins::wal_archiver());
        g.args(["get", "--prefetch", "0", name]).arg(&out);
        bins::run(g).ok();
        let want = fs::read(copies.join(name)).unwrap();
        let got = fs::read(&out).unwrap();
        assert!(got == want, "PostgreSQL {major}: {name} came back different ({} vs {} bytes)", got.len(), want.len());
        fs::remove_file(&out).unwrap();
    }
    // What the repository holds verifies as one unbroken chain.
    let mut v = repo.as_server_user(bins::wal_archiver());
    v.arg("verify");
    bins::run(v).ok();
}

/// A base backup and point-in-time restores of `major`: to a time between two marks, then,
/// on the timeline that restore forked and archived, to a time between two more marks.
pub fn backup_and_point_in_time(major: u32) {
    backup_and_point_in_time_in(major, &TestRepo::local(), |_| {});
}

/// [`backup_and_point_in_time`] with `repo` (its environment goes to every program and
/// server), and `setup` run on the primary before the backup.
pub fn backup_and_point_in_time_in(major: u32, repo: &TestRepo, setup: impl Fn(&TestCluster)) {
    let c = primary(major, "pitr", repo, repo.archive_command(), &[]);
    c.pgbench(&["-i", "-s", "2", "-q"]);
    setup(&c);
    c.sql("CREATE TABLE marks (name text PRIMARY KEY)");
    let _id = create_backup(repo, &c, true);
    c.sql("INSERT INTO marks VALUES ('A')");
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = c.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("INSERT INTO marks VALUES ('B')");
    c.pgbench(&["-t", "200", "-c", "2"]);
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(120));
    drop(c);

    // To T1, promoted, archiving timeline 2 into the same repository.
    let (tl2, r) = restore(major, repo, "t1", &["--target-time", &t1], true);
    assert_eq!(tl2.marks(), "A", "PostgreSQL {major}: restore to T1: {r:#?}");
    assert!(r.stdout.contains("server promoted"), "{r:#?}");
    assert_eq!(tl2.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    tl2.sql("INSERT INTO marks VALUES ('D')");
    std::thread::sleep(Duration::from_millis(1100));
    let t2 = tl2.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    tl2.sql("INSERT INTO marks VALUES ('E')");
    tl2.switch_and_wait_archived();
    drop(tl2);

    // To T2: the planner follows 00000002.history from the backup on timeline 1.
    let (s, r) = restore(major, repo, "t2", &["--target-time", &t2], false);
    assert_eq!(s.marks(), "A,D", "PostgreSQL {major}: restore to T2 on timeline 2: {r:#?}");
    assert_eq!(s.sql("SELECT count(*) FROM pgbench_accounts"), "200000");
}

/// A base backup of a `major` primary archiving into `repo`, marks before and after a time,
/// then `between` (a repository taken down, a copy made), then `pitr-restore --start` to that
/// time: asserts the restored marks and returns pitr-restore's output and the restored
/// `postgresql.auto.conf` (with its restore_command).
pub fn backup_and_restore_from(major: u32, repo: &TestRepo, between: impl FnOnce()) -> (Run, String) {
    let c = primary(major, "between", repo, repo.archive_command(), &[]);
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.sql("CREATE TABLE marks (name text PRIMARY KEY)");
    let _id = create_backup(repo, &c, true);
    c.sql("INSERT INTO marks VALUES ('A')");
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = c.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("INSERT INTO marks VALUES ('B')");
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(120));
    drop(c);
    between();
    let (s, r) = restore(major, repo, "between", &["--target-time", &t1], false);
    assert_eq!(s.marks(), "A", "PostgreSQL {major}: restore to T1: {r:#?}\nserver log:\n{}", s.log());
    let conf = fs::read_to_string(s.data.join("postgresql.auto.conf")).unwrap_or_default();
    (r, conf)
}

/// `wal-archiver receive` as the synchronous standby of a `major` primary, durable in the
/// repository: the primary is killed with SIGKILL after 100 acknowledged commits, the
/// receiver too, and a restore from the repository alone has every one of them.
pub fn synchronous_receiver(major: u32) {
    let repo = TestRepo::local();
    let mut primary = TestCluster::init_major(
        major,
        &format!("pg{major}-sync"),
        &["synchronous_standby_names = 'pitr'".into(), "synchronous_commit = on".into()],
    );
    primary.start();
    let work = scratch_dir(&format!("pg{major}-sync-work"));
    let spool = work.path().join("spool");
    let rx = ReceiverProc::start(&repo, &primary, &spool, &["--synchronous-durability", "repository"]);
    wait_streaming(&primary, &rx, true);
    primary.sql("CREATE TABLE rpo (i int PRIMARY KEY)");
    // The backup's WAL comes through the receiver: basebackup create waits for it in the
    // repository.
    let _id = create_backup(&repo, &primary, false);

    let script = work.path().join("inserts.sql");
    let sql: String = (1..=100).map(|i| format!("INSERT INTO rpo VALUES ({i});\n")).collect();
    fs::write(&script, sql).unwrap();
    give_to_server_user(&script);
    let started = Instant::now();
    let mut psql = as_server_user(pg_bin().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", primary.socket_dir.to_str().unwrap()])
        .args(["-p", &primary.port.to_string(), "-U", "postgres", "-d", "postgres", "-f", script.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Some(s) = psql.try_wait().unwrap() {
            assert!(s.success(), "inserts failed");
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = psql.kill();
            panic!("PostgreSQL {major}: 100 synchronous commits did not return within 120 s:\n{}", rx.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(primary.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pitr'"), "sync");
    assert_eq!(primary.sql("SELECT count(*) FROM rpo"), "100");

    let pid = fs::read_to_string(primary.data.join("postmaster.pid")).unwrap().lines().next().unwrap().to_string();
    let killed = Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    drop(rx); // SIGKILL; its spool is lost with its host
    fs::remove_dir_all(&spool).unwrap();
    // The receiver and the backup ran as ourselves; the restore runs as the server's user.
    give_to_server_user(repo.dir.as_deref().expect("a local repository"));

    let (s, r) = restore(major, &repo, "sync-restore", &[], false);
    assert_eq!(
        s.sql("SELECT count(*), min(i), max(i) FROM rpo"),
        "100|1|100",
        "PostgreSQL {major}: every acknowledged commit is restored: {r:#?}\n{}",
        s.log()
    );
}

/// A prepared transaction that drops two tables, committed with COMMIT PREPARED as the last
/// transaction before a segment switch: `pitr-restore plan --target-xid` finds its xid in the
/// summaries of the archived WAL. The xid is read from the middle of the commit record, after
/// arrays whose layout differs by major (dropped-stats items: none before 15, 12 bytes in
/// 15-17, 16 bytes from 18). Autovacuum is off so that no later transaction widens the
/// segment's xid range over it.
pub fn prepared_transaction_target(major: u32) {
    let repo = TestRepo::local();
    let extra = ["max_prepared_transactions = 5".to_string(), "autovacuum = off".to_string()];
    let c = primary(major, "2pc", &repo, repo.archive_command(), &extra);
    c.sql("CREATE TABLE gone1 (i int); CREATE TABLE gone2 (i int); INSERT INTO gone1 VALUES (1)");
    let _id = create_backup(&repo, &c, true);
    let out = c.sql("BEGIN; DROP TABLE gone1; DROP TABLE gone2; SELECT txid_current(); PREPARE TRANSACTION 'p1'");
    let xid =
        out.lines().find(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty()).expect("the xid").to_string();
    c.sql("COMMIT PREPARED 'p1'");
    let seg = c.sql("SELECT pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&seg, Duration::from_secs(120));

    let mut p = repo.as_server_user(bins::pitr_restore());
    p.args(["plan", "--target-xid", &xid]);
    let r = bins::run(p);
    assert_eq!(r.code, 0, "PostgreSQL {major}: the prepared transaction {xid} is not found: {r:#?}");
}
