//! Rebuilding the data directory from a stored backup: every chunk of every archive is
//! downloaded and decompressed a few ahead in parallel (each chunk is an independent codec
//! object, verified against its digest), while one writer thread feeds the tar stream in
//! order to an extractor that writes files, directories and links under the destination and
//! computes each file's CRC-32C; at the end the files are checked against the backup's
//! manifest and the file systems are synced.
//!
//! ```text
//! download+decompress tasks (AHEAD at once) --raw chunk, in order--> writer thread (tar -> files)
//!        ^------------------------- emptied raw buffers -------------------'   |
//!                                                          syncer thread <-----' (fdatasync)
//! ```
//! Memory is bounded by AHEAD chunks (compressed and raw), whatever the backup's size: the raw
//! buffers, sized from each chunk's header, go back to a pool once extracted and are reused,
//! so a restore allocates (and page-faults) only a few of them. Every [`SYNC_EVERY`] bytes of
//! a file, the syncer thread flushes that file's data to disk while extraction goes on, so the
//! disk writes from the start instead of only at the final sync.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use common::catalog::{self, ArchiveEntry, BackupEntry};
use common::codec;
use common::exit::{Failure, FailureKind};
use common::manifest::Manifest;
use common::repository::Repository;
use common::storage::ObjectKey;
use common::tar::{FileDigest, FileDigests, MemberKind, TarError, TarHeader, TarReader, TarVisitor};

/// Output buffer of each file being written.
const WRITE_BUFFER: usize = 1 << 20;
/// Bytes written to a file after which the syncer thread flushes them to disk.
const SYNC_EVERY: u64 = 32 << 20;
/// Files whose last unsynced part is shorter than this are left to the final `syncfs`.
const SYNC_MIN: u64 = 1 << 20;
/// Flush requests that may wait for the syncer thread (the writer waits beyond them, so that
/// extraction runs at most this far ahead of the disk).
const SYNC_QUEUE: usize = 8;
/// Largest raw buffer reserved up front from a chunk's header (a damaged header must not
/// trigger a huge allocation; a larger chunk still decompresses, growing the buffer).
const MAX_RESERVE: usize = 64 << 20;

/// Raw chunk buffers handed back by the writer thread once extracted.
type BufferPool = Arc<Mutex<Vec<Vec<u8>>>>;

/// The raw size a stored chunk announces in its header, if it can be read.
fn announced_raw_size(obj: &[u8]) -> Option<usize> {
    let len = codec::header_len(obj).ok()?;
    let h = codec::ObjectHeader::decode(obj.get(..len)?).ok()?;
    usize::try_from(h.raw_size).ok()
}

/// An empty buffer for a chunk of `obj`: a recycled one when there is one, with room for the
/// whole raw chunk.
fn raw_buffer(pool: &BufferPool, obj: &[u8]) -> Vec<u8> {
    let mut raw = pool.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
    raw.clear();
    raw.reserve_exact(announced_raw_size(obj).unwrap_or(obj.len().saturating_mul(4)).min(MAX_RESERVE));
    raw
}

