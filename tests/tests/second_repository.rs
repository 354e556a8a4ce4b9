//! A second repository (`repo2-config`) through the programs, against real S3 servers: the
//! main repository on moto, the copy on s3s-fs with credentials of its own (an AWS profile,
//! `s3-profile`, while the environment holds moto's), each behind a fault proxy that can take
//! it down. `push` stores in both, or records a pending marker and exits 0 when the copy is
//! down, and a later push clears it; `copy` fills an encrypted copy incrementally and refuses a
//! damaged source object; `get` falls back to the copy and never says "absent" (1) when the
//! main repository could not answer; a real PostgreSQL 15 restores to a time from the copy
//! while the main repository is down; and the streaming receiver copies to the second
//! repository without waiting for it.

use std::path::{Path, PathBuf};

use common::storage::{read_all, Body, ObjectKey, PutMode};
use pitr_tests::bins::{run, Run};
use pitr_tests::fault_proxy::{Fault, FaultProxy};
use pitr_tests::pg::{give_to_server_user, scratch_dir};
use pitr_tests::repo::TestRepo;
use pitr_tests::s3::{moto, s3s_fs};
use pitr_tests::wal::{segment, SYSTEM_ID};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A repository that the programs reach through a proxy that can take it down.
struct Behind {
    repo: TestRepo,
    proxy: FaultProxy,
}

impl Behind {
    async fn new(server: &'static pitr_tests::s3::S3Server) -> Behind {
        let proxy = FaultProxy::start(&server.endpoint);
        let repo = TestRepo::s3_via(server, &proxy.endpoint).await;
        Behind { repo, proxy }
    }

    /// Every request answered 503 from now on (after the programs' retries: unreachable).
    fn down(&self) {
        self.proxy.set_rule(|_| Fault::Status(503, "ServiceUnavailable"));
    }

    fn up(&self) {
        self.proxy.pass();
    }

    fn has(&self, key: &str) -> bool {
        rt().block_on(self.repo.storage.head(&ObjectKey::new(key).unwrap())).is_ok()
    }
}

/// The second repository's pitr.toml in `dir`: an s3s-fs bucket behind `endpoint`, its
/// credentials in the profile `copy` of an AWS credentials file beside it (returned too),
/// `extra` lines appended.
fn repo2_file(dir: &Path, repo: &TestRepo, endpoint: &str, extra: &str) -> (PathBuf, PathBuf) {
    let server = s3s_fs();
    let creds = dir.join("aws-credentials");
    std::fs::write(
        &creds,
        format!("[copy]\naws_access_key_id = {}\naws_secret_access_key = {}\n", server.access_key, server.secret_key),
    )
    .unwrap();
    let file = dir.join("repo2.toml");
    std::fs::write(
        &file,
        format!(
            "repo = \"{}\"\ns3-endpoint = \"{endpoint}\"\ns3-profile = \"copy\"\ns3-region = \"us-east-1\"\nretries = \
             1\ns3-timeout = 5\n{extra}",
            repo.url
        ),
    )
    .unwrap();
    (file, creds)
}

/// `wal-archiver` for the main repository with the second configured.
fn wa(main: &TestRepo, repo2: &Path, creds: &Path) -> std::process::Command {
    let mut c = main.wal_archiver();
    c.env("PITR_REPO2_CONFIG", repo2).env("AWS_SHARED_CREDENTIALS_FILE", creds).env("AWS_CONFIG_FILE", "/dev/null");
    c
}

fn push(mut c: std::process::Command, dir: &Path, segno: u64) -> (Run, String, Vec<u8>) {
    let (name, data) = segment(SYSTEM_ID, 1, segno);
    let path = dir.join(&name);
    std::fs::write(&path, &data).unwrap();
    c.args(["push", path.to_str().unwrap()]);
    (run(c), name, data)
}

fn wal_key(name: &str) -> String {
    format!("main/wal/{}/{name}.zst", &name[..16])
}

