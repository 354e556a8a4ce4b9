//! Verified store of a WAL file: what `push` (archive_command), the look-ahead worker and the
//! streaming receiver's uploader all do with a file, so that each makes exactly the same
//! object.
//!
//! Contract: `Ok` only once the file is durably in the repository; validate before storing
//! (name, page magic, system identifier against the repository's cluster record, segment
//! size, first page address, timeline: [`wal_file`](crate::wal_file)); never overwrite: an
//! identical re-store succeeds, a different content fails (a conflict). The file is read
//! once: validation reads the first page; a segment (or `.partial` file) is then read whole
//! into memory, its records are walked for the WAL summary stored in the object's header (for
//! restore planning), and compression and the digest consume it in the same pass.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use common::codec::{self, CompressOptions, ObjectHeader};
use common::exit::{Failure, FailureKind};
use common::repository::Repository;
use common::retry::retry;
use common::storage::local::temp_path;
use common::storage::{Body, PutMode, StorageError};
use common::wal::page_header::LONG_HEADER_SIZE;
use common::wal::record::{self, SegmentSummary};
use common::wal::{LongPageHeader, WalFileKind, WalFileName};

use crate::identity::{self, IdentityError};
use crate::wal_file::{self, WalProblem};

/// What a successful store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The file was stored.
    Stored,
    /// An identical copy was already archived.
    AlreadyArchived,
}

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

/// A compressed object ready to store: a file in the repository's scratch directory, or bytes.
enum Staged {
    File(TempFile),
    Bytes(bytes::Bytes),
}

