//! Bad input gets a clear one-line error, the documented exit code, and leaves the
//! repository as it was: for push (archive_command) and get (restore_command), on a local
//! repository and on real S3 servers (moto; s3s-fs for corruption on disk).

use std::path::{Path, PathBuf};

use pitr_tests::bins::{run, Run};
use pitr_tests::fake_s3::FailingS3;
use pitr_tests::repo::TestRepo;
use pitr_tests::s3;
use pitr_tests::wal::{segment, SYSTEM_ID};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn push(repo: &TestRepo, path: &Path) -> Run {
    let mut c = repo.wal_archiver();
    c.arg("push").arg(path);
    run(c)
}

fn get(repo: &TestRepo, name: &str, dest: &Path) -> Run {
    let mut c = repo.wal_archiver();
    c.args(["get", name]).arg(dest);
    run(c)
}

/// Pushes one good segment so the repository has a cluster record and content.
fn seeded(repo: &TestRepo, dir: &Path) -> (String, Vec<u8>) {
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    push(repo, &write(dir, &name, &data)).ok();
    (name, data)
}

/// Every refusal a push must make, each leaving the repository byte-for-byte unchanged.
fn push_refusals(repo: &TestRepo) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = seeded(repo, dir.path());
    let before = rt.block_on(repo.snapshot());
    let unchanged = |what: &str| assert_eq!(rt.block_on(repo.snapshot()), before, "{what}: repository changed");

    // A segment from another cluster.
    let (n, foreign) = segment(SYSTEM_ID + 1, 1, 4);
    push(repo, &write(dir.path(), &n, &foreign)).fails_with(4, "belongs to database system");
    unchanged("foreign system id");

    // WAL of a major outside 13 to 18 (12's magic, 19's): one line naming the supported ones.
    for magic in [0xD101u16, 0xD120] {
        let (n, mut d) = segment(SYSTEM_ID, 1, 6);
        d[..2].copy_from_slice(&magic.to_le_bytes());
        push(repo, &write(dir.path(), &n, &d)).fails_with(3, "is not the WAL magic of PostgreSQL 13 to 18");
        unchanged("unsupported major");
    }

    // A truncated file.
    let (n, d) = segment(SYSTEM_ID, 1, 5);
    push(repo, &write(dir.path(), &n, &d[..1 << 20])).fails_with(3, "truncated");
    unchanged("truncated");

    // A file of zeros.
    let (n, _) = segment(SYSTEM_ID, 1, 6);
    push(repo, &write(dir.path(), &n, &vec![0u8; 16 << 20])).fails_with(3, "all zeros");
    unchanged("zeros");

    // Names that are not WAL names, and a name that does not match the content.
    push(repo, &write(dir.path(), "RECOVERYXLOG", &data)).fails_with(3, "not a WAL file name");
    push(repo, &write(dir.path(), "00000001000000000000000a", &data)).fails_with(3, "not a WAL file name");
    push(repo, &write(dir.path(), "000000010000000000000009", &data)).fails_with(3, "misnamed");
    unchanged("wrong names");

    // A missing file.
    push(repo, &dir.path().join("00000001000000000000000B")).fails_with(8, "cannot open");

    // Duplicates: identical succeeds, different content fails and overwrites nothing.
    let sub = dir.path().join("again");
    std::fs::create_dir(&sub).unwrap();
    push(repo, &write(&sub, &name, &data)).ok();
    let mut changed = data.clone();
    changed[5 << 20] ^= 1;
    push(repo, &write(&sub, &name, &changed)).fails_with(4, "different content");
    unchanged("duplicates");

    // History files are never overwritten.
    let h = write(dir.path(), "00000002.history", b"1\t0/3000000\tno recovery target specified\n");
    push(repo, &h).ok();
    let after_history = rt.block_on(repo.snapshot());
    push(repo, &h).ok();
    let h2 = write(&sub, "00000002.history", b"1\t0/3800000\tno recovery target specified\n");
    push(repo, &h2).fails_with(4, "different content");
    push(repo, &write(dir.path(), "00000003.history", b"garbage\n")).fails_with(3, "timeline history");
    assert_eq!(rt.block_on(repo.snapshot()), after_history, "history refusals changed the repository");

    // Get: missing is 1, everything else is >= 200; the destination is never half-written.
    let pg_wal = tempfile::tempdir().unwrap();
    let dest = pg_wal.path().join("RECOVERYXLOG");
    get(repo, "000000010000000000000042", &dest).fails_with(1, "not in the repository");
    get(repo, "RECOVERYXLOG", &dest).fails_with(203, "not a WAL file name");
    assert!(!dest.exists());
    get(repo, &name, &dest).ok();
    assert_eq!(std::fs::read(&dest).unwrap(), data, "get returns the original bytes");

    // A mistyped cluster name must abort recovery (207), not answer "missing" (1).
    let mut c = repo.wal_archiver();
    c.args(["get", "--cluster", "mian", &name]).arg(pg_wal.path().join("x"));
    run(c).fails_with(207, "holds no cluster \"mian\"");
}

