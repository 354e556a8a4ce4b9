//! The embedded default backend: objects as plain files under a directory.
//!
//! Writes are crash-safe: content goes to a temporary file in `<root>/.pitr-tmp`, which is
//! fsynced, then linked (create-if-absent: `link(2)` fails with `EEXIST`, so an existing
//! object is never replaced, even by a racing writer) or renamed (overwrite) to its final
//! name, and the directory is fsynced so the new name survives a power loss. Newly created
//! directories are fsynced into their parents the same way.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Body, ObjectInfo, ObjectKey, ObjectReader, PutMode, Storage, StorageError};

const SCRATCH: &str = ".pitr-tmp";

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Scratch files older than this are left over from a writer that was killed (a write stages
/// a file and links it into place within seconds; a base-backup chunk is 16 MiB): removed by
/// the next writer that opens the repository, so a full disk is not made of garbage.
pub const SCRATCH_STALE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes scratch files not modified for [`SCRATCH_STALE`]. Best effort: one directory read
/// per writer, usually of an empty directory.
fn sweep_scratch(scratch: &Path) {
    let Ok(entries) = fs::read_dir(scratch) else { return };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > SCRATCH_STALE);
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A unique temporary path inside `dir`.
pub fn temp_path(dir: &Path, hint: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    dir.join(format!("{hint}.{}.{n}.{nanos}.tmp", std::process::id()))
}

/// fsyncs a directory so that entries created or renamed in it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing each new entry into its parent.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

impl LocalStorage {
    /// Opens (and creates, if missing) a repository rooted at `root`, for writing: also
    /// removes what killed writers left in the scratch directory (see [`SCRATCH_STALE`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        create_dir_all_durable(&root.join(SCRATCH)).map_err(|e| {
            StorageError::Config(format!(
                "cannot use {} as a repository: {e} (create it, or fix its permissions for this user)",
                root.display()
            ))
        })?;
        sweep_scratch(&root.join(SCRATCH));
        Ok(LocalStorage { root })
    }

    /// Opens an existing repository for reading: a missing directory is a configuration
    /// error, never an empty repository (a mistyped path must not look like "no such WAL").
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(LocalStorage { root }),
            Ok(_) => Err(StorageError::Config(format!("repository {} is not a directory", root.display()))),
            Err(e) => Err(StorageError::Config(format!("cannot open repository {}: {e}", root.display()))),
        }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn not_found_or(key: &ObjectKey, op: &'static str, path: &Path, e: io::Error) -> StorageError {
        if e.kind() == io::ErrorKind::NotFound {
            StorageError::NotFound { key: key.to_string() }
        } else {
            StorageError::io(op, path, e)
        }
    }

    /// Puts a durable temporary file in the scratch directory holding the body.
    fn stage(&self, body: Body) -> Result<(PathBuf, bool), StorageError> {
        let scratch = self.root.join(SCRATCH);
        create_dir_all_durable(&scratch).map_err(|e| StorageError::io("create directory", &scratch, e))?;
        match body {
            Body::File(p) if p.parent() == Some(scratch.as_path()) => {
                let f = File::open(&p).map_err(|e| StorageError::io("open", &p, e))?;
                f.sync_all().map_err(|e| StorageError::io("fsync", &p, e))?;
                Ok((p, false))
            }
            body => {
                let tmp = temp_path(&scratch, "put");
                let res = (|| {
                    let mut out = File::create(&tmp)?;
                    match body {
                        Body::Bytes(b) => out.write_all(&b)?,
                        Body::File(p) => {
                            io::copy(&mut File::open(p)?, &mut out)?;
                        }
                    }
                    out.sync_all()
                })();
                if let Err(e) = res {
                    let _ = fs::remove_file(&tmp);
                    return Err(StorageError::io("write", &tmp, e));
                }
                Ok((tmp, true))
            }
        }
    }

    /// Removes `dir` and its parents below the root while they are empty (what `delete`
    /// leaves behind: an expired backup's directories, a 4 GiB stretch of old WAL), so that a
    /// repository does not fill with empty directories. Best effort: a directory that is not
    /// empty, or any error, stops it; `put` copes with a directory vanishing under it.
    fn remove_empty_dirs(&self, dir: &Path) {
        let mut dir = dir.to_path_buf();
        while dir != self.root && dir.starts_with(&self.root) {
            if fs::remove_dir(&dir).is_err() {
                return;
            }
            let Some(parent) = dir.parent() else { return };
            let _ = fsync_dir(parent);
            dir = parent.to_path_buf();
        }
    }

    /// Links (or renames) the staged file `tmp` into place at `dest` in `dir`, creating
    /// the directory first.
    fn put_staged(
        &self,
        key: &ObjectKey,
        tmp: &Path,
        owned: bool,
        dest: &Path,
        dir: &Path,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        create_dir_all_durable(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        match mode {
            PutMode::CreateNew => fs::hard_link(tmp, dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    StorageError::AlreadyExists { key: key.to_string() }
                } else {
                    StorageError::io("link", dest, e)
                }
            })?,
            PutMode::Overwrite => {
                if owned {
                    fs::rename(tmp, dest).map_err(|e| StorageError::io("rename", dest, e))?;
                } else {
                    let t2 = temp_path(&self.root.join(SCRATCH), "put");
                    fs::hard_link(tmp, &t2).map_err(|e| StorageError::io("link", &t2, e))?;
                    fs::rename(&t2, dest).map_err(|e| {
                        let _ = fs::remove_file(&t2);
                        StorageError::io("rename", dest, e)
                    })?;
                }
            }
        }
        match fsync_dir(dir) {
            // Linked, then the object was deleted again and its directory removed by a
            // concurrent `delete` of the same key: done (not a reason to link again).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| StorageError::io("fsync directory", dir, e)),
        }
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put(&self, key: &ObjectKey, body: Body, mode: PutMode) -> Result<(), StorageError> {
        let dest = self.path(key);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        if mode == PutMode::CreateNew && dest.symlink_metadata().is_ok() {
            return Err(StorageError::AlreadyExists { key: key.to_string() });
        }
        let (tmp, owned) = self.stage(body)?;
        // `delete` removes directories it empties: one may vanish between creating it and
        // linking into it, so a link that finds no directory starts over (a few times).
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            match self.put_staged(key, &tmp, owned, &dest, &dir, mode) {
                Err(StorageError::Io { ref error, .. }) if error.kind() == io::ErrorKind::NotFound && attempts < 5 => {}
                r => break r,
            }
        };
        if owned {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    async fn get(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        let p = self.path(key);
        let f = File::open(&p).map_err(|e| Self::not_found_or(key, "open", &p, e))?;
        if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(StorageError::NotFound { key: key.to_string() });
        }
        Ok(ObjectReader::File(f))
    }

    async fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StorageError> {
        let p = self.path(key);
        let mut f = File::open(&p).map_err(|e| Self::not_found_or(key, "open", &p, e))?;
        let len = f.metadata().map_err(|e| StorageError::io("stat", &p, e))?.len();
        if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(StorageError::NotFound { key: key.to_string() });
        }
        let start = range.start.min(len);
        let end = range.end.min(len).max(start);
        let mut buf = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start)).map_err(|e| StorageError::io("seek", &p, e))?;
        f.read_exact(&mut buf).map_err(|e| StorageError::io("read", &p, e))?;
        Ok(buf.into())
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        let p = self.path(key);
        let m = fs::metadata(&p).map_err(|e| Self::not_found_or(key, "stat", &p, e))?;
        if !m.is_file() {
            return Err(StorageError::NotFound { key: key.to_string() });
        }
        Ok(ObjectInfo { key: key.clone(), size: m.len() })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        // Walk only the deepest directory that the prefix names completely.
        let base = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        let mut stack = vec![base];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let rel = path.strip_prefix(&self.root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                // An entry deleted meanwhile (by `delete`, or its directory emptied) is
                // simply not listed.
                let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
                let ft = match entry.file_type() {
                    Ok(ft) => ft,
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(StorageError::io("stat", &path, e)),
                };
                if ft.is_dir() {
                    if prefix.starts_with(&format!("{rel}/")) || rel.starts_with(prefix) {
                        stack.push(path);
                    }
                } else if ft.is_file() && rel.starts_with(prefix) {
                    let size = match entry.metadata() {
                        Ok(m) => m.len(),
                        Err(e) if gone(&e) => continue,
                        Err(e) => return Err(StorageError::io("stat", &path, e)),
                    };
                    out.push(ObjectInfo { key: ObjectKey(rel), size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => {
                let dir = p.parent().unwrap_or(&self.root);
                match fsync_dir(dir) {
                    // A concurrent delete emptied and removed the directory; it fsyncs the
                    // parent itself (this file's removal is part of that).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    r => r.map_err(|e| StorageError::io("fsync directory", dir, e))?,
                }
                self.remove_empty_dirs(dir);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("remove", &p, e)),
        }
    }

    /// A directory has no Object Lock: nothing is ever locked here.
    async fn retention(&self, _key: &ObjectKey) -> Result<Option<SystemTime>, StorageError> {
        Ok(None)
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        Some(self.root.join(SCRATCH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path().join("repo")).unwrap();
        crate::conformance::run_all(&s, "conf").await;
    }

    #[tokio::test]
    async fn scratch_files_are_linked_not_copied_and_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let tmp = temp_path(&s.scratch_dir().unwrap(), "t");
        fs::write(&tmp, b"hello").unwrap();
        let key = ObjectKey::new("a/b").unwrap();
        s.put(&key, Body::File(tmp.clone()), PutMode::CreateNew).await.unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&tmp).unwrap().ino(), fs::metadata(dir.path().join("a/b")).unwrap().ino());
        assert_eq!(s.list("").await.unwrap().len(), 1, "scratch directory never listed");
        assert_eq!(fs::read(&tmp).unwrap(), b"hello", "caller's file left in place");
    }

    #[tokio::test]
    async fn delete_removes_the_directories_it_empties_and_put_recreates_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let (ab, ac) = (ObjectKey::new("x/a/b").unwrap(), ObjectKey::new("x/a/c").unwrap());
        let keep = ObjectKey::new("x/keep").unwrap();
        for k in [&ab, &ac, &keep] {
            s.put(k, Body::Bytes(Bytes::from_static(b"1")), PutMode::CreateNew).await.unwrap();
        }
        s.delete(&ab).await.unwrap();
        assert!(dir.path().join("x/a").is_dir(), "still holds c");
        s.delete(&ac).await.unwrap();
        assert!(!dir.path().join("x/a").exists(), "emptied, removed");
        assert!(dir.path().join("x").is_dir(), "holds keep");
        s.delete(&keep).await.unwrap();
        assert!(!dir.path().join("x").exists());
        assert!(dir.path().is_dir(), "the root stays");
        s.put(&ab, Body::Bytes(Bytes::from_static(b"2")), PutMode::CreateNew).await.unwrap();
        assert_eq!(fs::read(dir.path().join("x/a/b")).unwrap(), b"2");

        // Many deletes at once in directories they empty: none fails because another one
        // removed the directory under it.
        let s = std::sync::Arc::new(s);
        let keys: Vec<ObjectKey> = (0..64).map(|i| ObjectKey::new(format!("y/{}/{i}", i % 4)).unwrap()).collect();
        for k in &keys {
            s.put(k, Body::Bytes(Bytes::from_static(b"1")), PutMode::CreateNew).await.unwrap();
        }
        let tasks: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let s = s.clone();
                tokio::task::spawn_blocking(move || block_on(s.delete(&k)))
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(!dir.path().join("y").exists());
    }

    /// Runs a future to completion on this (blocking) thread.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    /// What a killed writer left in the scratch directory (an hour and more old) is removed
    /// by the next writer; a file being written now is not.
    #[test]
    fn stale_scratch_files_are_swept_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let scratch = s.scratch_dir().unwrap();
        let (old, new) = (scratch.join("killed.tmp"), scratch.join("writing.tmp"));
        fs::write(&old, b"x").unwrap();
        fs::write(&new, b"y").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options().write(true).open(&old).unwrap().set_modified(two_hours_ago).unwrap();
        LocalStorage::open_existing(dir.path()).unwrap();
        assert!(old.exists(), "readers leave it");
        LocalStorage::open(dir.path()).unwrap();
        assert!(!old.exists() && new.exists());
    }

    #[tokio::test]
    async fn reading_a_missing_repository_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(LocalStorage::open_existing(dir.path().join("typo")), Err(StorageError::Config(_))));
        assert!(!dir.path().join("typo").exists(), "nothing created");
        assert!(LocalStorage::open_existing(dir.path()).is_ok());
    }

    #[tokio::test]
    async fn unusable_root_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(LocalStorage::open(file.join("repo")), Err(StorageError::Config(_))));
    }
}
