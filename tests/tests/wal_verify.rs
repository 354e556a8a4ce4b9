//! `wal-archiver verify` run as an operator or a cron job would run it, against a local
//! repository filled by `push`: a sound archive across a timeline switch passes; a deleted
//! segment is a gap and a flipped byte a damaged object, both reported in one run with exit
//! 6; `--headers-only` still finds the gap but not the damaged payload.

use std::path::{Path, PathBuf};

use pitr_tests::bins::{run, Run};
use pitr_tests::repo::TestRepo;
use pitr_tests::wal::{segment, SYSTEM_ID};

fn push(repo: &TestRepo, dir: &Path, name: &str, data: &[u8]) {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    let mut c = repo.wal_archiver();
    c.arg("push").arg(&p);
    run(c).ok();
}

fn verify(repo: &TestRepo, flags: &[&str]) -> Run {
    let mut c = repo.wal_archiver();
    c.arg("verify").args(flags);
    run(c)
}

/// Path of the stored object of WAL file `name` in the local repository.
fn object(repo: &TestRepo, name: &str) -> PathBuf {
    let dir = repo.dir.as_ref().unwrap().join("main/wal");
    if name.ends_with(".history") {
        dir.join(format!("{name}.zst"))
    } else {
        dir.join(&name[..16]).join(format!("{name}.zst"))
    }
}

/// The report's problems fail the command with exit 6 and one line on stderr.
fn fails(r: &Run, needle: &str) {
    r.fails_with(6, needle);
    assert!(r.stdout.contains("PROBLEMS: "), "{r:#?}");
}

#[test]
fn verify_finds_gaps_and_damage() {
    let repo = TestRepo::local();
    let dir = tempfile::tempdir().unwrap();
    // Timeline 1: segments 3..=7; timeline 2 forks at 0/8000000 and holds 8 and 9.
    for segno in 3..=7 {
        let (name, data) = segment(SYSTEM_ID, 1, segno);
        push(&repo, dir.path(), &name, &data);
    }
    push(&repo, dir.path(), "00000002.history", b"1\t0/8000000\tno recovery target specified\n");
    for segno in 8..=9 {
        let (name, data) = segment(SYSTEM_ID, 2, segno);
        push(&repo, dir.path(), &name, &data);
    }

    let r = verify(&repo, &[]);
    let out = r.ok();
    assert!(out.contains("timeline 1: 000000010000000000000003 .. 000000010000000000000007, 5 segments"), "{out}");
    assert!(out.contains("timeline 2: 000000020000000000000008 .. 000000020000000000000009, 2 segments"), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    assert!(r.stderr.trim().is_empty(), "nothing on stderr without --verbose: {r:#?}");
    let json: serde_json::Value = serde_json::from_str(verify(&repo, &["--json"]).ok()).unwrap();
    assert_eq!(json["ok"], true, "{json:#}");
    assert_eq!(json["objects"]["checked"], 8, "{json:#}");

    // A segment in the middle disappears: a gap, exit 6.
    std::fs::remove_file(object(&repo, "000000010000000000000005")).unwrap();
    let r = verify(&repo, &[]);
    fails(&r, "1 gap (1 segment missing)");
    assert!(r.stdout.contains("GAP timeline 1: 000000010000000000000005 .. 000000010000000000000005"), "{r:#?}");

    // A byte flips inside another stored object: reported too, in the same run.
    let p = object(&repo, "000000010000000000000006");
    let mut obj = std::fs::read(&p).unwrap();
    let mid = 256 + (obj.len() - 256) / 2;
    obj[mid] ^= 0x55;
    std::fs::write(&p, obj).unwrap();
    let r = verify(&repo, &[]);
    fails(&r, "1 gap (1 segment missing), 1 damaged object");
    assert!(r.stdout.contains("GAP timeline 1: 000000010000000000000005"), "{r:#?}");
    assert!(r.stdout.contains("DAMAGED 000000010000000000000006 (main/wal/0000000100000000/"), "{r:#?}");
    let json: serde_json::Value = serde_json::from_str(&verify(&repo, &["--json"]).stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["gaps"][0]["first"], "000000010000000000000005", "{json:#}");
    assert_eq!(json["damaged"][0]["name"], "000000010000000000000006", "{json:#}");

    // Headers only: the payload is not read, so only the gap is found.
    let r = verify(&repo, &["--headers-only"]);
    fails(&r, "1 gap (1 segment missing)");
    assert!(!r.stdout.contains("DAMAGED"), "{r:#?}");

    // A timeline without its history file cannot be followed by a restore.
    let (name, data) = segment(SYSTEM_ID, 3, 9);
    push(&repo, dir.path(), &name, &data);
    let r = verify(&repo, &["--headers-only"]);
    fails(&r, "1 missing history file");
    assert!(r.stdout.contains("MISSING HISTORY: 00000003.history"), "{r:#?}");
}

#[test]
fn verify_of_a_missing_cluster_is_a_configuration_error() {
    let repo = TestRepo::local();
    std::fs::create_dir_all(repo.dir.as_ref().unwrap()).unwrap();
    verify(&repo, &[]).fails_with(7, "holds no cluster \"main\"");
}