#[test]
fn push_refusals_local() {
    push_refusals(&TestRepo::local());
}

#[test]
fn push_refusals_s3() {
    let repo = rt().block_on(TestRepo::s3(s3::moto()));
    push_refusals(&repo);
}

/// A damaged object is reported as corrupt (206), not as missing, and nothing is written.
fn corrupted_object_is_refused(repo: &TestRepo, corrupt: impl FnOnce(&TestRepo, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let (name, _) = seeded(repo, dir.path());
    let key = format!("main/wal/0000000100000000/{name}.zst");
    corrupt(repo, &key);
    let dest = dir.path().join("RECOVERYXLOG");
    get(repo, &name, &dest).fails_with(206, "corrupt");
    assert!(!dest.exists(), "no file left at %p");
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count(),
        0,
        "no temporary file left behind"
    );
}

fn flip_byte(bytes: &mut [u8]) {
    let i = bytes.len() - bytes.len() / 3;
    bytes[i] ^= 0x40;
}

#[test]
fn corrupted_object_local() {
    corrupted_object_is_refused(&TestRepo::local(), |repo, key| {
        let p = repo.dir.as_ref().unwrap().join(key);
        let mut b = std::fs::read(&p).unwrap();
        flip_byte(&mut b);
        std::fs::write(&p, b).unwrap();
    });
}

#[test]
fn corrupted_object_s3() {
    let rt = rt();
    let repo = rt.block_on(TestRepo::s3(s3::moto()));
    corrupted_object_is_refused(&repo, |repo, key| {
        use common::storage::{read_all, Body, ObjectKey, PutMode};
        let k = ObjectKey::new(key.to_string()).unwrap();
        rt.block_on(async {
            let mut b = read_all(repo.storage.as_ref(), &k).await.unwrap().to_vec();
            flip_byte(&mut b);
            repo.storage.put(&k, Body::Bytes(b.into()), PutMode::Overwrite).await.unwrap();
        });
    });
}

#[test]
fn truncated_object_local() {
    corrupted_object_is_refused(&TestRepo::local(), |repo, key| {
        let p = repo.dir.as_ref().unwrap().join(key);
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    });
}

/// An S3 endpoint where nothing listens.
#[test]
fn s3_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = pitr_tests::pg::free_port();
    let env = [
        ("PITR_REPO", "s3://pitr-down/x".to_string()),
        ("PITR_S3_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let p = write(dir.path(), &name, &data);
    let mut c = pitr_tests::bins::wal_archiver();
    c.envs(env.clone()).arg("push").arg(&p);
    run(c).fails_with(5, &format!("127.0.0.1:{port}"));
    let mut c = pitr_tests::bins::wal_archiver();
    c.envs(env).args(["get", &name]).arg(dir.path().join("out"));
    run(c).fails_with(205, &format!("127.0.0.1:{port}"));
    assert!(!dir.path().join("out").exists());
}

/// An S3 endpoint that answers every request with HTTP 500: retried, then failed clearly.
#[test]
fn s3_server_returns_500() {
    let server = FailingS3::start();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PITR_REPO", "s3://pitr-500/x".to_string()),
        ("PITR_S3_ENDPOINT", server.endpoint.clone()),
        ("PITR_RETRIES", "2".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let p = write(dir.path(), &name, &data);
    let mut c = pitr_tests::bins::wal_archiver();
    c.envs(env.clone()).arg("push").arg(&p);
    run(c).fails_with(5, "gave up after 3 attempts");
    let n = server.requests();
    assert_eq!(n, 3, "one request and two retries");
    let mut c = pitr_tests::bins::wal_archiver();
    c.envs(env).args(["get", &name]).arg(dir.path().join("out"));
    run(c).fails_with(205, "gave up after 3 attempts");
    assert!(server.requests() > n);
}

#[test]
fn unusable_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let p = write(dir.path(), &name, &data);
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["push", "--repo", "gs://bucket/x"]).arg(&p);
    run(c).fails_with(7, "unsupported scheme");
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["get", "--repo", "gs://bucket/x", &name]).arg(dir.path().join("o"));
    run(c).fails_with(207, "unsupported scheme");
    let mut c = pitr_tests::bins::wal_archiver();
    c.arg("push").arg(&p);
    run(c).fails_with(7, "no repository configured");
    // A mistyped repository directory is not an empty repository: get aborts recovery.
    let typo = dir.path().join("no-such-repo");
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["get", "--repo", typo.to_str().unwrap(), &name]).arg(dir.path().join("o"));
    run(c).fails_with(207, "cannot open repository");
    assert!(!typo.exists(), "get created nothing");
    // A broken restore_command invocation must abort recovery, not look like "missing".
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["get", "--repo", "/tmp/x", "--no-such-flag"]);
    assert_eq!(run(c).code, 202);
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["push", "--repo", "/tmp/x", "--no-such-flag"]);
    assert_eq!(run(c).code, 2);
}

