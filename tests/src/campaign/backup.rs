//! Campaign scenarios for backups, retention and restores on a real PostgreSQL: `basebackup
//! create`, `expire` and `pitr-restore` killed at random moments, expire racing a create, and
//! all of them through an object store that fails a share of its requests. The checks: every
//! backup that `list` shows passes `verify`; a restore to the latest WAL has every row that was
//! committed (and archived) before it; no command exits 0 with work undone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{run_or_kill, wait_or_kill, Figures, Rng};
use crate::bins::{self, Run};
use crate::fault_proxy::{random_rule, transient_faults, FaultProxy};
use crate::pg::{as_server_user, give_to_server_user, pg_bin, scratch_dir, TestCluster};
use crate::repo::TestRepo;

/// A primary archiving into a repository, with a table of numbered marks.
#[derive(Debug)]
pub struct Primary {
    /// The server.
    pub cluster: TestCluster,
    /// The repository.
    pub repo: TestRepo,
    next_mark: i64,
}

impl Primary {
    /// Starts one with a pgbench database of `scale`.
    pub fn start(label: &str, repo: TestRepo, scale: u32) -> Primary {
        let mut cluster = TestCluster::init(label, &["archive_mode = on".into(), repo.archive_command()]);
        for (k, v) in &repo.env {
            cluster.env(k, v);
        }
        cluster.start();
        cluster.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
        cluster.sql("CREATE TABLE marks (id bigint PRIMARY KEY)");
        Primary { cluster, repo, next_mark: 1 }
    }

    /// A running cluster (with a `marks` table) and its repository.
    pub fn wrap(cluster: TestCluster, repo: TestRepo) -> Primary {
        Primary { cluster, repo, next_mark: 1 }
    }

    /// Commits the next mark and returns it.
    pub fn mark(&mut self) -> i64 {
        let id = self.next_mark;
        self.cluster.sql(&format!("INSERT INTO marks VALUES ({id})"));
        self.next_mark += 1;
        id
    }

    /// The marks committed so far.
    pub fn marks(&self) -> i64 {
        self.next_mark - 1
    }

    /// Switches WAL and waits until it is archived.
    pub fn archive_all(&self) {
        let seg = self.cluster.switch_wal();
        self.cluster.wait_archived(&seg, Duration::from_secs(120));
    }

    /// A program run as the server's OS user with the repository's environment.
    pub fn cmd(&self, program: Command) -> Command {
        self.repo.as_server_user(program)
    }

    /// `basebackup create` as a command.
    pub fn create_cmd(&self) -> Command {
        let mut c = self.cmd(bins::basebackup());
        c.env(
            "PITR_DBNAME",
            format!("host={} port={} user=postgres", self.cluster.socket_dir.display(), self.cluster.port),
        );
        c.args(["create", "--wal-timeout", "60"]);
        c
    }
}

/// Every listed backup passes `verify`; a listed backup that does not is lost data (a backup
/// reported as taken that cannot restore).
pub fn check_listed_backups(f: &mut Figures, p: &Primary) {
    let mut c = p.cmd(bins::basebackup());
    c.args(["list", "--json"]);
    let r = bins::run(c);
    if !f.expect_exit("basebackup list", &r, &[0]) {
        return;
    }
    for line in r.stdout.lines() {
        let id = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["id"].as_str().map(String::from));
        let Some(id) = id else { continue };
        let mut c = p.cmd(bins::basebackup());
        c.args(["verify", &id]);
        let v = bins::run(c);
        if v.code != 0 {
            f.lost(format!("backup {id} is listed but does not verify: {}", v.stderr.trim()));
        }
    }
}

/// Restores the latest WAL with `--start` (extra args appended) into a new directory; the
/// number of marks the restored server has, or the failed run.
pub fn restore_latest(p: &Primary, label: &str, extra: &[&str]) -> Result<i64, Run> {
    let dir = scratch_dir(label);
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let Some(r) = restore_into(p, &data, extra, None) else { unreachable!("not killed") };
    if r.code != 0 {
        return Err(r);
    }
    let marks = count_marks(&data, dir.path());
    stop(&data);
    Ok(marks)
}

