//! Rebuilding the data directory from a stored backup: every chunk of every archive is
//! downloaded and decompressed a few ahead in parallel (each chunk is an independent codec
//! object, decompressed in one call into a reused buffer, its size and zstd checksum
//! verified), while one writer thread feeds the tar stream in order to an extractor that
//! writes files, directories and links under the destination and computes each file's
//! CRC-32C; at the end every file is checked against the backup's manifest (size and CRC-32C)
//! and the file systems are synced. The chunks' BLAKE3 digests are left to `basebackup
//! verify`: the zstd checksum and the manifest already check every byte a restore writes,
//! and a third pass over the data cost 10% of a restore's CPU.
//!
//! ```text
//! download+decompress tasks (AHEAD at once) --raw chunk, in order--> parser thread (tar, CRC-32C,
//!        ^                                                             |  creates files and dirs)
//!        '-- raw buffers, back once every piece of them is written     | pieces of files, in order
//!                                                                      v
//!                                   syncer thread (fdatasync) <-- writer thread (pwrite)
//! ```
//! The parser hands the writer references into the chunk (no copy). Copying bytes into the
//! page cache was the bottleneck of a restore (the writer thread busy 85% of the wall time in
//! the kernel's copy), so files of [`DIRECT_MIN`] bytes and more are written with `O_DIRECT`
//! from the chunk buffers, which are aligned for it ([`AlignedBuf`]): 3.2 GB in 2.1-2.7 s
//! where the page cache took 3.7-4.7 s and `dd conv=fsync` 1.5-2.4 s. Memory is bounded by
//! AHEAD chunks being decompressed and [`WRITE_QUEUE`] pieces waiting for the writer,
//! whatever the backup's size: the raw buffers go back to a pool and are reused, so a restore
//! allocates (and page-faults) only a few of them. Every [`SYNC_EVERY`] bytes of a file, the
//! syncer thread flushes that file's data to disk while extraction goes on, so the disk
//! writes from the start instead of only at the final sync.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use common::catalog::{self, ArchiveEntry, BackupEntry};
use common::codec::{self, AlignedBuf, ContentCheck};
use common::exit::{Failure, FailureKind};
use common::manifest::Manifest;
use common::repository::Repository;
use common::storage::ObjectKey;
use common::tar::{FileDigest, FileDigests, MemberKind, TarError, TarHeader, TarReader, TarVisitor};

use crate::progress::Counters;

/// Bytes written to a file after which the syncer thread flushes them to disk.
const SYNC_EVERY: u64 = 32 << 20;
/// Files whose last unsynced part is shorter than this are left to the final `syncfs`.
const SYNC_MIN: u64 = 1 << 20;
/// Flush requests that may wait for the syncer thread (the writer waits beyond them, so that
/// extraction runs at most this far ahead of the disk).
const SYNC_QUEUE: usize = 8;
/// Pieces of files that may wait for the writer thread (each holds its chunk's buffer).
const WRITE_QUEUE: usize = 2;

/// Files at least this large are written with `O_DIRECT` where the file system allows it.
const DIRECT_MIN: u64 = 1 << 20;

/// Raw chunk buffers, back from the writer once every piece of them is written.
type BufferPool = Arc<Mutex<Vec<AlignedBuf>>>;

/// A raw chunk shared by the pieces of files it holds; its buffer goes back to the pool when
/// the last piece is written.
struct Chunk {
    raw: AlignedBuf,
    pool: BufferPool,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let raw = std::mem::take(&mut self.raw);
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(raw);
    }
}

/// A file being restored: written through the page cache, or for its aligned parts with
/// `O_DIRECT` (straight from the chunk buffer to the disk, no copy into the page cache: the
/// copy was the writer thread's whole cost, and the data needs no caching, since recovery
/// replays full-page images over the pages it changes first).
struct OutFile {
    file: File,
    direct: Option<Direct>,
    /// A direct write was refused (`EINVAL`): the rest of the file goes through the page cache.
    direct_refused: std::sync::atomic::AtomicBool,
}

/// A second descriptor of the same file opened with `O_DIRECT`, and the alignments its file
/// system asks of such writes (`statx` `STATX_DIOALIGN`).
struct Direct {
    file: File,
    mem_align: usize,
    offset_align: u64,
}

