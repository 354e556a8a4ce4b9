//! End to end: `wal-archiver receive` streaming from a real PostgreSQL 15.
//!
//! - every segment the receiver stores is byte-identical to what PostgreSQL's own
//!   archive_command (`push`, into a second repository) archived, and `push` of the same
//!   segment into the receiver's repository finds an identical object;
//! - as a synchronous standby (`synchronous_standby_names = 'pitr'`) commits return, and
//!   after kill -9 of the primary a restore from the repository plus the spool has every row
//!   whose commit returned (RPO = 0);
//! - SIGTERM stops the receiver cleanly (exit 0) after uploading the growing segment, whose
//!   object then holds everything the server had flushed.
//! - restores from the repository alone use the receiver's partial object: asynchronous with
//!   `--partial-interval 1`, a restore after kill -9 of the primary and of the receiver has
//!   every row committed more than 1.5 s before; a point-in-time restore follows timeline 2;
//! - with a slot, the primary keeps only the WAL the receiver has not made durable.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wal::{TimelineId, WalFileName, WalSegmentSize};
use pitr_tests::bins;
use pitr_tests::pg::{as_server_user, give_to_server_user, pg_bin, scratch_dir, TestCluster};
use pitr_tests::receiver::{wait_streaming, ReceiverProc};
use pitr_tests::repo::TestRepo;

/// kill(1) (the workspace denies unsafe code, so no libc::kill).
fn kill(pid: i32, sig: i32) -> i32 {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("kill");
    if status.success() {
        0
    } else {
        -1
    }
}

