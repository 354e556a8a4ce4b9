//! The streaming path from BASE_BACKUP's archives to chunk objects in the repository.
//!
//! ```text
//! socket reader (async) --Feed--> chunker thread --chunk--> upload tasks (async, parallel)
//!      bounded channel             tar parse, CRC-32C,        byte budget + slot limit,
//!                                  zstd (codec::compress)     PutMode::CreateNew + retry
//! ```
//! The chunker cuts each archive's tar stream into chunks of [`ChunkOptions::chunk_size`] raw
//! bytes, each compressed as one codec object while the bytes arrive (nothing is staged on
//! disk) and named `<id>/<archive>/<NNNNNN>` in its header. It parses the tar headers in the
//! same pass and records every file's size and CRC-32C. Memory is bounded whatever the backup
//! size: the channel holds a few MiB, one chunk is being compressed, and compressed chunks
//! waiting for or in upload hold at most [`ChunkOptions::memory_budget`] bytes.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::catalog::{chunk_key, ArchiveEntry};
use common::codec::{self, CompressOptions, ObjectHeader};
use common::exit::{Failure, FailureKind};
use common::repository::{Repository, RepositoryError};
use common::retry::retry;
use common::storage::{Body, ObjectKey, PutMode, StorageError};
use common::tar::{FileDigest, FileDigests, TarError, TarReader};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// Tuning of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    /// Raw (uncompressed tar) bytes per chunk.
    pub chunk_size: usize,
    /// zstd level and worker threads for each chunk.
    pub compress: CompressOptions,
    /// Chunks uploading at once.
    pub uploads: usize,
    /// Compressed bytes that may wait for or be in upload at once.
    pub memory_budget: usize,
}

impl ChunkOptions {
    /// 16 MiB chunks, 6 parallel uploads, 32 MiB of compressed chunks in flight (two
    /// incompressible chunks, or many that compress well). Measured on incompressible data with
    /// two zstd workers: peak RSS about 100 MiB (32 MiB chunks doubled it, through zstd's job
    /// buffers and allocator fragmentation, for no gain in throughput).
    pub fn new(compress: CompressOptions) -> Self {
        ChunkOptions { chunk_size: 16 << 20, compress, uploads: 6, memory_budget: 32 << 20 }
    }
}

/// What the socket reader hands to the chunker.
#[derive(Debug)]
pub enum Feed {
    /// A new archive starts.
    Archive {
        /// `base.tar` or `<oid>.tar`.
        name: String,
        /// Tablespace oid (`None` for the main data directory).
        tablespace_oid: Option<u32>,
        /// Tablespace location on the server.
        tablespace_path: Option<String>,
    },
    /// Bytes of the current archive.
    Data(Bytes),
}

/// Counters for progress reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// Raw bytes compressed so far.
    pub raw: AtomicU64,
    /// Compressed bytes stored so far.
    pub stored: AtomicU64,
    /// Chunks stored so far.
    pub chunks: AtomicU64,
}

/// What the pipeline produced.
#[derive(Debug)]
pub struct Output {
    /// The archives, in the order the server sent them.
    pub archives: Vec<ArchiveEntry>,
    /// Every regular file with its size and CRC-32C, by manifest path (tablespace files
    /// under `pg_tblspc/<oid>/`).
    pub files: BTreeMap<Vec<u8>, FileDigest>,
    /// Every object stored.
    pub keys: Vec<ObjectKey>,
}

/// What the chunker thread returns: the archives and every file's digest by manifest path.
type Chunked = (Vec<ArchiveEntry>, BTreeMap<Vec<u8>, FileDigest>);

