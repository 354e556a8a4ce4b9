//! Progress of a restore, for the operator waiting on it. A restore of a large database takes
//! minutes and its recovery often longer; without a sign of life nobody can tell a slow
//! restore from a hung one. On a terminal (stderr a TTY) a progress bar; otherwise (a log,
//! systemd, CI) one plain line every few seconds ([`LINE_EVERY`]), never more often. Always
//! on stderr: stdout holds the summary (`--json`: one JSON object) and nothing else.
//!
//! The work only bumps atomic counters ([`Counters`]): the restore's writer thread adds the
//! bytes of each piece it wrote and the parser counts finished files (one relaxed atomic add
//! each, no lock, no allocation), the drill stores the replayed LSN it polls anyway. A ticker
//! task reads them and draws, so the extraction does not wait for the terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lsn::Lsn;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Interval between plain progress lines when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(5);
/// How often the bar is redrawn from the counters.
const BAR_EVERY: Duration = Duration::from_millis(200);

/// What the restore is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Reading the catalog and the WAL summaries, checking the destinations.
    Planning = 0,
    /// Downloading, decompressing and writing the backup's files (the bulk).
    Files = 1,
    /// Writing the recovery settings and syncing the file systems.
    Settings = 2,
    /// `--start`: starting the server.
    Starting = 3,
    /// `--start`: the server replays WAL up to the target.
    Recovery = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Files,
            2 => Phase::Settings,
            3 => Phase::Starting,
            4 => Phase::Recovery,
            _ => Phase::Planning,
        }
    }

    /// The phase for people.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Planning => "planning",
            Phase::Files => "restoring files",
            Phase::Settings => "recovery settings and sync",
            Phase::Starting => "starting the server",
            Phase::Recovery => "recovery",
        }
    }
}

/// What the restore has done so far, written by the work and read by the ticker.
#[derive(Debug, Default)]
pub struct Counters {
    phase: AtomicU8,
    bytes: AtomicU64,
    files: AtomicU64,
    total_bytes: AtomicU64,
    total_files: AtomicU64,
    replay_from: AtomicU64,
    replay_to: AtomicU64,
    replay_to_exact: AtomicBool,
    /// The last replayed LSN the drill saw (0: none yet).
    replayed: AtomicU64,
    /// `pg_last_xact_replay_timestamp()` as the drill saw it (written every poll, 0.1 s).
    last_xact: Mutex<Option<String>>,
}

