//! `receive`: a long-running streaming receiver (physical replication), so the repository
//! lags the primary by seconds (or, as a synchronous standby, the local spool by nothing)
//! instead of by whole segments.
//!
//! Tasks:
//! - the **reader** (this module's session loop) reads the COPY BOTH stream and writes WAL
//!   into the spool ([`receive_spool`](crate::receive_spool)); after each batch of messages
//!   it fsyncs and publishes the positions;
//! - the **status** task owns the connection's writer: it sends a standby status update when
//!   the flush position advances, when a keepalive asks for one, and every
//!   `--status-interval`; it never waits for uploads;
//! - the **uploader** ([`receive_upload`](crate::receive_upload)) stores completed segments
//!   with [`push::store`](crate::push::store), that is `archive::store` (the same object `push` makes) and uploads the
//!   growing `.partial` every `--partial-interval` under a receiver-only key.
//!
//! Positions reported: `write` = received and written to the spool, `flush` = fsynced in the
//! spool (`--synchronous-durability spool`) or stored in the repository (`repository`),
//! `apply` = 0. Streaming always (re)starts at a segment start. At the end of a timeline the
//! old timeline's last segment is stored as `.partial`, the next timeline's history file is
//! fetched and stored, and the next timeline is streamed.
//!
//! With `--metrics-listen`, [`receive_http`](crate::receive_http) serves the positions and
//! the counters of [`receive_metrics`](crate::receive_metrics) that these tasks update.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::identity::{self, IdentityError};
use archive::server::ProbeError;
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::pgwire::{
    BackendMessage, ConnParams, Connection, ConnectionWriter, CopyBothStart, PgWireError, Replication,
    ReplicationMessage, StandbyStatusUpdate,
};
use common::repository::{wal_file_of_key, ClusterInfo, Repository};
use common::retry::retry;
use common::wal::{TimelineId, WalFileKind, WalFileName, WalSegmentSize};
use tokio::sync::{mpsc, watch};

use crate::receive_metrics::{ErrorKind, ReceiveMetrics};
use crate::receive_spool::{self, Spool};
use crate::receive_upload::{self, Job, Uploader};

/// Which durability the flush position reported to the server stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsynced in the local spool.
    Spool,
    /// stored in the repository (complete segments, and the receiver's partial object).
    Repository,
}

/// Options of `wal-archiver receive`.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// libpq connection string (replication=true is added).
    pub conninfo: String,
    /// Physical replication slot.
    pub slot: Option<String>,
    /// Create the slot if it does not exist.
    pub create_slot: bool,
    /// Spool directory.
    pub spool: PathBuf,
    /// How often the growing partial segment is uploaded.
    pub partial_interval: Duration,
    /// What `flush` means.
    pub durability: Durability,
    /// Longest time between two status updates.
    pub status_interval: Duration,
    /// Where to serve `/metrics` and `/health`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// The default spool directory for a cluster name.
pub fn default_spool(cluster: &str) -> PathBuf {
    PathBuf::from("/var/spool/pitr").join(cluster)
}

/// The receiver's positions, shared by the reader, the uploader and the status task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Positions {
    /// End of the WAL received and written to the spool.
    pub written: Lsn,
    /// End of the WAL fsynced in the spool.
    pub synced: Lsn,
    /// End of the WAL stored in the repository (contiguously from the start).
    pub uploaded: Lsn,
}

impl Positions {
    /// The flush position to report for `durability`.
    pub fn flush(&self, durability: Durability) -> Lsn {
        match durability {
            Durability::Spool => self.synced,
            Durability::Repository => self.uploaded.min(self.synced),
        }
    }
}

/// Why the receiver stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Keep going.
    Running,
    /// SIGTERM or SIGINT.
    Signal,
    /// A task failed for good (see the failure slot).
    Fatal,
}

/// State that outlives one connection.
#[derive(Debug)]
struct Receiver {
    config: Config,
    opts: ReceiveOptions,
    params: ConnParams,
    repo: Repository,
    positions: Arc<watch::Sender<Positions>>,
    stop: Arc<watch::Sender<StopReason>>,
    fatal: Arc<Mutex<Option<Failure>>>,
    metrics: Arc<ReceiveMetrics>,
    spool: Option<Spool>,
    uploader: Option<Uploader>,
    slot_checked: bool,
}

/// How one session ended, when it did not fail.
enum SessionEnd {
    /// Stopped on request, cleanly.
    Stopped,
    /// The timeline ended; the spool now follows the next one.
    TimelineSwitched,
}

/// A session failure: retry after a pause, or give up.
enum SessionError {
    Retry(Failure),
    Fatal(Failure),
}