impl Staged {
    fn body(&self) -> Body {
        match self {
            Staged::File(f) => Body::File(f.0.clone()),
            Staged::Bytes(b) => Body::Bytes(b.clone()),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A refusal of WAL file `name`: it is invalid (exit 3), nothing was stored.
pub fn invalid(name: &str, msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Invalid, format!("{name}: {msg}; nothing was archived"))
}

/// Validates the WAL file at `path` and stores it in `repo`, compressed with `compress`
/// (see the module documentation).
pub async fn store(repo: &Repository, compress: CompressOptions, path: &Path) -> Result<Stored, Failure> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = WalFileName::parse(file_name).map_err(|e| invalid(&path.display().to_string(), e))?;
    let mut file = File::open(path)
        .map_err(|e| Failure::msg(FailureKind::LocalIo, format!("cannot open {}: {e}", path.display())).transient())?;
    let size = file
        .metadata()
        .map_err(|e| Failure::msg(FailureKind::LocalIo, format!("cannot stat {}: {e}", path.display())).transient())?
        .len();

    // The whole file, read once.
    let mut data = Vec::new();
    match name.kind {
        WalFileKind::Segment | WalFileKind::Partial => {
            data.resize(LONG_HEADER_SIZE, 0);
            let n = codec::read_full(&mut file, &mut data).map_err(|e| read_error(path, e))?;
            data.truncate(n);
            validate_segment(repo, &name, &data, size).await?;
            // Already archived (the look-ahead worker's segments, a retry after a crash)?
            // Then the file is only hashed, streamed through a small buffer: no segment-sized
            // allocation and copy for a push that stores nothing.
            if let Some(existing) = repo.wal_header(&name).await? {
                let mut rest = (&data[..]).chain(&mut file);
                let (read, digest) = codec::digest(&mut rest).map_err(|e| read_error(path, e))?;
                if read != size {
                    return Err(changed(path, size, read));
                }
                return compare_digest(&name, &existing, read, &digest);
            }
            data.reserve_exact((size as usize).saturating_sub(n) + 1);
            file.read_to_end(&mut data).map_err(|e| read_error(path, e))?;
            if data.len() as u64 != size {
                return Err(changed(path, size, data.len() as u64));
            }
        }
        WalFileKind::History | WalFileKind::Backup => {
            wal_file::check_small_size(&name, size).map_err(|e| invalid(file_name, e))?;
            file.read_to_end(&mut data).map_err(|e| read_error(path, e))?;
            wal_file::check_small(&name, &data).map_err(|e| invalid(file_name, e))?;
        }
    }

    // Already archived? Decide by the digest of the uncompressed content (segments were
    // checked before they were read whole).
    if matches!(name.kind, WalFileKind::History | WalFileKind::Backup) {
        if let Some(existing) = repo.wal_header(&name).await? {
            let (size, digest) =
                codec::digest(&mut &data[..]).map_err(|e| Failure::new(FailureKind::LocalIo, e).transient())?;
            return compare_digest(&name, &existing, size, &digest);
        }
    }
    let summary = match name.kind {
        WalFileKind::Segment | WalFileKind::Partial => summarize(&name, &data),
        WalFileKind::History | WalFileKind::Backup => None,
    };

    // The compressed object is staged in the repository's own scratch directory when it has
    // one (local: stored by a link, without a copy; a write failure there, a full disk, is the
    // repository's failure, exit 5), else built in memory (S3, and encrypted repositories,
    // which encrypt it in memory anyway).
    let key = repo.wal_key(&name);
    let (header, staged) = match repo.storage().scratch_dir() {
        Some(scratch) => {
            let scratch_error = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
                Failure::msg(FailureKind::Storage, format!("cannot {what} {}: {e}; nothing was archived", p.display()))
                    .transient()
            };
            let tmp = TempFile(temp_path(&scratch, file_name));
            let mut out = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp.0)
                .map_err(|e| scratch_error("create", &tmp.0, &e))?;
            let header = codec::compress_with_summary(
                &data,
                &mut io::empty(),
                &mut out,
                file_name,
                Some(size),
                summary,
                compress,
            )
            .map_err(|e| match e {
                codec::CodecError::Io(e) => scratch_error("write", &tmp.0, &e),
                e => e.into(),
            })?;
            (header, Staged::File(tmp))
        }
        None => {
            let mut out = io::Cursor::new(Vec::with_capacity(data.len() / 2));
            let header = codec::compress_with_summary(
                &data,
                &mut io::empty(),
                &mut out,
                file_name,
                Some(size),
                summary,
                compress,
            )?;
            (header, Staged::Bytes(out.into_inner().into()))
        }
    };
    drop(data);
    if header.raw_size != size {
        return Err(changed(path, size, header.raw_size));
    }
    let put =
        retry(repo.retry_policy(), "store WAL file", || repo.storage().put(&key, staged.body(), PutMode::CreateNew))
            .await;
    match put {
        Ok(()) => Ok(Stored::Stored),
        // Someone stored it between our check and our write: judge their copy.
        Err(StorageError::AlreadyExists { .. }) => match repo.wal_header(&name).await? {
            Some(existing) if existing.blake3 == header.blake3 && existing.raw_size == header.raw_size => {
                Ok(Stored::AlreadyArchived)
            }
            Some(existing) => Err(conflict(&name, &existing, header.raw_size, &header.blake3)),
            None => Err(Failure::msg(FailureKind::Storage, format!("{key} exists but cannot be read")).transient()),
        },
        Err(e) => Err(e.into()),
    }
}

fn read_error(path: &Path, e: std::io::Error) -> Failure {
    Failure::msg(FailureKind::LocalIo, format!("cannot read {}: {e}", path.display())).transient()
}

fn changed(path: &Path, size: u64, now: u64) -> Failure {
    Failure::msg(
        FailureKind::LocalIo,
        format!("{} changed while being archived ({size} bytes, then {now})", path.display()),
    )
}

/// The WAL summary of a validated segment: what its valid records hold (a walk that stops
/// early, at the end of a `.partial` file's WAL or at recycled bytes after a switch, still
/// describes what came before). `None`, logged, only if the segment cannot be walked at all.
fn summarize(name: &WalFileName, data: &[u8]) -> Option<SegmentSummary> {
    match record::summarize(data) {
        Ok(s) => {
            tracing::debug!(
                file = %name,
                xact_ends = s.xact_ends,
                restore_points = s.restore_points.len(),
                stopped = s.stopped.as_deref().unwrap_or(""),
                "summarized"
            );
            Some(s)
        }
        Err(e) => {
            tracing::warn!(file = %name, "stored without a WAL summary: {e}");
            None
        }
    }
}