impl Counters {
    /// Enters `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    /// Bytes of file content written.
    #[inline]
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }

    /// One more file written.
    #[inline]
    pub fn add_file(&self) {
        self.files.fetch_add(1, Relaxed);
    }

    /// What the backup holds (from its manifest).
    pub fn set_totals(&self, bytes: u64, files: u64) {
        self.total_bytes.store(bytes, Relaxed);
        self.total_files.store(files, Relaxed);
    }

    /// Where replay starts (the backup's start) and where it is expected to end; `exact`
    /// false when the end is a bound (the end of the segment holding the target).
    pub fn set_replay_goal(&self, from: Lsn, to: Lsn, exact: bool) {
        self.replay_from.store(from.0, Relaxed);
        self.replay_to.store(to.0, Relaxed);
        self.replay_to_exact.store(exact, Relaxed);
    }

    /// What the drill's poll saw.
    pub fn set_replayed(&self, lsn: Option<Lsn>, last_xact: Option<String>) {
        if let Some(l) = lsn {
            self.replayed.store(l.0, Relaxed);
        }
        if last_xact.is_some() {
            if let Ok(mut t) = self.last_xact.lock() {
                if *t != last_xact {
                    *t = last_xact;
                }
            }
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let lsn = |a: &AtomicU64| Some(a.load(Relaxed)).filter(|v| *v != 0).map(Lsn);
        Snapshot {
            phase: Phase::from_u8(self.phase.load(Relaxed)),
            bytes: self.bytes.load(Relaxed),
            files: self.files.load(Relaxed),
            total_bytes: self.total_bytes.load(Relaxed),
            total_files: self.total_files.load(Relaxed),
            replay_from: lsn(&self.replay_from),
            replay_to: lsn(&self.replay_to),
            replay_to_exact: self.replay_to_exact.load(Relaxed),
            replayed: lsn(&self.replayed),
            last_xact: self.last_xact.lock().map(|t| t.clone()).unwrap_or_default(),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The phase.
    pub phase: Phase,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Files written.
    pub files: u64,
    /// Bytes of file content in the backup (0: not known yet).
    pub total_bytes: u64,
    /// Files in the backup (0: not known yet).
    pub total_files: u64,
    /// Where replay starts.
    pub replay_from: Option<Lsn>,
    /// Where replay is expected to end.
    pub replay_to: Option<Lsn>,
    /// `replay_to` is where recovery stops, not a bound.
    pub replay_to_exact: bool,
    /// The last replayed LSN seen.
    pub replayed: Option<Lsn>,
    /// The time of the last transaction replayed.
    pub last_xact: Option<String>,
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        0
    } else {
        (done.min(total) as u128 * 100 / total as u128) as u64
    }
}

impl Snapshot {
    /// Replay progress in percent, when both ends are known.
    pub fn replay_percent(&self) -> Option<u64> {
        let (from, to, at) = (self.replay_from?, self.replay_to?, self.replayed?);
        (to > from).then(|| percent(at.0.saturating_sub(from.0), to.0 - from.0))
    }

    /// What the phase has done, without the phase's name and the time (the bar's message and
    /// the middle of a plain line).
    pub fn detail(&self, rate: Option<f64>) -> String {
        match self.phase {
            Phase::Files => {
                let mut s = if self.total_bytes > 0 {
                    format!(
                        "{} of {} ({}%)",
                        HumanBytes(self.bytes),
                        HumanBytes(self.total_bytes),
                        percent(self.bytes, self.total_bytes)
                    )
                } else {
                    format!("{}", HumanBytes(self.bytes))
                };
                if self.total_files > 0 {
                    s.push_str(&format!(", {} of {} files", self.files, self.total_files));
                } else {
                    s.push_str(&format!(", {} files", self.files));
                }
                if let Some(r) = rate {
                    s.push_str(&format!(", {}/s", HumanBytes(r.max(0.0) as u64)));
                }
                s
            }
            Phase::Recovery => match self.replayed {
                None => "waiting for the server to accept connections".to_string(),
                Some(at) => {
                    let mut s = format!("replayed up to {at}");
                    if let Some(to) = self.replay_to {
                        let about = if self.replay_to_exact { "" } else { "~" };
                        s.push_str(&format!(" of {about}{to}"));
                        if let Some(p) = self.replay_percent() {
                            s.push_str(&format!(" ({about}{p}%)"));
                        }
                    }
                    if let Some(t) = &self.last_xact {
                        s.push_str(&format!(", last transaction {t}"));
                    }
                    s
                }
            },
            Phase::Planning | Phase::Settings | Phase::Starting => String::new(),
        }
    }
}

/// One plain progress line: the phase, what it has done, its rate (bytes per second while
/// files are written) and how long it has run.
pub fn line(s: &Snapshot, rate: Option<f64>, in_phase: Duration) -> String {
    let detail = s.detail(rate);
    let sep = if detail.is_empty() { "" } else { ", " };
    format!("pitr-restore: {}: {detail}{sep}{} s elapsed", s.phase.name(), in_phase.as_secs())
}

/// At most one plain line per interval (the clock is passed in, so tests need no sleeping).
#[derive(Debug, Clone)]
pub struct LineRate {
    interval: Duration,
    last: Instant,
}

impl LineRate {
    /// The first line is due one interval after `start`.
    pub fn new(interval: Duration, start: Instant) -> LineRate {
        LineRate { interval, last: start }
    }

    /// Whether a line may be printed at `now` (and if so, counts it as printed).
    pub fn due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) >= self.interval {
            self.last = now;
            true
        } else {
            false
        }
    }
}

/// Plain lines: when the next one is due and what the rate is since the last one.
#[derive(Debug)]
pub struct Lines {
    rate: LineRate,
    phase: Phase,
    phase_start: Instant,
    /// Bytes and time at the previous line (or the start of the files phase).
    prev: (u64, Instant),
}

