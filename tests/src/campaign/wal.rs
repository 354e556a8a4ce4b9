//! Campaign scenarios for the WAL path: `push` (and its look-ahead worker) and `get` (and its
//! prefetch worker) killed at random moments, a full repository disk, and object-store
//! faults. After each fault the command is run again as PostgreSQL would: it must then
//! succeed, and everything acknowledged must come back byte for byte.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{kill_matching, run_or_kill, running, Figures, Rng};
use crate::bins::{run, Run};
use crate::fault_proxy::{random_rule, transient_faults, Fault, FaultProxy};
use crate::repo::TestRepo;
use crate::wal::{segment, SYSTEM_ID};

fn push_cmd(repo: &TestRepo, path: &Path) -> std::process::Command {
    let mut c = repo.wal_archiver();
    c.env("PITR_PUSH_AHEAD", "0").env("PITR_RETRIES", "4").arg("push").arg(path);
    c
}

/// `get` of `name` into `dest` without prefetching; the bytes on success.
fn fetch(repo: &TestRepo, name: &str, dest: &Path) -> (Run, Option<Vec<u8>>) {
    let mut c = repo.wal_archiver();
    c.env("PITR_RETRIES", "4").args(["get", "--prefetch", "0", name]).arg(dest);
    let r = run(c);
    let bytes = (r.code == 0).then(|| std::fs::read(dest).unwrap());
    let _ = std::fs::remove_file(dest);
    (r, bytes)
}

