//! Campaign scenarios for the streaming receiver as a synchronous standby with repository
//! durability (RPO 0 against the object store alone), while a client commits numbered rows
//! one by one: the receiver killed with SIGKILL and restarted at random moments; its spool's
//! disk filling up; its object store failing a share of the requests. Then the primary is
//! killed, the receiver's host lost (spool deleted), and the cluster restored from the
//! repository alone: every row whose commit returned to the client must be there.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{Figures, Rng};
use crate::bins;
use crate::campaign::backup::{restore_latest, Primary};
use crate::fault_proxy::{random_rule, transient_faults, FaultProxy};
use crate::fs::SmallFs;
use crate::pg::{as_server_user, give_to_server_user, pg_bin, scratch_dir, TestCluster};
use crate::receiver::{wait_streaming, ReceiverProc};
use crate::repo::TestRepo;

const ARGS: [&str; 4] = ["--synchronous-durability", "repository", "--partial-interval", "0.2"];

/// What happens to the receiver in each round.
enum Trouble {
    /// SIGKILL, then a restart.
    Kill,
    /// Its spool's file system fills up (it must fail, never acknowledge what it could not
    /// write); then space is freed and it is restarted if it exited.
    SpoolFull(SmallFs),
    /// Nothing: the object store fails requests throughout (the proxy's rule).
    Store(FaultProxy),
}

/// The receiver killed and restarted at random moments.
pub fn receiver_kill(f: &mut Figures, rounds: u32, seed: u64) {
    scenario(f, rounds, seed, TestRepo::local(), None, Trouble::Kill);
}

/// The receiver's spool disk full at random moments.
pub fn spool_full(f: &mut Figures, rounds: u32, seed: u64) {
    let fs = SmallFs::mount("spool", 80 << 20);
    let spool = fs.join("spool");
    scenario(f, rounds, seed, TestRepo::local(), Some(&spool), Trouble::SpoolFull(fs));
}

/// The receiver's object store failing a third of all requests.
pub fn s3_faults(f: &mut Figures, rounds: u32, seed: u64) {
    let server = crate::s3::moto();
    let proxy = FaultProxy::start(&server.endpoint);
    let repo = tokio::runtime::Runtime::new().unwrap().block_on(TestRepo::s3_via(server, &proxy.endpoint));
    scenario(f, rounds, seed, repo, None, Trouble::Store(proxy));
}

fn scenario(f: &mut Figures, rounds: u32, seed: u64, repo: TestRepo, spool: Option<&Path>, fault: Trouble) {
    let mut rng = Rng::new(seed);
    let mut cluster = TestCluster::init(
        "campaign-receiver",
        &["synchronous_standby_names = 'pitr'".into(), "synchronous_commit = on".into()],
    );
    cluster.start();
    let work = scratch_dir("campaign-receiver-work");
    let spool = spool.map(Path::to_path_buf).unwrap_or_else(|| work.path().join("spool"));
    let start = |repo: &TestRepo, cluster: &TestCluster| ReceiverProc::start(repo, cluster, &spool, &ARGS);
    let mut rx = start(&repo, &cluster);
    // Every commit waits for the receiver from now on.
    wait_streaming(&cluster, &rx, true);
    cluster.pgbench(&["-i", "-s", "1", "-q"]);
    cluster.sql("CREATE TABLE marks (id bigint PRIMARY KEY)");
    // The receiver runs as this process's user; basebackup and pitr-restore as the server's.
    if let Some(root) = repo.dir.clone() {
        let _ = std::process::Command::new("chmod").args(["-R", "a+rwX"]).arg(&root).status();
    }
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
    let mut client = as_server_user(pg_bin().join("psql"))
        .args(["-X", "-q", "-h", p.cluster.socket_dir.to_str().unwrap(), "-p", &p.cluster.port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-f", script.to_str().unwrap()])
        .stdout(fs::File::create(&acked_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if let Trouble::Store(proxy) = &fault {
        proxy.set_rule(random_rule(seed, 0.35, transient_faults(), |_| true));
    }
    for _ in 0..rounds {
        f.rounds += 1;
        std::thread::sleep(Duration::from_millis(100) + rng.delay(Duration::from_millis(500)));
        match &fault {
            Trouble::Kill => {
                rx.signal(9);
                rx.wait(Duration::from_secs(10));
                f.faults += 1;
                std::thread::sleep(rng.delay(Duration::from_millis(300)));
                rx = start(&p.repo, &p.cluster);
            }
            Trouble::SpoolFull(fs) => {
                let filler = fs.join("filler");
                let leave = rng.below(32 << 10);
                let _ = fs::write(&filler, vec![0u8; fs.free().saturating_sub(leave) as usize]);
                // The growing segment's file is allocated whole when it starts: the next one
                // is what finds the disk full.
                p.cluster.sql("SELECT pg_switch_wal()");
                // Commits go on until the spool cannot take the next write; the receiver then
                // exits (8) rather than acknowledge what it could not make durable.
                let exited = rx.wait_some(Duration::from_secs(5));
                if let Some(code) = exited {
                    f.faults += 1;
                    if code != 8 {
                        f.wrong_exit(format!("receiver with a full spool: exit {code}: {}", rx.log_tail()));
                    }
                }
                let _ = fs::remove_file(&filler);
                if exited.is_some() {
                    rx = start(&p.repo, &p.cluster);
                }
            }
            // The store fails requests all along; a round is a second of commits.
            Trouble::Store(_) => std::thread::sleep(Duration::from_millis(1000)),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    if let Trouble::Store(proxy) = &fault {
        f.faults += proxy.injected().len() as u64;
    }
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
    let _ = client.wait();
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(dump) = std::env::var("PITR_CAMPAIGN_DUMP") {
        let _ = fs::write(dump, rx.log());
    }
    rx.signal(9);
    rx.wait(Duration::from_secs(10));
    drop(rx);
    let _ = fs::remove_dir_all(&spool);
    if let Trouble::Store(proxy) = &fault {
        proxy.pass();
    }
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
