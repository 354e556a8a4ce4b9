//! Damage to every kind of stored object, on a real PostgreSQL 15 repository: each object
//! flipped (a byte inside its compressed frame), truncated, or swapped with another object of
//! its kind. `get`, the planner, a restore with `--start` and the verify commands must detect
//! it with the documented exit code; a restored server never opens (promotes) on damaged data,
//! and no command reports success with it. Every case is undone before the next.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pitr_tests::bins::{self, Run};
use pitr_tests::pg::{give_to_server_user, scratch_dir, TestCluster};
use pitr_tests::repo::TestRepo;
use pitr_tests::wal::{segment, SYSTEM_ID};

/// How an object is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// One byte flipped two thirds into the object (inside the zstd frame).
    Flip,
    /// Cut to 60% of its length (the header stays readable).
    Truncate,
    /// Replaced by another object of the same kind.
    Swap,
}

fn run(repo: &TestRepo, c: Command, args: &[&str]) -> Run {
    let mut c = repo.as_server_user(c);
    c.args(args);
    bins::run(c)
}

/// Applies `damage` to the file at `path` (`other`: the file it is swapped with); returns the
/// original bytes.
fn damage(path: &Path, how: Damage, other: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let damaged = match how {
        Damage::Flip => {
            let mut b = original.clone();
            let i = (b.len() * 2 / 3).max(300).min(b.len() - 1);
            b[i] ^= 0x5A;
            b
        }
        Damage::Truncate => original[..original.len() * 3 / 5].to_vec(),
        Damage::Swap => std::fs::read(other).unwrap(),
    };
    std::fs::write(path, damaged).unwrap();
    original
}

/// What happened to one case.
struct Case {
    what: String,
    path: PathBuf,
    original: Vec<u8>,
}

impl Drop for Case {
    fn drop(&mut self) {
        std::fs::write(&self.path, &self.original).unwrap();
    }
}

