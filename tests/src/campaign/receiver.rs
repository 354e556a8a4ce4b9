//! Campaign scenario for the streaming receiver as a synchronous standby with repository
//! durability (RPO 0 against the object store alone): killed with SIGKILL and restarted at
//! random moments while a client commits numbered rows one by one; then the primary is
//! killed, the receiver's host lost (spool deleted), and the cluster restored from the
//! repository alone. Every row whose commit returned to the client must be there.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use super::{Figures, Rng};
use crate::bins;
use crate::campaign::backup::{restore_latest, Primary};
use crate::pg::{as_server_user, give_to_server_user, pg_bin, scratch_dir, TestCluster};
use crate::receiver::{wait_streaming, ReceiverProc};
use crate::repo::TestRepo;

/// Runs the scenario with `rounds` receiver kills.
pub fn receiver_kill(f: &mut Figures, rounds: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let repo = TestRepo::local();
    let mut cluster = TestCluster::init(
        "campaign-receiver",
        &["synchronous_standby_names = 'pitr'".into(), "synchronous_commit = on".into()],
    );
    cluster.start();
    let work = scratch_dir("campaign-receiver-work");
    let spool = work.path().join("spool");
    let args = ["--synchronous-durability", "repository", "--partial-interval", "0.2"];
    let mut rx = ReceiverProc::start(&repo, &cluster, &spool, &args);
    // Every commit waits for the receiver from now on.
    wait_streaming(&cluster, &rx, true);
    cluster.pgbench(&["-i", "-s", "1", "-q"]);
    cluster.sql("CREATE TABLE marks (id bigint PRIMARY KEY)");
    // The receiver runs as this process's user; basebackup and pitr-restore as the server's.
    let root = repo.dir.clone().unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rwX"]).arg(&root).status();
    let p = Primary::wrap(cluster, repo);
    let r = bins::run(p.create_cmd());
    assert_eq!(r.code, 0, "base backup: {r:#?}");

    // Numbered commits, one transaction each; `\echo` prints a number only once its commit
    // returned, so the client's output is the list of acknowledged rows.
    let script = work.path().join("commits.sql");
    let mut sql = String::new();
    for i in 1..=200_000 {
        sql.push_str(&format!("INSERT INTO marks VALUES ({i});\n\\echo {i}\n"));
    }
    fs::write(&script, sql).unwrap();
    give_to_server_user(work.path());
    let acked_file = work.path().join("acked.txt");
    let client = as_server_user(pg_bin().join("psql"))
        .args(["-X", "-q", "-h", p.cluster.socket_dir.to_str().unwrap(), "-p", &p.cluster.port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-f", script.to_str().unwrap()])
        .stdout(fs::File::create(&acked_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..rounds {
        f.rounds += 1;
        std::thread::sleep(Duration::from_millis(100) + rng.delay(Duration::from_millis(500)));
        rx.signal(9);
        rx.wait(Duration::from_secs(10));
        f.faults += 1;
        std::thread::sleep(rng.delay(Duration::from_millis(300)));
        rx = ReceiverProc::start(&p.repo, &p.cluster, &spool, &args);
    }
    std::thread::sleep(Duration::from_millis(500));
    // The primary dies, then the receiver's host with its spool.
    let pid: i32 = fs::read_to_string(p.cluster.data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    let mut client = client;
    let _ = client.wait();
    std::thread::sleep(Duration::from_millis(300));
    rx.signal(9);
    rx.wait(Duration::from_secs(10));
    drop(rx);
    let _ = fs::remove_dir_all(&spool);
    let acked: i64 = fs::read_to_string(&acked_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0);
    assert!(acked > 0, "no commit returned at all");

    match restore_latest(&p, "campaign-receiver-restore", &["--set", "synchronous_standby_names="]) {
        Ok(n) if n >= acked => {}
        Ok(n) => f.lost(format!("{} acknowledged commits missing: restored {n} rows, {acked} acknowledged", acked - n)),
        Err(r) => f.lost(format!("restore from the repository failed (exit {}): {}", r.code, r.stderr.trim())),
    }
    f.notes.push(format!("{acked} commits acknowledged"));
}