#[test]
fn push_stores_in_both_and_records_what_the_copy_missed() {
    let rt = rt();
    let main = rt.block_on(Behind::new(moto()));
    let copy = rt.block_on(Behind::new(s3s_fs()));
    let dir = tempfile::tempdir().unwrap();
    let pg_wal = dir.path().join("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let (file, creds) = repo2_file(dir.path(), &copy.repo, &copy.proxy.endpoint, "");
    let pending = pg_wal.join(".pitr-repo2-pending");

    // Both up: in both.
    let (r, n1, _) = push(wa(&main.repo, &file, &creds), &pg_wal, 1);
    r.ok();
    assert!(main.has(&wal_key(&n1)) && copy.has(&wal_key(&n1)));
    assert!(copy.has("main/cluster.json"));

    // The copy down: exit 0, in the main repository, recorded as pending, with a warning.
    copy.down();
    let (r, n2, _) = push(wa(&main.repo, &file, &creds), &pg_wal, 2);
    r.ok();
    assert!(r.stderr.contains("recorded as pending"), "{r:#?}");
    assert!(main.has(&wal_key(&n2)) && !copy.has(&wal_key(&n2)));
    assert!(pending.join(&n2).exists());
    // PostgreSQL recycles the segment once push said 0: the later push copies it from the main
    // repository.
    std::fs::remove_file(pg_wal.join(&n2)).unwrap();

    // Still down: the next file is recorded too, after one failing attempt.
    let (r, n3, _) = push(wa(&main.repo, &file, &creds), &pg_wal, 3);
    r.ok();
    assert!(pending.join(&n3).exists() && pending.join(&n2).exists());

    // Up again: the next push stores the pending ones (from pg_wal and from the main
    // repository) and its own, and clears the markers.
    copy.up();
    let (r, n4, _) = push(wa(&main.repo, &file, &creds), &pg_wal, 4);
    r.ok();
    for n in [&n2, &n3, &n4] {
        assert!(copy.has(&wal_key(n)), "{n} in the copy: {r:#?}");
        assert!(!pending.join(n).exists(), "marker of {n} cleared");
    }

    // The main repository down: push fails as it always did (storage, 5), whatever the copy.
    main.down();
    let (r, _, _) = push(wa(&main.repo, &file, &creds), &pg_wal, 5);
    assert_eq!(r.code, 5, "{r:#?}");
    main.up();

    // The copy's own credentials: with the environment's (moto's) instead of its profile,
    // s3s-fs refuses, and the push still exits 0 with the file pending.
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("s3-profile = \"copy\"\n", "")).unwrap();
    let (r, n6, _) = push(wa(&main.repo, &file, &creds), &pg_wal, 6);
    r.ok();
    assert!(pending.join(&n6).exists() && !copy.has(&wal_key(&n6)), "{r:#?}");

    // A cluster name in the copy's file other than the main one is refused (7) before
    // anything is stored.
    std::fs::write(&file, format!("{}cluster = \"other\"\n", std::fs::read_to_string(&file).unwrap())).unwrap();
    let (r, n7, _) = push(wa(&main.repo, &file, &creds), &pg_wal, 7);
    r.fails_with(7, "names cluster \"other\"");
    assert!(!main.has(&wal_key(&n7)));
}

/// A new key file made by `wal-archiver keys new-key-file`.
fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("repo2.key");
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["keys", "new-key-file"]).arg(&path);
    run(c).ok();
    path
}

