//! The second repository on the archive path: after a WAL file is durably in the main
//! repository, `push` (and the look-ahead worker) store it in the second one too, and when
//! that fails (the copy's region unreachable, its credentials refused, …) they record the
//! file's name in a pending list on local disk instead of failing: PostgreSQL never stalls
//! because the copy is down, and no file is silently missing from it.
//!
//! The list is a directory beside the WAL, `pg_wal/.pitr-repo2-pending/`, with one empty file
//! per name, written and fsynced (with the directory) before `push` exits 0. Every later push
//! first works through up to [`MAX_PER_PUSH`] names, oldest first: from pg_wal when the file
//! is still there, else by copying the object from the main repository (verified, see
//! [`crate::copy_object`]), and removes each marker once the second repository holds the
//! file. Markers are idempotent and every store is create-if-absent, so two pushes at once
//! only do the same work twice. When the second repository fails again, the push records its
//! own file as pending without trying it: one failing attempt per push at most, so a copy
//! that is down costs each push one round of its retries, not one per pending name. A name
//! whose file cannot be stored for a reason of its own (a conflict, a damaged object) is set
//! aside as `<name>.failed`, logged as an error, so that it does not hold up the others.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use archive::store::{self, Stored};
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::repository::Repository;
use common::storage::ObjectKey;
use common::wal::WalFileName;

use crate::copy_object::{copy_object, Copied};

/// The directory of pending markers beside the WAL file `path`.
pub fn pending_dir(path: &Path) -> PathBuf {
    pending_dir_in(path.parent().unwrap_or(Path::new(".")))
}

/// The directory of pending markers in `dir` (pg_wal, the receiver's spool).
pub fn pending_dir_in(dir: &Path) -> PathBuf {
    dir.join(".pitr-repo2-pending")
}

/// At most this many pending names are retried by one push.
pub const MAX_PER_PUSH: usize = 16;

/// The names in the pending list of `dir`, sorted (history files first, then by name).
pub fn pending_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| WalFileName::parse(n).is_ok())
        .collect();
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names
}