impl OutFile {
    /// Opens the `O_DIRECT` descriptor of `path` (already created as `file`) when the file
    /// system supports it; otherwise every write goes through `file`.
    fn new(file: File, path: &Path, direct: bool) -> OutFile {
        let direct = direct.then(|| Direct::open(path)).flatten();
        OutFile { file, direct, direct_refused: Default::default() }
    }

    /// Writes `bytes` at `offset`: the aligned part directly, the rest (a file's unaligned
    /// end) through the page cache. Returns the bytes written directly.
    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::Ordering::Relaxed;
        let mut n = match &self.direct {
            Some(d) if !self.direct_refused.load(Relaxed) => d.aligned_len(bytes, offset),
            _ => 0,
        };
        if let (Some(d), true) = (&self.direct, n > 0) {
            match d.file.write_all_at(&bytes[..n], offset) {
                Ok(()) => {}
                // A file system that reports alignments it does not accept after all.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.direct_refused.store(true, Relaxed);
                    n = 0;
                }
                Err(e) => return Err(e),
            }
        }
        if n < bytes.len() {
            self.file.write_all_at(&bytes[n..], offset + n as u64)?;
        }
        Ok(n)
    }
}

impl Direct {
    fn open(path: &Path) -> Option<Direct> {
        use rustix::fs::{statx, AtFlags, OFlags, StatxFlags, CWD};
        let file = OpenOptions::new().write(true).custom_flags(OFlags::DIRECT.bits() as i32).open(path).ok()?;
        let st = statx(CWD, path, AtFlags::empty(), StatxFlags::DIOALIGN).ok()?;
        if st.stx_mask & StatxFlags::DIOALIGN.bits() == 0 || st.stx_dio_mem_align == 0 || st.stx_dio_offset_align == 0 {
            return None; // no direct I/O on this file system
        }
        Some(Direct { file, mem_align: st.stx_dio_mem_align as usize, offset_align: st.stx_dio_offset_align as u64 })
    }

    /// How many bytes at the start of `bytes` can be written directly at `offset`.
    fn aligned_len(&self, bytes: &[u8], offset: u64) -> usize {
        if !(bytes.as_ptr() as usize).is_multiple_of(self.mem_align) || !offset.is_multiple_of(self.offset_align) {
            return 0;
        }
        bytes.len() - bytes.len() % self.offset_align as usize
    }
}

/// What the parser asks of the writer thread, in stream order.
enum WriteOp {
    /// Write `chunk.raw[range]` at `offset` of `file`.
    Piece { file: Arc<OutFile>, offset: u64, chunk: Arc<Chunk>, range: std::ops::Range<usize> },
    /// Bytes not held by a chunk (never for file data read from a chunk; kept for safety).
    Owned { file: Arc<OutFile>, offset: u64, bytes: Vec<u8> },
    /// Flush what was written to `file` so far (handed to the syncer thread).
    Sync(Arc<OutFile>),
}

/// The writer thread: writes pieces in order, passes sync requests on once the writes before
/// them are done, and counts the bytes written in `progress`. Returns the bytes written with
/// `O_DIRECT`.
fn writer(rx: mpsc::Receiver<WriteOp>, syncer: &Syncer, root: &Path, progress: &Counters) -> Result<u64, String> {
    let io = |e: std::io::Error| format!("cannot write under {}: {e}", root.display());
    let mut direct = 0u64;
    for op in rx {
        direct += match op {
            WriteOp::Piece { file, offset, chunk, range } => {
                let n = file.write_at(&chunk.raw.as_slice()[range.clone()], offset).map_err(io)?;
                progress.add_bytes(range.len() as u64);
                n
            }
            WriteOp::Owned { file, offset, bytes } => {
                let n = file.write_at(&bytes, offset).map_err(io)?;
                progress.add_bytes(bytes.len() as u64);
                n
            }
            WriteOp::Sync(file) => {
                syncer.sync(file);
                0
            }
        } as u64;
    }
    Ok(direct)
}