/// Checks a segment's first page against its name and the repository's cluster record
/// (`archive::wal_file`), recording the cluster on the first push. Another cluster's segment
/// is a conflict (4), any other problem an invalid file (3).
async fn validate_segment(repo: &Repository, name: &WalFileName, first: &[u8], size: u64) -> Result<(), Failure> {
    let n = name.to_string();
    let header = LongPageHeader::parse(first).map_err(|e| invalid(&n, e))?;
    let refuse = |p: WalProblem| {
        if p.is_other_cluster() {
            Failure::msg(
                FailureKind::Conflict,
                format!("{n}: {p}: two clusters must not share one cluster name (set --cluster); nothing was archived"),
            )
        } else {
            invalid(&n, p)
        }
    };
    let cluster = match identity::check_or_register(repo, &wal_file::identity_of(&header)).await {
        Ok(c) => c,
        Err(IdentityError::Mismatch(m)) => return Err(refuse(m.into())),
        Err(IdentityError::Repository(e)) => return Err(e.into()),
    };
    wal_file::check_segment(repo.cluster(), &cluster, name, first, size).map_err(refuse)
}

/// An object is already stored under this file's key: identical content is success.
fn compare_digest(name: &WalFileName, existing: &ObjectHeader, size: u64, digest: &str) -> Result<Stored, Failure> {
    if size == existing.raw_size && digest == existing.blake3 {
        tracing::info!(file = %name, "already archived with identical content");
        Ok(Stored::AlreadyArchived)
    } else {
        Err(conflict(name, existing, size, digest))
    }
}

fn conflict(name: &WalFileName, existing: &ObjectHeader, size: u64, digest: &str) -> Failure {
    Failure::msg(
        FailureKind::Conflict,
        format!(
            "{name}: already archived with different content (archived {} bytes, blake3 {:.16}; this file {size} \
             bytes, blake3 {digest:.16}); refusing to overwrite: this means split brain, two servers archiving as \
             one cluster, or corruption",
            existing.raw_size, existing.blake3
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::retry::RetryPolicy;
    use common::storage::local::LocalStorage;
    use common::wal::synthetic::pgbench_like_segment;

    use super::*;

    fn repo(dir: &Path) -> Repository {
        Repository::new(Arc::new(LocalStorage::open(dir).unwrap()), "main", RetryPolicy::with_retries(0))
    }

    /// Stored once; an identical copy again is fine; other content under the name is a
    /// conflict that overwrites nothing; a file of zeros is invalid and stores nothing; the
    /// fetch gives the exact bytes back.
    #[tokio::test]
    async fn store_is_idempotent_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        idempotent_and_never_overwrites(repo(&dir.path().join("repo")), dir.path()).await;
    }

    /// The same through a backend without a scratch directory (S3, an encrypted repository):
    /// the object is built in memory.
    #[tokio::test]
    async fn store_without_a_scratch_directory_builds_the_object_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(common::storage::memory::MemoryStorage::new());
        idempotent_and_never_overwrites(Repository::new(memory, "main", RetryPolicy::with_retries(0)), dir.path())
            .await;
    }

    async fn idempotent_and_never_overwrites(r: Repository, dir: &Path) {
        let seg = pgbench_like_segment(3, 100);
        let name = WalFileName::segment(common::wal::TimelineId(1), 3, common::wal::WalSegmentSize::DEFAULT);
        let file = dir.join(name.to_string());
        std::fs::write(&file, &seg).unwrap();
        let opts = CompressOptions::default();
        assert_eq!(store(&r, opts, &file).await.unwrap(), Stored::Stored);
        assert_eq!(store(&r, opts, &file).await.unwrap(), Stored::AlreadyArchived);
        let mut other = seg.clone();
        other[9 << 20] ^= 1;
        std::fs::write(&file, &other).unwrap();
        assert_eq!(store(&r, opts, &file).await.unwrap_err().kind, FailureKind::Conflict);
        let dest = dir.join("RECOVERYXLOG");
        crate::fetch::fetch(&r, &name, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == seg, "the first content, intact");

        let zeros = dir.join(WalFileName::segment(name.timeline, 4, common::wal::WalSegmentSize::DEFAULT).to_string());
        std::fs::write(&zeros, vec![0u8; seg.len()]).unwrap();
        assert_eq!(store(&r, opts, &zeros).await.unwrap_err().kind, FailureKind::Invalid);
        assert!(r
            .wal_header(&WalFileName::parse(zeros.file_name().unwrap().to_str().unwrap()).unwrap())
            .await
            .unwrap()
            .is_none());
    }
}