/// State shared by the chunker thread and the upload tasks.
#[derive(Debug)]
struct Shared {
    repo: Repository,
    budget: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    budget_units: u32,
    failure: Mutex<Option<Failure>>,
    failed: AtomicBool,
    aborted: AtomicBool,
    stored_keys: Arc<Mutex<Vec<ObjectKey>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

impl Shared {
    fn fail(&self, f: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(f);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn take_failure(&self) -> Option<Failure> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The running pipeline; feed it with [`Pipeline::send`], end it with [`Pipeline::finish`] or
/// [`Pipeline::abort`].
#[derive(Debug)]
pub struct Pipeline {
    tx: Option<mpsc::Sender<Feed>>,
    worker: Option<JoinHandle<Result<Chunked, Failure>>>,
    shared: Arc<Shared>,
}

/// Budget unit: 64 KiB.
const UNIT: usize = 64 << 10;

impl Pipeline {
    /// Starts the chunker thread for backup `id` of `repo`. Must be called inside a tokio
    /// runtime with blocking threads.
    pub fn start(repo: Repository, id: &str, opts: ChunkOptions, stats: Arc<Stats>) -> Pipeline {
        let budget_units = (opts.memory_budget / UNIT).max(1) as u32;
        let shared = Arc::new(Shared {
            repo,
            budget: Arc::new(Semaphore::new(budget_units as usize)),
            slots: Arc::new(Semaphore::new(opts.uploads.max(1))),
            budget_units,
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            stored_keys: Arc::default(),
            tasks: Mutex::new(Vec::new()),
            stats,
        });
        // A few MiB of CopyData messages (the server sends at most 32 KiB in each).
        let (tx, rx) = mpsc::channel(64);
        let handle = tokio::runtime::Handle::current();
        let sh = shared.clone();
        let id = id.to_string();
        let worker = tokio::task::spawn_blocking(move || chunker(rx, handle, sh, &id, opts));
        Pipeline { tx: Some(tx), worker: Some(worker), shared }
    }

    /// The objects stored so far (complete once `finish` or `abort` returned, whatever the
    /// outcome).
    pub fn stored_keys(&self) -> Arc<Mutex<Vec<ObjectKey>>> {
        self.shared.stored_keys.clone()
    }

    /// Hands the next piece of the stream to the chunker; fails when the pipeline did.
    pub async fn send(&mut self, feed: Feed) -> Result<(), Failure> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(self.failure().await);
        }
        let tx = self.tx.as_ref().ok_or_else(|| Failure::msg(FailureKind::LocalIo, "pipeline already ended"))?;
        if tx.send(feed).await.is_err() {
            return Err(self.failure().await);
        }
        Ok(())
    }

    async fn failure(&mut self) -> Failure {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            match w.await {
                Ok(Err(f)) => self.shared.fail(f),
                Err(e) => self.shared.fail(Failure::msg(FailureKind::LocalIo, format!("chunker thread failed: {e}"))),
                Ok(Ok(_)) => {}
            }
        }
        self.shared
            .take_failure()
            .unwrap_or_else(|| Failure::msg(FailureKind::LocalIo, "the chunk pipeline stopped unexpectedly"))
    }

    async fn wait_uploads(&self) {
        loop {
            let tasks: Vec<_> = std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                if let Err(e) = t.await {
                    self.shared.fail(Failure::msg(FailureKind::LocalIo, format!("upload task failed: {e}")));
                }
            }
        }
    }

    /// Ends the stream: waits for the last chunk and every upload.
    pub async fn finish(mut self) -> Result<Output, Failure> {
        self.tx = None;
        let worker = self.worker.take();
        let result = match worker {
            Some(w) => w.await.map_err(|e| Failure::msg(FailureKind::LocalIo, format!("chunker thread failed: {e}"))),
            None => Err(Failure::msg(FailureKind::LocalIo, "pipeline already ended")),
        };
        self.wait_uploads().await;
        let (archives, files) = match result {
            Ok(Ok(v)) => v,
            Ok(Err(f)) | Err(f) => return Err(self.shared.take_failure().unwrap_or(f)),
        };
        if let Some(f) = self.shared.take_failure() {
            return Err(f);
        }
        let keys = self.shared.stored_keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Output { archives, files, keys })
    }

    /// Stops everything after a failure elsewhere; returns the objects stored so far (for
    /// removal).
    pub async fn abort(mut self) -> Vec<ObjectKey> {
        self.shared.aborted.store(true, Ordering::SeqCst);
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.await;
        }
        self.wait_uploads().await;
        std::mem::take(&mut *self.shared.stored_keys.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One archive's stream as the chunker reads it from the channel.
struct ArchiveStream<'a> {
    rx: &'a mut mpsc::Receiver<Feed>,
    carry: Bytes,
    ended: bool,
    next: Option<Feed>,
    tar: TarReader,
    digests: FileDigests,
    tar_error: Option<TarError>,
}