impl From<Failure> for SessionError {
    fn from(f: Failure) -> Self {
        match f.kind {
            FailureKind::Storage | FailureKind::LocalIo => SessionError::Retry(f),
            _ => SessionError::Fatal(f),
        }
    }
}

fn pg_error(what: &str, e: PgWireError) -> SessionError {
    let removed = e.server_error().is_some_and(|s| s.message.contains("has already been removed"));
    let slot_busy = e.sqlstate() == Some("55006");
    let f = Failure::msg(
        if matches!(e, PgWireError::Config(_)) { FailureKind::Config } else { FailureKind::Server },
        format!("{what}: {e}"),
    );
    if removed {
        SessionError::Fatal(Failure::msg(
            FailureKind::Server,
            format!(
                "{what}: {e}: the server no longer has the WAL the archive needs next; archive it with \
                 archive_command (`wal-archiver push`), or use a replication slot (--slot) so the server keeps it. \
                 The receiver never skips WAL"
            ),
        ))
    } else if e.is_retryable() || slot_busy {
        SessionError::Retry(f)
    } else {
        SessionError::Fatal(f)
    }
}

/// Runs the receiver until SIGTERM/SIGINT (exit 0 after a clean stop) or a fatal error.
pub async fn receive(config: &Config, opts: ReceiveOptions) -> Result<(), Failure> {
    if opts.partial_interval.is_zero() || opts.status_interval.is_zero() {
        return Err(Failure::msg(FailureKind::Usage, "--partial-interval and --status-interval must be positive"));
    }
    let params = ConnParams::parse(&opts.conninfo)
        .map_err(|e| Failure::msg(FailureKind::Config, format!("--dbname: {e}")))?
        .with_replication(Replication::Physical)
        .with_fallback_application_name("pitr");
    std::fs::create_dir_all(&opts.spool).map_err(|e| {
        Failure::msg(FailureKind::LocalIo, format!("cannot create spool directory {}: {e}", opts.spool.display()))
    })?;
    let Some(_lock) = crate::worker::acquire(&opts.spool)? else {
        return Err(Failure::msg(
            FailureKind::Conflict,
            format!("another wal-archiver receive uses spool directory {}", opts.spool.display()),
        ));
    };
    let listener = match opts.metrics_listen {
        Some(addr) => Some(crate::receive_http::bind(addr).await?),
        None => None,
    };
    let repo = config.open_repository(true).await?;
    let (stop_tx, _) = watch::channel(StopReason::Running);
    let stop = Arc::new(stop_tx);
    spawn_signal_handler(stop.clone())?;
    let positions = Arc::new(watch::channel(Positions::default()).0);
    let metrics = Arc::new(ReceiveMetrics::default());
    let _server =
        listener.map(|l| crate::receive_http::serve(l, metrics.clone(), positions.subscribe(), stop.subscribe()));
    let mut r = Receiver {
        config: config.clone(),
        opts,
        params,
        repo,
        positions,
        stop,
        fatal: Arc::new(Mutex::new(None)),
        metrics,
        spool: None,
        uploader: None,
        slot_checked: false,
    };
    let result = r.run().await;
    // Whatever happened: store what can be stored (complete segments, the last partial).
    if let Some(up) = r.uploader.take() {
        up.finish().await;
    }
    let fatal = r.fatal.lock().unwrap().take();
    match (result, fatal) {
        (_, Some(f)) => Err(f),
        (r, None) => r,
    }
}

fn spawn_signal_handler(stop: Arc<watch::Sender<StopReason>>) -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |e: std::io::Error| Failure::msg(FailureKind::LocalIo, format!("cannot handle signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        stop.send_if_modified(|s| {
            if *s == StopReason::Running {
                *s = StopReason::Signal;
                true
            } else {
                false
            }
        });
    });
    Ok(())
}

impl Receiver {
    fn stopping(&self) -> bool {
        *self.stop.borrow() != StopReason::Running
    }