/// Records `name` as pending in `dir`: an empty file, fsynced with its directory.
pub fn record(dir: &Path, name: &str) -> Result<(), Failure> {
    let io = |e: std::io::Error| {
        Failure::msg(
            FailureKind::LocalIo,
            format!("cannot record {name} as pending for the second repository in {}: {e}", dir.display()),
        )
        .transient()
    };
    fs::create_dir_all(dir).map_err(io)?;
    let f = File::options().write(true).create(true).truncate(false).open(dir.join(name)).map_err(io)?;
    f.sync_all().map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// Whether `f` is the second repository (or a local file) failing, which later pushes retry,
/// rather than a problem of one file.
fn is_outage(f: &Failure) -> bool {
    f.is_transient()
        || matches!(f.kind, FailureKind::Storage | FailureKind::LocalIo | FailureKind::Key | FailureKind::Config)
}

/// Moves the marker of a file that cannot be stored in the second repository (a conflict, a
/// damaged object) out of the list, to `<name>.failed`, so that it does not hold up the others;
/// `wal-archiver copy` reports the same problem.
fn set_aside(dir: &Path, name: &str, f: &Failure) {
    let _ = fs::rename(dir.join(name), dir.join(format!("{name}.failed")));
    tracing::error!(
        file = name,
        "cannot be stored in the second repository, set aside as {}: {f}",
        dir.join(format!("{name}.failed")).display()
    );
}

fn clear(dir: &Path, name: &str) {
    let _ = fs::remove_file(dir.join(name));
}

/// Stores the WAL file at `path`, already durable in the main repository, in the second one
/// (`second`), first retrying pending names (see the module documentation). `Ok` when the
/// second repository holds the file or it was recorded as pending; an error only when not
/// even the marker could be written.
pub async fn store_second(config: &Config, second: &Config, path: &Path) -> Result<(), Failure> {
    let dir = pending_dir(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    let outcome = async {
        let repo2 = second.open_repository(true).await?;
        retry_pending(config, &repo2, &dir, &name).await?;
        store::store(&repo2, second.compress, path).await
    }
    .await;
    match outcome {
        Ok(stored) => {
            clear(&dir, &name);
            if stored == Stored::Stored {
                tracing::info!(file = %name, repository = %second.repo, "stored in the second repository");
            }
            Ok(())
        }
        Err(f) => {
            record(&dir, &name)?;
            tracing::warn!(
                file = %name,
                repository = %second.repo,
                "not stored in the second repository, recorded as pending in {} (a later push or `wal-archiver \
                 copy` brings it there): {f}",
                dir.display()
            );
            Ok(())
        }
    }
}

/// Works through up to [`MAX_PER_PUSH`] pending names (other than `current`, which the caller
/// stores next), stopping at the first failure of the second repository, which it returns; a
/// file that cannot be stored for a reason of its own is set aside.
async fn retry_pending(config: &Config, repo2: &Repository, dir: &Path, current: &str) -> Result<(), Failure> {
    let names: Vec<String> = pending_names(dir).into_iter().filter(|n| n != current).take(MAX_PER_PUSH).collect();
    if names.is_empty() {
        return Ok(());
    }
    let mut main: Option<Repository> = None;
    for name in names {
        let local = dir.parent().unwrap_or(Path::new(".")).join(&name);
        let from_pg_wal = if local.is_file() {
            match store::store(repo2, config.compress, &local).await {
                Ok(_) => true,
                // Recycled by PostgreSQL while we read it: copy it from the main repository.
                Err(f) if f.kind == FailureKind::LocalIo && !local.exists() => false,
                Err(f) if is_outage(&f) => return Err(f),
                Err(f) => {
                    set_aside(dir, &name, &f);
                    continue;
                }
            }
        } else {
            false
        };
        if !from_pg_wal {
            if main.is_none() {
                main = Some(config.open_repository(false).await?);
            }
            let main = main.as_ref().expect("opened above");
            match copy_from_main(main, repo2, &name).await {
                Ok(()) => {}
                Err(f) if is_outage(&f) => return Err(f),
                // A problem of this file (a conflict, a damaged object): retrying cannot help.
                Err(f) => {
                    set_aside(dir, &name, &f);
                    continue;
                }
            }
        }
        clear(dir, &name);
        tracing::info!(file = %name, "pending file stored in the second repository");
    }
    Ok(())
}

/// Copies WAL file `name` from the main repository to the second, with the cluster record
/// first (which a store from pg_wal would have written).
async fn copy_from_main(main: &Repository, repo2: &Repository, name: &str) -> Result<(), Failure> {
    let wal = WalFileName::parse(name).map_err(|e| Failure::msg(FailureKind::Invalid, e))?;
    if repo2.cluster_info().await?.is_none() {
        copy_object(main, repo2, &main.cluster_info_key()).await?;
    }
    let key: ObjectKey = main.wal_key(&wal);
    match copy_object(main, repo2, &key).await {
        Ok(Copied::Copied(_) | Copied::Present) => Ok(()),
        Err(f) if f.kind == FailureKind::NotFound => {
            // Not in the main repository either: nothing to copy (it was expired, or the marker
            // is stale); the marker goes.
            tracing::warn!(file = name, "pending for the second repository but not in the main one either");
            Ok(())
        }
        Err(f) => Err(f),
    }
}

/// Works through the whole pending list of `dir` (files already in the main repository,
/// copied from there), [`MAX_PER_PUSH`] at a time, until it is empty or the second repository
/// fails; the number of names left. What the receiver's copier runs.
pub async fn drain(config: &Config, second: &Config, dir: &Path) -> Result<usize, Failure> {
    let repo2 = second.open_repository(true).await?;
    loop {
        let before = pending_names(dir).len();
        if before == 0 {
            return Ok(0);
        }
        retry_pending(config, &repo2, dir, "").await?;
        let after = pending_names(dir).len();
        if after >= before {
            return Ok(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Markers are idempotent, listed history files first, and one set aside leaves the list.
    #[test]
    fn markers_record_list_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("000000010000000000000003");
        let pending = pending_dir(&seg);
        assert_eq!(pending, dir.path().join(".pitr-repo2-pending"));
        assert!(pending_names(&pending).is_empty(), "no directory: nothing pending");
        for name in ["000000010000000000000003", "00000002.history", "000000010000000000000003"] {
            record(&pending, name).unwrap();
        }
        std::fs::write(pending.join("not-a-wal-file"), b"").unwrap();
        assert_eq!(pending_names(&pending), ["00000002.history", "000000010000000000000003"]);
        set_aside(&pending, "000000010000000000000003", &Failure::msg(FailureKind::Conflict, "differs"));
        assert_eq!(pending_names(&pending), ["00000002.history"]);
        assert!(pending.join("000000010000000000000003.failed").exists());
        clear(&pending, "00000002.history");
        assert!(pending_names(&pending).is_empty());
    }
}