impl ArchiveStream<'_> {
    /// Whether more bytes of this archive follow (waits for them).
    fn has_more(&mut self) -> bool {
        while self.carry.is_empty() && !self.ended {
            match self.rx.blocking_recv() {
                Some(Feed::Data(b)) => self.carry = b,
                other => {
                    self.next = other;
                    self.ended = true;
                }
            }
        }
        !self.carry.is_empty()
    }
}

/// A `Read` over at most `limit` bytes of an archive stream: what one chunk holds.
struct ChunkSource<'a, 'b> {
    stream: &'a mut ArchiveStream<'b>,
    left: usize,
}

impl Read for ChunkSource<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() || !self.stream.has_more() {
            return Ok(0);
        }
        let s = &mut *self.stream;
        let n = buf.len().min(self.left).min(s.carry.len());
        let piece = s.carry.split_to(n);
        if let Err(e) = s.tar.feed(&piece, &mut s.digests) {
            s.tar_error = Some(e);
            return Err(io::Error::other("malformed tar stream"));
        }
        buf[..n].copy_from_slice(&piece);
        self.left -= n;
        Ok(n)
    }
}

/// The chunker thread: archives in, compressed chunks out to upload tasks.
fn chunker(
    mut rx: mpsc::Receiver<Feed>,
    handle: tokio::runtime::Handle,
    shared: Arc<Shared>,
    id: &str,
    opts: ChunkOptions,
) -> Result<Chunked, Failure> {
    let mut archives = Vec::new();
    let mut files = BTreeMap::new();
    let mut next = rx.blocking_recv();
    while let Some(feed) = next.take() {
        let Feed::Archive { name, tablespace_oid, tablespace_path } = feed else {
            return Err(Failure::msg(FailureKind::Server, "the server sent backup data before naming an archive"));
        };
        let mut stream = ArchiveStream {
            rx: &mut rx,
            carry: Bytes::new(),
            ended: false,
            next: None,
            tar: TarReader::new(),
            digests: FileDigests::new(),
            tar_error: None,
        };
        let mut entry = ArchiveEntry {
            name: name.clone(),
            tablespace_oid,
            tablespace_path,
            chunks: 0,
            raw_bytes: 0,
            stored_bytes: 0,
        };
        while stream.has_more() {
            if shared.failed.load(Ordering::SeqCst) || shared.aborted.load(Ordering::SeqCst) {
                return Err(shared.take_failure().unwrap_or_else(|| Failure::msg(FailureKind::LocalIo, "aborted")));
            }
            let object_name = format!("{id}/{name}/{:06}", entry.chunks);
            let mut out = Cursor::new(Vec::with_capacity(opts.chunk_size / 4));
            let mut src = ChunkSource { stream: &mut stream, left: opts.chunk_size };
            let header = match codec::compress(&[], &mut src, &mut out, &object_name, None, opts.compress) {
                Ok(h) => h,
                Err(_) if stream.tar_error.is_some() => {
                    let e = stream.tar_error.take().map(|e| e.to_string()).unwrap_or_default();
                    return Err(Failure::msg(
                        FailureKind::Corrupt,
                        format!("the server's tar stream {name} is malformed: {e}; nothing was recorded"),
                    ));
                }
                Err(e) => return Err(Failure::msg(FailureKind::LocalIo, format!("compressing {object_name}: {e}"))),
            };
            let mut body = out.into_inner();
            body.shrink_to_fit();
            let key = ObjectKey::new(chunk_key(shared.repo.cluster(), id, &name, entry.chunks))
                .map_err(|e| Failure::msg(FailureKind::Server, format!("archive name {name:?}: {e}")))?;
            entry.chunks += 1;
            entry.raw_bytes += header.raw_size;
            entry.stored_bytes += body.len() as u64;
            shared.stats.raw.fetch_add(header.raw_size, Ordering::Relaxed);
            submit(&handle, &shared, key, Bytes::from(body), header)?;
        }
        stream.tar.finish().map_err(|e| {
            Failure::msg(FailureKind::Corrupt, format!("the server's tar stream {name} is malformed: {e}"))
        })?;
        let prefix = tablespace_oid.map(|o| format!("pg_tblspc/{o}/")).unwrap_or_default();
        for (path, d) in std::mem::take(&mut stream.digests.files) {
            let mut p = prefix.clone().into_bytes();
            p.extend_from_slice(&path);
            files.insert(p, d);
        }
        next = stream.next.take();
        archives.push(entry);
    }
    Ok((archives, files))
}

