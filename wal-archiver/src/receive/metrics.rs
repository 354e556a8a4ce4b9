//! What an operator and a monitoring system need to know about a running receiver, kept in
//! a few atomics that the reader, the uploader and the session loop update as they go, and
//! rendered on demand by the `--metrics-listen` endpoint ([`http`](super::http))
//! in the Prometheus text format, plus the `/health` verdict.
//!
//! Invariants: updating costs the replication loop an atomic store or two per batch (never
//! a lock it could wait on for long); rendering reads the positions the receiver already
//! shares ([`Positions`]) and never blocks a writer for more than a copy. LSNs are exported
//! as plain byte positions; times as Unix seconds (0 = never); ages in seconds.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::lsn::Lsn;

use super::state::{Positions, StopReason};

/// The kinds of error counted by `pitr_receive_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A streaming session failed and is retried: connection refused or lost, server
    /// restart, an error in the stream, a repository failure while starting.
    Connection,
    /// Storing a complete segment failed (retried with backoff).
    SegmentStore,
    /// Uploading the growing segment failed (retried at the next interval).
    PartialUpload,
    /// A fatal error: the receiver stops.
    Fatal,
}

impl ErrorKind {
    const ALL: [ErrorKind; 4] =
        [ErrorKind::Connection, ErrorKind::SegmentStore, ErrorKind::PartialUpload, ErrorKind::Fatal];

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::SegmentStore => "segment_store",
            ErrorKind::PartialUpload => "partial_upload",
            ErrorKind::Fatal => "fatal",
        }
    }
}

/// When WAL was received, coarsely: marks `(end, at)` meaning "WAL up to `end` had arrived
/// by `at`", oldest first, pruned as uploads catch up. The age of the oldest WAL not yet
/// uploaded is the age of the first mark beyond `uploaded`. Marks closer than
/// [`Self::GRANULARITY`] are merged (the age is then overstated by at most that much), and
/// at most [`Self::MAX_MARKS`] are kept (merging into the last one beyond that).
#[derive(Debug, Default)]
pub struct ReceiveTimes {
    marks: VecDeque<(Lsn, Instant)>,
}

impl ReceiveTimes {
    const GRANULARITY: Duration = Duration::from_millis(100);
    const MAX_MARKS: usize = 10_000;

    /// Records that WAL up to `written` has arrived by `now`, and forgets what is uploaded.
    pub fn observe(&mut self, written: Lsn, uploaded: Lsn, now: Instant) {
        while self.marks.front().is_some_and(|&(end, _)| end <= uploaded) {
            self.marks.pop_front();
        }
        if written <= uploaded {
            return;
        }
        let full = self.marks.len() >= Self::MAX_MARKS;
        match self.marks.back_mut() {
            Some((end, _)) if written <= *end => {}
            Some((end, at)) if full || now.duration_since(*at) < Self::GRANULARITY => *end = written,
            _ => self.marks.push_back((written, now)),
        }
    }

    /// How long the oldest WAL beyond `uploaded` has waited (zero when there is none).
    pub fn oldest_pending(&self, uploaded: Lsn, now: Instant) -> Duration {
        self.marks.iter().find(|&&(end, _)| end > uploaded).map_or(Duration::ZERO, |&(_, at)| now.duration_since(at))
    }
}