/// Runs `pitr-restore --start` into `data` (killed after `kill_after`, if given).
fn restore_into(p: &Primary, data: &Path, extra: &[&str], kill_after: Option<Duration>) -> Option<Run> {
    let mut c = p.cmd(bins::pitr_restore());
    c.args(bins::start_args(data, 120)).args(extra);
    match kill_after {
        None => Some(bins::run(c)),
        Some(d) => run_or_kill(c, d),
    }
}

/// The number of marks in the server running on `data` (its socket in `socket`).
fn count_marks(data: &Path, socket: &Path) -> i64 {
    let port = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().nth(3).map(|l| l.trim().to_string()))
        .unwrap_or_default();
    let out = as_server_user(pg_bin().join("psql"))
        .args(["-X", "-At", "-h", socket.to_str().unwrap(), "-p", &port, "-U", "postgres", "-d", "postgres"])
        .args(["-c", "SELECT count(*) FROM marks"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(-1)
}

/// Stops a server running on `data`, if one is.
fn stop(data: &Path) {
    if data.join("postmaster.pid").exists() {
        let _ = as_server_user(pg_bin().join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "-t", "60", "stop"])
            .output();
    }
}

/// A restore to the latest WAL must have every mark committed before it.
fn check_restore(f: &mut Figures, p: &Primary, label: &str, extra: &[&str]) {
    p.archive_all();
    match restore_latest(p, label, extra) {
        Ok(n) if n == p.marks() => {}
        Ok(n) => f.wrong_point(format!("{label}: the restore has {n} marks, {} were committed", p.marks())),
        Err(r) => f.lost(format!("{label}: restore to latest failed (exit {}): {}", r.code, r.stderr.trim())),
    }
}

/// `basebackup create` killed at a random moment: no listed backup is broken, and the next
/// create succeeds.
pub fn backup_kill(f: &mut Figures, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut p = Primary::start("campaign-backup-kill", TestRepo::local(), 5);
    let t0 = std::time::Instant::now();
    let r = bins::run(p.create_cmd());
    assert_eq!(r.code, 0, "first backup: {r:#?}");
    // Kill moments spread over a whole create.
    let span = t0.elapsed().mul_f64(0.9);
    for _ in 0..rounds {
        f.rounds += 1;
        p.mark();
        match run_or_kill(p.create_cmd(), rng.delay(span)) {
            None => f.faults += 1,
            Some(r) => {
                f.expect_exit("create", &r, &[0]);
            }
        }
    }
    check_listed_backups(f, &p);
    let r = bins::run(p.create_cmd());
    f.expect_exit("create after the kills", &r, &[0]);
    p.mark();
    check_restore(f, &p, "campaign-backup-kill-restore", &[]);
}

/// `basebackup expire` killed at a random moment after each new backup: every listed backup
/// still verifies, every restore the policy promises still works, and a final expire leaves a
/// sound WAL chain.
pub fn expire_kill(f: &mut Figures, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut p = Primary::start("campaign-expire-kill", TestRepo::local(), 1);
    // Kill moments spread over a whole expire (timed as a dry run, warm: the first run of a
    // binary also pays for loading it, and a span longer than a real expire lets every kill
    // come too late). The first round's moment lies early in it, so that at least one kill
    // lands on a loaded machine too.
    let mut span = Duration::MAX;
    for _ in 0..2 {
        let t0 = std::time::Instant::now();
        let mut c = p.cmd(bins::basebackup());
        c.args(["expire", "--keep-backups", "2", "--dry-run"]);
        bins::run(c);
        span = span.min(t0.elapsed());
    }
    for round in 0..rounds {
        f.rounds += 1;
        let r = bins::run(p.create_cmd());
        assert_eq!(r.code, 0, "create: {r:#?}");
        p.mark();
        p.cluster.switch_wal();
        let mut c = p.cmd(bins::basebackup());
        c.args(["expire", "--keep-backups", "2"]);
        let moment = if round == 0 { rng.delay(span / 10) } else { rng.delay(span) };
        match run_or_kill(c, moment) {
            None => f.faults += 1,
            Some(r) => {
                f.expect_exit("expire", &r, &[0]);
            }
        }
        check_listed_backups(f, &p);
    }
    let mut c = p.cmd(bins::basebackup());
    c.args(["expire", "--keep-backups", "2"]);
    let r = bins::run(c);
    f.expect_exit("expire after the kills", &r, &[0]);
    p.archive_all();
    let mut c = p.cmd(bins::wal_archiver());
    c.arg("verify");
    let r = bins::run(c);
    if r.code != 0 {
        f.lost(format!("the WAL chain from the kept backups is broken: {}", r.stdout.trim()));
    }
    check_restore(f, &p, "campaign-expire-kill-restore", &[]);
}