#[test]
fn copy_fills_an_encrypted_copy_incrementally_and_verifies() {
    let rt = rt();
    let main = TestRepo::local();
    let copy = rt.block_on(Behind::new(s3s_fs()));
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let (file, creds) = repo2_file(
        dir.path(),
        &copy.repo,
        &copy.proxy.endpoint,
        &format!("encryption-key-file = \"{}\"\n", key.display()),
    );
    // Archived into the main repository alone (no second one configured yet).
    let mut names = Vec::new();
    for segno in 1..=4 {
        let (r, n, _) = push(main.wal_archiver(), dir.path(), segno);
        r.ok();
        names.push(n);
    }
    // A catalog entry with its objects, and an interrupted backup (no entry) beside it.
    let sto = main.storage.clone();
    let put = |k: &str, b: Vec<u8>| {
        rt.block_on(sto.put(&ObjectKey::new(k).unwrap(), Body::Bytes(b.into()), PutMode::CreateNew)).unwrap()
    };
    let obj = |name: &str| {
        let mut out = std::io::Cursor::new(Vec::new());
        common::codec::compress(b"tar bytes", &mut std::io::empty(), &mut out, name, None, Default::default()).unwrap();
        out.into_inner()
    };
    let id = "20260101T000000Z";
    put(&format!("main/backups/{id}/base.tar/000000.zst"), obj(&format!("{id}/base.tar/000000")));
    put(&format!("main/backups/{id}/backup_manifest.zst"), obj(&format!("{id}/backup_manifest")));
    put(&format!("main/backups/{id}/reservation.json"), b"{}".to_vec());
    put(&format!("main/backups/{id}.json"), b"{\"id\":\"20260101T000000Z\"}".to_vec());
    put("main/backups/20260102T000000Z/base.tar/000000.zst", obj("20260102T000000Z/base.tar/000000"));
    put("main/leases/restore-1.json", b"{}".to_vec());
    // One segment damaged in the main repository.
    let damaged = main.dir.as_ref().unwrap().join(wal_key(&names[2]));
    let mut bytes = std::fs::read(&damaged).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x55;
    std::fs::write(&damaged, &bytes).unwrap();

    let copy_cmd = |args: &[&str]| {
        let mut c = wa(&main, &file, &creds);
        c.arg("copy").args(args);
        run(c)
    };
    let dry = copy_cmd(&["--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(!copy.has("main/cluster.json"), "a dry run writes nothing");

    let r = copy_cmd(&["--json"]);
    assert_eq!(r.code, 6, "a damaged source object: {r:#?}");
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["damaged"], serde_json::json!([wal_key(&names[2])]), "{report}");
    assert_eq!(report["backups"], serde_json::json!([id]), "{report}");
    // cluster.json, 3 segments, 2 backup objects, 1 catalog entry.
    assert_eq!(report["copied"], 7, "{report}");
    assert!(r.stderr.contains(&names[2]), "{r:#?}");
    for k in ["main/cluster.json".to_string(), wal_key(&names[0]), wal_key(&names[3])] {
        assert!(copy.has(&k), "{k}");
    }
    assert!(!copy.has(&wal_key(&names[2])), "the damaged object is not copied");
    assert!(
        copy.has(&format!("main/backups/{id}.json")) && copy.has(&format!("main/backups/{id}/base.tar/000000.zst"))
    );
    for k in [
        format!("main/backups/{id}/reservation.json"),
        "main/backups/20260102T000000Z/base.tar/000000.zst".into(),
        "main/leases/restore-1.json".into(),
    ] {
        assert!(!copy.has(&k), "{k} is not copied");
    }
    // The copy is encrypted with its own key: nothing there in the clear.
    assert!(copy.has("_pitr/encryption.json"));
    let raw = rt.block_on(read_all(copy.repo.storage.as_ref(), &ObjectKey::new(wal_key(&names[0])).unwrap())).unwrap();
    assert_eq!(&raw[..8], b"PITRENC1");

    // Repaired (the intact object put back): the second run copies only that one.
    let (_, good) = segment(SYSTEM_ID, 1, 3);
    std::fs::remove_file(&damaged).unwrap();
    let seg = dir.path().join(&names[2]);
    std::fs::write(&seg, &good).unwrap();
    let mut c = main.wal_archiver();
    c.args(["push", seg.to_str().unwrap()]);
    run(c).ok();
    let r = copy_cmd(&["--json"]);
    assert_eq!(r.code, 0, "{r:#?}");
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["copied"], 1, "{report}");
    let r = copy_cmd(&[]);
    assert!(r.ok().contains("copied 0 object(s)"), "{r:#?}");

    // The copy read back through get, with the main repository's object gone.
    std::fs::remove_file(main.dir.as_ref().unwrap().join(wal_key(&names[0]))).unwrap();
    let out = dir.path().join("RECOVERYXLOG");
    let mut c = wa(&main, &file, &creds);
    c.args(["get", &names[0], out.to_str().unwrap()]);
    run(c).ok();
    assert!(std::fs::read(&out).unwrap() == segment(SYSTEM_ID, 1, 1).1);

    // A conflict: different content under one key in the copy is reported (4), not replaced.
    let other = ObjectKey::new(wal_key(&names[1])).unwrap();
    let mut c = wa(&main, &file, &creds);
    c.args(["copy", "--from", "repo2"]);
    let r = run(c);
    assert_eq!(r.code, 0, "the main repository gets back what it lost: {r:#?}");
    assert!(main.dir.as_ref().unwrap().join(wal_key(&names[0])).exists());
    let (_, different) = segment(SYSTEM_ID + 1, 1, 2);
    std::fs::write(main.dir.as_ref().unwrap().join(wal_key(&names[1])), {
        let mut out = std::io::Cursor::new(Vec::new());
        common::codec::compress(&different, &mut std::io::empty(), &mut out, &names[1], None, Default::default())
            .unwrap();
        out.into_inner()
    })
    .unwrap();
    let before = rt.block_on(read_all(copy.repo.storage.as_ref(), &other)).unwrap();
    let r = copy_cmd(&[]);
    assert_eq!(r.code, 4, "{r:#?}");
    assert!(r.stderr.contains(other.as_str()), "{r:#?}");
    assert_eq!(rt.block_on(read_all(copy.repo.storage.as_ref(), &other)).unwrap(), before, "not overwritten");

    // verify checks each repository and names the one with the problem.
    let mut c = wa(&main, &file, &creds);
    c.args(["verify", "--all"]);
    let r = run(c);
    assert_eq!(r.code, 6, "{r:#?}");
    assert!(r.stdout.contains("== main repository") && r.stdout.contains("== repo2 repository"), "{r:#?}");
    assert!(r.stderr.contains("main repository"), "{r:#?}");
}