/// Flushes file data to disk in a thread of its own while the writer goes on.
struct Syncer {
    tx: Option<mpsc::SyncSender<Arc<OutFile>>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Syncer {
    fn new(root: PathBuf) -> Syncer {
        let (tx, rx) = mpsc::sync_channel::<Arc<OutFile>>(SYNC_QUEUE);
        let thread = std::thread::spawn(move || {
            for f in rx {
                f.file.sync_data().map_err(|e| format!("cannot sync files under {}: {e}", root.display()))?;
            }
            Ok(())
        });
        Syncer { tx: Some(tx), thread: Some(thread) }
    }

    /// Queues `f` (its data written so far) for flushing. A syncer that stopped reports why
    /// in [`finish`](Self::finish).
    fn sync(&self, f: Arc<OutFile>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(f);
        }
    }

    /// Waits until everything queued is on disk.
    fn finish(&mut self) -> Result<(), String> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the sync thread panicked".into()),
            None => Ok(()),
        }
    }
}

fn corrupt(id: &str, msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Corrupt, format!("backup {id}: {msg}"))
}

fn local(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::LocalIo, msg)
}

/// What was written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extracted {
    /// Regular files written.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Chunks downloaded.
    pub chunks: u64,
    /// Bytes of file content written with `O_DIRECT` (not left in the page cache).
    pub direct_bytes: u64,
}

/// Downloads and decompresses the stored manifest of a backup, checking it against the
/// catalog entry.
pub async fn manifest(repo: &Repository, e: &BackupEntry) -> Result<Manifest, Failure> {
    let key = ObjectKey::new(catalog::manifest_key(repo.cluster(), &e.id))?;
    let obj = catalog::read_backup_object(repo, &key, &e.id, "the manifest").await?;
    let mut bytes = Vec::new();
    codec::decompress(&obj[..], &mut bytes).map_err(|err| corrupt(&e.id, format!("the manifest is damaged: {err}")))?;
    let m = Manifest::parse(&bytes).map_err(|err| corrupt(&e.id, err))?;
    if !m.checksum.eq_ignore_ascii_case(&e.manifest_checksum) {
        return Err(corrupt(&e.id, "the stored manifest does not match the catalog entry's checksum"));
    }
    Ok(m)
}

/// Restores every archive of `e` (the data directory into `data`, tablespace `oid` into
/// `tablespaces[oid]`), then checks every file against `manifest`. `ahead` chunks are in
/// flight at once (at least 1); `direct` writes large files with `O_DIRECT` where possible.
/// The bytes and files written are counted in `progress` as they are written.
#[allow(clippy::too_many_arguments)]
pub async fn extract(
    repo: &Repository,
    e: &BackupEntry,
    manifest: &Manifest,
    data: &Path,
    tablespaces: &BTreeMap<u32, PathBuf>,
    ahead: usize,
    direct: bool,
    progress: &Arc<Counters>,
) -> Result<Extracted, Failure> {
    let mut found = BTreeMap::new();
    let mut total = Extracted::default();
    for a in &e.archives {
        let dest = match a.tablespace_oid {
            None => data.to_path_buf(),
            Some(oid) => {
                tablespaces.get(&oid).cloned().ok_or_else(|| local(format!("no destination for tablespace {oid}")))?
            }
        };
        let (files, stats) = extract_archive(repo, &e.id, a, &dest, ahead.max(1), direct, progress).await?;
        let prefix = a.tablespace_oid.map(|o| format!("pg_tblspc/{o}/")).unwrap_or_default();
        for (path, d) in files {
            let mut p = prefix.clone().into_bytes();
            p.extend_from_slice(&path);
            found.insert(p, d);
        }
        total.files += stats.files;
        total.bytes += stats.bytes;
        total.chunks += stats.chunks;
        total.direct_bytes += stats.direct_bytes;
    }
    manifest
        .check_files(&found)
        .map_err(|err| corrupt(&e.id, format!("restored files do not match the manifest: {err}")))?;
    Ok(total)
}