/// A full restore to the latest WAL with `--start`: must not succeed, and must leave no server
/// running (recovery aborted, or nothing written at all).
fn restore_fails(repo: &TestRepo, case: &str, codes: &[i32]) -> Run {
    let dir = scratch_dir("damage-restore");
    give_to_server_user(dir.path());
    let data = dir.path().join("data");
    let args = bins::start_args(&data, 60);
    let r = run(repo, bins::pitr_restore(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(codes.contains(&r.code), "{case}: restore exit {} not in {codes:?}: {r:#?}", r.code);
    assert!(!data.join("postmaster.pid").exists(), "{case}: a server is left running");
    assert!(!r.stdout.contains("server promoted"), "{case}: {r:#?}");
    r
}

#[test]
fn every_kind_of_damage_is_detected() {
    let repo = TestRepo::local();
    let root = repo.dir.clone().unwrap();
    let mut c = TestCluster::init("damage", &["archive_mode = on".into(), repo.archive_command()]);
    for (k, v) in &repo.env {
        c.env(k, v);
    }
    c.start();
    c.pgbench(&["-i", "-s", "2", "-q"]);
    let dbname = format!("host={} port={} user=postgres", c.socket_dir.display(), c.port);
    let backup = |repo: &TestRepo| {
        let mut b = repo.as_server_user(bins::basebackup());
        b.env("PITR_DBNAME", &dbname).args(["create", "--wal-timeout", "60"]);
        bins::run(b).ok().trim().to_string()
    };
    let b1 = backup(&repo);
    c.pgbench(&["-t", "300", "-c", "2"]);
    let b2 = backup(&repo);
    for _ in 0..3 {
        c.pgbench(&["-t", "200", "-c", "2"]);
        c.switch_wal();
    }
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));
    c.stop();

    let wal_dir = root.join("main/wal/0000000100000000");
    let mut segments: Vec<String> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 28)
        .collect();
    segments.sort();
    // A segment after the newer backup (recovery needs it), and the one before it.
    let victim = segments[segments.len() - 2].trim_end_matches(".zst").to_string();
    let before = segments[segments.len() - 3].trim_end_matches(".zst").to_string();
    let seg_path = |n: &str| wal_dir.join(format!("{n}.zst"));
    let b2_dir = root.join("main/backups").join(&b2);
    let b1_dir = root.join("main/backups").join(&b1);
    let entry = |id: &str| root.join(format!("main/backups/{id}.json"));
    let pg_wal = tempfile::tempdir().unwrap();
    give_to_server_user(pg_wal.path());
    let dest = pg_wal.path().join("RECOVERYXLOG");
    let get = |name: &str| {
        let mut g = repo.as_server_user(bins::wal_archiver());
        g.args(["get", "--prefetch", "0", name]).arg(&dest);
        let r = bins::run(g);
        let _ = std::fs::remove_file(&dest);
        r
    };
    let wal_verify = || run(&repo, bins::wal_archiver(), &["verify", "--all"]);
    let backup_verify = |id: &str| run(&repo, bins::basebackup(), &["verify", id]);
    let plan = || run(&repo, bins::pitr_restore(), &["plan"]);
    let mut cases = 0;

    // Sound to begin with.
    wal_verify().ok();
    run(&repo, bins::basebackup(), &["verify", "--all"]).ok();
    assert!(plan().ok().contains(&b2));

    // WAL segments: get refuses (206), verify finds it (6); a swapped object is refused by
    // the planner before anything is written (6); content damage aborts recovery (9).
    for how in [Damage::Flip, Damage::Truncate, Damage::Swap] {
        let path = seg_path(&victim);
        let original = damage(&path, how, &seg_path(&before));
        let case = Case { what: format!("WAL segment {how:?}"), path, original };
        get(&victim).fails_with(206, &victim);
        assert_eq!(wal_verify().code, 6, "{}", case.what);
        if how == Damage::Swap {
            plan().fails_with(6, "not");
            restore_fails(&repo, &case.what, &[6]);
        } else {
            restore_fails(&repo, &case.what, &[9]);
        }
        cases += 1;
    }

    // Chunks and the manifest of the newest backup: a swapped one is found by the planner,
    // which skips to the older backup; content damage fails the restore (6, the partial
    // restore removed) and verify.
    let chunk = b2_dir.join("base.tar/000000.zst");
    let manifest = b2_dir.join("backup_manifest.zst");
    for (what, path, other) in [
        ("chunk", chunk.clone(), b2_dir.join("base.tar/000001.zst")),
        ("manifest", manifest.clone(), b1_dir.join("backup_manifest.zst")),
    ] {
        for how in [Damage::Flip, Damage::Truncate, Damage::Swap] {
            let original = damage(&path, how, &other);
            let case = Case { what: format!("{what} {how:?}"), path: path.clone(), original };
            assert_eq!(backup_verify(&b2).code, 6, "{}", case.what);
            if how == Damage::Swap {
                let out = plan().ok().to_string();
                assert!(out.contains(&format!("backup:        {b1}")) && out.contains("skipped:"), "{out}");
            } else {
                let r = restore_fails(&repo, &case.what, &[6]);
                let said = if what == "chunk" { "partial restore was removed" } else { "the manifest is damaged" };
                assert!(r.stderr.contains(said), "{}: {r:#?}", case.what);
            }
            cases += 1;
        }
    }

    // The catalog entry: unreadable or another backup's, refused everywhere (6).
    for how in [Damage::Flip, Damage::Truncate, Damage::Swap] {
        let path = entry(&b2);
        let original = std::fs::read(&path).unwrap();
        match how {
            Damage::Flip => {
                let mut b = original.clone();
                let i = b.iter().position(|&x| x == b':').unwrap();
                b[i] = b'#';
                std::fs::write(&path, b).unwrap();
            }
            _ => {
                damage(&path, how, &entry(&b1));
            }
        }
        let case = Case { what: format!("catalog entry {how:?}"), path, original };
        plan().fails_with(6, &b2);
        restore_fails(&repo, &case.what, &[6]);
        assert_eq!(run(&repo, bins::basebackup(), &["verify", "--all"]).code, 6, "{}", case.what);
        cases += 1;
    }

    // The cluster record: unreadable is refused by the planner, verify and push (6); another
    // cluster's record makes push refuse this cluster's WAL (4).
    let record = root.join("main/cluster.json");
    for how in [Damage::Truncate, Damage::Swap] {
        let original = std::fs::read(&record).unwrap();
        let text = String::from_utf8(original.clone()).unwrap();
        let damaged = match how {
            Damage::Truncate => text[..text.len() / 2].to_string(),
            _ => text.replacen("\"system_id\": \"", "\"system_id\": \"1", 1),
        };
        std::fs::write(&record, damaged).unwrap();
        let case = Case { what: format!("cluster record {how:?}"), path: record.clone(), original };
        let (name, data) = segment(SYSTEM_ID, 1, 200);
        let wal = tempfile::tempdir().unwrap();
        give_to_server_user(wal.path());
        let file = wal.path().join(&name);
        std::fs::write(&file, data).unwrap();
        let mut p = repo.as_server_user(bins::wal_archiver());
        p.arg("push").arg(&file);
        let r = bins::run(p);
        if how == Damage::Truncate {
            assert_eq!(r.code, 6, "{}: {r:#?}", case.what);
            plan().fails_with(6, "cluster.json");
            assert_eq!(wal_verify().code, 6, "{}", case.what);
        } else {
            assert_eq!(r.code, 4, "{}: {r:#?}", case.what);
        }
        cases += 1;
    }

    // History files (a timeline 2 that forked far beyond this archive, and a timeline 3):
    // damaged or swapped, refused by get (206), the planner and verify (6).
    let src = tempfile::tempdir().unwrap();
    give_to_server_user(src.path());
    for (tli, text) in [(2u32, "1\t1/0\tno recovery target specified\n"), (3, "1\t1/0\tx\n2\t1/1000000\ty\n")] {
        let f = src.path().join(format!("{tli:08X}.history"));
        std::fs::write(&f, text).unwrap();
        let mut p = repo.as_server_user(bins::wal_archiver());
        p.arg("push").arg(&f);
        bins::run(p).ok();
    }
    plan().ok();
    let h3 = root.join("main/wal/00000003.history.zst");
    for how in [Damage::Flip, Damage::Swap] {
        let original = damage(&h3, how, &root.join("main/wal/00000002.history.zst"));
        let case = Case { what: format!("history file {how:?}"), path: h3.clone(), original };
        get("00000003.history").fails_with(206, "00000003.history");
        assert_eq!(plan().code, 6, "{}", case.what);
        let v = wal_verify();
        assert_eq!(v.code, 6, "{}", case.what);
        assert!(v.stdout.contains("DAMAGED 00000003.history"), "{}: {v:#?}", case.what);
        cases += 1;
    }

    // The receiver's partial segment (the next segment after the archive): damaged or another
    // segment's, never served (206) nor planned with (6).
    let next_no = u64::from_str_radix(&last[16..], 16).unwrap() + 1;
    let next = format!("{}{:08X}", &last[..16], next_no);
    let rx_dir = root.join("main/receiver");
    std::fs::create_dir_all(&rx_dir).unwrap();
    let partial = rx_dir.join(format!("{next}.partial.zst"));
    let cut = {
        let mut d = segment(SYSTEM_ID, 1, next_no).1;
        d[1 << 20..].fill(0);
        d
    };
    let mut out = std::fs::File::create(&partial).unwrap();
    let opts = common::codec::CompressOptions::default();
    common::codec::compress(&[], &mut &cut[..], &mut out, &format!("{next}.partial"), Some(cut.len() as u64), opts)
        .unwrap();
    drop(out);
    give_to_server_user(&root);
    let other_partial = rx_dir.join("other.zst");
    {
        let mut out = std::fs::File::create(&other_partial).unwrap();
        let n = format!("{}{:08X}.partial", &last[..16], next_no + 1);
        common::codec::compress(&[], &mut &cut[..], &mut out, &n, Some(cut.len() as u64), opts).unwrap();
    }
    for how in [Damage::Flip, Damage::Swap] {
        let original = damage(&partial, how, &other_partial);
        let case = Case { what: format!("receiver partial {how:?}"), path: partial.clone(), original };
        get(&next).fails_with(206, &next);
        // Timeline 1 (the histories above made 3 the latest), whose archive it continues.
        let r = run(&repo, bins::pitr_restore(), &["plan", "--target-timeline", "1"]);
        assert_eq!(r.code, 6, "{}: {r:#?}", case.what);
        cases += 1;
    }
    std::fs::remove_file(&other_partial).unwrap();

    // Everything undone: sound again.
    std::fs::remove_file(&partial).unwrap();
    std::fs::remove_file(&h3).unwrap();
    std::fs::remove_file(root.join("main/wal/00000002.history.zst")).unwrap();
    wal_verify().ok();
    run(&repo, bins::basebackup(), &["verify", "--all"]).ok();
    assert_eq!(cases, 18, "every case ran");
}
