//! Progress of `create`: a progress bar when stderr is a terminal, otherwise a log line every
//! few seconds (cron jobs and systemd keep stderr).

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::chunks::Stats;

/// Interval between log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Human-readable byte count (binary units).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Reports the counters of a running backup until dropped or finished.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    phase: Arc<Mutex<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting `stats` against an estimated total (`0` when unknown). `enabled`
    /// false reports nothing.
    pub fn start(stats: Arc<Stats>, total: u64, enabled: bool) -> Progress {
        let phase = Arc::new(Mutex::new(String::from("streaming")));
        if !enabled {
            return Progress { bar: None, phase, task: None };
        }
        let start = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total.max(1)), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let b = bar.clone();
            let ph = phase.clone();
            let task = tokio::spawn(async move {
                loop {
                    let raw = stats.raw.load(Ordering::Relaxed);
                    if raw > b.length().unwrap_or(0) {
                        b.set_length(raw);
                    }
                    b.set_position(raw);
                    let phase = ph.lock().map(|p| p.clone()).unwrap_or_default();
                    b.set_message(format!("{} stored; {phase}", human(stats.stored.load(Ordering::Relaxed))));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            Progress { bar: Some(bar), phase, task: Some(task) }
        } else {
            let ph = phase.clone();
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOG_EVERY).await;
                    let raw = stats.raw.load(Ordering::Relaxed);
                    let stored = stats.stored.load(Ordering::Relaxed);
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    let of = if total > 0 {
                        format!(" of ~{} ({:.0}%)", human(total), (raw as f64 * 100.0 / total as f64).min(100.0))
                    } else {
                        String::new()
                    };
                    let phase = ph.lock().map(|p| p.clone()).unwrap_or_default();
                    eprintln!(
                        "basebackup create: {phase}: {}{of} read, {}/s, {} stored",
                        human(raw),
                        human((raw as f64 / secs) as u64),
                        human(stored)
                    );
                }
            });
            Progress { bar: None, phase, task: Some(task) }
        }
    }

    /// Names what is happening now (e.g. waiting for WAL).
    pub fn set_phase(&self, phase: impl Into<String>) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.into();
        }
    }

    /// Stops reporting and clears the bar.
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

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(999), "999 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(75 << 20), "75.0 MiB");
    }
}