async fn extract_archive(
    repo: &Repository,
    id: &str,
    a: &ArchiveEntry,
    dest: &Path,
    ahead: usize,
    direct: bool,
    progress: &Arc<Counters>,
) -> Result<(BTreeMap<Vec<u8>, FileDigest>, Extracted), Failure> {
    let keys: Vec<ObjectKey> = (0..a.chunks)
        .map(|n| ObjectKey::new(catalog::chunk_key(repo.cluster(), id, &a.name, n)))
        .collect::<Result<_, _>>()?;
    let (tx, rx) = mpsc::sync_channel::<AlignedBuf>(1);
    let pool = BufferPool::default();
    let dest_owned = dest.to_path_buf();
    let returned = pool.clone();
    let (counted, files_counted) = (progress.clone(), progress.clone());
    let writer = std::thread::spawn(move || -> Result<(Extractor, TarReader), TarError> {
        let (writes, queue) = mpsc::sync_channel::<WriteOp>(WRITE_QUEUE);
        let root = dest_owned.clone();
        let write_thread = std::thread::spawn(move || {
            let mut syncer = Syncer::new(root.clone());
            let written = writer(queue, &syncer, &root, &counted);
            let synced = syncer.finish();
            written.and_then(|direct| synced.map(|()| direct))
        });
        let mut x = Extractor::new(dest_owned, writes, direct, files_counted);
        let mut reader = TarReader::new();
        let mut fed = Ok(());
        for raw in rx {
            let chunk = Arc::new(Chunk { raw, pool: returned.clone() });
            x.chunk = Some(chunk.clone());
            fed = reader.feed(chunk.raw.as_slice(), &mut x);
            x.chunk = None;
            if fed.is_err() {
                break;
            }
        }
        x.writes = None;
        // A write error comes first: the parser's own error then only says the writer stopped.
        x.direct_bytes =
            write_thread.join().unwrap_or_else(|_| Err("the writer thread panicked".into())).map_err(visitor_error)?;
        fed?;
        Ok((x, reader))
    });

    let mut pending: VecDeque<tokio::task::JoinHandle<Result<AlignedBuf, Failure>>> = VecDeque::new();
    let mut next = 0;
    let mut stats = Extracted::default();
    let mut raw_total = 0u64;
    let mut failure = None;
    for n in 0..keys.len() {
        while next < keys.len() && next < n + ahead {
            let (r, k, i, pool) = (repo.clone(), keys[next].clone(), id.to_string(), pool.clone());
            let expected = format!("{id}/{}/{next:06}", a.name);
            let what = format!("archive {} chunk {next:06}", a.name);
            pending.push_back(tokio::spawn(async move {
                let obj = catalog::read_backup_object(&r, &k, &i, &what).await?;
                tokio::task::spawn_blocking(move || {
                    let mut raw = pool.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
                    let h = codec::decompress_in_memory(&obj, &mut raw, ContentCheck::FrameChecksum)
                        .map_err(|err| corrupt(&i, format!("{what} ({k}) is damaged: {err}")))?;
                    if h.name != expected {
                        return Err(corrupt(&i, format!("{what} ({k}) holds {:?}, not {expected:?}", h.name)));
                    }
                    Ok(raw)
                })
                .await
                .map_err(|err| local(format!("decompression task failed: {err}")))?
            }));
            next += 1;
        }
        let chunk = match pending.pop_front() {
            Some(t) => t.await.map_err(|err| local(format!("download task failed: {err}"))).and_then(|r| r),
            None => Err(local("download queue empty")),
        };
        match chunk {
            Ok(raw) => {
                raw_total += raw.as_slice().len() as u64;
                stats.chunks += 1;
                if tx.send(raw).is_err() {
                    break; // the writer stopped: its error is reported below
                }
            }
            Err(f) => {
                failure = Some(f);
                break;
            }
        }
    }
    for t in pending {
        t.abort();
    }
    drop(tx);
    let written = writer.join().map_err(|_| local("the extraction thread panicked"))?;
    if let Some(f) = failure {
        return Err(f);
    }
    let (x, reader) = match written {
        Ok(v) => v,
        Err(TarError::Visitor(msg)) => return Err(local(msg)),
        Err(err) => return Err(corrupt(id, format!("archive {}: {err}", a.name))),
    };
    reader.finish().map_err(|err| corrupt(id, format!("archive {}: {err}", a.name)))?;
    if raw_total != a.raw_bytes {
        return Err(corrupt(
            id,
            format!("archive {}: its chunks hold {raw_total} bytes, the catalog entry records {}", a.name, a.raw_bytes),
        ));
    }
    stats.files = x.digests.files.len() as u64;
    stats.bytes = x.bytes;
    stats.direct_bytes = x.direct_bytes;
    Ok((x.digests.files, stats))
}

