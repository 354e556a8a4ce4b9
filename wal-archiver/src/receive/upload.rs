//! The receiver's uploader: one task, so its uploads never delay the status updates, and
//! sequential, so a segment's partial object can never be uploaded after its complete
//! object was stored and the partial object removed.
//!
//! - Complete segments, in order: [`store`](crate::store) (validated, same key,
//!   compression, digest and summary as `push`: whichever of `push` and `receive` comes
//!   second finds an identical object), then the spool file and the segment's partial object
//!   are removed. Repository errors are retried with backoff (the segment stays in the
//!   spool); a conflict or an invalid segment stops the receiver.
//! - The growing segment, every `partial-interval` (in repository durability: as soon as
//!   more WAL is fsynced): compressed in the codec format and stored with overwrite under
//!   [`Repository::receiver_partial_key`], a key of the receiver's own that `push` never
//!   writes.
//! - With a second repository: each stored segment's name is recorded in the spool's pending
//!   list ([`crate::pending`]) before its spool file goes, and a copier task of its own copies
//!   the pending files from the main repository to the second one (at once, and every
//!   [`COPIER_INTERVAL`] while the second one is down), so the second repository never delays
//!   the uploads or the positions reported to the server. The growing segment stays the main
//!   repository's only.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::codec;
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::repository::Repository;
use common::retry::retry;
use common::storage::local::temp_path;
use common::storage::{Body, PutMode};
use common::wal::{TimelineId, WalFileKind, WalFileName, WalSegmentSize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::metrics::{ErrorKind, ReceiveMetrics};
use super::state::{Durability, Positions, StopReason};

/// Work for the uploader.
#[derive(Debug)]
pub enum Job {
    /// A file in the spool to store with `crate::store` and then remove: a complete segment,
    /// the `.partial` last segment of an ended timeline, a history file.
    Segment(PathBuf),
    /// From now on the growing segment is on this timeline.
    Timeline(TimelineId),
}

/// What the uploader needs.
#[derive(Debug)]
pub struct UploaderSetup {
    /// Configuration (for `crate::store`).
    pub config: Config,
    /// The repository.
    pub repo: Repository,
    /// The spool directory.
    pub dir: PathBuf,
    /// The timeline streamed.
    pub timeline: TimelineId,
    /// Segment size.
    pub seg_size: WalSegmentSize,
    /// Partial upload interval.
    pub partial_interval: Duration,
    /// Durability mode.
    pub durability: Durability,
    /// Shared positions (the uploader sets `uploaded`).
    pub positions: Arc<watch::Sender<Positions>>,
    /// Stop flag (set to Fatal on a fatal error).
    pub stop: Arc<watch::Sender<StopReason>>,
    /// Where a fatal error goes.
    pub fatal: Arc<Mutex<Option<Failure>>>,
    /// Upload times and error counts.
    pub metrics: Arc<ReceiveMetrics>,
}

/// A running uploader.
#[derive(Debug)]
pub struct Uploader {
    tx: mpsc::UnboundedSender<Job>,
    finish: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Uploader {
    /// Starts the task.
    pub fn start(setup: UploaderSetup) -> Uploader {
        let (tx, rx) = mpsc::unbounded_channel();
        let (finish, finish_rx) = oneshot::channel();
        let handle = tokio::spawn(run(setup, rx, finish_rx));
        Uploader { tx, finish, handle }
    }

    /// Queues a job.
    pub fn send(&self, job: Job) {
        let _ = self.tx.send(job);
    }

    /// Stores what is queued (one round of retries each), uploads the partial segment a
    /// last time, and ends.
    pub async fn finish(self) {
        let _ = self.finish.send(());
        drop(self.tx);
        let _ = self.handle.await;
    }
}

/// How often the copier tries again while the second repository fails.
pub const COPIER_INTERVAL: Duration = Duration::from_secs(30);

/// Starts the task that copies the pending list of `dir` to the second repository whenever it
/// is woken, and every [`COPIER_INTERVAL`]; it ends with the uploader (when the returned
/// handle is dropped).
fn start_copier(config: Config, second: Config, dir: PathBuf) -> Arc<tokio::sync::Notify> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let weak = Arc::downgrade(&wake);
    tokio::spawn(async move {
        loop {
            match crate::pending::drain(&config, &second, &dir).await {
                Ok(_) => {}
                Err(f) => tracing::warn!(
                    repository = %second.repo,
                    "copying to the second repository failed, tried again in {}s (the files wait in {}): {f}",
                    COPIER_INTERVAL.as_secs(),
                    dir.display()
                ),
            }
            let Some(wake) = weak.upgrade() else { return };
            let _ = tokio::time::timeout(COPIER_INTERVAL, wake.notified()).await;
            if weak.strong_count() == 0 {
                return;
            }
        }
    });
    wake
}

struct State {
    setup: UploaderSetup,
    /// Wakes the copier to the second repository, when one is configured.
    copier: Option<Arc<tokio::sync::Notify>>,
    queue: VecDeque<Job>,
    last_partial: Lsn,
    finishing: bool,
}

async fn run(setup: UploaderSetup, mut rx: mpsc::UnboundedReceiver<Job>, mut finish: oneshot::Receiver<()>) {
    let mut positions = setup.positions.subscribe();
    let mut tick = tokio::time::interval(setup.partial_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let copier = match setup.config.repo2() {
        Ok(Some(second)) => {
            Some(start_copier(setup.config.clone(), second, crate::pending::pending_dir_in(&setup.dir)))
        }
        Ok(None) => None,
        Err(f) => {
            let st = State { setup, copier: None, queue: VecDeque::new(), last_partial: Lsn(0), finishing: false };
            st.fail(f);
            return;
        }
    };
    let mut st = State { setup, copier, queue: VecDeque::new(), last_partial: Lsn(0), finishing: false };
    let mut backoff = super::errors::reconnect_backoff();
    let mut rx_open = true;
    loop {
        while let Ok(job) = rx.try_recv() {
            st.queue.push_back(job);
        }
        if let Some(Job::Timeline(t)) = st.queue.front() {
            st.setup.timeline = *t;
            st.last_partial = Lsn(0);
            st.queue.pop_front();
            continue;
        }
        // Complete segments first, in order.
        if let Some(Job::Segment(path)) = st.queue.front() {
            let path = path.clone();
            match st.store_segment(&path).await {
                Ok(()) => {
                    st.queue.pop_front();
                    backoff.reset();
                    continue;
                }
                Err(Some(f)) => {
                    st.fail(f);
                    return;
                }
                Err(None) if st.finishing => {
                    tracing::error!(file = %path.display(), "not stored before stopping; it stays in the spool and is stored at the next start");
                    st.queue.pop_front();
                    continue;
                }
                Err(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = &mut finish, if !st.finishing => st.finishing = true,
                    }
                    continue;
                }
            }
        }
        if st.finishing {
            if let Err(f) = st.upload_partial().await {
                tracing::error!("last partial upload failed: {f}");
                eprintln!("wal-archiver receive: last partial upload failed: {f}");
            }
            return;
        }
        let repository_mode = st.setup.durability == Durability::Repository;
        tokio::select! {
            biased;
            job = rx.recv(), if rx_open => match job {
                Some(job) => st.queue.push_back(job),
                None => rx_open = false,
            },
            // In repository durability too: an upload that failed is tried again at the next
            // tick, not only when more WAL arrives (a synchronous commit waits for exactly
            // this upload, so no more WAL may come).
            _ = tick.tick() => st.partial_or_log().await,
            r = positions.changed(), if repository_mode => {
                if r.is_ok() {
                    st.partial_or_log().await;
                }
            }
            _ = &mut finish, if !st.finishing => st.finishing = true,
        }
    }
}

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl State {
    fn fail(&self, f: Failure) {
        tracing::error!("{f}");
        self.setup.metrics.error(ErrorKind::Fatal, &f.to_string());
        *self.setup.fatal.lock().unwrap() = Some(f);
        self.setup.stop.send_if_modified(|s| {
            let was = *s;
            *s = StopReason::Fatal;
            was != StopReason::Fatal
        });
    }

    async fn partial_or_log(&mut self) {
        if let Err(f) = self.upload_partial().await {
            self.setup.metrics.error(ErrorKind::PartialUpload, &f.to_string());
            tracing::warn!("partial upload failed (retried at the next interval): {f}");
        }
    }

    /// Stores one complete segment. `Err(None)`: retry later; `Err(Some)`: fatal.
    async fn store_segment(&mut self, path: &Path) -> Result<(), Option<Failure>> {
        if !path.exists() {
            tracing::warn!(file = %path.display(), "queued segment vanished from the spool");
            return Ok(());
        }
        let s = &self.setup;
        match crate::store::store(&s.config, path).await {
            Ok(outcome) => {
                tracing::info!(file = %path.display(), ?outcome, "stored");
                let name = path.file_name().and_then(|n| n.to_str()).and_then(|n| WalFileName::parse(n).ok());
                if let (Some(copier), Some(n)) = (&self.copier, &name) {
                    // Recorded before the spool file goes: no file silently missing from the
                    // second repository. A failure keeps the file and tries again.
                    if let Err(f) = crate::pending::record(&crate::pending::pending_dir(path), &n.to_string()) {
                        s.metrics.error(ErrorKind::SegmentStore, &f.to_string());
                        tracing::warn!(file = %path.display(), "{f}; will retry");
                        return Err(None);
                    }
                    copier.notify_one();
                }
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(file = %path.display(), "cannot remove from the spool: {e}");
                }
                if let Some(name) = name.filter(|n| matches!(n.kind, WalFileKind::Segment | WalFileKind::Partial)) {
                    s.metrics.segment_stored();
                    let key = s.repo.receiver_partial_key(&name);
                    match retry(s.repo.retry_policy(), "remove partial object", || s.repo.storage().delete(&key)).await
                    {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => tracing::warn!(%key, "cannot remove the partial object: {e}"),
                    }
                    if name.timeline == s.timeline && name.kind == WalFileKind::Segment {
                        if let Ok(Some(segno)) = name.segment_number(s.seg_size) {
                            let end = Lsn((segno + 1) * s.seg_size.bytes());
                            s.positions.send_if_modified(|p| {
                                let advance = end > p.uploaded;
                                if advance {
                                    p.uploaded = end;
                                }
                                advance
                            });
                        }
                    }
                }
                Ok(())
            }
            // A cause that may pass (the repository unreachable): the segment stays in the
            // spool and is tried again; any other stops the receiver.
            Err(f) if f.is_transient() => {
                s.metrics.error(ErrorKind::SegmentStore, &f.to_string());
                tracing::warn!(file = %path.display(), "storing failed, will retry: {f}");
                Err(None)
            }
            Err(f) => Err(Some(f.context(path.display()))),
        }
    }

    /// Uploads the growing segment if more of it is fsynced than last time.
    async fn upload_partial(&mut self) -> Result<(), Failure> {
        let s = &self.setup;
        let synced = s.positions.borrow().synced;
        if synced <= self.last_partial || synced.segment_offset(s.seg_size) == 0 || !self.queue.is_empty() {
            return Ok(());
        }
        let segno = synced.segment_number(s.seg_size);
        let name = WalFileName::segment(s.timeline, segno, s.seg_size).with_kind(WalFileKind::Partial);
        let path = s.dir.join(name.to_string());
        let scratch = s.repo.storage().scratch_dir().unwrap_or_else(std::env::temp_dir);
        let tmp = TempFile(temp_path(&scratch, &name.to_string()));
        let (tmp_path, opts, seg_bytes) = (tmp.0.clone(), s.config.compress, s.seg_size.bytes());
        let name_str = name.to_string();
        let compressed = tokio::task::spawn_blocking(move || -> Result<bool, Failure> {
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                // Completed and renamed meanwhile: its complete object is on the way.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => {
                    return Err(Failure::msg(FailureKind::LocalIo, format!("{}: {e}", path.display())).transient())
                }
            };
            let mut out =
                std::fs::File::options().read(true).write(true).create_new(true).open(&tmp_path).map_err(|e| {
                    Failure::msg(FailureKind::LocalIo, format!("{}: {e}", tmp_path.display())).transient()
                })?;
            codec::compress(&[], &mut file, &mut out, &name_str, Some(seg_bytes), opts)?;
            Ok(true)
        })
        .await
        .map_err(|e| Failure::msg(FailureKind::LocalIo, e).transient())??;
        if !compressed {
            return Ok(());
        }
        let key = s.repo.receiver_partial_key(&name);
        retry(s.repo.retry_policy(), "store partial segment", || {
            s.repo.storage().put(&key, Body::File(tmp.0.clone()), PutMode::Overwrite)
        })
        .await?;
        tracing::debug!(%key, %synced, "partial segment uploaded");
        self.last_partial = synced;
        s.metrics.partial_uploaded();
        s.positions.send_if_modified(|p| {
            let advance = synced > p.uploaded;
            if advance {
                p.uploaded = synced;
            }
            advance
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use common::retry::RetryPolicy;
    use common::storage::faulty::FaultyStorage;
    use common::storage::memory::MemoryStorage;
    use common::storage::Storage;

    use super::*;

    /// Repository durability: a partial upload that fails is retried although no more WAL
    /// arrives. A synchronous commit waits for that upload, so the primary writes nothing
    /// new; waiting for new WAL before retrying stalled commits for as long as the store had
    /// failed once (seen in the fault campaign: 3 commits in 20 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_partial_upload_is_retried_without_new_wal() {
        let spool = tempfile::tempdir().unwrap();
        let size = WalSegmentSize::DEFAULT;
        let seg = common::wal::synthetic::pgbench_like_segment(4, 100);
        std::fs::write(spool.path().join("000000010000000000000004.partial"), &seg).unwrap();
        let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let storage: Arc<dyn Storage> = faulty.clone();
        let repo = Repository::new(storage, "main", RetryPolicy::with_retries(0));
        let args = common::config::RepoArgs { repo: Some("/nonexistent".into()), ..Default::default() };
        let synced = Lsn(4 * size.bytes() + 8192);
        let positions = Arc::new(watch::channel(Positions { written: synced, synced, uploaded: Lsn(0) }).0);
        let setup = UploaderSetup {
            config: Config::resolve(&args).unwrap(),
            repo,
            dir: spool.path().to_path_buf(),
            timeline: TimelineId(1),
            seg_size: size,
            partial_interval: Duration::from_millis(20),
            durability: Durability::Repository,
            positions: positions.clone(),
            stop: Arc::new(watch::channel(StopReason::Running).0),
            fatal: Arc::new(Mutex::new(None)),
            metrics: Arc::new(ReceiveMetrics::default()),
        };
        faulty.fail_next(3);
        let uploader = Uploader::start(setup);
        // WAL was synced once (the commit's), and nothing more arrives.
        positions.send_modify(|p| p.synced = synced);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while positions.borrow().uploaded < synced {
            assert!(std::time::Instant::now() < deadline, "the failed upload was never tried again");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(faulty.calls() > 3, "tried again after the failures");
        uploader.finish().await;
    }
}