/// `pitr-restore --start` killed at a random moment (while it writes files, or while the
/// server recovers): a new restore with `--force` into the same directory succeeds and has
/// every committed row.
pub fn restore_kill(f: &mut Figures, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut p = Primary::start("campaign-restore-kill", TestRepo::local(), 5);
    let r = bins::run(p.create_cmd());
    assert_eq!(r.code, 0, "create: {r:#?}");
    for _ in 0..5 {
        p.mark();
        p.cluster.pgbench(&["-t", "200", "-c", "2"]);
    }
    p.archive_all();
    // Kill moments spread over a whole restore (writing the files, then recovery), timed as
    // pitr-restore runs it (not the checks after).
    let span = {
        let dir = scratch_dir("campaign-restore-kill-timed");
        give_to_server_user(dir.path());
        let data = dir.path().join("data");
        let t0 = std::time::Instant::now();
        let Some(r) = restore_into(&p, &data, &[], None) else { unreachable!("not killed") };
        let span = t0.elapsed();
        assert_eq!(r.code, 0, "restore: {r:#?}");
        stop(&data);
        span.mul_f64(0.9)
    };
    for round in 0..rounds {
        f.rounds += 1;
        let dir = scratch_dir(&format!("campaign-restore-kill-{round}"));
        give_to_server_user(dir.path());
        let data = dir.path().join("data");
        // The first round's moment lies early in the restore, so that at least one kill lands
        // even when this run is faster than the timed one (the machine's load varies).
        let moment = if round == 0 { rng.delay(span / 10) } else { rng.delay(span) };
        match restore_into(&p, &data, &[], Some(moment)) {
            None => f.faults += 1,
            Some(r) => {
                f.expect_exit("restore", &r, &[0]);
            }
        }
        stop(&data);
        let Some(r) = restore_into(&p, &data, &["--force"], None) else { unreachable!("not killed") };
        if !f.expect_exit("restore --force after a kill", &r, &[0]) {
            continue;
        }
        let n = count_marks(&data, dir.path());
        if n != p.marks() {
            f.wrong_point(format!("round {round}: the restore has {n} marks, {} were committed", p.marks()));
        }
        stop(&data);
    }
}

/// `expire --keep-backups 1` started while a `create` runs, many times: the create's backup
/// is intact when it finishes, and every listed backup verifies.
pub fn expire_during_create(f: &mut Figures, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut p = Primary::start("campaign-expire-create", TestRepo::local(), 5);
    let r = bins::run(p.create_cmd());
    assert_eq!(r.code, 0, "create: {r:#?}");
    for _ in 0..rounds {
        f.rounds += 1;
        p.mark();
        let mut c = p.create_cmd();
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let child = c.spawn().unwrap();
        std::thread::sleep(rng.delay(Duration::from_millis(1500)));
        let mut e = p.cmd(bins::basebackup());
        e.args(["expire", "--keep-backups", "1"]);
        let r = bins::run(e);
        f.faults += 1;
        f.expect_exit("expire during a create", &r, &[0]);
        let r = wait_or_kill(child, Duration::from_secs(120)).unwrap_or_else(|| panic!("create hung"));
        f.expect_exit("create during an expire", &r, &[0]);
        check_listed_backups(f, &p);
    }
    check_restore(f, &p, "campaign-expire-create-restore", &[]);
}

