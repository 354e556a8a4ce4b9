//! Verified fetch of a WAL object: what `get` (restore_command) and the prefetch worker do, so
//! that nothing reaches PostgreSQL unchecked. The bytes are written to a temporary file beside
//! the destination and renamed into place only after every check passed (no fsync: after a
//! crash PostgreSQL asks for the file again); a failure leaves nothing at the destination.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use common::codec::{self, ObjectHeader};
use common::exit::{Failure, FailureKind};
use common::repository::Repository;
use common::retry::{retry, retry_attempts, Attempt};
use common::storage::{ObjectKey, ObjectReader};
use common::wal::page_header::LONG_HEADER_SIZE;
use common::wal::{WalFileKind, WalFileName};

use crate::wal_file::check_first_page;

/// Removes a temporary file when dropped, unless it was renamed into place.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Downloads `wal` into `dest` (through a temporary file beside it), verifying it on the way.
/// Reads the archived file under `wal/` only, never the receiver's partial object.
pub async fn fetch(repo: &Repository, wal: &WalFileName, dest: &Path) -> Result<ObjectHeader, Failure> {
    fetch_key(repo, &repo.wal_key(wal), wal, &wal.to_string(), dest).await
}

/// Downloads the object at `key` into `dest` as WAL file `wal`, verifying it on the way: the
/// zstd checksum, raw size and digest (in [`codec::decompress`]), that its header names
/// `object_name`, and for a segment that its first page is the first page of `wal` (an object
/// copied under another segment's key must never reach PostgreSQL).
///
/// A download cut off in the middle (a reset connection, a stalled body) is tried again as a
/// whole, like a request that failed, within the configured retries: a transient network
/// fault must not abort recovery, and its partial bytes are never served.
pub async fn fetch_key(
    repo: &Repository,
    key: &ObjectKey,
    wal: &WalFileName,
    object_name: &str,
    dest: &Path,
) -> Result<ObjectHeader, Failure> {
    retry_attempts(repo.retry_policy(), "fetch WAL file", || fetch_once(repo, key, wal, object_name, dest)).await
}

/// One attempt of [`fetch_key`]; the flag says whether the failure is worth another one.
async fn fetch_once(
    repo: &Repository,
    key: &ObjectKey,
    wal: &WalFileName,
    object_name: &str,
    dest: &Path,
) -> Result<ObjectHeader, Attempt> {
    let final_ = |f: Failure| (f, false);
    let name = wal.to_string();
    let reader = retry(repo.retry_policy(), "fetch WAL file", || repo.storage().get(key))
        .await
        .map_err(|e| (e.into(), false))?;

    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    let tmp = Partial(Some(dir.join(format!(".{base}.pitr-get.{}", std::process::id()))));
    let tmp_path = tmp.0.clone().unwrap_or_default();
    let out = File::create(&tmp_path).map_err(|e| {
        final_(Failure::msg(FailureKind::LocalIo, format!("cannot create {}: {e}", tmp_path.display())).transient())
    })?;
    let mut out = BufWriter::with_capacity(1 << 20, out);

    let mut interrupted = false;
    let result = match reader {
        ObjectReader::File(f) => codec::decompress(f, &mut out),
        ObjectReader::Bytes(b) => codec::decompress(&b[..], &mut out),
        ObjectReader::Reader(r) => codec::decompress(r, &mut out),
        ObjectReader::Stream(s) => {
            let handle = tokio::task::spawn_blocking(move || {
                let mut src = codec::SourceErrors::new(tokio_util::io::SyncIoBridge::new(s));
                let r = codec::decompress(&mut src, &mut out);
                (r, out, src.failed())
            });
            let (r, o, failed) = handle.await.map_err(|e| final_(Failure::new(FailureKind::LocalIo, e).transient()))?;
            out = o;
            interrupted = failed;
            r
        }
    };
    let header = result.map_err(|e| {
        if interrupted {
            // The network, not the object and not our disk.
            let f =
                Failure::msg(FailureKind::Storage, format!("{name} ({key}): download interrupted: {e}")).transient();
            return (f, true);
        }
        let f: Failure = e.into();
        final_(Failure::msg(f.kind, format!("{name} ({key}): {f}")))
    })?;
    common::repository::check_names(key, &header, object_name).map_err(|e| final_(e.into()))?;
    out.flush().map_err(|e| {
        final_(Failure::msg(FailureKind::LocalIo, format!("cannot write {}: {e}", tmp_path.display())).transient())
    })?;
    drop(out);
    if matches!(wal.kind, WalFileKind::Segment | WalFileKind::Partial) {
        let mut first = [0u8; LONG_HEADER_SIZE];
        File::open(&tmp_path).and_then(|mut f| f.read_exact(&mut first)).map_err(|e| {
            final_(Failure::msg(FailureKind::LocalIo, format!("cannot read {}: {e}", tmp_path.display())).transient())
        })?;
        check_first_page(wal, &first, header.raw_size).map_err(|e| {
            final_(Failure::msg(FailureKind::Corrupt, format!("{name} ({key}) is not this segment: {e}")))
        })?;
    }
    std::fs::rename(&tmp_path, dest).map_err(|e| {
        final_(Failure::msg(FailureKind::LocalIo, format!("cannot rename into {}: {e}", dest.display())).transient())
    })?;
    let mut tmp = tmp;
    tmp.0 = None;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::codec::CompressOptions;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{Body, PutMode, Storage};
    use common::wal::synthetic::pgbench_like_segment;
    use common::wal::{TimelineId, WalSegmentSize};

    use super::*;

    /// A sound object comes back exact; one stored under another segment's key, or damaged,
    /// is refused as corrupt and leaves nothing at the destination.
    #[tokio::test]
    async fn what_is_fetched_is_the_file_asked_for() {
        let storage = Arc::new(MemoryStorage::new());
        let r = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let size = WalSegmentSize::DEFAULT;
        let (n3, n4) = (WalFileName::segment(TimelineId(1), 3, size), WalFileName::segment(TimelineId(1), 4, size));
        let seg = pgbench_like_segment(3, 100);
        let mut obj = std::io::Cursor::new(Vec::new());
        codec::compress(&seg, &mut std::io::empty(), &mut obj, &n3.to_string(), None, CompressOptions::default())
            .unwrap();
        let obj = obj.into_inner();
        for n in [&n3, &n4] {
            storage.put(&r.wal_key(n), Body::Bytes(obj.clone().into()), PutMode::Overwrite).await.unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        fetch(&r, &n3, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == seg);
        std::fs::remove_file(&dest).unwrap();
        let e = fetch(&r, &n4, &dest).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Corrupt);
        assert!(!dest.exists());
        let mut bad = obj.clone();
        let i = bad.len() - 50;
        bad[i] ^= 0x20;
        storage.put(&r.wal_key(&n3), Body::Bytes(bad.into()), PutMode::Overwrite).await.unwrap();
        assert_eq!(fetch(&r, &n3, &dest).await.unwrap_err().kind, FailureKind::Corrupt);
        assert!(!dest.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 0, "no temporary file left");
    }
}