#[test]
fn get_falls_back_to_the_copy_and_never_says_absent_when_the_main_one_is_down() {
    let rt = rt();
    let main = rt.block_on(Behind::new(moto()));
    let copy = rt.block_on(Behind::new(s3s_fs()));
    let dir = tempfile::tempdir().unwrap();
    let (file, creds) = repo2_file(dir.path(), &copy.repo, &copy.proxy.endpoint, "");
    let (r, n1, d1) = push(wa(&main.repo, &file, &creds), dir.path(), 1);
    r.ok();
    // Segment 2 in the main repository only.
    let (r, n2, d2) = push(main.repo.wal_archiver(), dir.path(), 2);
    r.ok();
    let get = |name: &str| {
        let out = dir.path().join(format!("restored-{name}"));
        let _ = std::fs::remove_file(&out);
        let mut c = wa(&main.repo, &file, &creds);
        c.env("PITR_PREFETCH", "0").args(["get", name, out.to_str().unwrap()]);
        (run(c), out)
    };
    let (_, n9) = (0, segment(SYSTEM_ID, 1, 9).0);

    // Both up: absent from both is absent (1); the main repository serves segment 2.
    let (r, _) = get(&n9);
    assert_eq!(r.code, 1, "{r:#?}");
    let (r, out) = get(&n2);
    r.ok();
    assert!(std::fs::read(&out).unwrap() == d2);

    // The main repository down: segment 1 from the copy; segment 2 (only in the unreachable
    // main one) and segment 9 are not certain absences: 205, recovery aborts.
    main.down();
    let (r, out) = get(&n1);
    r.ok();
    assert!(std::fs::read(&out).unwrap() == d1);
    let (r, _) = get(&n2);
    assert_eq!(r.code, 205, "{r:#?}");
    assert!(r.stderr.contains("not certain absence"), "{r:#?}");
    let (r, _) = get(&n9);
    assert_eq!(r.code, 205, "{r:#?}");

    // Both down: 205.
    copy.down();
    let (r, _) = get(&n1);
    assert_eq!(r.code, 205, "{r:#?}");
    // Main up, copy down: a file the main one lacks is not certain either.
    main.up();
    let (r, _) = get(&n9);
    assert_eq!(r.code, 205, "{r:#?}");

    // A second repository's file that cannot be used fails only the gets that need it.
    std::fs::write(&file, "repo = \"/copy\"\nrepository = \"typo\"\n").unwrap();
    let (r, out) = get(&n2);
    r.ok();
    assert!(std::fs::read(&out).unwrap() == d2);
    let (r, _) = get(&n9);
    assert_eq!(r.code, 207, "{r:#?}");
    assert!(r.stderr.contains("the second repository"), "{r:#?}");
}