/// Flushes file data to disk in a thread of its own while the writer goes on.
struct Syncer {
    tx: Option<mpsc::SyncSender<File>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Syncer {
    fn new(root: PathBuf) -> Syncer {
        let (tx, rx) = mpsc::sync_channel::<File>(SYNC_QUEUE);
        let thread = std::thread::spawn(move || {
            for f in rx {
                f.sync_data().map_err(|e| format!("cannot sync files under {}: {e}", root.display()))?;
            }
            Ok(())
        });
        Syncer { tx: Some(tx), thread: Some(thread) }
    }

    /// Queues `f` (its data written so far) for flushing. A syncer that stopped reports why
    /// in [`finish`](Self::finish).
    fn sync(&self, f: File) {
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
/// flight at once (at least 1).
pub async fn extract(
    repo: &Repository,
    e: &BackupEntry,
    manifest: &Manifest,
    data: &Path,
    tablespaces: &BTreeMap<u32, PathBuf>,
    ahead: usize,
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
        let (files, stats) = extract_archive(repo, &e.id, a, &dest, ahead.max(1)).await?;
        let prefix = a.tablespace_oid.map(|o| format!("pg_tblspc/{o}/")).unwrap_or_default();
        for (path, d) in files {
            let mut p = prefix.clone().into_bytes();
            p.extend_from_slice(&path);
            found.insert(p, d);
        }
        total.files += stats.files;
        total.bytes += stats.bytes;
        total.chunks += stats.chunks;
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
) -> Result<(BTreeMap<Vec<u8>, FileDigest>, Extracted), Failure> {
    let keys: Vec<ObjectKey> = (0..a.chunks)
        .map(|n| ObjectKey::new(catalog::chunk_key(repo.cluster(), id, &a.name, n)))
        .collect::<Result<_, _>>()?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1);
    let pool = BufferPool::default();
    let dest_owned = dest.to_path_buf();
    let returned = pool.clone();
    let writer = std::thread::spawn(move || -> Result<(Extractor, TarReader), TarError> {
        let mut x = Extractor::new(dest_owned);
        let mut reader = TarReader::new();
        for raw in rx {
            reader.feed(&raw, &mut x)?;
            returned.lock().unwrap_or_else(|p| p.into_inner()).push(raw);
        }
        x.syncer.finish().map_err(visitor_error)?;
        Ok((x, reader))
    });

    let mut pending: VecDeque<tokio::task::JoinHandle<Result<Vec<u8>, Failure>>> = VecDeque::new();
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
                    let mut raw = raw_buffer(&pool, &obj);
                    let h = codec::decompress(&obj[..], &mut raw)
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
                raw_total += raw.len() as u64;
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
    Ok((x.digests.files, stats))
}

/// The tar visitor that writes members under `root`.
struct Extractor {
    root: PathBuf,
    digests: FileDigests,
    file: Option<BufWriter<File>>,
    /// Bytes written to the current file since it was last queued for syncing.
    unsynced: u64,
    syncer: Syncer,
    bytes: u64,
}

fn visitor_error(msg: String) -> TarError {
    TarError::Visitor(msg)
}

impl Extractor {
    fn new(root: PathBuf) -> Extractor {
        let syncer = Syncer::new(root.clone());
        Extractor { root, digests: FileDigests::new(), file: None, unsynced: 0, syncer, bytes: 0 }
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
                self.file = Some(BufWriter::with_capacity(WRITE_BUFFER.min(h.size as usize + 1), f));
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
        if let Some(f) = &mut self.file {
            let io = |e: std::io::Error| visitor_error(format!("cannot write under {}: {e}", self.root.display()));
            f.write_all(data).map_err(io)?;
            self.bytes += data.len() as u64;
            self.unsynced += data.len() as u64;
            if self.unsynced >= SYNC_EVERY {
                f.flush().map_err(io)?;
                self.syncer.sync(f.get_ref().try_clone().map_err(io)?);
                self.unsynced = 0;
            }
        }
        self.digests.data(data)
    }

    fn end(&mut self) -> Result<(), TarError> {
        if let Some(f) = self.file.take() {
            let f = f
                .into_inner()
                .map_err(|e| visitor_error(format!("cannot write under {}: {}", self.root.display(), e.error())))?;
            if self.unsynced >= SYNC_MIN {
                self.syncer.sync(f);
            }
        }
        self.digests.end()
    }
}

/// Flushes everything written under `dir` to stable storage (`syncfs` of its file system).
pub fn sync_filesystem(dir: &Path) -> Result<(), Failure> {
    let f = File::open(dir).map_err(|e| local(format!("cannot open {} to sync it: {e}", dir.display())))?;
    rustix::fs::syncfs(&f).map_err(|e| local(format!("cannot sync the file system of {}: {e}", dir.display())))
}