/// The tar visitor that creates members under `root` and hands file data to the writer.
struct Extractor {
    root: PathBuf,
    digests: FileDigests,
    /// The file being extracted, and how many of its bytes were handed to the writer.
    file: Option<(Arc<OutFile>, u64)>,
    /// Bytes of the current file since it was last queued for syncing.
    unsynced: u64,
    /// The chunk being parsed (file data is a piece of it).
    chunk: Option<Arc<Chunk>>,
    writes: Option<mpsc::SyncSender<WriteOp>>,
    bytes: u64,
    /// Write files of [`DIRECT_MIN`] bytes and more with `O_DIRECT` where possible.
    direct: bool,
    /// Bytes the writer wrote with `O_DIRECT` (known once it finished).
    direct_bytes: u64,
    /// Counts the files extracted.
    progress: Arc<Counters>,
}

fn visitor_error(msg: String) -> TarError {
    TarError::Visitor(msg)
}

impl Extractor {
    fn new(root: PathBuf, writes: mpsc::SyncSender<WriteOp>, direct: bool, progress: Arc<Counters>) -> Extractor {
        Extractor {
            root,
            digests: FileDigests::new(),
            file: None,
            unsynced: 0,
            chunk: None,
            writes: Some(writes),
            bytes: 0,
            direct,
            direct_bytes: 0,
            progress,
        }
    }

    fn send(&self, op: WriteOp) -> Result<(), TarError> {
        let stopped = || visitor_error("the writer thread stopped".into());
        self.writes.as_ref().ok_or_else(stopped)?.send(op).map_err(|_| stopped())
    }

    /// `root/path`, refusing absolute paths and `..`.
    fn dest(&self, h: &TarHeader) -> Result<PathBuf, TarError> {
        let text = String::from_utf8(h.path.clone())
            .map_err(|_| visitor_error(format!("member name {:?} is not UTF-8", h.path_lossy())))?;
        let rel = Path::new(text.trim_end_matches('/'));
        if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(visitor_error(format!("refusing member {text:?}: absolute or parent path")));
        }
        Ok(self.root.join(rel))
    }
}

impl TarVisitor for Extractor {
    fn start(&mut self, h: &TarHeader) -> Result<(), TarError> {
        let path = self.dest(h)?;
        let io = |what: &str, e: std::io::Error| visitor_error(format!("cannot {what} {}: {e}", path.display()));
        match &h.kind {
            MemberKind::Directory => {
                fs::create_dir_all(&path).map_err(|e| io("create directory", e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod", e))?;
            }
            MemberKind::File => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| io("create the directory of", e))?;
                }
                let mode = if h.mode & 0o777 == 0 { 0o600 } else { h.mode & 0o700 };
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .open(&path)
                    .map_err(|e| io("create", e))?;
                self.file = Some((Arc::new(OutFile::new(f, &path, self.direct && h.size >= DIRECT_MIN)), 0));
                self.unsynced = 0;
            }
            MemberKind::Symlink => {
                let target = String::from_utf8_lossy(&h.link_name).into_owned();
                std::os::unix::fs::symlink(&target, &path).map_err(|e| io("create symlink", e))?;
            }
            MemberKind::HardLink | MemberKind::Other(_) => {
                return Err(visitor_error(format!(
                    "unexpected {:?} member {} in a PostgreSQL backup",
                    h.kind,
                    h.path_lossy()
                )));
            }
        }
        self.digests.start(h)
    }

    fn data(&mut self, data: &[u8]) -> Result<(), TarError> {
        if let Some((file, offset)) = &self.file {
            // Where `data` lies in the chunk being parsed (the tar reader passes file data as
            // pieces of its input).
            let piece = self.chunk.as_ref().and_then(|c| {
                let raw = c.raw.as_slice();
                let start = (data.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
                (start + data.len() <= raw.len()).then(|| (c.clone(), start..start + data.len()))
            });
            let (file, offset) = (file.clone(), *offset);
            self.send(match piece {
                Some((chunk, range)) => WriteOp::Piece { file: file.clone(), offset, chunk, range },
                None => WriteOp::Owned { file: file.clone(), offset, bytes: data.to_vec() },
            })?;
            let n = data.len() as u64;
            self.file = Some((file.clone(), offset + n));
            self.bytes += n;
            self.unsynced += n;
            if self.unsynced >= SYNC_EVERY {
                self.send(WriteOp::Sync(file))?;
                self.unsynced = 0;
            }
        }
        self.digests.data(data)
    }

    fn end(&mut self) -> Result<(), TarError> {
        if let Some((file, _)) = self.file.take() {
            if self.unsynced >= SYNC_MIN {
                self.send(WriteOp::Sync(file))?;
            }
            self.progress.add_file();
        }
        self.digests.end()
    }
}