/// The restore_command `pitr-restore` writes puts options before `get`: a usage error there
/// (a malformed PITR_* variable in the server's environment, an option this wal-archiver does
/// not know) must still abort recovery (above 125), never exit 2, which PostgreSQL reads as
/// "file absent" and then promotes early.
#[test]
fn usage_errors_before_get_abort_recovery() {
    let repo = TestRepo::local();
    let dir = tempfile::tempdir().unwrap();
    let (name, _) = seeded(&repo, dir.path());
    let dest = dir.path().join("RECOVERYXLOG");
    let repo_dir = repo.url.clone();
    for (var, value) in [
        ("PITR_RETRIES", "abc"),
        ("PITR_PREFETCH", "-1"),
        ("PITR_S3_PATH_STYLE", "maybe"),
        ("PITR_COMPRESS_LEVEL", "high"),
    ] {
        let mut c = pitr_tests::bins::wal_archiver();
        c.env(var, value).args(["--repo", &repo_dir, "--cluster", "main", "get", &name]).arg(&dest);
        let r = run(c);
        assert_eq!(r.code, 202, "{var}={value}: {r:#?}");
        assert!(!dest.exists());
    }
    // An option written by a newer pitr-restore, before or after `get`.
    for args in [
        vec!["--repo", &repo_dir, "--some-future-option", "3", "get", &name],
        vec!["get", "--repo", &repo_dir, "--some-future-option", "3", &name],
    ] {
        let mut c = pitr_tests::bins::wal_archiver();
        c.args(&args).arg(&dest);
        assert_eq!(run(c).code, 202, "{args:?}");
    }
    // The same line without the fault works, in both orders.
    for args in [vec!["--repo", &repo_dir, "--cluster", "main", "get", &name], vec!["get", "--repo", &repo_dir, &name]]
    {
        let mut c = pitr_tests::bins::wal_archiver();
        c.args(&args).arg(&dest);
        run(c).ok();
        std::fs::remove_file(&dest).unwrap();
    }
}

/// An object copied over another segment's key (segment 3's object stored as segment 4) is
/// never served as segment 4: PostgreSQL would find "unexpected pageaddr" and end recovery
/// there. Refused as damaged (206); a re-push of the real segment 4 is refused too, never
/// judged against the wrong object's digest as "identical".
#[test]
fn an_object_under_another_segments_name_is_refused() {
    let repo = TestRepo::local();
    let dir = tempfile::tempdir().unwrap();
    let (name3, _) = seeded(&repo, dir.path());
    let (name4, data4) = segment(SYSTEM_ID, 1, 4);
    let wal = repo.dir.as_ref().unwrap().join("main/wal/0000000100000000");
    std::fs::copy(wal.join(format!("{name3}.zst")), wal.join(format!("{name4}.zst"))).unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    get(&repo, &name4, &dest).fails_with(206, &format!("not \"{name4}\""));
    assert!(!dest.exists());
    push(&repo, &write(dir.path(), &name4, &data4)).fails_with(6, "another file's name");
}

/// A relative repository is refused by archive_command and restore_command (PostgreSQL runs
/// them inside the data directory, where it would name a directory in PGDATA), with nothing
/// created.
#[test]
fn a_relative_repository_is_refused_where_postgresql_runs_us() {
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let p = write(dir.path(), &name, &data);
    let mut c = pitr_tests::bins::wal_archiver();
    c.current_dir(dir.path()).args(["push", "--repo", "repo"]).arg(&p);
    run(c).fails_with(7, "absolute");
    assert!(!dir.path().join("repo").exists(), "nothing created");
    let mut c = pitr_tests::bins::wal_archiver();
    c.current_dir(dir.path()).env("PITR_REPO", "./repo").args(["get", &name]).arg(dir.path().join("o"));
    run(c).fails_with(207, "absolute");
}

/// A full repository disk: push fails with the documented exit code for a repository that
/// cannot store (5), in one line that names the repository and says the disk is full,
/// leaves no temporary file behind, and stores nothing; once space is free the same push
/// succeeds.
#[test]
fn a_full_repository_disk() {
    let fs = pitr_tests::fs::SmallFs::mount("repo", 8 << 20);
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = fs.join("repo");
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let p = write(dir.path(), &name, &data);
    // Fill the disk but for a little room.
    let filler = fs.join("filler");
    std::fs::write(&filler, vec![7u8; (fs.free() - (8 << 10)) as usize]).unwrap_or(());
    let push = || {
        let mut c = pitr_tests::bins::wal_archiver();
        c.args(["push", "--repo", repo_dir.to_str().unwrap()]).arg(&p);
        run(c)
    };
    let r = push();
    assert_eq!(r.code, 5, "{r:#?}");
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{r:#?}");
    assert!(lines[0].contains(repo_dir.to_str().unwrap()) && lines[0].contains("No space left on device"), "{r:#?}");
    assert_eq!(lines[0].matches("No space left on device").count(), 1, "said once: {r:#?}");
    let tmp = repo_dir.join(".pitr-tmp");
    let left: Vec<_> =
        std::fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert!(!repo_dir.join("main/wal").exists() || std::fs::read_dir(repo_dir.join("main/wal")).unwrap().count() == 0);
    std::fs::remove_file(&filler).unwrap();
    push().ok();
}