/// A real PostgreSQL 15 archiving into the main repository (S3 on moto, through a proxy) with
/// the copy on s3s-fs (its own profile, encrypted with its own key) configured in pitr.toml;
/// a base backup; `copy` brings the backup over; then, with the main repository down,
/// `pitr-restore --start` restores to a time from the copy, and the server's restore_command
/// reads from it.
#[test]
fn a_restore_to_a_time_from_the_copy_while_the_main_repository_is_down() {
    let rt = rt();
    let mut main = rt.block_on(Behind::new(moto()));
    let copy = rt.block_on(Behind::new(s3s_fs()));
    let work = scratch_dir("repo2-files");
    let key_dir = work.path().join("keys");
    std::fs::create_dir(&key_dir).unwrap();
    let key = key_file(&key_dir);
    let (file, creds) = repo2_file(
        work.path(),
        &copy.repo,
        &copy.proxy.endpoint,
        &format!("encryption-key-file = \"{}\"\n", key.display()),
    );
    // The main repository in pitr.toml too, as in production.
    let main_file = work.path().join("pitr.toml");
    std::fs::write(
        &main_file,
        format!(
            "repo = \"{}\"\ns3-endpoint = \"{}\"\nrepo2-config = \"{}\"\ns3-timeout = 5\n",
            main.repo.url,
            main.proxy.endpoint,
            file.display()
        ),
    )
    .unwrap();
    give_to_server_user(work.path());
    main.repo.env.retain(|(k, _)| k != "PITR_REPO" && k != "PITR_S3_ENDPOINT");
    main.repo.env.push(("PITR_CONFIG".into(), main_file.display().to_string()));
    main.repo.env.push(("AWS_SHARED_CREDENTIALS_FILE".into(), creds.display().to_string()));
    main.repo.env.push(("AWS_CONFIG_FILE".into(), "/dev/null".into()));

    let repo = &main.repo;
    let copy_ref = &copy;
    let main_ref = &main;
    let (report, conf) = pitr_tests::matrix::backup_and_restore_from(15, repo, || {
        // The backup (written to the main repository) comes over with `copy`, as a timer
        // would run it; then the main repository goes down.
        let mut c = repo.as_server_user(pitr_tests::bins::wal_archiver());
        c.arg("copy");
        let out = run(c);
        assert!(out.ok().contains("backups copied"), "{out:#?}");
        assert!(rt
            .block_on(copy_ref.repo.storage.list("main/backups/"))
            .unwrap()
            .iter()
            .any(|o| o.key.as_str().ends_with(".json")));
        main_ref.down();
    });
    assert!(report.stderr.contains("restoring from the second repository"), "{report:#?}");
    // The server's restore_command reads from the copy alone, with its file, its key and its
    // profile (with the unreachable original as a fallback, the probe for 00000002.history at
    // the end of recovery would be "not certain" and abort it).
    let command = conf.lines().find(|l| l.starts_with("restore_command")).unwrap_or_default();
    for word in
        [format!("--config {}", file.display()), format!("--repo {}", copy.repo.url), "--s3-profile copy".into()]
    {
        assert!(command.contains(&word), "{word} in {command}");
    }
    assert!(!command.contains("--repo2-config") && !command.contains(&main.repo.url), "{command}");
    assert!(command.contains("--encryption-key-file"), "{command}");
}