/// The receiver's counters and gauges beyond its [`Positions`].
#[derive(Debug, Default)]
pub struct ReceiveMetrics {
    connected: AtomicBool,
    timeline: AtomicU32,
    server_wal_end: AtomicU64,
    last_message_ms: AtomicU64,
    last_segment_upload_ms: AtomicU64,
    last_partial_upload_ms: AtomicU64,
    reconnects: AtomicU64,
    reconnect_pending: AtomicBool,
    errors: [AtomicU64; 4],
    last_error: Mutex<Option<String>>,
    fatal: Mutex<Option<String>>,
    received: Mutex<ReceiveTimes>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ReceiveMetrics {
    /// Messages of the stream (XLogData, keepalive) arrived; `wal_end` is the server's end
    /// of WAL the last of them reported.
    pub fn server_message(&self, wal_end: Lsn) {
        self.server_wal_end.store(wal_end.0, Ordering::Relaxed);
        self.last_message_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Streaming started on `timeline`.
    pub fn streaming(&self, timeline: u32) {
        self.timeline.store(timeline, Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
        if self.reconnect_pending.swap(false, Ordering::Relaxed) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The session ended (for whatever reason).
    pub fn disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    /// Counts an error; a connection error is what `/health` reports until streaming resumes,
    /// a fatal one for good.
    pub fn error(&self, kind: ErrorKind, msg: &str) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        match kind {
            ErrorKind::Connection => {
                self.reconnect_pending.store(true, Ordering::Relaxed);
                *self.last_error.lock().unwrap() = Some(one_line(msg));
            }
            ErrorKind::Fatal => *self.fatal.lock().unwrap() = Some(one_line(msg)),
            ErrorKind::SegmentStore | ErrorKind::PartialUpload => {}
        }
    }

    /// A complete segment (or an ended timeline's last `.partial`) was stored.
    pub fn segment_stored(&self) {
        self.last_segment_upload_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// The growing segment was uploaded.
    pub fn partial_uploaded(&self) {
        self.last_partial_upload_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Feeds the upload-lag clock with the current positions.
    pub fn observe(&self, p: Positions, now: Instant) {
        self.received.lock().unwrap().observe(p.written, p.uploaded, now);
    }

    /// `Ok` while streaming with no fatal error; else the reason, on one line.
    pub fn health(&self, stop: StopReason) -> Result<(), String> {
        if let Some(f) = self.fatal.lock().unwrap().as_ref() {
            return Err(format!("fatal error, stopping: {f}"));
        }
        match stop {
            StopReason::Running => {}
            StopReason::Signal => return Err("stopping (signal received)".into()),
            StopReason::Fatal => return Err("stopping after a fatal error".into()),
        }
        if self.connected.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.last_error.lock().unwrap().as_ref() {
            Some(e) => Err(format!("not streaming: {e}")),
            None => Err("not streaming yet: connecting".into()),
        }
    }

    /// The Prometheus text exposition of everything, for positions `p` at `now`.
    pub fn render(&self, p: Positions, now: Instant) -> String {
        let server_end = self.server_wal_end.load(Ordering::Relaxed);
        let secs = |ms: &AtomicU64| ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let upload_lag = self.received.lock().unwrap().oldest_pending(p.uploaded, now);
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP pitr_receive_{name} {help}\n# TYPE pitr_receive_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "pitr_receive_{name}{labels} {v}");
            }
        };
        let gauge = |v: u64| [("", v as f64)];
        metric(
            "received_lsn",
            "gauge",
            "End of the WAL received and written to the spool (LSN as a byte position).",
            &gauge(p.written.0),
        );
        metric("flushed_lsn", "gauge", "End of the WAL fsynced in the spool (LSN as a byte position); the flush position reported to the server with --synchronous-durability spool.", &gauge(p.synced.0));
        metric("uploaded_lsn", "gauge", "End of the WAL stored in the repository contiguously: complete segments and the uploaded growing segment (LSN as a byte position).", &gauge(p.uploaded.0));
        metric("server_wal_end_lsn", "gauge", "The server's end of WAL as last reported in its stream (walEnd of XLogData or keepalive; LSN as a byte position; 0 before the first message).", &gauge(server_end));
        metric("flush_lag_bytes", "gauge", "server_wal_end_lsn - flushed_lsn: WAL the server has that is not yet durable in the spool (0 if negative).", &gauge(server_end.saturating_sub(p.synced.0)));
        metric(
            "upload_lag_bytes",
            "gauge",
            "server_wal_end_lsn - uploaded_lsn: WAL the server has that is not yet in the repository (0 if negative).",
            &gauge(server_end.saturating_sub(p.uploaded.0)),
        );
        metric("upload_lag_seconds", "gauge", "Age of the oldest WAL received but not yet in the repository (beyond uploaded_lsn), measured from when it arrived (at most since the receiver started); 0 when everything received is uploaded.", &[("", upload_lag.as_secs_f64())]);
        metric("last_message_timestamp_seconds", "gauge", "Unix time (receiver's clock) at which the last message from the server arrived; 0 before the first. An idle server may send nothing for a while.", &[("", secs(&self.last_message_ms))]);
        metric("last_segment_upload_timestamp_seconds", "gauge", "Unix time of the last complete segment (or an ended timeline's last .partial) stored in the repository; 0 = none since the receiver started.", &[("", secs(&self.last_segment_upload_ms))]);
        metric("last_partial_upload_timestamp_seconds", "gauge", "Unix time of the last upload of the growing segment to the repository; 0 = none since the receiver started.", &[("", secs(&self.last_partial_upload_ms))]);
        let errors: Vec<(String, f64)> = ErrorKind::ALL
            .iter()
            .map(|k| (format!("{{kind=\"{}\"}}", k.label()), self.errors[*k as usize].load(Ordering::Relaxed) as f64))
            .collect();
        let errors: Vec<(&str, f64)> = errors.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("errors_total", "counter", "Errors since the receiver started, by kind: connection (a streaming session failed and is retried), segment_store (storing a complete segment failed, retried), partial_upload (uploading the growing segment failed, retried), fatal (the receiver stops).", &errors);
        metric(
            "reconnects_total",
            "counter",
            "Times streaming resumed after a connection error.",
            &gauge(self.reconnects.load(Ordering::Relaxed)),
        );
        metric(
            "connected",
            "gauge",
            "1 while streaming from the server, else 0.",
            &gauge(u64::from(self.connected.load(Ordering::Relaxed))),
        );
        metric(
            "timeline",
            "gauge",
            "The timeline being received (0 before the first connection).",
            &gauge(u64::from(self.timeline.load(Ordering::Relaxed))),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(written: u64, synced: u64, uploaded: u64) -> Positions {
        Positions { written: Lsn(written), synced: Lsn(synced), uploaded: Lsn(uploaded) }
    }

    /// The value of the sample line `line_start value`.
    fn sample(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no sample {line_start:?} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn upload_lag_is_the_age_of_the_oldest_wal_not_uploaded() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut r = ReceiveTimes::default();
        assert_eq!(r.oldest_pending(Lsn(0), s(0)), Duration::ZERO);
        r.observe(Lsn(100), Lsn(0), s(0));
        r.observe(Lsn(200), Lsn(0), s(1000));
        r.observe(Lsn(250), Lsn(0), s(1050)); // merged into the mark of 1000
        assert_eq!(r.oldest_pending(Lsn(0), s(3000)), Duration::from_secs(3));
        assert_eq!(r.oldest_pending(Lsn(100), s(3000)), Duration::from_secs(2));
        // Uploads catch up: the marks go.
        r.observe(Lsn(250), Lsn(150), s(3000));
        assert_eq!(r.marks.len(), 1);
        assert_eq!(r.oldest_pending(Lsn(250), s(3000)), Duration::ZERO);
        r.observe(Lsn(250), Lsn(250), s(3000));
        assert!(r.marks.is_empty());
        // Bounded: beyond the limit the last mark takes the rest.
        for i in 0..(ReceiveTimes::MAX_MARKS as u64 + 10) {
            r.observe(Lsn(300 + i), Lsn(250), s(4000 + i * 200));
        }
        assert_eq!(r.marks.len(), ReceiveTimes::MAX_MARKS);
    }

    #[test]
    fn health_follows_connection_stop_and_fatal_errors() {
        let m = ReceiveMetrics::default();
        assert_eq!(m.health(StopReason::Running).unwrap_err(), "not streaming yet: connecting");
        m.streaming(1);
        assert_eq!(m.health(StopReason::Running), Ok(()));
        m.disconnected();
        m.error(ErrorKind::Connection, "cannot connect:\n  connection refused");
        assert_eq!(m.health(StopReason::Running).unwrap_err(), "not streaming: cannot connect: connection refused");
        m.streaming(2);
        assert_eq!(m.health(StopReason::Running), Ok(()));
        assert!(m.health(StopReason::Signal).unwrap_err().contains("stopping"));
        m.error(ErrorKind::Fatal, "spool not writable");
        assert!(m.health(StopReason::Running).unwrap_err().contains("spool not writable"));
    }

    #[test]
    fn exposition_has_every_metric_with_help_and_type() {
        let m = ReceiveMetrics::default();
        m.streaming(3);
        m.server_message(Lsn(5000));
        m.error(ErrorKind::Connection, "lost");
        m.streaming(3);
        m.error(ErrorKind::PartialUpload, "503");
        m.segment_stored();
        let now = Instant::now();
        m.observe(positions(4000, 3000, 1000), now - Duration::from_secs(2));
        let text = m.render(positions(4000, 3000, 1000), now);
        for name in [
            "received_lsn",
            "flushed_lsn",
            "uploaded_lsn",
            "server_wal_end_lsn",
            "flush_lag_bytes",
            "upload_lag_bytes",
            "upload_lag_seconds",
            "last_message_timestamp_seconds",
            "last_segment_upload_timestamp_seconds",
            "last_partial_upload_timestamp_seconds",
            "errors_total",
            "reconnects_total",
            "connected",
            "timeline",
        ] {
            assert!(text.contains(&format!("# HELP pitr_receive_{name} ")), "{name} help");
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            assert!(text.contains(&format!("# TYPE pitr_receive_{name} {kind}\n")), "{name} type");
        }
        assert_eq!(sample(&text, "pitr_receive_received_lsn"), 4000.0);
        assert_eq!(sample(&text, "pitr_receive_flushed_lsn"), 3000.0);
        assert_eq!(sample(&text, "pitr_receive_uploaded_lsn"), 1000.0);
        assert_eq!(sample(&text, "pitr_receive_server_wal_end_lsn"), 5000.0);
        assert_eq!(sample(&text, "pitr_receive_flush_lag_bytes"), 2000.0);
        assert_eq!(sample(&text, "pitr_receive_upload_lag_bytes"), 4000.0);
        assert_eq!(sample(&text, "pitr_receive_upload_lag_seconds"), 2.0);
        assert_eq!(sample(&text, "pitr_receive_errors_total{kind=\"connection\"}"), 1.0);
        assert_eq!(sample(&text, "pitr_receive_errors_total{kind=\"partial_upload\"}"), 1.0);
        assert_eq!(sample(&text, "pitr_receive_errors_total{kind=\"fatal\"}"), 0.0);
        assert_eq!(sample(&text, "pitr_receive_reconnects_total"), 1.0);
        assert_eq!(sample(&text, "pitr_receive_connected"), 1.0);
        assert_eq!(sample(&text, "pitr_receive_timeline"), 3.0);
        assert_eq!(sample(&text, "pitr_receive_last_partial_upload_timestamp_seconds"), 0.0);
        assert!(sample(&text, "pitr_receive_last_segment_upload_timestamp_seconds") > 1.7e9);
        // A server end behind the receiver (stale) never gives a negative lag.
        let text = m.render(positions(9000, 9000, 9000), now);
        assert_eq!(sample(&text, "pitr_receive_flush_lag_bytes"), 0.0);
    }
}
