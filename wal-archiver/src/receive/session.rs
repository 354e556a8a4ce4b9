//! One session: connect, ask the server who it is and check it against the repository's
//! cluster, choose where to start, and stream until the stop signal, an error or the end of
//! the timeline, writing into the spool and handing completed segments to the uploader.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::identity::{self, IdentityError};
use archive::server::ProbeError;
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::pgwire::{BackendMessage, ConnParams, Connection, CopyBothStart, PgWireError, ReplicationMessage};
use common::repository::{ClusterInfo, Repository};
use common::wal::{TimelineId, WalFileKind, WalSegmentSize};
use tokio::sync::{mpsc, watch};

use super::errors::{local, pg_error, Flow, SessionEnd, SessionError};
use super::metrics::ReceiveMetrics;
use super::spool::{self, Spool};
use super::start::{create_slot, read_slot, start_position};
use super::state::{Positions, ReceiveOptions, StopReason};
use super::status::{status_task, StatusCmd};
use super::timeline::{next_timeline, switch_timeline};
use super::upload::{self, Job, Uploader};

/// State that outlives one connection.
#[derive(Debug)]
pub(super) struct Receiver {
    pub(super) config: Config,
    pub(super) opts: ReceiveOptions,
    pub(super) params: ConnParams,
    pub(super) repo: Repository,
    pub(super) positions: Arc<watch::Sender<Positions>>,
    pub(super) stop: Arc<watch::Sender<StopReason>>,
    pub(super) fatal: Arc<Mutex<Option<Failure>>>,
    pub(super) metrics: Arc<ReceiveMetrics>,
    pub(super) spool: Option<Spool>,
    pub(super) uploader: Option<Uploader>,
    pub(super) slot_checked: bool,
}

impl Receiver {
    /// One connection: identify, check the cluster, choose the start, stream.
    pub(super) async fn session(&mut self) -> Result<SessionEnd, SessionError> {
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

        let start = match &self.spool {
            Some(spool) => {
                let start = spool.written().segment_start(seg_size);
                spool::blocking(&mut self.spool, move |s| s.rewind(start)).await.map_err(local)?.map_err(local)?;
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
                let uploader = self.uploader.as_ref().expect("uploader started with the spool");
                switch_timeline(&mut self.spool, uploader, &mut conn, next, switch).await?;
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
    pub(super) async fn first_start(
        &mut self,
        tli: TimelineId,
        seg_size: WalSegmentSize,
        start: Lsn,
    ) -> Result<(), SessionError> {
        let dir = self.opts.spool.clone();
        let (content, spool) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            Ok((spool::scan(&dir)?, Spool::open(&dir, seg_size, tli, start)?))
        })
        .await
        .map_err(|e| local(std::io::Error::other(e)))?
        .map_err(local)?;
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
        let uploader = Uploader::start(upload::UploaderSetup {
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
    pub(super) async fn stream(&mut self, conn: Connection, start: Lsn) -> Result<SessionEnd, SessionError> {
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
                let uploader = self.uploader.as_ref().expect("uploader started with the spool");
                switch_timeline(&mut self.spool, uploader, &mut conn, next, switch).await?;
                let _ = conn.terminate().await;
                Ok(SessionEnd::TimelineSwitched)
            }
            Err(e) => Err(e),
        }
    }

    async fn process_batch(
        &mut self,
        batch: Vec<Result<BackendMessage, PgWireError>>,
        expected: &mut Lsn,
        cmd_tx: &mpsc::Sender<StatusCmd>,
    ) -> Result<Flow, SessionError> {
        // The batch's WAL, written and fsynced on a blocking thread after the loop.
        let mut writes = Vec::new();
        let mut reply = false;
        let mut flow = Flow::Continue;
        let mut failure = None;
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
                        writes.push((x.wal_start, x.data));
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
        // connection just failed or a later write failed.
        let (completed, write_error, sync) = spool::blocking(&mut self.spool, move |spool| {
            let (mut completed, mut write_error, mut wrote) = (Vec::new(), None, false);
            for (start, data) in writes {
                match spool.write(start, &data) {
                    Ok(done) => completed.extend(done),
                    Err(e) => {
                        write_error = Some(e);
                        break;
                    }
                }
                wrote = true;
            }
            let sync = if wrote { spool.sync().map(|_| ()) } else { Ok(()) };
            (completed, write_error, sync)
        })
        .await
        .map_err(local)?;
        if let Err(e) = sync {
            return Err(SessionError::Fatal(Failure::msg(FailureKind::LocalIo, e)));
        }
        if let Some(e) = write_error {
            failure = Some(SessionError::Fatal(Failure::msg(FailureKind::LocalIo, e)));
        }
        let spool = self.spool.as_ref().expect("the spool is back");
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

/// Checks the server against the repository's cluster record, registering it if absent.
pub(super) async fn check_cluster(repo: &Repository, found: &ClusterInfo, describe: &str) -> Result<(), SessionError> {
    match identity::check_or_register(repo, found).await {
        Ok(_) => Ok(()),
        Err(IdentityError::Mismatch(m)) => Err(SessionError::Fatal(Failure::msg(
            FailureKind::Conflict,
            format!("the server at {describe} {m}: each cluster needs its own --cluster name; nothing was received"),
        ))),
        Err(IdentityError::Repository(e)) => Err(Failure::from(e).into()),
    }
}