/// Every segment in `acked` must come back exact.
fn check_acked(f: &mut Figures, repo: &TestRepo, acked: &[(String, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in acked {
        let (r, bytes) = fetch(repo, name, &dir.path().join("out"));
        match bytes {
            Some(b) if b == *data => {}
            Some(_) => f.wrong_point(format!("{name}: get served other bytes than were pushed")),
            None => f.lost(format!("{name}: pushed (exit 0) but get exits {}: {}", r.code, r.stderr.trim())),
        }
    }
}

/// Nothing half-written is in the repository: `wal-archiver verify --all` finds it sound.
fn check_sound(f: &mut Figures, repo: &TestRepo) {
    let mut c = repo.wal_archiver();
    c.args(["verify", "--all"]);
    let r = run(c);
    f.expect_exit("verify --all after the faults", &r, &[0]);
}

/// `push` killed at a random moment, then run again as PostgreSQL's archiver does.
pub fn push_kill(f: &mut Figures, repo: &TestRepo, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    // Kill moments spread over a whole push (timed once).
    let mut span = Duration::MAX;
    for segno in 97..=99 {
        let (name, data) = segment(SYSTEM_ID, 1, segno);
        let p = dir.path().join(&name);
        std::fs::write(&p, &data).unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(run(push_cmd(repo, &p)).code, 0, "a first push");
        span = span.min(t0.elapsed());
        acked.push((name, data));
    }
    for round in 0..rounds {
        f.rounds += 1;
        let (name, data) = segment(SYSTEM_ID, 1, 100 + u64::from(round));
        let p = dir.path().join(&name);
        std::fs::write(&p, &data).unwrap();
        match run_or_kill(push_cmd(repo, &p), rng.delay(span)) {
            None => f.faults += 1,
            Some(r) => {
                f.expect_exit("push", &r, &[0]);
            }
        }
        let r = run(push_cmd(repo, &p));
        if f.expect_exit("push again after a kill", &r, &[0]) {
            acked.push((name, data));
        }
    }
    check_acked(f, repo, &acked);
    check_sound(f, repo);
}

/// The look-ahead worker killed at random moments while the archiver works through a
/// backlog: every archive_command call still exits 0 only for content that is stored.
pub fn push_ahead_kill(f: &mut Figures, repo: &TestRepo, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut acked = Vec::new();
    for round in 0..rounds {
        f.rounds += 1;
        let d = tempfile::tempdir().unwrap();
        let pg_wal = d.path().join("pg_wal");
        std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        let files: Vec<(String, Vec<u8>)> =
            (0..6).map(|i| segment(SYSTEM_ID, 1, 1000 + 6 * u64::from(round) + i)).collect();
        for (name, data) in &files {
            std::fs::write(pg_wal.join(name), data).unwrap();
            std::fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
        }
        let pattern = format!("push-ahead-worker --pg-wal {}", pg_wal.display());
        for (i, (name, data)) in files.iter().enumerate() {
            let archive = || {
                let mut c = repo.wal_archiver();
                // An absolute %p (PostgreSQL passes a relative one), so that the worker's
                // command line names this pg_wal and only this round's worker is killed.
                c.current_dir(d.path()).env("PITR_RETRIES", "4").arg("push").arg(pg_wal.join(name));
                c
            };
            if i == 0 {
                // The archiver's first call starts a worker for the backlog of five; once it
                // runs, kill it (and, every other round, the call too) a moment later.
                let mut c = archive();
                c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                let mut child = c.spawn().unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !running(&pattern) && child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(rng.delay(Duration::from_millis(40)));
                f.faults += kill_matching(&pattern);
                if round % 2 == 1 && child.try_wait().unwrap().is_none() {
                    let _ = child.kill();
                    f.faults += 1;
                }
                let r: Run = child.wait_with_output().unwrap().into();
                if r.code != -1 {
                    f.expect_exit("push", &r, &[0]);
                }
            }
            // PostgreSQL calls archive_command until it succeeds.
            let mut ok = false;
            for _ in 0..3 {
                let r = run(archive());
                if r.code == 0 {
                    ok = true;
                    break;
                }
                f.wrong_exit(format!("{name}: archive_command exit {}: {}", r.code, r.stderr.trim()));
            }
            if ok {
                let st = pg_wal.join("archive_status");
                let _ = std::fs::rename(st.join(format!("{name}.ready")), st.join(format!("{name}.done")));
                acked.push((name.clone(), data.clone()));
            }
        }
        kill_matching(&pattern);
    }
    check_acked(f, repo, &acked);
    check_sound(f, repo);
}

/// `get` and its prefetch worker killed at random moments while a recovery reads segments in
/// order; PostgreSQL asks again after a killed call. Every answer must be the exact bytes.
pub fn get_kill(f: &mut Figures, repo: &TestRepo, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segs: Vec<(String, Vec<u8>)> = (1..=10).map(|n| segment(SYSTEM_ID, 1, 500 + n)).collect();
    for (name, data) in &segs {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let r = run(push_cmd(repo, &p));
        assert_eq!(r.code, 0, "seeding the repository: {r:#?}");
    }
    for _ in 0..rounds {
        f.rounds += 1;
        let pg_wal = tempfile::tempdir().unwrap();
        let dest = pg_wal.path().join("RECOVERYXLOG");
        let pattern = format!("prefetch-worker --after .* --spool {}", pg_wal.path().display());
        for (name, data) in &segs {
            let get = || {
                let mut c = repo.wal_archiver();
                c.env("PITR_RETRIES", "4").args(["get", name]).arg(&dest);
                c
            };
            if rng.below(3) == 0 {
                match run_or_kill(get(), rng.delay(Duration::from_millis(60))) {
                    None => f.faults += 1,
                    Some(r) => check_served(f, name, data, &r, &dest),
                }
            }
            if rng.below(3) == 0 {
                f.faults += kill_matching(&pattern);
            }
            let r = run(get());
            check_served(f, name, data, &r, &dest);
            let _ = std::fs::remove_file(&dest);
        }
        kill_matching(&pattern);
    }
}

/// A `get` answer for a segment that is archived: 0 with the exact bytes.
fn check_served(f: &mut Figures, name: &str, data: &[u8], r: &Run, dest: &Path) {
    if !f.expect_exit(&format!("get {name}"), r, &[0]) {
        return;
    }
    match std::fs::read(dest) {
        Ok(b) if b == data => {}
        _ => f.wrong_point(format!("{name}: get exited 0 with other bytes than archived")),
    }
}

/// A repository disk that fills up while segments are pushed: each push fails with 5 (never
/// 0) until space is freed, and then succeeds; nothing half-written is left.
pub fn disk_full(f: &mut Figures, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let fs = crate::fs::SmallFs::mount("campaign", 24 << 20);
    let repo_dir = fs.join("repo");
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    let repo = TestRepo::at(&repo_dir);
    for round in 0..rounds {
        f.rounds += 1;
        // Fill the disk to a random level, push, free the space, push again.
        let filler = fs.join("filler");
        let free = fs.free();
        // Every other round too little room for any segment; else a random amount.
        let leave = if round % 2 == 0 { rng.below(64 << 10) } else { rng.below(2 << 20) };
        let _ = std::fs::write(&filler, vec![0u8; free.saturating_sub(leave) as usize]);
        let (name, data) = segment(SYSTEM_ID, 1, 3000 + u64::from(round));
        let p = dir.path().join(&name);
        std::fs::write(&p, &data).unwrap();
        let r = run(push_cmd(&repo, &p));
        if r.code != 0 {
            f.faults += 1;
            f.expect_exit("push into a full repository", &r, &[5]);
        } else {
            acked.push((name.clone(), data.clone()));
        }
        let _ = std::fs::remove_file(&filler);
        let r = run(push_cmd(&repo, &p));
        if f.expect_exit("push once space is free", &r, &[0]) && !acked.iter().any(|(n, _)| n == &name) {
            acked.push((name, data));
        }
        // The scratch directory holds nothing once pushes are done.
        let left = std::fs::read_dir(repo_dir.join(".pitr-tmp")).map(|d| d.count()).unwrap_or(0);
        if left > 0 {
            f.wrong_exit(format!("{left} temporary file(s) left in the repository's scratch directory"));
        }
        // Keep the disk from filling with archived segments: check what is there, then
        // start over.
        if acked.len() > 4 {
            check_acked(f, &repo, &acked);
            let _ = std::fs::remove_dir_all(repo_dir.join("main/wal"));
            acked.clear();
        }
    }
    check_acked(f, &repo, &acked);
    // A get whose destination disk is full: 208, never 1, nothing at the destination.
    if let Some((name, _)) = acked.first() {
        let small = crate::fs::SmallFs::mount("campaign-dest", 4 << 20);
        let dest = small.join("RECOVERYXLOG");
        let mut c = repo.wal_archiver();
        c.args(["get", "--prefetch", "0", name]).arg(&dest);
        let r = run(c);
        f.faults += 1;
        f.expect_exit("get into a full pg_wal", &r, &[208]);
        if dest.exists() {
            f.wrong_point(format!("{name}: a partial file was left at %p"));
        }
    }
}

/// Object-store faults on every request (statuses, resets, truncated and stalled answers),
/// while segments are pushed and read back with prefetching: pushes that exit 0 are stored
/// intact, gets that exit 0 write the exact bytes, and a get never says "absent" (1) for a
/// segment that is archived.
pub fn s3_faults(f: &mut Figures, rounds: u32, seed: u64) {
    let server = crate::s3::moto();
    let proxy = FaultProxy::start(&server.endpoint);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt.block_on(TestRepo::s3_via(server, &proxy.endpoint));
    let mut faults = transient_faults();
    faults.push(Fault::Delay(Duration::from_millis(1500)));
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..rounds {
        f.rounds += 1;
        proxy.set_rule(random_rule(seed.wrapping_add(u64::from(round)), 0.3, faults.clone(), |_| true));
        let env = [("PITR_RETRIES", "3"), ("PITR_S3_TIMEOUT", "1")];
        for i in 0..3u64 {
            let (name, data) = segment(SYSTEM_ID, 1, 2000 + 3 * u64::from(round) + i);
            let p = dir.path().join(&name);
            std::fs::write(&p, &data).unwrap();
            // PostgreSQL calls archive_command again until it succeeds.
            for _ in 0..20 {
                let mut c = repo.wal_archiver();
                c.envs(env).arg("push").arg(&p);
                let r = run(c);
                f.expect_exit("push under faults", &r, &[0, 5]);
                if r.code == 0 {
                    acked.push((name, data));
                    break;
                }
            }
        }
        // Read back everything acknowledged so far, as a recovery does, with prefetching.
        let pg_wal = tempfile::tempdir().unwrap();
        let dest: PathBuf = pg_wal.path().join("RECOVERYXLOG");
        for (name, data) in &acked {
            let mut c = repo.wal_archiver();
            c.envs(env).args(["get", name]).arg(&dest);
            let r = run(c);
            match r.code {
                0 => check_served(f, name, data, &r, &dest),
                1 => f.wrong_point(format!("{name}: get says absent for an archived segment")),
                205 => {}
                _ => f.wrong_exit(format!("get {name} under faults: exit {}: {}", r.code, r.stderr.trim())),
            }
            let _ = std::fs::remove_file(&dest);
        }
    }
    f.faults += proxy.injected().len() as u64;
    proxy.pass();
    check_acked(f, &repo, &acked);
    check_sound(f, &repo);
}