/// Waits until the receiver reported `lsn` (or more) as flushed.
fn wait_flushed(cluster: &TestCluster, rx: &ReceiverProc, lsn: &str) {
    let sql = format!(
        "SELECT coalesce(bool_and(flush_lsn >= '{lsn}'::pg_lsn), false) FROM pg_stat_replication WHERE application_name = 'pitr'"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.sql(&sql) != "t" {
        assert!(Instant::now() < deadline, "receiver did not flush {lsn} within 60 s:\n{}", rx.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `wal-archiver get` from `repo`: `name` as archived, or `None` while it is not (exit 1).
/// `get` also serves a segment that is not archived yet from the receiver's growing partial
/// object (valid WAL, then zeros); that is not the stored segment, so it counts as absent.
fn get(repo: &TestRepo, name: &str, dest: &Path) -> Option<Vec<u8>> {
    let r = bins::run({
        let mut c = repo.wal_archiver();
        c.args(["get", name, dest.to_str().unwrap()]).env("PITR_LOG", "info");
        c
    });
    match r.code {
        0 if r.stderr.contains("restored from the receiver's partial segment") => None,
        0 => Some(fs::read(dest).unwrap()),
        1 => None,
        _ => panic!("get {name} failed: {r:#?}"),
    }
}

fn wait_stored(repo: &TestRepo, name: &str, scratch: &Path, rx: &ReceiverProc) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(b) = get(repo, name, &scratch.join(format!("{name}.wait"))) {
            return b;
        }
        assert!(Instant::now() < deadline, "{name} not stored by the receiver within 60 s:\n{}", rx.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where two copies of a WAL file first differ, for a failure message.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at byte {i:#X} of {:#X} (received {:02X?}, server {:02X?})",
            a.len(),
            &a[i..(i + 16).min(a.len())],
            &b[i..(i + 16).min(b.len())]
        ),
        None => format!("lengths {:#X} and {:#X}", a.len(), b.len()),
    }
}

fn segno(name: &str) -> u64 {
    WalFileName::parse(name).unwrap().segment_number(WalSegmentSize::DEFAULT).unwrap().unwrap()
}

fn seg_name(segno: u64) -> String {
    WalFileName::segment(TimelineId(1), segno, WalSegmentSize::DEFAULT).to_string()
}

#[test]
fn received_segments_match_archive_command() {
    let recv_repo = TestRepo::local();
    let push_repo = TestRepo::local();
    let mut primary = TestCluster::init("recv-match", &["archive_mode = on".into(), push_repo.archive_command()]);
    for (k, v) in &push_repo.env {
        primary.env(k, v);
    }
    primary.start();
    let work = scratch_dir("recv-match-work");
    let spool = work.path().join("spool");
    let mut rx = ReceiverProc::start(&recv_repo, &primary, &spool, &[]);
    wait_streaming(&primary, &rx, false);
    let first = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");

    primary.pgbench(&["-i", "-s", "2", "-q"]);
    let mut last = primary.switch_wal();
    for round in 0..3 {
        primary.pgbench(&["-n", "-t", "300", "-c", "2"]);
        if round == 1 {
            // The server restarts mid-segment: the receiver reconnects and resends the
            // segment from its start.
            primary.stop();
            primary.start();
            primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
        }
        last = primary.switch_wal();
    }
    primary.wait_archived(&last, Duration::from_secs(120));
    wait_stored(&recv_repo, &last, work.path(), &rx);

    // From the segment the receiver started in to the last one switched away from: every
    // segment is in both repositories, byte-identical.
    let (from, to) = (segno(&first), segno(&last));
    assert!(to - from >= 3, "expected several segments, got {first}..{last}");
    for n in from..=to {
        let name = seg_name(n);
        let received = get(&recv_repo, &name, &work.path().join(format!("{name}.recv")))
            .unwrap_or_else(|| panic!("{name} missing from the receiver's repository:\n{}", rx.log()));
        let archived = get(&push_repo, &name, &work.path().join(format!("{name}.push")))
            .unwrap_or_else(|| panic!("{name} missing from archive_command's repository"));
        assert!(
            received == archived,
            "{name}: received and archived segments differ: {}",
            first_difference(&received, &archived)
        );
        // The server's own copy, when still in pg_wal, is the same too.
        if let Ok(original) = fs::read(primary.data.join("pg_wal").join(&name)) {
            assert!(original == received, "{name} differs from pg_wal: {}", first_difference(&received, &original));
        }
    }
    // push and receive agree: pushing the server's copy into the receiver's repository finds
    // an identical object.
    let in_pg_wal = primary.data.join("pg_wal").join(&last);
    if in_pg_wal.exists() {
        let r = bins::run({
            let mut c = recv_repo.wal_archiver();
            c.args(["push", in_pg_wal.to_str().unwrap()]);
            c
        });
        r.ok();
    }
    // Completed segments left the spool.
    let left: Vec<String> = fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    assert!(left.is_empty(), "completed segments still in the spool: {left:?}");
    assert!(rx.log().contains("reconnecting"), "the receiver reconnected after the restart:\n{}", rx.log());
    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "{}", rx.log());
}

#[test]
fn synchronous_standby_loses_no_commit() {
    synchronous_rpo_zero("spool");
}

/// The same with `--synchronous-durability repository`, restoring from the repository alone
/// (the receiver's host and spool are lost too).
#[test]
fn synchronous_standby_repository_durability_loses_no_commit() {
    synchronous_rpo_zero("repository");
}

fn synchronous_rpo_zero(durability: &str) {
    let repo = TestRepo::local();
    let mut primary = TestCluster::init(
        &format!("recv-sync-{durability}"),
        &["synchronous_standby_names = 'pitr'".into(), "synchronous_commit = on".into()],
    );
    primary.start();
    let work = scratch_dir(&format!("recv-sync-{durability}-work"));
    let spool = work.path().join("spool");
    let rx = ReceiverProc::start(&repo, &primary, &spool, &["--synchronous-durability", durability]);
    wait_streaming(&primary, &rx, true);

    // A base backup taken while the receiver streams: everything after it is received.
    let backup = work.path().join("backup");
    let out = as_server_user(pg_bin().join("pg_basebackup"))
        .args(["-h", primary.socket_dir.to_str().unwrap(), "-p", &primary.port.to_string(), "-U", "postgres"])
        .args(["-D", backup.to_str().unwrap(), "-X", "none", "-c", "fast", "--no-sync"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));

    // Numbered rows, one transaction each; each commit waits for the receiver's flush. A
    // commit that hangs (flush never reported) fails the test instead of hanging it.
    primary.sql("CREATE TABLE rpo(i int PRIMARY KEY)");
    let script = work.path().join("inserts.sql");
    let mut sql = String::new();
    for i in 1..=300 {
        sql.push_str(&format!("INSERT INTO rpo VALUES ({i});\n"));
    }
    fs::write(&script, sql).unwrap();
    give_to_server_user(&script);
    let started = Instant::now();
    let mut psql = as_server_user(pg_bin().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", primary.socket_dir.to_str().unwrap()])
        .args(["-p", &primary.port.to_string(), "-U", "postgres", "-d", "postgres", "-f", script.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Some(s) = psql.try_wait().unwrap() {
            assert!(s.success(), "inserts failed");
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = psql.kill();
            panic!(
                "300 synchronous commits did not return within 60 s (flush not reported?):\n{}\n{}",
                primary.sql("SELECT * FROM pg_stat_replication"),
                rx.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(primary.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pitr'"), "sync");
    let committed = primary.sql("SELECT count(*) FROM rpo");
    assert_eq!(committed, "300");

    // The primary dies; its data directory is gone for recovery purposes.
    let pid: i32 =
        fs::read_to_string(primary.data.join("postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
    assert_eq!(kill(pid, 9), 0);
    std::thread::sleep(Duration::from_millis(500));
    drop(rx); // the receiver host keeps its spool; stop the process (SIGKILL)

    // Restore: the base backup, restore_command from the repository, and the spool's
    // segments (the growing one under its segment name) in pg_wal.
    // In repository durability the spool is lost: restore_command serves the receiver's
    // partial object for the segment that is not archived complete.
    let restored_wal = backup.join("pg_wal");
    let mut copied = Vec::new();
    if durability == "spool" {
        for e in fs::read_dir(&spool).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(seg) = name.strip_suffix(".partial").or(Some(name.as_str())).filter(|s| s.len() == 24) else {
                continue;
            };
            fs::copy(e.path(), restored_wal.join(seg)).unwrap();
            copied.push(name);
        }
    } else {
        fs::remove_dir_all(&spool).unwrap();
    }
    assert!(durability != "spool" || !copied.is_empty(), "the growing segment is there");
    TestCluster::append_conf(
        &backup,
        &[
            "archive_mode = off".into(),
            "synchronous_standby_names = ''".into(),
            repo.restore_command(),
            "recovery_target_action = 'promote'".into(),
        ],
    );
    fs::write(backup.join("recovery.signal"), b"").unwrap();
    give_to_server_user(work.path());
    let mut restored = TestCluster::existing(backup.clone(), work.path().to_path_buf());
    for (k, v) in &repo.env {
        restored.env(k, v);
    }
    restored.env("PITR_LOG", "info");
    restored.start();
    restored.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(120));
    assert_eq!(
        restored.sql("SELECT count(*), min(i), max(i) FROM rpo"),
        "300|1|300",
        "every row whose commit returned is recovered (spool files used: {copied:?})\n{}",
        restored.log()
    );
    if durability == "repository" {
        assert!(
            restored.log().contains("restored from the receiver's partial segment"),
            "restore_command served the receiver's partial object:\n{}",
            restored.log()
        );
    }
}

#[test]
fn sigterm_uploads_the_partial_segment() {
    let repo = TestRepo::local();
    let mut primary = TestCluster::init("recv-term", &[]);
    primary.start();
    let work = scratch_dir("recv-term-work");
    let spool = work.path().join("spool");
    let args = ["--partial-interval", "30", "--slot", "pitr_test", "--create-slot"];
    let mut rx = ReceiverProc::start(&repo, &primary, &spool, &args);
    wait_streaming(&primary, &rx, false);
    assert_eq!(
        primary.sql("SELECT slot_type, active FROM pg_replication_slots WHERE slot_name = 'pitr_test'"),
        "physical|t"
    );
    primary.sql("CREATE TABLE t AS SELECT g AS i FROM generate_series(1, 10000) g");
    let flushed = primary.sql("SELECT pg_current_wal_flush_lsn()");
    let seg = primary.sql(&format!("SELECT pg_walfile_name('{flushed}')"));
    let abs: u64 = primary.sql(&format!("SELECT ('{flushed}'::pg_lsn - '0/0'::pg_lsn)::bigint")).parse().unwrap();
    let offset = abs % WalSegmentSize::DEFAULT.bytes();
    assert!(offset > 0);
    wait_flushed(&primary, &rx, &flushed);
    // The slot follows the reported flush position.
    primary.wait_for(
        &format!("SELECT restart_lsn >= '{flushed}' FROM pg_replication_slots WHERE slot_name = 'pitr_test'"),
        "t",
        Duration::from_secs(30),
    );

    // The partial interval is long: only the stop uploads it.
    let key = repo.dir.as_ref().unwrap().join(format!("main/receiver/{seg}.partial.zst"));
    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "clean stop exits 0:\n{}", rx.log());
    let log = rx.log();
    assert!(!log.to_lowercase().contains("error"), "clean stop logs no error:\n{log}");
    assert!(key.exists(), "{} not uploaded at stop:\n{log}", key.display());

    let mut partial = Vec::new();
    common::codec::decompress(fs::File::open(&key).unwrap(), &mut partial).unwrap();
    assert_eq!(partial.len() as u64, WalSegmentSize::DEFAULT.bytes(), "a full-size .partial");
    let spooled = fs::read(spool.join(format!("{seg}.partial"))).unwrap();
    assert!(partial == spooled, "the uploaded partial is the spool file");
    let original = fs::read(primary.data.join("pg_wal").join(&seg)).unwrap();
    assert!(
        partial[..offset as usize] == original[..offset as usize],
        "the partial object holds the server's WAL up to its flush position {flushed}"
    );
    // The server saw the receiver go away cleanly.
    primary.wait_for(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pitr'",
        "0",
        Duration::from_secs(30),
    );

    // Started again (the slot exists now), it resumes in the same segment and stops again.
    let mut rx = ReceiverProc::start(&repo, &primary, &spool, &args);
    wait_streaming(&primary, &rx, false);
    primary.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
    let flushed = primary.sql("SELECT pg_current_wal_flush_lsn()");
    wait_flushed(&primary, &rx, &flushed);
    rx.signal(2);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "SIGINT stops cleanly too:\n{}", rx.log());
    let n = segno(&seg) << 24;
    let seg_start = format!("starting at {:X}/{:X}", n >> 32, n & 0xFFFF_FFFF);
    assert!(rx.log().contains(&seg_start), "resumed at the segment start ({seg_start}):\n{}", rx.log());
}

/// The receiver streams from a standby that is then promoted: it stores the old timeline's
/// last segment as `.partial`, archives `00000002.history`, and follows timeline 2, whose
/// segments are byte-identical to the promoted server's.
#[test]
fn follows_a_promotion() {
    let repo = TestRepo::local();
    let mut primary = TestCluster::init("recv-tl-primary", &[]);
    primary.start();
    let sdir = scratch_dir("recv-tl-standby");
    let sdata = sdir.path().join("data");
    let out = as_server_user(pg_bin().join("pg_basebackup"))
        .args(["-h", primary.socket_dir.to_str().unwrap(), "-p", &primary.port.to_string(), "-U", "postgres"])
        .args(["-D", sdata.to_str().unwrap(), "-X", "stream", "-c", "fast", "--no-sync", "-R"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
    give_to_server_user(sdir.path());
    let mut standby = TestCluster::existing(sdata.clone(), sdir.path().to_path_buf());
    standby.start();

    let work = scratch_dir("recv-tl-work");
    let spool = work.path().join("spool");
    let mut rx = ReceiverProc::start(&repo, &standby, &spool, &[]);
    wait_streaming(&standby, &rx, false);
    // A base backup of the primary on timeline 1; its WAL reaches the repository through the
    // standby and the receiver.
    basebackup_create(&repo, &primary);
    primary.sql("CREATE TABLE tl AS SELECT g AS i FROM generate_series(1, 1000) g");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    wait_flushed(&standby, &rx, &lsn);
    primary.stop();

    let out = as_server_user(pg_bin().join("pg_ctl"))
        .args(["-D", sdata.to_str().unwrap(), "-w", "promote"])
        .output()
        .unwrap();
    assert!(out.status.success(), "promote: {}", String::from_utf8_lossy(&out.stderr));
    standby.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(60));
    standby.sql("INSERT INTO tl SELECT g FROM generate_series(1001, 2000) g");
    let seg2 = standby.switch_wal();
    assert!(seg2.starts_with("00000002"), "{seg2}");

    // Timeline 2's segment, byte-identical to the promoted server's.
    let received = wait_stored(&repo, &seg2, work.path(), &rx);
    let original = fs::read(sdata.join("pg_wal").join(&seg2)).unwrap();
    assert!(
        received == original,
        "{seg2} differs from the promoted server's pg_wal: {}\n{}",
        first_difference(&received, &original),
        rx.log()
    );
    // The history file.
    let history = get(&repo, "00000002.history", &work.path().join("history")).expect("00000002.history archived");
    assert_eq!(history, fs::read(sdata.join("pg_wal/00000002.history")).unwrap());
    // Timeline 1's last segment, as .partial, up to the switch point identical to timeline 2's copy.
    let text = String::from_utf8(history).unwrap();
    let switch: common::lsn::Lsn =
        text.lines().find(|l| l.starts_with("1\t")).unwrap().split('\t').nth(1).unwrap().parse().unwrap();
    let seg_size = WalSegmentSize::DEFAULT;
    let old = WalFileName::segment(TimelineId(1), switch.segment_number(seg_size), seg_size);
    let partial = get(&repo, &format!("{old}.partial"), &work.path().join("old.partial"))
        .unwrap_or_else(|| panic!("{old}.partial not archived:\n{}", rx.log()));
    let new_first = WalFileName::segment(TimelineId(2), switch.segment_number(seg_size), seg_size);
    let new_copy =
        get(&repo, &new_first.to_string(), &work.path().join("new.first")).expect("first segment of timeline 2");
    let upto = switch.segment_offset(seg_size) as usize;
    assert!(partial[..upto] == new_copy[..upto], "the old timeline's partial and timeline 2 agree up to the switch");
    assert!(rx.log().contains("following timeline 2"), "{}", rx.log());

    // A point-in-time restore to a time on timeline 2 from what the receiver stored: the
    // backup of timeline 1, timeline 1's WAL to the switch, the history file, timeline 2's WAL.
    let t = standby.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
    standby.sql("INSERT INTO tl SELECT g FROM generate_series(2001, 3000) g");
    let seg3 = standby.switch_wal();
    wait_stored(&repo, &seg3, work.path(), &rx);
    let (restored, _restored_dir, out) = restore_and_start(&repo, "recv-tl-pitr", &["--target-time", &t]);
    assert!(out.contains("1 → 2"), "the plan follows timeline 2:\n{out}");
    assert_eq!(restored.sql("SELECT count(*), max(i) FROM tl"), "2000|2000", "rows of timeline 2 up to {t}");
    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "{}", rx.log());
}

/// The receiver is killed -9 and restarted again and again while pgbench runs: the archive
/// it builds has no gap, and every segment is byte-identical to what archive_command archived.
#[test]
fn kill_9_and_restart_leaves_no_gap() {
    let recv_repo = TestRepo::local();
    let push_repo = TestRepo::local();
    let mut primary = TestCluster::init("recv-kill", &["archive_mode = on".into(), push_repo.archive_command()]);
    for (k, v) in &push_repo.env {
        primary.env(k, v);
    }
    primary.start();
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    let work = scratch_dir("recv-kill-work");
    let spool = work.path().join("spool");
    let rx = ReceiverProc::start(&recv_repo, &primary, &spool, &["--partial-interval", "0.2"]);
    wait_streaming(&primary, &rx, false);
    let first = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");

    let bench = {
        let (socket, port) = (primary.socket_dir.clone(), primary.port);
        std::thread::spawn(move || {
            let out = as_server_user(pg_bin().join("pgbench"))
                .args(["-h", socket.to_str().unwrap(), "-p", &port.to_string(), "-U", "postgres"])
                .args(["-n", "-T", "12", "-c", "4", "postgres"])
                .output()
                .unwrap();
            assert!(out.status.success(), "pgbench: {}", String::from_utf8_lossy(&out.stderr));
        })
    };
    let mut rx = rx;
    for i in 0..8u64 {
        std::thread::sleep(Duration::from_millis(500 + 170 * i));
        rx.signal(9);
        assert_eq!(rx.wait(Duration::from_secs(10)), None, "killed by the signal");
        // Segments complete while it is down, too.
        primary.switch_wal();
        rx = ReceiverProc::start(&recv_repo, &primary, &spool, &["--partial-interval", "0.2"]);
    }
    bench.join().unwrap();
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(120));
    wait_stored(&recv_repo, &last, work.path(), &rx);

    let (from, to) = (segno(&first), segno(&last));
    assert!(to - from >= 8, "expected several segments, got {first}..{last}");
    for n in from..=to {
        let name = seg_name(n);
        let received = get(&recv_repo, &name, &work.path().join(format!("{name}.recv")))
            .unwrap_or_else(|| panic!("gap: {name} missing from the receiver's repository:\n{}", rx.log()));
        let archived = get(&push_repo, &name, &work.path().join(format!("{name}.push")))
            .unwrap_or_else(|| panic!("{name} missing from archive_command's repository"));
        assert!(
            received == archived,
            "{name}: received and archived segments differ: {}",
            first_difference(&received, &archived)
        );
    }
    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "{}", rx.log());
}

/// `c` with the repository's environment, run as the receiver runs (the test's user, which
/// owns what the receiver wrote in the repository).
fn with_repo(mut c: Command, repo: &TestRepo) -> Command {
    c.envs(repo.env.iter().map(|(k, v)| (k, v)));
    c
}

/// `basebackup create` of `cluster` into `repo`; returns the backup id.
fn basebackup_create(repo: &TestRepo, cluster: &TestCluster) -> String {
    let mut c = with_repo(bins::basebackup(), repo);
    c.env("PITR_DBNAME", format!("host={} port={} user=postgres", cluster.socket_dir.display(), cluster.port));
    c.args(["create", "--wal-timeout", "60"]);
    bins::run(c).ok().trim().to_string()
}

/// `pitr-restore` with `args`.
fn pitr_restore(repo: &TestRepo, args: &[&str]) -> bins::Run {
    let mut c = with_repo(bins::pitr_restore(), repo);
    c.args(args);
    bins::run(c)
}

/// Restores `repo` with `pitr-restore` (`args`: the target) into a new directory, starts the
/// server (not archiving, restore_command logging at info) and waits until it is promoted.
/// Returns the server, its directory and pitr-restore's output.
fn restore_and_start(repo: &TestRepo, label: &str, args: &[&str]) -> (TestCluster, tempfile::TempDir, String) {
    let dir = scratch_dir(label);
    let data = dir.path().join("data");
    let d = data.display().to_string();
    let mut all = vec!["--pgdata", d.as_str(), "--set", "archive_mode=off"];
    all.extend_from_slice(args);
    let r = pitr_restore(repo, &all);
    assert_eq!(r.code, 0, "pitr-restore {all:?} failed: {r:#?}");
    give_to_server_user(dir.path());
    let mut restored = TestCluster::existing(data, dir.path().to_path_buf());
    for (k, v) in &repo.env {
        restored.env(k, v);
    }
    restored.env("PITR_LOG", "info");
    restored.start();
    restored.wait_for("SELECT pg_is_in_recovery()", "f", Duration::from_secs(120));
    (restored, dir, format!("{}{}", r.stdout, r.stderr))
}

/// The postmaster's pid.
fn postmaster_pid(cluster: &TestCluster) -> i32 {
    fs::read_to_string(cluster.data.join("postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap()
}

/// Bounded RPO from the repository alone: an asynchronous receiver uploads its growing segment
/// every second (`--partial-interval 1`) while a client commits numbered rows, one per
/// transaction, noting when each commit returned. The primary and then the receiver are
/// killed -9 mid-write and the spool is deleted; `pitr-restore` to latest from the repository
/// (a base backup taken before the rows, the archived segments, the receiver's partial
/// object) must bring back every row whose commit returned more than 1.5 s before the kill
/// (the 1 s interval plus 0.5 s for streaming and the upload itself), and the rows must be
/// 1..n with nothing missing in between.
#[test]
fn bounded_rpo_from_the_repository_alone() {
    const BOUND: Duration = Duration::from_millis(1500);
    let repo = TestRepo::local();
    let mut primary = TestCluster::init("recv-rpo", &[]);
    primary.start();
    let work = scratch_dir("recv-rpo-work");
    let spool = work.path().join("spool");
    let mut rx = ReceiverProc::start(&repo, &primary, &spool, &["--partial-interval", "1"]);
    wait_streaming(&primary, &rx, false);
    primary.sql("CREATE TABLE rpo(i int PRIMARY KEY)");
    basebackup_create(&repo, &primary);

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (socket, port, stop) = (primary.socket_dir.clone(), primary.port, stop.clone());
        std::thread::spawn(move || {
            let mut returned: Vec<(u32, Instant)> = Vec::new();
            for i in 1.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let ok = as_server_user(pg_bin().join("psql"))
                    .args(["-X", "-q", "-h", socket.to_str().unwrap(), "-p", &port.to_string(), "-U", "postgres"])
                    .args(["-d", "postgres", "-c", &format!("INSERT INTO rpo VALUES ({i})")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    break;
                }
                returned.push((i, Instant::now()));
            }
            returned
        })
    };
    // Commits for a few seconds, then both die mid-write.
    std::thread::sleep(Duration::from_secs(5));
    let killed_at = Instant::now();
    assert_eq!(kill(postmaster_pid(&primary), 9), 0);
    rx.signal(9);
    assert_eq!(rx.wait(Duration::from_secs(10)), None, "killed by the signal");
    stop.store(true, Ordering::SeqCst);
    let returned = client.join().unwrap();
    let must_have: Vec<u32> =
        returned.iter().filter(|(_, t)| killed_at.saturating_duration_since(*t) > BOUND).map(|(i, _)| *i).collect();
    assert!(
        must_have.len() >= 20,
        "too few commits to judge: {} returned, {} before the bound",
        returned.len(),
        must_have.len()
    );
    // The receiver's host is lost too: only the repository remains.
    fs::remove_dir_all(&spool).unwrap();

    let plan = pitr_restore(&repo, &["plan"]);
    assert!(
        plan.stdout.contains("the last one is the receiver's partial segment"),
        "the plan ends with the receiver's partial segment: {plan:#?}"
    );
    let (restored, _dir, _) = restore_and_start(&repo, "recv-rpo-restore", &[]);
    let row = restored.sql("SELECT count(*), coalesce(min(i), 0), coalesce(max(i), 0) FROM rpo");
    let f: Vec<u32> = row.split('|').map(|x| x.parse().unwrap()).collect();
    let (n, min, max) = (f[0], f[1], f[2]);
    assert_eq!((min, max), (1.min(n), n), "the rows are 1..n with no hole: {row}");
    let needed = *must_have.last().unwrap();
    eprintln!(
        "{} commits returned, {} of them more than {BOUND:?} before the kill; restored 1..{n}",
        returned.len(),
        must_have.len()
    );
    assert!(
        n >= needed,
        "rows up to {needed} committed more than {BOUND:?} before the kill, only 1..{n} restored \
         ({} commits returned)\n{}",
        returned.len(),
        restored.log()
    );
    assert!(restored.log().contains("restored from the receiver's partial segment"), "{}", restored.log());
}

/// With a slot (`--slot --create-slot`) and `wal_keep_size = 0`: while the receiver is stopped
/// the primary keeps every segment it has not received, even across checkpoints; once the
/// receiver has caught up and made them durable, the next checkpoints remove them.
#[test]
fn slot_holds_only_wal_that_is_not_yet_durable() {
    let repo = TestRepo::local();
    let mut primary = TestCluster::init(
        "recv-slot",
        &["wal_keep_size = 0".into(), "max_wal_size = 32MB".into(), "min_wal_size = 32MB".into()],
    );
    primary.start();
    let work = scratch_dir("recv-slot-work");
    let spool = work.path().join("spool");
    let args = ["--slot", "pitr_keep", "--create-slot"];
    let mut rx = ReceiverProc::start(&repo, &primary, &spool, &args);
    wait_streaming(&primary, &rx, false);
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    wait_flushed(&primary, &rx, &lsn);
    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "{}", rx.log());

    // Receiver stopped: several segments are written and closed.
    let held_from = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let mut written = Vec::new();
    for round in 0..5 {
        primary.sql(&format!(
            "CREATE TABLE held_{round} AS SELECT g AS i, md5(g::text) AS m FROM generate_series(1, 20000) g"
        ));
        written.push(primary.switch_wal());
    }
    primary.sql("CHECKPOINT");
    primary.sql("CHECKPOINT");
    let pg_wal = primary.data.join("pg_wal");
    for name in std::iter::once(&held_from).chain(&written) {
        assert!(pg_wal.join(name).exists(), "{name} removed although the receiver has not received it");
    }

    // Started again, it catches up from the slot; once durable, the segments may go.
    let mut rx = ReceiverProc::start(&repo, &primary, &spool, &args);
    wait_streaming(&primary, &rx, false);
    let last = written.last().unwrap().clone();
    wait_stored(&repo, &last, work.path(), &rx);
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    wait_flushed(&primary, &rx, &lsn);
    primary.wait_for(
        &format!("SELECT restart_lsn >= '{lsn}' FROM pg_replication_slots WHERE slot_name = 'pitr_keep'"),
        "t",
        Duration::from_secs(30),
    );
    primary.switch_wal();
    primary.sql("CHECKPOINT");
    primary.sql("CHECKPOINT");
    for name in std::iter::once(&held_from).chain(&written) {
        assert!(!pg_wal.join(name).exists(), "{name} still in pg_wal after the receiver made it durable");
        assert!(get(&repo, name, &work.path().join(format!("{name}.got"))).is_some(), "{name} not in the repository");
    }
    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "{}", rx.log());
}