impl Lines {
    /// Lines every `interval` from `start` on.
    pub fn new(interval: Duration, start: Instant) -> Lines {
        Lines { rate: LineRate::new(interval, start), phase: Phase::Planning, phase_start: start, prev: (0, start) }
    }

    /// The line to print at `now`, if one is due.
    pub fn tick(&mut self, s: &Snapshot, now: Instant) -> Option<String> {
        if s.phase != self.phase {
            self.phase = s.phase;
            self.phase_start = now;
            self.prev = (s.bytes, now);
        }
        if !self.rate.due(now) {
            return None;
        }
        let rate = (s.phase == Phase::Files).then(|| {
            let secs = now.saturating_duration_since(self.prev.1).as_secs_f64();
            if secs > 0.0 {
                s.bytes.saturating_sub(self.prev.0) as f64 / secs
            } else {
                0.0
            }
        });
        self.prev = (s.bytes, now);
        Some(line(s, rate, now.saturating_duration_since(self.phase_start)))
    }
}

/// Whether and how to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (`--no-progress`, `--quiet`).
    Off,
    /// A bar when stderr is a terminal, else a line every `interval`.
    Auto {
        /// Interval between plain lines.
        interval: Duration,
    },
}

/// Shows the progress of [`Counters`] until finished or dropped.
#[derive(Debug)]
pub struct Progress {
    counters: Arc<Counters>,
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing progress (on the current tokio runtime).
    pub fn start(mode: Mode) -> Progress {
        let counters = Arc::new(Counters::default());
        let interval = match mode {
            Mode::Off => return Progress { counters, bar: None, task: None },
            Mode::Auto { interval } => interval,
        };
        let c = counters.clone();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let b = bar.clone();
            let task = tokio::spawn(async move {
                let mut shown: Option<Phase> = None;
                loop {
                    draw(&b, &c.snapshot(), &mut shown);
                    tokio::time::sleep(BAR_EVERY).await;
                }
            });
            Progress { counters, bar: Some(bar), task: Some(task) }
        } else {
            let task = tokio::spawn(async move {
                let tick = (interval / 5).clamp(Duration::from_millis(20), Duration::from_secs(1));
                let mut lines = Lines::new(interval, Instant::now());
                loop {
                    tokio::time::sleep(tick).await;
                    if let Some(l) = lines.tick(&c.snapshot(), Instant::now()) {
                        eprintln!("{l}");
                    }
                }
            });
            Progress { counters, bar: None, task: Some(task) }
        }
    }

    /// The counters the work updates.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Runs `f` (which prints) with the bar hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// Stops showing progress and clears the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Updates the bar from `s`; a new phase gets its own style (bytes for the files, percent of