    async fn run(&mut self) -> Result<(), Failure> {
        let mut backoff = Duration::from_secs(1);
        loop {
            if self.stopping() {
                return Ok(());
            }
            let before = self.positions.borrow().written;
            let session = self.session().await;
            self.metrics.disconnected();
            match session {
                Ok(SessionEnd::Stopped) => return Ok(()),
                Ok(SessionEnd::TimelineSwitched) => backoff = Duration::from_secs(1),
                Err(SessionError::Fatal(f)) => {
                    self.metrics.error(ErrorKind::Fatal, &f.to_string());
                    return Err(f);
                }
                Err(SessionError::Retry(f)) => {
                    if self.stopping() {
                        return Ok(());
                    }
                    self.metrics.error(ErrorKind::Connection, &f.to_string());
                    if self.positions.borrow().written > before {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(retry_in_s = backoff.as_secs(), "{f}");
                    eprintln!("wal-archiver receive: {f}; reconnecting in {} s", backoff.as_secs());
                    let mut stop = self.stop.subscribe();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s != StopReason::Running) => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// One connection: identify, check the cluster, choose the start, stream.
    async fn session(&mut self) -> Result<SessionEnd, SessionError> {
        let describe = self.params.describe();
        let mut conn = Connection::connect(&self.params).await.map_err(|e| pg_error("cannot connect", e))?;
        let ctx = format!("server at {describe}");
        let server = archive::server::probe(&mut conn).await.map_err(|e| match e {
            ProbeError::Wire(e) => pg_error(&ctx, e),
            ProbeError::Unsupported(m) => {
                SessionError::Fatal(Failure::msg(FailureKind::Invalid, format!("{ctx}: {m}")))
            }
            ProbeError::BadAnswer(m) => SessionError::Fatal(Failure::msg(FailureKind::Server, format!("{ctx}: {m}"))),
        })?;
        let seg_size = server.identity.segment_size;
        check_cluster(&self.repo, &server.identity, &describe).await?;
        // Once streaming, the receiver asks for the timeline it is on: the server streams it
        // up to its end and names the next one.
        let tli = self.spool.as_ref().map_or(server.timeline, |s| s.timeline());
        if tli > server.timeline {
            return Err(SessionError::Fatal(Failure::msg(
                FailureKind::Server,
                format!(
                    "{ctx} is on timeline {}, behind the receiver's timeline {} (connected to an old primary?)",
                    server.timeline.0, tli.0
                ),
            )));
        }

        if !self.slot_checked {
            if let (Some(slot), true) = (&self.opts.slot, self.opts.create_slot) {
                create_slot(&mut conn, slot).await?;
            }
            self.slot_checked = true;
        }

        let start = match &mut self.spool {
            Some(spool) => {
                let start = spool.written().segment_start(seg_size);
                tokio::task::block_in_place(|| spool.rewind(start)).map_err(local)?;
                start
            }
            None => {
                let slot_lsn = match (&self.opts.slot, server.version_num >= 150000) {
                    (Some(slot), true) => read_slot(&mut conn, slot).await?,
                    _ => None,
                };
                let (start, why) =
                    start_position(&self.repo, &self.opts.spool, tli, seg_size, server.position, slot_lsn).await?;
                tracing::info!(%start, timeline = tli.0, why, "start position");
                eprintln!("wal-archiver receive: starting at {start} on timeline {} ({why})", tli.0);
                self.first_start(tli, seg_size, start).await?;
                start
            }
        };

        match conn.start_replication(self.opts.slot.as_deref(), start, Some(tli.0)).await {
            Ok(CopyBothStart::Streaming) => {}
            // Exactly at the end of an old timeline: no COPY, the next timeline at once.
            Ok(CopyBothStart::Completed(results)) => {
                let (next, switch) = next_timeline(&results)?;
                self.switch_timeline(&mut conn, next, switch).await?;
                let _ = conn.terminate().await;
                return Ok(SessionEnd::TimelineSwitched);
            }
            Err(e) => return Err(pg_error(&format!("START_REPLICATION {start} on timeline {}", tli.0), e)),
        }
        tracing::info!(%start, timeline = tli.0, "streaming");
        self.metrics.streaming(tli.0);
        self.stream(conn, start).await
    }

    /// Creates the spool and the uploader once the timeline, segment size and start are known.
    async fn first_start(&mut self, tli: TimelineId, seg_size: WalSegmentSize, start: Lsn) -> Result<(), SessionError> {
        let content = receive_spool::scan(&self.opts.spool).map_err(local)?;
        let spool = Spool::open(&self.opts.spool, seg_size, tli, start).map_err(local)?;
        // In the repository only up to the first complete segment an earlier run left in
        // the spool (stored first, below).
        let uploaded = content
            .complete
            .iter()
            .filter(|(n, _)| n.timeline == tli)
            .filter_map(|(n, _)| n.start_lsn(seg_size).ok().flatten())
            .min()
            .map_or(start, |l| l.min(start));
        self.positions.send_modify(|p| *p = Positions { written: start, synced: start, uploaded });
        let uploader = Uploader::start(receive_upload::UploaderSetup {
            config: self.config.clone(),
            repo: self.repo.clone(),
            dir: self.opts.spool.clone(),
            timeline: tli,
            seg_size,
            partial_interval: self.opts.partial_interval,
            durability: self.opts.durability,
            positions: self.positions.clone(),
            stop: self.stop.clone(),
            fatal: self.fatal.clone(),
            metrics: self.metrics.clone(),
        });
        // Complete segments of earlier runs that never reached the repository.
        for (name, path) in content.complete {
            tracing::info!(file = %name, "storing a segment spooled by an earlier run");
            uploader.send(Job::Segment(path));
        }
        let start_segno = start.segment_number(seg_size);
        for (name, path) in content.partial {
            let segno = name.segment_number(seg_size).ok().flatten();
            if name.timeline == tli && segno == Some(start_segno) {
                continue; // rewritten in place by the stream
            }
            let complete = name.with_kind(WalFileKind::Segment);
            let archived = matches!(self.repo.wal_header(&complete).await, Ok(Some(_)));
            if archived && name.timeline == tli && segno < Some(start_segno) {
                tracing::info!(file = %name, "removing a spooled partial segment that is archived complete");
                let _ = std::fs::remove_file(&path);
            } else {
                tracing::warn!(file = %name, "keeping a partial segment of an earlier run in the spool (not streamed now)");
            }
        }
        self.spool = Some(spool);
        self.uploader = Some(uploader);
        Ok(())
    }

    /// Streams until the stop signal, a fatal error or a connection failure.
    async fn stream(&mut self, conn: Connection, start: Lsn) -> Result<SessionEnd, SessionError> {
        let (mut reader, writer) = conn.split();
        let (cmd_tx, cmd_rx) = mpsc::channel::<StatusCmd>(16);
        let status = tokio::spawn(status_task(
            writer,
            self.positions.subscribe(),
            self.opts.durability,
            self.opts.status_interval,
            cmd_rx,
        ));
        let mut stop = self.stop.subscribe();
        let mut expected = start;
        let mut stop_sent = false;
        let result: Result<SessionEnd, SessionError> = loop {
            // The first message of a batch: wait for it (or for the stop).
            let first = tokio::select! {
                biased;
                // (The watch guard is dropped at once: it must not live across the awaits below.)
                _ = async { drop(stop.wait_for(|s| *s != StopReason::Running).await) }, if !stop_sent => {
                    // Final status (everything is fsynced already), then CopyDone; keep
                    // reading what the server still sends until its CopyDone.
                    stop_sent = true;
                    let _ = cmd_tx.send(StatusCmd::Stop).await;
                    continue;
                }
                // After CopyDone the server has 10 s to end its side.
                m = tokio::time::timeout(if stop_sent { Duration::from_secs(10) } else { Duration::MAX }, reader.next_message()) => match m {
                    Ok(m) => m,
                    Err(_) => {
                        tracing::warn!("the server did not end the stream within 10 s of CopyDone");
                        break Ok(SessionEnd::Stopped);
                    }
                },
            };
            let mut batch = vec![first];
            let mut bytes = 0usize;
            // More of the batch: whatever is already buffered, up to 8 MiB. Polled once, never
            // waited for: a zero `tokio::time::timeout` would wait for the timer's next 1 ms
            // tick, and a synchronous commit waits for this batch's fsync and reply.
            while bytes < 8 << 20 && batch.len() < 256 {
                let ready = tokio::select! {
                    biased;
                    m = reader.next_message() => Ok(m),
                    () = std::future::ready(()) => Err(()),
                };
                match ready {
                    Ok(m) => {
                        if let Ok(BackendMessage::CopyData(b)) = &m {
                            bytes += b.len();
                        }
                        let more = matches!(m, Ok(BackendMessage::CopyData(_)));
                        batch.push(m);
                        if !more {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            match self.process_batch(batch, &mut expected, &cmd_tx).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::ServerDone) if stop_sent => break Ok(SessionEnd::Stopped),
                Ok(Flow::ServerDone) => {
                    // End of the timeline: answer with CopyDone, then the server names the
                    // next timeline.
                    let _ = cmd_tx.send(StatusCmd::Stop).await;
                    break Ok(SessionEnd::TimelineSwitched);
                }
                Ok(Flow::ServerClosing) => {
                    break Err(SessionError::Retry(Failure::msg(
                        FailureKind::Server,
                        format!("the server ended streaming at {expected} (shutting down?)"),
                    )))
                }
                Err(e) => break Err(e),
            }
        };
        drop(cmd_tx);
        let writer = status.await.ok().and_then(|r| r.ok());
        match result {
            Ok(SessionEnd::Stopped) => {
                // Clean stop: read the results of START_REPLICATION and say goodbye.
                if let Some(writer) = writer {
                    if let Ok(mut conn) = reader.unsplit(writer) {
                        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_results()).await;
                        let _ = conn.terminate().await;
                    }
                }
                Ok(SessionEnd::Stopped)
            }
            Ok(SessionEnd::TimelineSwitched) => {
                let lost = || {
                    SessionError::Retry(Failure::msg(FailureKind::Server, "connection lost at the end of the timeline"))
                };
                let writer = writer.ok_or_else(lost)?;
                let mut conn = reader.unsplit(writer).map_err(|_| lost())?;
                let results = tokio::time::timeout(Duration::from_secs(30), conn.read_results())
                    .await
                    .map_err(|_| lost())?
                    .map_err(|e| pg_error("end of timeline", e))?;
                let (next, switch) = next_timeline(&results)?;
                self.switch_timeline(&mut conn, next, switch).await?;
                let _ = conn.terminate().await;
                Ok(SessionEnd::TimelineSwitched)
            }
            Err(e) => Err(e),
        }
    }

    /// The timeline being received ended at `switch` and `next` follows: store the old
    /// timeline's last segment as `.partial` (never as a complete segment), fetch and store
    /// the history file of `next`, and point the spool at `next` from the segment start of
    /// `switch` (the server resends that segment on the new timeline).
    async fn switch_timeline(&mut self, conn: &mut Connection, next: u32, switch: Lsn) -> Result<(), SessionError> {
        let spool = self.spool.as_mut().expect("spool opened before streaming");
        let uploader = self.uploader.as_ref().expect("uploader started with the spool");
        let old = spool.timeline();
        let seg_size = spool.seg_size();
        if next <= old.0 {
            return Err(SessionError::Fatal(Failure::msg(
                FailureKind::Server,
                format!("the server says timeline {} follows timeline {}", next, old.0),
            )));
        }
        if switch > spool.written() {
            return Err(SessionError::Fatal(Failure::msg(
                FailureKind::Server,
                format!(
                    "timeline {next} starts at {switch}, beyond the end of timeline {} received ({})",
                    old.0,
                    spool.written()
                ),
            )));
        }
        tokio::task::block_in_place(|| spool.sync()).map_err(local)?;
        tracing::info!(timeline = old.0, next, %switch, "end of timeline");
        eprintln!("wal-archiver receive: timeline {} ended at {switch}; following timeline {next}", old.0);
        let segno = switch.segment_number(seg_size);
        if switch.segment_offset(seg_size) != 0 {
            let last = spool.path(segno, WalFileKind::Partial);
            if last.exists() {
                uploader.send(Job::Segment(last));
            }
        }
        let history =
            conn.timeline_history(next).await.map_err(|e| pg_error(&format!("TIMELINE_HISTORY {next}"), e))?;
        let name = WalFileName::history(TimelineId(next)).to_string();
        if history.filename != name {
            return Err(SessionError::Fatal(Failure::msg(
                FailureKind::Server,
                format!("TIMELINE_HISTORY {next} returned {:?}", history.filename),
            )));
        }
        let dir = spool.dir().to_path_buf();
        let path = dir.join(&name);
        tokio::task::block_in_place(|| -> std::io::Result<()> {
            let tmp = dir.join(format!("{name}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &history.content)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            receive_spool::sync_dir(&dir)
        })
        .map_err(local)?;
        uploader.send(Job::Segment(path));
        uploader.send(Job::Timeline(TimelineId(next)));
        *spool = Spool::open(&dir, seg_size, TimelineId(next), switch.segment_start(seg_size)).map_err(local)?;
        Ok(())
    }

    async fn process_batch(
        &mut self,
        batch: Vec<Result<BackendMessage, PgWireError>>,
        expected: &mut Lsn,
        cmd_tx: &mpsc::Sender<StatusCmd>,
    ) -> Result<Flow, SessionError> {
        let spool = self.spool.as_mut().expect("spool opened before streaming");
        let mut completed = Vec::new();
        let mut reply = false;
        let mut flow = Flow::Continue;
        let mut failure = None;
        let mut wrote = false;
        let mut server_end = None;
        for m in batch {
            match m {
                Ok(BackendMessage::CopyData(payload)) => match ReplicationMessage::parse(payload) {
                    Ok(ReplicationMessage::XLogData(x)) => {
                        if x.wal_start != *expected {
                            failure = Some(SessionError::Retry(Failure::msg(
                                FailureKind::Server,
                                format!("WAL stream jumped: data at {}, expected {expected}", x.wal_start),
                            )));
                            break;
                        }
                        *expected = x.end();
                        server_end = Some(x.wal_end);
                        let r = tokio::task::block_in_place(|| spool.write(x.wal_start, &x.data));
                        match r {
                            Ok(done) => completed.extend(done),
                            Err(e) => {
                                failure = Some(SessionError::Fatal(Failure::msg(FailureKind::LocalIo, e)));
                                break;
                            }
                        }
                        wrote = true;
                    }
                    Ok(ReplicationMessage::Keepalive(k)) => {
                        server_end = Some(k.wal_end);
                        if k.reply_requested {
                            reply = true;
                        }
                    }
                    Err(e) => {
                        failure = Some(pg_error("replication stream", e));
                        break;
                    }
                },
                Ok(BackendMessage::CopyDone) => {
                    flow = Flow::ServerDone;
                    break;
                }
                Ok(BackendMessage::CommandComplete(_)) => {
                    flow = Flow::ServerClosing;
                    break;
                }
                Ok(BackendMessage::Notice(n)) => tracing::info!(code = %n.code, "server: {}", n.message),
                Ok(BackendMessage::Error(e)) => {
                    failure = Some(pg_error("replication stream", PgWireError::from(e)));
                    break;
                }
                Ok(other) => {
                    failure = Some(SessionError::Retry(Failure::msg(
                        FailureKind::Server,
                        format!("unexpected message during streaming: {other:?}"),
                    )));
                    break;
                }
                Err(e) => {
                    failure = Some(pg_error("replication stream", e));
                    break;
                }
            }
        }
        if let Some(end) = server_end {
            self.metrics.server_message(end);
        }
        // Whatever was written is made durable before anything is reported, also when the
        // connection just failed.
        if wrote {
            if let Err(e) = tokio::task::block_in_place(|| spool.sync()) {
                return Err(SessionError::Fatal(Failure::msg(FailureKind::LocalIo, e)));
            }
        }
        // After a reconnect the stream resends what was already fsynced: write never goes
        // back in the reports.
        let (written, synced) = (spool.written().max(spool.synced()), spool.synced());
        self.positions.send_if_modified(|p| {
            let changed = written > p.written || synced > p.synced;
            p.written = p.written.max(written);
            p.synced = p.synced.max(synced);
            changed
        });
        if let Some(up) = &self.uploader {
            for path in completed {
                up.send(Job::Segment(path));
            }
        }
        if reply {
            let _ = cmd_tx.try_send(StatusCmd::Reply);
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(flow),
        }
    }
}

/// Reads the next timeline and its start from the result set that follows the end of a
/// timeline (`next_tli`, `next_tli_startpos`).
fn next_timeline(results: &[common::pgwire::ResultSet]) -> Result<(u32, Lsn), SessionError> {
    let bad = || {
        SessionError::Fatal(Failure::msg(
            FailureKind::Server,
            format!("unexpected answer at the end of a timeline: {results:?}"),
        ))
    };
    let rs = results.iter().find(|rs| rs.column_index("next_tli").is_some()).ok_or_else(bad)?;
    let next: u32 = rs.get(0, "next_tli").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let switch: Lsn = rs.get(0, "next_tli_startpos").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    Ok((next, switch))
}

enum Flow {
    Continue,
    /// The server's CopyDone.
    ServerDone,
    /// CommandComplete inside the COPY: the walsender is exiting (server shutdown).
    ServerClosing,
}

fn local(e: std::io::Error) -> SessionError {
    SessionError::Fatal(Failure::msg(FailureKind::LocalIo, e))
}

/// Commands for the status task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusCmd {
    /// A keepalive asked for a reply.
    Reply,
    /// Send a last update and CopyDone, then hand the writer back.
    Stop,
}

/// Sends status updates: when the flush position advances, on request, and every
/// `interval`. Returns the writer after CopyDone (clean stop).
async fn status_task(
    mut writer: ConnectionWriter,
    mut positions: watch::Receiver<Positions>,
    durability: Durability,
    interval: Duration,
    mut cmds: mpsc::Receiver<StatusCmd>,
) -> Result<ConnectionWriter, PgWireError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent: Option<(Lsn, Lsn)> = None;
    let mut positions_open = true;
    loop {
        let send = tokio::select! {
            _ = tick.tick() => true,
            c = cmds.recv() => match c {
                Some(StatusCmd::Reply) => true,
                Some(StatusCmd::Stop) => {
                    let p = *positions.borrow();
                    writer.send_status_update(&StandbyStatusUpdate::new(p.written, p.flush(durability), Lsn(0))).await?;
                    writer.send_copy_done().await?;
                    return Ok(writer);
                }
                // The reader is gone (connection failed): nothing more to say.
                None => return Ok(writer),
            },
            r = positions.changed(), if positions_open => {
                if r.is_err() {
                    positions_open = false;
                    false
                } else {
                    let p = *positions.borrow_and_update();
                    last_sent.map(|(_, f)| f) != Some(p.flush(durability))
                }
            }
        };
        if send {
            let p = *positions.borrow_and_update();
            let flush = p.flush(durability);
            writer.send_status_update(&StandbyStatusUpdate::new(p.written, flush, Lsn(0))).await?;
            last_sent = Some((p.written, flush));
        }
    }
}

/// Checks the server against the repository's cluster record, registering it if absent.
async fn check_cluster(repo: &Repository, found: &ClusterInfo, describe: &str) -> Result<(), SessionError> {
    match identity::check_or_register(repo, found).await {
        Ok(_) => Ok(()),
        Err(IdentityError::Mismatch(m)) => Err(SessionError::Fatal(Failure::msg(
            FailureKind::Conflict,
            format!("the server at {describe} {m}: each cluster needs its own --cluster name; nothing was received"),
        ))),
        Err(IdentityError::Repository(e)) => Err(Failure::from(e).into()),
    }
}

/// `CREATE_REPLICATION_SLOT name PHYSICAL RESERVE_WAL`; an existing slot is fine.
async fn create_slot(conn: &mut Connection, slot: &str) -> Result<(), SessionError> {
    valid_slot(slot)?;
    match conn.simple_query(&format!("CREATE_REPLICATION_SLOT {slot} PHYSICAL RESERVE_WAL")).await {
        Ok(_) => {
            tracing::info!(slot, "created the replication slot");
            Ok(())
        }
        Err(e) if e.sqlstate() == Some("42710") => Ok(()),
        Err(e) => Err(pg_error(&format!("cannot create replication slot {slot:?}"), e)),
    }
}

fn valid_slot(slot: &str) -> Result<(), SessionError> {
    if slot.is_empty()
        || slot.len() > 63
        || !slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(SessionError::Fatal(Failure::msg(
            FailureKind::Usage,
            format!(
                "invalid replication slot name {slot:?}: use at most 63 lower case letters, digits and underscores"
            ),
        )));
    }
    Ok(())
}

/// `READ_REPLICATION_SLOT` (15+): the slot's restart_lsn; `None` for a slot that does not
/// exist or has not reserved WAL.
async fn read_slot(conn: &mut Connection, slot: &str) -> Result<Option<Lsn>, SessionError> {
    valid_slot(slot)?;
    let sets = conn
        .simple_query(&format!("READ_REPLICATION_SLOT {slot}"))
        .await
        .map_err(|e| pg_error("READ_REPLICATION_SLOT", e))?;
    let Some(rs) = sets.first() else { return Ok(None) };
    let Some(lsn) = rs.get(0, "restart_lsn") else { return Ok(None) };
    Ok(lsn.parse::<Lsn>().ok().filter(|l| *l != Lsn::INVALID))
}

/// Where to start streaming: after the newest complete segment of `tli` that is archived
/// (LIST for a candidate, confirmed and extended by exact-key probes) or spooled; else the
/// slot's restart_lsn; else the server's position. Always a segment start, never beyond the
/// server's position.
pub async fn start_position(
    repo: &Repository,
    spool_dir: &std::path::Path,
    tli: TimelineId,
    seg_size: WalSegmentSize,
    server_pos: Lsn,
    slot_restart: Option<Lsn>,
) -> Result<(Lsn, &'static str), Failure> {
    let server_seg = server_pos.segment_number(seg_size);
    let exists = |segno: u64| {
        let name = WalFileName::segment(tli, segno, seg_size);
        async move { repo.wal_header(&name).await.map(|h| h.is_some()) }
    };

    // Candidates: the newest listed segment of this timeline, and the segment before the
    // server's current one (where an up-to-date archive_command would be).
    let prefix = repo.wal_prefix();
    let listed = retry(repo.retry_policy(), "list WAL", || repo.storage().list(&prefix)).await?;
    let newest_listed = listed
        .iter()
        .filter_map(|o| {
            let name = wal_file_of_key(&o.key)?;
            (name.kind == WalFileKind::Segment && name.timeline == tli).then_some(name)
        })
        .filter_map(|n| n.segment_number(seg_size).ok().flatten())
        .filter(|&s| s <= server_seg)
        .max();
    let mut newest: Option<u64> = None;
    if let Some(s) = newest_listed {
        if exists(s).await? {
            newest = Some(s);
        }
    }
    if server_seg > 0 && newest.is_none_or(|n| n < server_seg - 1) && exists(server_seg - 1).await? {
        newest = Some(server_seg - 1);
    }
    // Listings may lag: probe forward by exact key.
    if let Some(mut n) = newest {
        while n < server_seg && exists(n + 1).await? {
            n += 1;
        }
        newest = Some(n);
    }
    let mut why = "after the newest segment archived";
    // Complete segments still waiting in the spool count as received.
    let content = receive_spool::scan(spool_dir).map_err(|e| Failure::msg(FailureKind::LocalIo, e))?;
    let on_tli = |files: &[(WalFileName, std::path::PathBuf)]| {
        files
            .iter()
            .filter(|(n, _)| n.timeline == tli)
            .filter_map(|(n, _)| n.segment_number(seg_size).ok().flatten())
            .filter(|&s| s <= server_seg)
            .max()
    };
    let spooled = on_tli(&content.complete);
    if spooled > newest {
        newest = spooled;
        why = "after the newest segment in the spool";
    }
    // A segment being received when the receiver last stopped (its spool file, or its
    // partial object if the spool is gone): start again at its beginning, never after it.
    let prefix = repo.receiver_prefix();
    let receiver_objects = retry(repo.retry_policy(), "list partial objects", || repo.storage().list(&prefix)).await?;
    let partial_object = receiver_objects
        .iter()
        .filter_map(|o| {
            let name = wal_file_of_key(&o.key)?;
            (name.kind == WalFileKind::Partial && name.timeline == tli).then_some(name)
        })
        .filter_map(|n| n.segment_number(seg_size).ok().flatten())
        .filter(|&s| s <= server_seg)
        .max();
    let growing = on_tli(&content.partial).max(partial_object);
    let server_start = server_pos.segment_start(seg_size);
    let start = match (newest, growing, slot_restart) {
        (n, Some(g), _) if n.is_none_or(|n| g > n) => {
            (Lsn(g * seg_size.bytes()), "the segment that was being received when the receiver stopped")
        }
        (Some(n), _, _) => (Lsn((n + 1) * seg_size.bytes()), why),
        (None, _, Some(slot)) => (slot.segment_start(seg_size), "the replication slot's restart_lsn"),
        (None, _, None) => (server_start, "the server's current position: nothing archived on this timeline yet"),
    };
    Ok((start.0.min(server_start), start.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{Body, PutMode};

    fn repo() -> Repository {
        Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0))
    }

    async fn put(r: &Repository, name: &str) {
        let name = WalFileName::parse(name).unwrap();
        let mut obj = std::io::Cursor::new(Vec::new());
        let data = vec![1u8; 64];
        common::codec::compress(
            &data,
            &mut std::io::empty(),
            &mut obj,
            &name.to_string(),
            Some(64),
            common::codec::CompressOptions::default(),
        )
        .unwrap();
        r.storage().put(&r.wal_key(&name), Body::Bytes(obj.into_inner().into()), PutMode::CreateNew).await.unwrap();
    }

    #[tokio::test]
    async fn start_positions() {
        let seg = WalSegmentSize::DEFAULT;
        let spool = tempfile::tempdir().unwrap();
        let tli = TimelineId(1);
        let at = |segno: u64, off: u64| Lsn(segno * seg.bytes() + off);
        let r = repo();
        // Nothing archived: the slot, else the server's segment start.
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), None).await.unwrap().0, at(9, 0));
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), Some(at(4, 7))).await.unwrap().0, at(4, 0));
        // Archived 3..=5 on timeline 1 and 8 on timeline 2: start at 6.
        for n in ["000000010000000000000003", "000000010000000000000004", "000000010000000000000005"] {
            put(&r, n).await;
        }
        put(&r, "000000020000000000000008").await;
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), Some(at(4, 7))).await.unwrap().0, at(6, 0));
        // The segment before the server's one is found by exact key even if never listed
        // first; and what the spool holds counts.
        put(&r, "000000010000000000000008").await;
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(9, 100), None).await.unwrap().0, at(9, 0));
        std::fs::write(spool.path().join("000000010000000000000009"), b"x").unwrap();
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(10, 0), None).await.unwrap().0, at(10, 0));
        // A segment that was being received: started again from its beginning, even when
        // the server has moved on.
        std::fs::write(spool.path().join("00000001000000000000000A.partial"), b"x").unwrap();
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(12, 9), None).await.unwrap().0, at(10, 0));
        // Or, with the spool gone, its partial object in the repository.
        let r2 = repo();
        let key = common::storage::ObjectKey::new("main/receiver/000000010000000000000007.partial.zst").unwrap();
        r2.storage().put(&key, Body::Bytes(vec![0u8; 8].into()), PutMode::CreateNew).await.unwrap();
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(start_position(&r2, empty.path(), tli, seg, at(12, 9), None).await.unwrap().0, at(7, 0));
        // Never beyond the server.
        assert_eq!(start_position(&r, spool.path(), tli, seg, at(7, 5), None).await.unwrap().0, at(6, 0));
    }

    #[test]
    fn flush_by_durability() {
        let p = Positions { written: Lsn(30), synced: Lsn(20), uploaded: Lsn(10) };
        assert_eq!(p.flush(Durability::Spool), Lsn(20));
        assert_eq!(p.flush(Durability::Repository), Lsn(10));
    }
}