/// Backups, retention and restores through an object store that fails a share of all
/// requests: what exits 0 is complete; failures say so (5); a restore either has every
/// committed row or fails without promoting.
pub fn s3_faults(f: &mut Figures, rounds: u32, seed: u64) {
    let server = crate::s3::moto();
    let proxy = FaultProxy::start(&server.endpoint);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt.block_on(TestRepo::s3_via(server, &proxy.endpoint));
    let mut p = Primary::start("campaign-s3-faults", repo, 2);
    let faults = transient_faults();
    let env = [("PITR_RETRIES", "5"), ("PITR_S3_TIMEOUT", "5")];
    for round in 0..rounds {
        f.rounds += 1;
        proxy.set_rule(random_rule(seed.wrapping_add(u64::from(round)), 0.15, faults.clone(), |_| true));
        p.mark();
        let mut c = p.create_cmd();
        c.envs(env);
        let r = bins::run(c);
        f.expect_exit("create under faults", &r, &[0, 1, 5]);
        let mut c = p.cmd(bins::basebackup());
        c.envs(env).args(["expire", "--keep-backups", "2"]);
        let r = bins::run(c);
        f.expect_exit("expire under faults", &r, &[0, 5]);
        // A restore through the faulty store: all rows, or a failure that did not promote.
        p.mark();
        p.archive_all();
        let mut extra = vec!["--retries", "5"];
        extra.extend(["--s3-timeout", "5"]);
        match restore_latest(&p, &format!("campaign-s3-restore-{round}"), &extra) {
            Ok(n) if n == p.marks() => {}
            Ok(n) => f.wrong_point(format!("round {round}: restore has {n} marks of {}", p.marks())),
            Err(r) => {
                f.expect_exit("restore under faults", &r, &[5, 6, 9]);
                if r.stdout.contains("server promoted") {
                    f.wrong_point(format!("round {round}: promoted although it failed"));
                }
            }
        }
        let _ = &env;
    }
    f.faults += proxy.injected().len() as u64;
    proxy.pass();
    check_listed_backups(f, &p);
    check_restore(f, &p, "campaign-s3-final", &[]);
}

/// A restore into a disk that is too small: it fails with 8 (local I/O), removes what it
/// wrote, and starts no server; into a disk with room, the same restore succeeds.
pub fn restore_disk_full(f: &mut Figures, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut p = Primary::start("campaign-restore-full", TestRepo::local(), 2);
    let r = bins::run(p.create_cmd());
    assert_eq!(r.code, 0, "create: {r:#?}");
    p.mark();
    p.archive_all();
    for round in 0..rounds {
        f.rounds += 1;
        // Between 1 and 20 MiB: the data directory is larger.
        let size = (1 << 20) + rng.below(19 << 20);
        let fs = crate::fs::SmallFs::mount(&format!("restore-{round}"), size);
        let data = fs.join("data");
        let Some(r) = restore_into(&p, &data, &[], None) else { unreachable!("not killed") };
        f.faults += 1;
        f.expect_exit("restore into a full disk", &r, &[8]);
        if data.exists() {
            f.wrong_exit(format!("round {round}: the partial restore was left in {}", data.display()));
        }
        if r.stdout.contains("server promoted") {
            f.wrong_point(format!("round {round}: a server was started on a partial restore"));
        }
    }
    check_restore(f, &p, "campaign-restore-full-room", &[]);
}

/// Three `basebackup create` started at the same moment, many times: each exits 0 with an
/// id of its own, and every listed backup verifies.
pub fn parallel_creates(f: &mut Figures, rounds: u32, _seed: u64) {
    let mut p = Primary::start("campaign-parallel-creates", TestRepo::local(), 2);
    let mut ids = Vec::new();
    for _ in 0..rounds {
        f.rounds += 1;
        p.mark();
        let children: Vec<_> = (0..3)
            .map(|_| {
                let mut c = p.create_cmd();
                c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        f.faults += 2;
        for child in children {
            let r: Run = child.wait_with_output().unwrap().into();
            if f.expect_exit("one of three parallel creates", &r, &[0]) {
                ids.push(r.stdout.trim().to_string());
            }
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != ids.len() {
        f.lost(format!("{} backups reported under an id another one has", ids.len() - unique.len()));
    }
    check_listed_backups(f, &p);
    check_restore(f, &p, "campaign-parallel-creates-restore", &[]);
}
