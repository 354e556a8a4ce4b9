//! Finding and running the project's binaries from an integration test, the way PostgreSQL
//! or an operator would run them: as separate processes with flags and environment.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a workspace binary (built next to the test executable by `cargo nextest run
/// --workspace` / `cargo test --workspace`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Test executables are in target/<profile>/deps, the fault-campaign binary beside the
    // programs in target/<profile>.
    let here = exe.parent().expect("target dir");
    let dir = if here.ends_with("deps") { here.parent().expect("target dir") } else { here };
    let p = dir.join(name);
    assert!(p.exists(), "{} is not built: run `cargo build --workspace` (or scripts/test.sh) first", p.display());
    p
}

/// The result of running a binary.
#[derive(Debug)]
pub struct Run {
    /// Exit status code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        &self.stdout
    }

    /// Asserts the exit code and that stderr is exactly one line naming `needle`.
    pub fn fails_with(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "wrong exit code: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one error line, got: {:?}", self.stderr);
        assert!(lines[0].contains(needle), "error line {:?} does not mention {needle:?}", lines[0]);
    }
}

/// A command for workspace binary `name` with a clean environment (no stray PITR_* from the
/// caller) and one retry, so failure tests stay quick.
fn clean_command(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    for (k, _) in std::env::vars() {
        if k.starts_with("PITR_") && !k.starts_with("PITR_TEST") {
            c.env_remove(k);
        }
    }
    c.env("PITR_RETRIES", "1");
    c
}

/// A command for `wal-archiver` with a clean environment.
pub fn wal_archiver() -> Command {
    clean_command("wal-archiver")
}

/// A command for `basebackup` with a clean environment.
pub fn basebackup() -> Command {
    clean_command("basebackup")
}

/// A command for `pitr-restore` with a clean environment.
pub fn pitr_restore() -> Command {
    clean_command("pitr-restore")
}

/// Runs a command to completion.
pub fn run(mut c: Command) -> Run {
    c.output().unwrap_or_else(|e| panic!("cannot run {c:?}: {e}")).into()
}

/// The arguments that make `pitr-restore` restore into `data` and start the server there with
/// `--start` (at most `timeout_secs`): on a free port, its socket beside `data`, no TCP, not
/// archiving (a drill adds no timeline to the repository).
pub fn start_args(data: &std::path::Path, timeout_secs: u32) -> Vec<String> {
    let port = crate::pg::free_port();
    let socket = data.parent().expect("data has a parent").display().to_string();
    [
        "--pgdata",
        data.to_str().expect("utf-8 path"),
        "--start",
        "--start-timeout",
        &timeout_secs.to_string(),
        "--set",
        &format!("port={port}"),
        "--set",
        &format!("unix_socket_directories={socket}"),
        "--set",
        "listen_addresses=",
        "--set",
        "archive_mode=off",
    ]
    .map(String::from)
    .to_vec()
}