/// The streaming receiver with a second repository: completed segments go to the main
/// repository at once and onto the spool's pending list, and a copier of their own brings
/// them to the copy; with the copy down the server's flush position keeps advancing and the
/// markers wait, and once it is back they are copied and cleared.
#[test]
fn the_receiver_copies_to_the_second_repository_without_waiting_for_it() {
    use std::time::{Duration, Instant};
    let rt = rt();
    let mut main = TestRepo::local();
    let copy = rt.block_on(Behind::new(s3s_fs()));
    let work = scratch_dir("repo2-receive");
    let (file, creds) = repo2_file(work.path(), &copy.repo, &copy.proxy.endpoint, "");
    main.env.push(("PITR_REPO2_CONFIG".into(), file.display().to_string()));
    main.env.push(("AWS_SHARED_CREDENTIALS_FILE".into(), creds.display().to_string()));
    main.env.push(("AWS_CONFIG_FILE".into(), "/dev/null".into()));
    let mut primary = pitr_tests::pg::TestCluster::init("repo2-receive", &[]);
    primary.start();
    let spool = work.path().join("spool");
    let mut rx = pitr_tests::receiver::ReceiverProc::start(&main, &primary, &spool, &[]);
    pitr_tests::receiver::wait_streaming(&primary, &rx, false);
    let pending = spool.join(".pitr-repo2-pending");

    copy.down();
    primary.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i");
    let first = primary.switch_wal();
    primary.sql("INSERT INTO t SELECT generate_series(1, 1000)");
    let second = primary.switch_wal();
    let flushed = primary.sql("SELECT pg_current_wal_flush_lsn()");
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in [&first, &second] {
        while !main.dir.as_ref().unwrap().join(wal_key(name)).exists() {
            assert!(Instant::now() < deadline, "{name} not stored in the main repository:\n{}", rx.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let sql = format!(
        "SELECT coalesce(bool_and(flush_lsn >= '{flushed}'::pg_lsn), false) FROM pg_stat_replication WHERE \
         application_name = 'pitr'"
    );
    while primary.sql(&sql) != "t" {
        assert!(Instant::now() < deadline, "flush position stuck while the copy is down:\n{}", rx.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pending.join(&first).exists() && pending.join(&second).exists(), "{}", rx.log());
    assert!(!copy.has(&wal_key(&first)));

    // Back up: the next stored segment wakes the copier, which copies everything pending.
    copy.up();
    primary.sql("INSERT INTO t SELECT generate_series(1, 1000)");
    let third = primary.switch_wal();
    let deadline = Instant::now() + Duration::from_secs(90);
    for name in [&first, &second, &third] {
        while !copy.has(&wal_key(name)) || pending.join(name).exists() {
            assert!(Instant::now() < deadline, "{name} not copied to the second repository:\n{}", rx.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(copy.has("main/cluster.json"));
    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "{}", rx.log());
    primary.stop();
}

/// A backlog pushed with the look-ahead worker (which gets `PITR_REPO2_CONFIG` from its
/// parent) lands in both repositories, with nothing left pending, whichever of the worker and
/// the archiver's own call stored each file.
#[test]
fn the_look_ahead_worker_stores_in_both() {
    let main = TestRepo::local();
    let copy = TestRepo::local();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("repo2.toml");
    std::fs::write(&file, format!("repo = {:?}\n", copy.url)).unwrap();
    let pg_wal = dir.path().join("pg_wal");
    std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    let files: Vec<_> = (1..=8).map(|n| segment(SYSTEM_ID, 1, n)).collect();
    for (name, data) in &files {
        std::fs::write(pg_wal.join(name), data).unwrap();
        std::fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
    }
    let mut ahead = 0;
    for (name, _) in &files {
        let mut c = main.wal_archiver();
        c.env("PITR_REPO2_CONFIG", &file).current_dir(dir.path()).args(["-v", "push"]).arg(format!("pg_wal/{name}"));
        let r = run(c);
        r.ok();
        ahead += r.stderr.contains("already archived with identical content") as usize;
        let st = pg_wal.join("archive_status");
        std::fs::rename(st.join(format!("{name}.ready")), st.join(format!("{name}.done"))).unwrap();
    }
    assert!(ahead >= 1, "some segments were stored by the look-ahead worker");
    for (name, _) in &files {
        for r in [&main, &copy] {
            assert!(r.dir.as_ref().unwrap().join(wal_key(name)).exists(), "{name} in {}", r.url);
        }
    }
    let pending = pg_wal.join(".pitr-repo2-pending");
    let left: Vec<_> = std::fs::read_dir(&pending).into_iter().flatten().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}
