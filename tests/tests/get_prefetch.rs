//! `get` prefetching: after a segment is fetched, the next ones are downloaded in the
//! background and served from the spool, byte-identical; a miss is never remembered; a
//! damaged object is never served from the spool either; the streaming receiver's partial
//! object is served for a missing segment but never prefetched.

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

/// Stores `data` as the streaming receiver's partial object for segment `name`, as
/// `wal-archiver receive` uploads it.
fn upload_receiver_partial(repo: &TestRepo, name: &str, data: &[u8]) {
    let dir = repo.dir.as_ref().unwrap().join("main/receiver");
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = std::fs::File::create(dir.join(format!("{name}.partial.zst"))).unwrap();
    let opts = common::codec::CompressOptions::default();
    common::codec::compress(&[], &mut &data[..], &mut out, &format!("{name}.partial"), Some(data.len() as u64), opts)
        .unwrap();
}

/// Waits until no prefetch worker has segments in flight.
fn wait_prefetch_idle(spool: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let busy = std::fs::read_dir(spool)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".inflight"));
        if !busy {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "prefetch worker still busy after 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `full` cut at `at` (a page boundary): valid WAL, then zeros, as the receiver uploads it.
fn cut(full: &[u8], at: usize) -> Vec<u8> {
    let mut p = full.to_vec();
    p[at..].fill(0);
    p
}

/// The segment after the archive's end exists only as the receiver's partial object: `get`
/// serves it under the segment's name, unless pg_wal holds a copy with as much valid WAL or
/// more; the prefetch worker never keeps it, so once the complete segment is archived `get`
/// serves that; a partial of a timeline that ended before the segment's end (a history file
/// says so) is not served.
#[test]
fn the_receivers_partial_segment_is_served_but_never_prefetched() {
    let repo = TestRepo::local();
    let src = tempfile::tempdir().unwrap();
    push_segments(&repo, src.path(), 1..=3);
    let name4 = segment(SYSTEM_ID, 1, 4).0;
    let full4 = common::wal::synthetic::pgbench_like_segment(4, 1000);
    let partial4 = cut(&full4, 8 << 20);
    upload_receiver_partial(&repo, &name4, &partial4);
    let pg_wal = tempfile::tempdir().unwrap();
    let dest = pg_wal.path().join("RECOVERYXLOG");

    // Served from the receiver's object, with where its valid WAL ends.
    let r = get(&repo, &name4, &dest);
    r.ok();
    assert!(r.stderr.contains("receiver's partial segment") && r.stderr.contains("valid WAL up to 0/47F"), "{r:#?}");
    assert!(std::fs::read(&dest).unwrap() == partial4, "the partial's bytes under the segment's name");
    std::fs::remove_file(&dest).unwrap();

    // pg_wal holds a longer copy (e.g. from the receiver's spool): "absent", so that
    // PostgreSQL reads it; a shorter one: the partial is served.
    let local = pg_wal.path().join(&name4);
    std::fs::write(&local, cut(&full4, 12 << 20)).unwrap();
    let r = get(&repo, &name4, &dest);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(!dest.exists());
    std::fs::write(&local, cut(&full4, 4 << 20)).unwrap();
    get(&repo, &name4, &dest).ok();
    assert!(std::fs::read(&dest).unwrap() == partial4);
    std::fs::remove_file(&dest).unwrap();
    std::fs::remove_file(&local).unwrap();

    // The prefetch worker started by the previous segment's get leaves it alone...
    let (name3, _) = segment(SYSTEM_ID, 1, 3);
    get(&repo, &name3, &dest).ok();
    std::fs::remove_file(&dest).unwrap();
    let spool = pg_wal.path().join(".pitr-prefetch");
    wait_prefetch_idle(&spool);
    let spooled =
        std::fs::read_dir(&spool).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(&name4));
    assert!(!spooled, "the prefetch spool holds the receiver's partial");
    // ...so the complete segment, once archived, is what get serves (the partial object is
    // still there: a complete segment always wins).
    let complete = src.path().join(&name4);
    std::fs::write(&complete, &full4).unwrap();
    let mut c = repo.wal_archiver();
    c.arg("push").arg(&complete);
    run(c).ok();
    let r = get(&repo, &name4, &dest);
    r.ok();
    assert!(std::fs::read(&dest).unwrap() == full4, "the complete segment, not a stale partial: {r:#?}");
    std::fs::remove_file(&dest).unwrap();

    // Timeline 1 ended inside segment 4 (timeline 2 forked there): its segment 5 partial is
    // stale and not served.
    let (name5, mut partial5) = segment(SYSTEM_ID, 1, 5);
    partial5[1 << 20..].fill(0);
    upload_receiver_partial(&repo, &name5, &partial5);
    get(&repo, &name5, &dest).ok();
    std::fs::remove_file(&dest).unwrap();
    let history = src.path().join("00000002.history");
    std::fs::write(&history, "1\t0/4800000\tno recovery target specified\n").unwrap();
    let mut c = repo.wal_archiver();
    c.arg("push").arg(&history);
    run(c).ok();
    let r = get(&repo, &name5, &dest);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(!dest.exists());
}

/// What a power loss can leave of a prefetched file that was never fsynced (zeros, a
/// truncated file, a flipped byte) is not served: `get` fetches the segment from the
/// repository instead and writes the archived bytes.
#[test]
fn a_damaged_spool_file_is_fetched_again() {
    let repo = TestRepo::local();
    let src = tempfile::tempdir().unwrap();
    let segs = push_segments(&repo, src.path(), 1..=5);
    let pg_wal = tempfile::tempdir().unwrap();
    let dest = pg_wal.path().join("RECOVERYXLOG");
    get(&repo, &segs[0].0, &dest).ok();
    std::fs::remove_file(&dest).unwrap();
    let spool = pg_wal.path().join(".pitr-prefetch");
    wait_prefetch_idle(&spool);
    let damages: [fn(&mut Vec<u8>); 3] =
        [|b| b[4096..].fill(0), |b| b.truncate(1 << 20), |b| b[(9 << 20) + 17] ^= 0x01];
    for ((name, data), damage) in segs[1..4].iter().zip(damages) {
        let spooled = std::fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("{name} was prefetched"))
            .path();
        let mut b = std::fs::read(&spooled).unwrap();
        damage(&mut b);
        std::fs::write(&spooled, b).unwrap();
        let r = get(&repo, name, &dest);
        r.ok();
        assert!(!r.stderr.contains("restored from the prefetch spool"), "{r:#?}");
        assert!(r.stderr.contains("not serving a damaged prefetched file"), "{r:#?}");
        assert!(std::fs::read(&dest).unwrap() == *data, "{name}: the archived bytes");
        std::fs::remove_file(&dest).unwrap();
        wait_prefetch_idle(&spool);
    }
}
