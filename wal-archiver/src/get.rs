//! `get`: PostgreSQL's restore_command.
//!
//! Contract: exit 0 with the exact original bytes at the destination, written to a temporary
//! name in the same directory and renamed (no fsync: after a crash PostgreSQL asks again);
//! "not found" only when the repository answered that this exact key does not exist (and it
//! holds the configured cluster); every other failure, after retries for transient ones, is
//! reported as such, which `main` turns into an exit status above 125 so that PostgreSQL
//! aborts recovery instead of promoting early.
//!
//! Segments may come from the prefetch spool (see [`crate::prefetch`]): files there were
//! verified like any download, so serving one is a rename.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use common::codec::{self, CodecError, ObjectHeader};
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::repository::Repository;
use common::retry::retry;
use common::storage::ObjectReader;
use common::wal::{WalFileKind, WalFileName};

use crate::prefetch;

/// Removes a temporary file when dropped, unless it was renamed into place.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Fetches WAL file `name` into `dest`.
pub async fn get(config: &Config, name: &str, dest: &Path) -> Result<(), Failure> {
    let wal = WalFileName::parse(name).map_err(|e| Failure::msg(FailureKind::Invalid, e))?;
    let spool = (config.prefetch > 0 && wal.kind == WalFileKind::Segment).then(|| prefetch::spool_dir(dest));
    if let Some(spool) = &spool {
        if prefetch::take(spool, &wal, dest) {
            tracing::info!(file = name, "restored from the prefetch spool");
            prefetch::kick(config, spool, &wal, dest);
            return Ok(());
        }
    }
    let repo = config.open_repository(false).await?;
    let header = match fetch(&repo, &wal, dest).await {
        Err(f) if f.kind == FailureKind::NotFound => return Err(absent(&repo, name).await),
        r => r?,
    };
    tracing::info!(file = name, bytes = header.raw_size, "restored");
    if let Some(spool) = &spool {
        prefetch::kick(config, spool, &wal, dest);
    }
    Ok(())
}

/// Downloads `wal` into `dest` (through a temporary file beside it), verifying it on the way.
pub async fn fetch(repo: &Repository, wal: &WalFileName, dest: &Path) -> Result<ObjectHeader, Failure> {
    let name = wal.to_string();
    let key = repo.wal_key(wal);
    let reader = retry(repo.retry_policy(), "fetch WAL file", || repo.storage().get(&key)).await?;

    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    let tmp = Partial(Some(dir.join(format!(".{base}.pitr-get.{}", std::process::id()))));
    let tmp_path = tmp.0.clone().unwrap_or_default();
    let out = File::create(&tmp_path)
        .map_err(|e| Failure::msg(FailureKind::LocalIo, format!("cannot create {}: {e}", tmp_path.display())))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);

    let result = match reader {
        ObjectReader::File(f) => codec::decompress(f, &mut out),
        ObjectReader::Bytes(b) => codec::decompress(&b[..], &mut out),
        ObjectReader::Stream(s) => {
            let handle = tokio::task::spawn_blocking(move || {
                let r = codec::decompress(tokio_util::io::SyncIoBridge::new(s), &mut out);
                (r, out)
            });
            let (r, o) = handle.await.map_err(|e| Failure::new(FailureKind::LocalIo, e))?;
            out = o;
            // A read error here is the network, not our disk.
            r.map_err(|e| match e {
                CodecError::Io(io) => CodecError::Corrupt(format!("download interrupted: {io}")),
                e => e,
            })
        }
    };
    let header = result.map_err(|e| {
        let f: Failure = e.into();
        Failure::msg(f.kind, format!("{name} ({key}): {f}"))
    })?;
    out.flush().map_err(|e| Failure::msg(FailureKind::LocalIo, format!("cannot write {}: {e}", tmp_path.display())))?;
    drop(out);
    std::fs::rename(&tmp_path, dest)
        .map_err(|e| Failure::msg(FailureKind::LocalIo, format!("cannot rename into {}: {e}", dest.display())))?;
    let mut tmp = tmp;
    tmp.0 = None;
    Ok(header)
}

/// The file is missing: "not found" is only certain if the repository really holds this
/// cluster. A mistyped `--cluster` or an empty repository is a configuration error, so that
/// PostgreSQL aborts recovery instead of ending it early.
async fn absent(repo: &Repository, name: &str) -> Failure {
    match repo.cluster_info().await {
        Ok(Some(_)) => Failure::msg(
            FailureKind::NotFound,
            format!("{name} is not in the repository (cluster {:?})", repo.cluster()),
        ),
        Ok(None) => Failure::msg(
            FailureKind::Config,
            format!(
                "the repository holds no cluster {:?} (no {}): check --repo and --cluster",
                repo.cluster(),
                repo.cluster_info_key()
            ),
        ),
        Err(e) => e.into(),
    }
}
