//! Object-store faults, injected by a proxy in front of a real S3 server (moto): error
//! statuses, resets before and after the server acted, truncated and stalled answers, slow
//! bodies. Whatever happens, `push` exits 0 only with the segment stored intact, `get` exits 0
//! only with the exact bytes and never answers "absent" (1) for a file that is there, and a
//! command that gives up says so with the documented code.

use std::path::Path;
use std::time::Duration;

use pitr_tests::bins::{run, Run};
use pitr_tests::fault_proxy::{random_rule, Fault, FaultProxy};
use pitr_tests::repo::TestRepo;
use pitr_tests::s3;
use pitr_tests::wal::{segment, SYSTEM_ID};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A bucket on moto, reached by the programs through a fault proxy.
fn faulty_repo() -> (TestRepo, FaultProxy) {
    let server = s3::moto();
    let proxy = FaultProxy::start(&server.endpoint);
    let repo = rt().block_on(TestRepo::s3_via(server, &proxy.endpoint));
    (repo, proxy)
}

fn push(repo: &TestRepo, path: &Path, env: &[(&str, &str)]) -> Run {
    let mut c = repo.wal_archiver();
    c.envs(env.iter().copied()).arg("push").arg(path);
    run(c)
}

fn get(repo: &TestRepo, name: &str, dest: &Path, env: &[(&str, &str)]) -> Run {
    let mut c = repo.wal_archiver();
    c.envs(env.iter().copied()).args(["get", name]).arg(dest);
    run(c)
}

/// The object of `name` as stored, decompressed (read from the server, not through the proxy).
fn stored(repo: &TestRepo, name: &str) -> Option<Vec<u8>> {
    let key = common::storage::ObjectKey::new(format!("main/wal/0000000100000000/{name}.zst")).unwrap();
    let obj = rt().block_on(common::storage::read_all(repo.storage.as_ref(), &key)).ok()?;
    let mut raw = Vec::new();
    common::codec::decompress(&obj[..], &mut raw).unwrap();
    Some(raw)
}

/// Retries make transient faults invisible to PostgreSQL: SlowDown twice, and a PUT whose
/// answer was lost after the server stored it (the retry finds the object there, compares
/// digests and succeeds).
#[test]
fn push_rides_out_transient_faults() {
    let (repo, proxy) = faulty_repo();
    let dir = tempfile::tempdir().unwrap();
    for (segno, fault) in [(3u64, Fault::Status(503, "SlowDown")), (4, Fault::ResetAfter), (5, Fault::ResetBefore)] {
        let (name, data) = segment(SYSTEM_ID, 1, segno);
        let p = dir.path().join(&name);
        std::fs::write(&p, &data).unwrap();
        let target = name.clone();
        let seen = std::sync::atomic::AtomicU32::new(0);
        proxy.set_rule(move |r| {
            if r.method == "PUT"
                && r.path.contains(&target)
                && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
            {
                fault
            } else {
                Fault::Pass
            }
        });
        push(&repo, &p, &[("PITR_RETRIES", "3")]).ok();
        assert!(stored(&repo, &name).unwrap() == data, "{name} ({fault:?}) stored intact");
    }
    assert!(proxy.injected().len() >= 5, "{:?}", proxy.injected());
}

/// A store that keeps failing: push gives up with exit 5 and stores nothing; get gives up
/// with 205, never 1, and writes nothing.
#[test]
fn a_store_that_keeps_failing() {
    let (repo, proxy) = faulty_repo();
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let p = dir.path().join(&name);
    std::fs::write(&p, &data).unwrap();
    push(&repo, &p, &[]).ok();
    let (name4, data4) = segment(SYSTEM_ID, 1, 4);
    let p4 = dir.path().join(&name4);
    std::fs::write(&p4, &data4).unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let env = [("PITR_RETRIES", "2")];
    for fault in [Fault::Status(500, "InternalError"), Fault::Status(503, "SlowDown"), Fault::ResetBefore] {
        proxy.set_rule(move |_| fault);
        let r = push(&repo, &p4, &env);
        assert_eq!(r.code, 5, "{fault:?}: {r:#?}");
        assert!(stored(&repo, &name4).is_none(), "{fault:?}: nothing stored");
        let r = get(&repo, &name, &dest, &env);
        assert_eq!(r.code, 205, "{fault:?}: {r:#?}");
        assert!(!dest.exists());
    }
    // Answers cut off in the middle, every time: 205 too (not 206: the object is sound).
    for fault in [Fault::ResetMidBody, Fault::Truncate] {
        proxy.set_rule(move |r| if r.method == "GET" { fault } else { Fault::Pass });
        let r = get(&repo, &name, &dest, &env);
        assert_eq!(r.code, 205, "{fault:?}: {r:#?}");
        assert!(!dest.exists());
    }
    proxy.pass();
    get(&repo, &name, &dest, &env).ok();
    assert!(std::fs::read(&dest).unwrap() == data);
}