/// Waits for budget and an upload slot, then starts the upload of one chunk.
fn submit(
    handle: &tokio::runtime::Handle,
    shared: &Arc<Shared>,
    key: ObjectKey,
    body: Bytes,
    header: ObjectHeader,
) -> Result<(), Failure> {
    let units = (body.len().div_ceil(UNIT) as u32).clamp(1, shared.budget_units);
    let (budget, slot) = handle.block_on(async {
        let b = shared.budget.clone().acquire_many_owned(units).await;
        let s = shared.slots.clone().acquire_owned().await;
        (b, s)
    });
    let (Ok(budget), Ok(slot)) = (budget, slot) else {
        return Err(Failure::msg(FailureKind::LocalIo, "upload limiter closed"));
    };
    let sh = shared.clone();
    let task = handle.spawn(async move {
        let _permits = (budget, slot);
        if sh.failed.load(Ordering::SeqCst) || sh.aborted.load(Ordering::SeqCst) {
            return;
        }
        let size = body.len() as u64;
        match put_chunk(&sh.repo, &key, body, &header).await {
            Ok(()) => {
                sh.stats.stored.fetch_add(size, Ordering::Relaxed);
                sh.stats.chunks.fetch_add(1, Ordering::Relaxed);
                sh.stored_keys.lock().unwrap_or_else(|p| p.into_inner()).push(key);
            }
            Err(f) => sh.fail(f),
        }
    });
    shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    Ok(())
}