/// Flushes everything written under `dir` to stable storage (`syncfs` of its file system).
pub fn sync_filesystem(dir: &Path) -> Result<(), Failure> {
    let f = File::open(dir).map_err(|e| local(format!("cannot open {} to sync it: {e}", dir.display())))?;
    rustix::fs::syncfs(&f).map_err(|e| local(format!("cannot sync the file system of {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use common::codec::CompressOptions;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{Body, PutMode, Storage};
    use common::tar::testing::file as tar_file;

    const ID: &str = "20261202T120000Z";

    /// Stores `tar` as `base.tar` of backup [`ID`] in chunks of `chunk` bytes.
    async fn store(repo: &Repository, tar: &[u8], chunk: usize) -> ArchiveEntry {
        let mut n = 0;
        for piece in tar.chunks(chunk) {
            let mut out = std::io::Cursor::new(Vec::new());
            let name = format!("{ID}/base.tar/{n:06}");
            codec::compress(piece, &mut std::io::empty(), &mut out, &name, None, CompressOptions::default()).unwrap();
            let key = ObjectKey::new(catalog::chunk_key(repo.cluster(), ID, "base.tar", n)).unwrap();
            repo.storage().put(&key, Body::Bytes(Bytes::from(out.into_inner())), PutMode::CreateNew).await.unwrap();
            n += 1;
        }
        ArchiveEntry {
            name: "base.tar".into(),
            tablespace_oid: None,
            tablespace_path: None,
            chunks: n,
            raw_bytes: tar.len() as u64,
            stored_bytes: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_spanning_chunks_are_written_whole_and_digested() {
        let noise = |n: u32| -> Vec<u8> { (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect() };
        let big = noise(200_000);
        // Over DIRECT_MIN and not a multiple of 512: its end goes through the page cache.
        let large = noise((DIRECT_MIN + 8192 + 100) as u32);
        let mut tar = Vec::new();
        tar_file(&mut tar, "PG_VERSION", b"15\n");
        tar_file(&mut tar, "base/5/16396", &big);
        tar_file(&mut tar, "base/5/16397", &large);
        tar_file(&mut tar, "base/5/empty", b"");
        tar_file(&mut tar, "global/pg_control", &[7u8; 8192]);
        tar.extend_from_slice(&[0u8; 1024]);
        // Headers and file data cross chunk boundaries everywhere; with 7 KiB chunks the
        // pieces of the large file are aligned for O_DIRECT, with 7000-byte ones most are not.
        for (chunk, direct) in [(7 << 10, true), (7000, true), (7 << 10, false)] {
            let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
            let repo = Repository::new(storage, "main", RetryPolicy::with_retries(0));
            let a = store(&repo, &tar, chunk).await;
            let dir = tempfile::tempdir().unwrap();
            let progress = Arc::new(Counters::default());
            let (files, stats) = extract_archive(&repo, ID, &a, dir.path(), 3, direct, &progress).await.unwrap();
            let counted = progress.snapshot();
            assert_eq!((counted.bytes, counted.files), (stats.bytes, stats.files), "progress counts what was written");
            assert_eq!(fs::read(dir.path().join("base/5/16396")).unwrap(), big);
            assert!(fs::read(dir.path().join("base/5/16397")).unwrap() == large, "chunk {chunk} direct {direct}");
            assert_eq!(fs::read(dir.path().join("PG_VERSION")).unwrap(), b"15\n");
            assert_eq!(fs::read(dir.path().join("base/5/empty")).unwrap(), b"");
            assert_eq!(fs::read(dir.path().join("global/pg_control")).unwrap(), vec![7u8; 8192]);
            assert_eq!(
                files[&b"base/5/16396".to_vec()],
                FileDigest { size: big.len() as u64, crc32c: crc32c::crc32c(&big) }
            );
            assert_eq!(
                (stats.files, stats.bytes, stats.chunks),
                (5, (3 + big.len() + large.len() + 8192) as u64, a.chunks as u64)
            );
            // Only the large file's aligned pieces go direct (where the file system can).
            assert!(stats.direct_bytes < large.len() as u64);
            let probe = dir.path().join("probe");
            File::create(&probe).unwrap();
            let can = Direct::open(&probe).is_some();
            if !direct || !can {
                assert_eq!(stats.direct_bytes, 0);
            } else if chunk == 7 << 10 {
                assert!(stats.direct_bytes >= DIRECT_MIN, "{}", stats.direct_bytes);
            }
        }
    }

    #[test]
    fn direct_writes_take_the_aligned_part_and_leave_the_rest_to_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let out = OutFile::new(file, &path, true);
        let Some(d) = &out.direct else {
            // This file system has no O_DIRECT (e.g. an old tmpfs): everything is buffered.
            out.write_at(b"abc", 0).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"abc");
            return;
        };
        let data: Vec<u8> = (0..3 * 4096 + 700).map(|i| (i % 251) as u8).collect();
        let mut obj = std::io::Cursor::new(Vec::new());
        codec::compress(&data[..], &mut std::io::empty(), &mut obj, "x", None, CompressOptions::default()).unwrap();
        let mut buf = AlignedBuf::default();
        codec::decompress_in_memory(obj.get_ref(), &mut buf, ContentCheck::Digest).unwrap();
        let data = buf.as_slice();
        let align = d.offset_align as usize;
        assert_eq!(d.aligned_len(data, 0), data.len() - data.len() % align);
        assert_eq!(d.aligned_len(&data[1..], 0), 0, "unaligned memory");
        assert_eq!(d.aligned_len(data, 1), 0, "unaligned offset");
        assert_eq!(out.write_at(&data[..2 * 4096], 0).unwrap(), 2 * 4096);
        let rest = data.len() - 2 * 4096;
        assert_eq!(out.write_at(&data[2 * 4096..], 2 * 4096).unwrap(), rest - rest % align);
        assert!(fs::read(&path).unwrap() == data);

        // Alignments the file system does not accept: the write goes through the page cache.
        let path = dir.path().join("g");
        let mut out = OutFile::new(File::create(&path).unwrap(), &path, true);
        if let Some(d) = &mut out.direct {
            (d.mem_align, d.offset_align) = (1, 1);
        }
        assert_eq!(out.write_at(&data[1..], 1).unwrap(), 0);
        assert_eq!(out.direct_refused.load(std::sync::atomic::Ordering::Relaxed), out.direct.is_some());
        assert_eq!(out.write_at(&data[..1], 0).unwrap(), 0, "the rest of the file is buffered");
        assert!(fs::read(&path).unwrap() == data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_that_cannot_be_created_fails_the_restore() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let repo = Repository::new(storage, "main", RetryPolicy::with_retries(0));
        let mut tar = Vec::new();
        tar_file(&mut tar, "base/5/1", &[1u8; 20_000]);
        tar_file(&mut tar, "base/5/2", &[2u8; 20_000]);
        tar.extend_from_slice(&[0u8; 1024]);
        let a = store(&repo, &tar, 4096).await;
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("base/5/2")).unwrap();
        let e = extract_archive(&repo, ID, &a, dir.path(), 2, true, &Default::default()).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::LocalIo, "{e}");
        assert!(e.to_string().contains("cannot create") && e.to_string().contains("base/5/2"), "{e}");
    }
}
