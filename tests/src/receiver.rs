//! A `wal-archiver receive` process for a test: started against a [`TestCluster`] with a
//! spool directory, its stderr in a file next to the spool, killed on drop; plus the
//! deterministic wait for "streaming" that every receiver test starts with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pg::TestCluster;
use crate::repo::TestRepo;

/// A running receiver.
#[derive(Debug)]
pub struct ReceiverProc {
    child: Child,
    log: PathBuf,
}

impl ReceiverProc {
    /// Starts `wal-archiver receive` from `cluster` (application_name `pitr`, status every
    /// second, `PITR_LOG=info`) into `repo`, with `extra` arguments.
    pub fn start(repo: &TestRepo, cluster: &TestCluster, spool: &Path, extra: &[&str]) -> ReceiverProc {
        let log = spool.with_extension("log");
        let mut c = repo.wal_archiver();
        let conninfo =
            format!("host={} port={} user=postgres application_name=pitr", cluster.socket_dir.display(), cluster.port);
        c.args(["receive", "-d", &conninfo, "--spool", spool.to_str().unwrap(), "--status-interval", "1"]);
        c.args(extra);
        c.env("PITR_LOG", "info");
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(fs::File::create(&log).unwrap());
        let child = c.spawn().expect("start wal-archiver receive");
        ReceiverProc { child, log }
    }

    /// The environment the running receiver has (from /proc), one `KEY=value` each.
    pub fn environment(&self) -> Vec<String> {
        let raw = fs::read(format!("/proc/{}/environ", self.child.id())).unwrap_or_default();
        raw.split(|&b| b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `sig` (through kill(1): the workspace denies unsafe code).
    pub fn signal(&self, sig: i32) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the exit code, failing after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "receiver did not exit within {timeout:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for it to exit: its exit code, or `None` if it still runs (or
    /// was killed by a signal).
    pub fn wait_some(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Waits until a line of its log contains `needle`, and returns that line.
    pub fn wait_log_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the receiver's log within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ReceiverProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the receiver streams from `cluster` (optionally in sync state).
pub fn wait_streaming(cluster: &TestCluster, rx: &ReceiverProc, sync: bool) {
    let want = if sync { "streaming|sync" } else { "streaming" };
    let sql = if sync {
        "SELECT coalesce(string_agg(state || '|' || sync_state, ','), '') FROM pg_stat_replication WHERE application_name = 'pitr'"
    } else {
        "SELECT coalesce(string_agg(state, ','), '') FROM pg_stat_replication WHERE application_name = 'pitr'"
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if cluster.sql(sql) == want {
            return;
        }
        assert!(Instant::now() < deadline, "receiver not {want} after 60 s:\n{}", rx.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}