/// Stores one object create-if-absent; an existing object with the same content (a retried
/// request that had succeeded) counts as stored.
pub async fn put_chunk(repo: &Repository, key: &ObjectKey, body: Bytes, header: &ObjectHeader) -> Result<(), Failure> {
    let storage = repo.storage();
    let put = retry(repo.retry_policy(), "store backup object", || {
        storage.put(key, Body::Bytes(body.clone()), PutMode::CreateNew)
    })
    .await;
    match put {
        Ok(()) => Ok(()),
        Err(StorageError::AlreadyExists { .. }) => match repo.object_header(key).await {
            Ok(Some(h)) if h == *header => Ok(()),
            Ok(None) => Err(Failure::msg(FailureKind::Storage, format!("{key} exists but cannot be read"))),
            Err(RepositoryError::Storage(e)) => Err(e.into()),
            _ => Err(Failure::msg(
                FailureKind::Conflict,
                format!("{key} already exists in the repository with other content; refusing to overwrite it"),
            )),
        },
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{read_all, Storage};

    pub(crate) fn member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000600\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn archive(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut t = Vec::new();
        for (n, d) in files {
            member(&mut t, n, d);
        }
        t.extend_from_slice(&[0u8; 1024]);
        t
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_concatenate_to_the_stream_and_files_are_digested() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let repo = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let noise: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let base = archive(&[("PG_VERSION", b"15\n".to_vec()), ("base/1/1259", noise.clone())]);
        let ts = archive(&[("PG_15_1/5/16390", vec![3u8; 70_000])]);
        let opts = ChunkOptions {
            chunk_size: 64 << 10,
            compress: CompressOptions { level: 1, workers: 0 },
            uploads: 3,
            memory_budget: 128 << 10,
        };
        let stats = Arc::new(Stats::default());
        let mut p = Pipeline::start(repo.clone(), "20261122T075600Z", opts, stats.clone());
        let archives = [("16389.tar", Some(16389), &ts), ("base.tar", None, &base)];
        for (name, oid, data) in archives {
            p.send(Feed::Archive {
                name: name.into(),
                tablespace_oid: oid,
                tablespace_path: oid.map(|_| "/ts".into()),
            })
            .await
            .unwrap();
            for piece in data.chunks(7_000) {
                p.send(Feed::Data(Bytes::copy_from_slice(piece))).await.unwrap();
            }
        }
        let out = p.finish().await.unwrap();
        assert_eq!(out.archives.len(), 2);
        assert_eq!(out.archives[1].name, "base.tar");
        assert_eq!(out.archives[1].raw_bytes, base.len() as u64);
        assert_eq!(out.archives[1].chunks as usize, base.len().div_ceil(64 << 10));
        assert_eq!(out.keys.len(), (out.archives[0].chunks + out.archives[1].chunks) as usize);
        assert_eq!(out.files[&b"base/1/1259".to_vec()].crc32c, crc32c::crc32c(&noise));
        assert!(out.files.contains_key(b"pg_tblspc/16389/PG_15_1/5/16390".as_slice()));
        assert_eq!(stats.raw.load(Ordering::Relaxed), (base.len() + ts.len()) as u64);

        let mut back = Vec::new();
        for n in 0..out.archives[1].chunks {
            let key = ObjectKey::new(chunk_key("main", "20261122T075600Z", "base.tar", n)).unwrap();
            let obj = read_all(storage.as_ref(), &key).await.unwrap();
            let h = codec::decompress(&obj[..], &mut back).unwrap();
            assert_eq!(h.name, format!("20261122T075600Z/base.tar/{n:06}"));
        }
        assert_eq!(back, base);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_stream_fails_and_existing_objects_are_not_overwritten() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let repo = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let opts = ChunkOptions::new(CompressOptions { level: 1, workers: 0 });
        let mut p = Pipeline::start(repo.clone(), "20261122T075600Z", opts, Arc::default());
        p.send(Feed::Archive { name: "base.tar".into(), tablespace_oid: None, tablespace_path: None }).await.unwrap();
        p.send(Feed::Data(Bytes::from(vec![1u8; 5000]))).await.unwrap();
        let e = p.finish().await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Corrupt);
        assert!(e.to_string().contains("base.tar is malformed"), "{e}");

        // Another backup's object under the same key is never replaced.
        let key = ObjectKey::new(chunk_key("main", "20261122T075600Z", "base.tar", 0)).unwrap();
        storage.put(&key, Body::Bytes(Bytes::from_static(b"other")), PutMode::CreateNew).await.unwrap();
        let mut p = Pipeline::start(repo.clone(), "20261122T075600Z", opts, Arc::default());
        p.send(Feed::Archive { name: "base.tar".into(), tablespace_oid: None, tablespace_path: None }).await.unwrap();
        p.send(Feed::Data(Bytes::from(archive(&[("a", b"1".to_vec())])))).await.unwrap();
        let e = p.finish().await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Conflict, "{e}");
        assert_eq!(&read_all(storage.as_ref(), &key).await.unwrap()[..], b"other");
    }
}