/// Downloads cut off, stalled past the timeout or trickling slowly: each get retries as a
/// whole and writes the exact bytes; the prefetch worker under the same faults never hands
/// over a damaged segment.
#[test]
fn get_and_prefetch_under_faults_serve_exact_bytes() {
    let (repo, proxy) = faulty_repo();
    let dir = tempfile::tempdir().unwrap();
    let mut segs = Vec::new();
    for segno in 1..=12u64 {
        let (name, data) = segment(SYSTEM_ID, 1, segno);
        let p = dir.path().join(&name);
        std::fs::write(&p, &data).unwrap();
        push(&repo, &p, &[]).ok();
        segs.push((name, data));
    }
    let pg_wal = tempfile::tempdir().unwrap();
    let dest = pg_wal.path().join("RECOVERYXLOG");
    let env = [("PITR_RETRIES", "6"), ("PITR_S3_TIMEOUT", "1")];
    // One of each, on the first download of each of the first segments.
    let faults = [Fault::Truncate, Fault::ResetMidBody, Fault::Delay(Duration::from_secs(3)), Fault::ResetAfter];
    for ((name, data), fault) in segs.iter().take(4).zip(faults) {
        let target = name.clone();
        let once = std::sync::atomic::AtomicBool::new(false);
        proxy.set_rule(move |r| {
            if r.method == "GET" && r.path.contains(&target) && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                fault
            } else {
                Fault::Pass
            }
        });
        let r = get(&repo, name, &dest, &[("PITR_RETRIES", "6"), ("PITR_S3_TIMEOUT", "1"), ("PITR_PREFETCH", "0")]);
        assert_eq!(r.code, 0, "{fault:?}: {r:#?}");
        assert!(std::fs::read(&dest).unwrap() == *data, "{name} after {fault:?}");
        std::fs::remove_file(&dest).unwrap();
    }
    // Slow but steady bodies arrive (each pause is within the timeout).
    proxy.set_rule(|r| if r.method == "GET" { Fault::Trickle(Duration::from_millis(1)) } else { Fault::Pass });
    get(&repo, &segs[4].0, &dest, &[("PITR_PREFETCH", "0")]).ok();
    assert!(std::fs::read(&dest).unwrap() == segs[4].1);
    std::fs::remove_file(&dest).unwrap();

    // A third of all requests fail in some way while PostgreSQL replays, with prefetching.
    let before = proxy.injected().len();
    proxy.set_rule(random_rule(
        7,
        0.35,
        vec![Fault::Truncate, Fault::ResetMidBody, Fault::Status(503, "SlowDown"), Fault::ResetBefore],
        |_| true,
    ));
    for (name, data) in &segs[5..] {
        let r = get(&repo, name, &dest, &env);
        assert_eq!(r.code, 0, "{name}: {r:#?}");
        assert!(std::fs::read(&dest).unwrap() == *data, "{name}: exact bytes");
        std::fs::remove_file(&dest).unwrap();
    }
    assert!(proxy.injected().len() > before, "faults were injected: {:?}", proxy.injected());
}

/// `wal-archiver verify` under faults: never reports damage that is not there. It finds the
/// archive sound (retries) or gives up with exit 5.
#[test]
fn verify_under_faults_never_reports_false_damage() {
    let (repo, proxy) = faulty_repo();
    let dir = tempfile::tempdir().unwrap();
    for segno in 1..=6u64 {
        let (name, data) = segment(SYSTEM_ID, 1, segno);
        let p = dir.path().join(&name);
        std::fs::write(&p, &data).unwrap();
        push(&repo, &p, &[]).ok();
    }
    for seed in 0..4 {
        proxy.set_rule(random_rule(
            seed,
            0.3,
            vec![
                Fault::Truncate,
                Fault::ResetMidBody,
                Fault::Status(503, "SlowDown"),
                Fault::Status(500, "InternalError"),
            ],
            |_| true,
        ));
        let mut c = repo.wal_archiver();
        c.env("PITR_RETRIES", "3").args(["verify", "--all"]);
        let r = run(c);
        assert!(r.code == 0 || r.code == 5, "seed {seed}: {r:#?}");
        if r.code == 0 {
            assert!(r.stdout.trim_end().ends_with("OK"), "{r:#?}");
        }
    }
}
