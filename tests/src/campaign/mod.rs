//! The fault campaign: scenarios that inject faults over many rounds (kill -9 at random
//! moments, object-store faults through [`crate::fault_proxy`], a full disk, concurrent
//! commands) and count what must never happen: acknowledged data lost, a recovery that ends
//! at a wrong point (or a wrong WAL file served), and a wrong exit code. Each scenario returns
//! its [`Figures`]; `tests/tests/campaign.rs` runs every scenario for a few rounds in the test
//! suite, and `scripts/fault-campaign.sh` (the `fault-campaign` binary) for many, printing the
//! table that `docs/reliability.md` reports.

pub mod backup;
pub mod receiver;
pub mod wal;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins::Run;

/// What one scenario saw.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Scenario name.
    pub scenario: String,
    /// Rounds run.
    pub rounds: u32,
    /// Faults injected (processes killed, requests failed, writes refused).
    pub faults: u64,
    /// Acknowledged data that could not be found again (a pushed segment, a committed row, a
    /// backup reported as taken that does not restore).
    pub lost: u32,
    /// Recoveries that ended at another point than asked, or WAL served that is not the file
    /// asked for.
    pub wrong_points: u32,
    /// Commands whose exit code broke the documented contract.
    pub wrong_exits: u32,
    /// What went wrong, one line each (empty when all is well).
    pub notes: Vec<String>,
}

impl Figures {
    /// Starts the figures of `scenario`.
    pub fn new(scenario: &str) -> Figures {
        Figures { scenario: scenario.to_string(), ..Default::default() }
    }

    /// Nothing that must never happen happened.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.wrong_points == 0 && self.wrong_exits == 0
    }

    /// Records a lost acknowledgement.
    pub fn lost(&mut self, note: String) {
        self.lost += 1;
        self.notes.push(format!("LOST: {note}"));
    }

    /// Records a wrong recovery point.
    pub fn wrong_point(&mut self, note: String) {
        self.wrong_points += 1;
        self.notes.push(format!("WRONG POINT: {note}"));
    }

    /// Records a wrong exit code.
    pub fn wrong_exit(&mut self, note: String) {
        self.wrong_exits += 1;
        self.notes.push(format!("WRONG EXIT: {note}"));
    }

    /// Checks that `r` exited with one of `codes`.
    pub fn expect_exit(&mut self, what: &str, r: &Run, codes: &[i32]) -> bool {
        if codes.contains(&r.code) {
            return true;
        }
        self.wrong_exit(format!("{what}: exit {} (expected {codes:?}): {}", r.code, r.stderr.trim()));
        false
    }

    /// One row of the report table.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            self.scenario, self.rounds, self.faults, self.lost, self.wrong_points, self.wrong_exits
        )
    }

    /// The table's header.
    pub fn header() -> &'static str {
        "| scenario | rounds | faults injected | acknowledged data lost | wrong recovery points | wrong exit codes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |"
    }
}

/// A small deterministic generator (xorshift), so that a round can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration in `0..max`.
    pub fn delay(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64))
    }
}

/// Runs `cmd`; kills it with SIGKILL after `after` unless it exited first. `Some(run)` when
/// it exited by itself, `None` when it was killed.
pub fn run_or_kill(mut cmd: Command, after: Duration) -> Option<Run> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    wait_or_kill(child, after)
}

/// [`run_or_kill`] for a started child.
pub fn wait_or_kill(mut child: Child, after: Duration) -> Option<Run> {
    let deadline = Instant::now() + after;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(child.wait_with_output().unwrap().into());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGKILLs every process whose command line contains `pattern` (background workers that
/// outlive the command that started them); returns how many there were.
pub fn kill_matching(pattern: &str) -> u64 {
    let out = Command::new("pkill").args(["-9", "-c", "-f", pattern]).output().expect("pkill");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Whether a process whose command line contains `pattern` runs.
pub fn running(pattern: &str) -> bool {
    Command::new("pgrep").args(["-f", pattern]).output().is_ok_and(|o| o.status.success())
}

/// Runs `f` for a scenario and turns a panic (a fixture failing, not a counted fault) into a
/// note, so that one broken scenario does not hide the others' figures.
pub fn guarded(name: &str, f: impl FnOnce(&mut Figures)) -> Figures {
    let mut figures = Figures::new(name);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut figures)));
    if let Err(p) = r {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        figures.wrong_exit(format!("the scenario itself failed: {msg}"));
    }
    figures
}