/// the WAL for recovery, a spinner for the short phases).
fn draw(bar: &ProgressBar, s: &Snapshot, shown: &mut Option<Phase>) {
    if *shown != Some(s.phase) {
        *shown = Some(s.phase);
        bar.reset();
        bar.set_prefix(s.phase.name());
        bar.set_message("");
        bar.set_style(match s.phase {
            Phase::Files => style(
                "{spinner} {prefix} [{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
                 ({binary_bytes_per_sec}, {eta}) {msg}",
            ),
            Phase::Recovery => style("{spinner} {prefix} [{elapsed_precise}] [{bar:30}] {wide_msg}"),
            _ => style("{spinner} {prefix} [{elapsed_precise}] {wide_msg}"),
        });
    }
    match s.phase {
        Phase::Files => {
            bar.set_length(s.total_bytes.max(s.bytes).max(1));
            bar.set_position(s.bytes);
            bar.set_message(if s.total_files > 0 {
                format!("{}/{} files", s.files, s.total_files)
            } else {
                format!("{} files", s.files)
            });
        }
        Phase::Recovery => {
            let p = s.replay_percent().unwrap_or(0);
            bar.set_length(100);
            bar.set_position(p);
            bar.set_message(s.detail(None));
        }
        _ => bar.tick(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(bytes: u64, files: u64) -> Snapshot {
        let c = Counters::default();
        c.set_phase(Phase::Files);
        c.set_totals(4 << 30, 1000);
        c.add_bytes(bytes);
        for _ in 0..files {
            c.add_file();
        }
        c.snapshot()
    }

    #[test]
    fn lines_name_the_phase_bytes_files_and_rate() {
        let s = files(1 << 30, 250);
        assert_eq!(
            line(&s, Some(200.0 * 1048576.0), Duration::from_secs(7)),
            "pitr-restore: restoring files: 1.00 GiB of 4.00 GiB (25%), 250 of 1000 files, 200.00 MiB/s, 7 s elapsed"
        );
        let c = Counters::default();
        assert_eq!(line(&c.snapshot(), None, Duration::from_secs(5)), "pitr-restore: planning: 5 s elapsed");
        c.set_phase(Phase::Recovery);
        assert_eq!(
            line(&c.snapshot(), None, Duration::from_secs(3)),
            "pitr-restore: recovery: waiting for the server to accept connections, 3 s elapsed"
        );
        c.set_replay_goal(Lsn(0x2000000), Lsn(0x6000000), false);
        c.set_replayed(Some(Lsn(0x3000000)), Some("2026-12-02 03:04:04.8+00".into()));
        assert_eq!(
            line(&c.snapshot(), None, Duration::from_secs(12)),
            "pitr-restore: recovery: replayed up to 0/3000000 of ~0/6000000 (~25%), last transaction \
             2026-12-02 03:04:04.8+00, 12 s elapsed"
        );
        c.set_replay_goal(Lsn(0x2000000), Lsn(0x6000000), true);
        c.set_replayed(Some(Lsn(0x7000000)), None);
        let s = c.snapshot();
        assert_eq!(s.replay_percent(), Some(100), "never beyond 100%");
        assert!(s.detail(None).contains("of 0/6000000 (100%), last transaction 2026-12-02"), "{}", s.detail(None));
    }

    #[test]
    fn at_most_one_line_per_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let mut r = LineRate::new(every, t0);
        // Ticks every 100 ms for a minute: a line at 5 s, 10 s, ... and never two closer.
        let mut printed = Vec::new();
        for i in 0..=600u64 {
            let now = t0 + Duration::from_millis(100 * i);
            if r.due(now) {
                printed.push(now);
            }
        }
        assert_eq!(printed.len(), 12, "{printed:?}");
        assert!(printed[0] - t0 >= every);
        assert!(printed.windows(2).all(|w| w[1] - w[0] >= every), "{printed:?}");
        // Ticks that come late (a busy machine) never bunch up.
        let mut r = LineRate::new(every, t0);
        assert!(r.due(t0 + Duration::from_secs(17)));
        assert!(!r.due(t0 + Duration::from_secs(18)));
        assert!(!r.due(t0 + Duration::from_millis(21_999)));
        assert!(r.due(t0 + Duration::from_secs(22)));
    }

    #[test]
    fn lines_measure_the_rate_since_the_previous_line_and_time_in_the_phase() {
        let t0 = Instant::now();
        let mut lines = Lines::new(Duration::from_secs(5), t0);
        let c = Counters::default();
        assert_eq!(lines.tick(&c.snapshot(), t0 + Duration::from_secs(1)), None);
        c.set_phase(Phase::Files);
        c.set_totals(100 << 20, 10);
        assert_eq!(lines.tick(&c.snapshot(), t0 + Duration::from_secs(2)), None, "the files phase began at 2 s");
        c.add_bytes(30 << 20);
        let l = lines.tick(&c.snapshot(), t0 + Duration::from_secs(5)).unwrap();
        assert!(l.contains("30.00 MiB of 100.00 MiB (30%)") && l.contains("10.00 MiB/s, 3 s elapsed"), "{l}");
        c.add_bytes(50 << 20);
        assert_eq!(lines.tick(&c.snapshot(), t0 + Duration::from_secs(9)), None);
        let l = lines.tick(&c.snapshot(), t0 + Duration::from_secs(10)).unwrap();
        assert!(l.contains("80.00 MiB of 100.00 MiB (80%)") && l.contains("10.00 MiB/s, 8 s elapsed"), "{l}");
    }
}
