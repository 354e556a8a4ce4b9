//! `get` prefetching: after a segment is fetched, the next ones are downloaded in the
//! background and served from the spool, byte-identical; a miss is never remembered; a
//! damaged object is never served from the spool either.

use std::path::Path;

use pitr_tests::bins::{run, Run};
use pitr_tests::repo::TestRepo;
use pitr_tests::wal::{segment, SYSTEM_ID};

fn push_segments(repo: &TestRepo, dir: &Path, segnos: std::ops::RangeInclusive<u64>) -> Vec<(String, Vec<u8>)> {
    segnos
        .map(|n| {
            let (name, data) = segment(SYSTEM_ID, 1, n);
            let p = dir.join(&name);
            std::fs::write(&p, &data).unwrap();
            let mut c = repo.wal_archiver();
            c.arg("push").arg(&p);
            run(c).ok();
            (name, data)
        })
        .collect()
}

fn get(repo: &TestRepo, name: &str, dest: &Path) -> Run {
    let mut c = repo.wal_archiver();
    c.args(["-v", "get", name]).arg(dest);
    run(c)
}

#[test]
fn segments_come_from_the_spool_and_misses_are_not_cached() {
    let repo = TestRepo::local();
    let src = tempfile::tempdir().unwrap();
    let segs = push_segments(&repo, src.path(), 1..=6);
    let pg_wal = tempfile::tempdir().unwrap();
    let dest = pg_wal.path().join("RECOVERYXLOG");
    let mut from_spool = 0;
    for (name, data) in &segs {
        let r = get(&repo, name, &dest);
        r.ok();
        from_spool += r.stderr.contains("prefetch spool") as usize;
        assert_eq!(&std::fs::read(&dest).unwrap(), data, "{name}");
        std::fs::remove_file(&dest).unwrap();
    }
    assert_eq!(from_spool, segs.len() - 1, "every segment after the first is prefetched");

    // The end of the archive is "missing"...
    let (next, _) = segment(SYSTEM_ID, 1, 7);
    assert_eq!(get(&repo, &next, &dest).code, 1);
    // ...until it is archived: the miss was not remembered.
    let more = push_segments(&repo, src.path(), 7..=7);
    get(&repo, &next, &dest).ok();
    assert_eq!(std::fs::read(&dest).unwrap(), more[0].1);
}

#[test]
fn damaged_objects_are_not_served_from_the_spool() {
    let repo = TestRepo::local();
    let src = tempfile::tempdir().unwrap();
    let segs = push_segments(&repo, src.path(), 1..=3);
    let stored = repo.dir.as_ref().unwrap().join(format!("main/wal/0000000100000000/{}.zst", segs[1].0));
    let mut b = std::fs::read(&stored).unwrap();
    let i = b.len() - 100;
    b[i] ^= 0x10;
    std::fs::write(&stored, b).unwrap();
    let pg_wal = tempfile::tempdir().unwrap();
    let dest = pg_wal.path().join("RECOVERYXLOG");
    get(&repo, &segs[0].0, &dest).ok();
    std::fs::remove_file(&dest).unwrap();
    let r = get(&repo, &segs[1].0, &dest);
    assert_eq!(r.code, 206, "{r:#?}");
    assert!(!dest.exists());
}
