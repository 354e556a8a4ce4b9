//! Look-ahead push: with a backlog of `.ready` segments, `push` starts a worker that stores
//! them ahead of the archiver; every archive_command call still exits 0 only for content that
//! is in the repository, and a bad file in the backlog is still refused by its own call.

use std::path::{Path, PathBuf};

use pitr_tests::bins::{run, Run};
use pitr_tests::repo::TestRepo;
use pitr_tests::wal::{segment, SYSTEM_ID};

/// A stub data directory whose pg_wal holds `files` with `.ready` markers, like an archiver
/// backlog.
fn backlog(files: &[(String, Vec<u8>)]) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let pg_wal = d.path().join("pg_wal");
    std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    for (name, data) in files {
        std::fs::write(pg_wal.join(name), data).unwrap();
        std::fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
    }
    (d, pg_wal)
}

/// Runs archive_command for `name` the way PostgreSQL's archiver does (cwd = data dir,
/// relative %p), then marks it done on success.
fn archive(repo: &TestRepo, datadir: &Path, name: &str) -> Run {
    let mut c = repo.wal_archiver();
    c.current_dir(datadir).args(["-v", "push"]).arg(format!("pg_wal/{name}"));
    let r = run(c);
    if r.code == 0 {
        let st = datadir.join("pg_wal/archive_status");
        std::fs::rename(st.join(format!("{name}.ready")), st.join(format!("{name}.done"))).unwrap();
    }
    r
}

#[test]
fn backlog_is_pushed_ahead_and_every_call_is_verified() {
    let repo = TestRepo::local();
    let files: Vec<_> = (1..=8).map(|n| segment(SYSTEM_ID, 1, n)).collect();
    let (dir, pg_wal) = backlog(&files);
    let mut ahead = 0;
    for (name, _) in &files {
        let r = archive(&repo, dir.path(), name);
        r.ok();
        ahead += r.stderr.contains("already archived with identical content") as usize;
    }
    assert!(ahead >= 1, "some segments were stored by the look-ahead worker");
    for (name, data) in &files {
        let out = dir.path().join("fetched");
        let mut c = repo.wal_archiver();
        c.args(["get", "--prefetch", "0", name]).arg(&out);
        run(c).ok();
        assert_eq!(&std::fs::read(&out).unwrap(), data, "{name}");
    }
    let spool = pg_wal.join(".pitr-push");
    let leftovers: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".claim"))
        .collect();
    assert!(leftovers.is_empty(), "claims left behind: {leftovers:?}");
}

#[test]
fn a_bad_file_in_the_backlog_is_refused_by_its_own_call() {
    let repo = TestRepo::local();
    let mut files: Vec<_> = (1..=6).map(|n| segment(SYSTEM_ID, 1, n)).collect();
    files[2].1 = vec![0u8; 16 << 20]; // segment 3: zeros
    let (dir, _) = backlog(&files);
    archive(&repo, dir.path(), &files[0].0).ok();
    archive(&repo, dir.path(), &files[1].0).ok();
    archive(&repo, dir.path(), &files[2].0).fails_with(3, "all zeros");
    // The archiver retries the bad file forever; operators fix it. Later files were pushed
    // ahead and are in the repository.
    for (name, data) in files.iter().skip(3) {
        let out = dir.path().join("fetched");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut c = repo.wal_archiver();
            c.args(["get", "--prefetch", "0", name]).arg(&out);
            if run(c).code == 0 || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(&std::fs::read(&out).unwrap(), data, "{name} pushed ahead");
    }
}

#[test]
fn disabled_look_ahead_leaves_no_trace() {
    let repo = TestRepo::local();
    let files: Vec<_> = (1..=3).map(|n| segment(SYSTEM_ID, 1, n)).collect();
    let (dir, pg_wal) = backlog(&files);
    let mut c = repo.wal_archiver();
    c.current_dir(dir.path()).args(["push", "--push-ahead", "0"]).arg(format!("pg_wal/{}", files[0].0));
    run(c).ok();
    assert!(!pg_wal.join(".pitr-push").exists());
    let stored = repo.dir.as_ref().unwrap().join("main/wal/0000000100000000");
    assert_eq!(std::fs::read_dir(stored).unwrap().count(), 1, "only the requested segment");
}
