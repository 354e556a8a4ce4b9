//! A fault-injecting wrapper for tests: fails the next N operations with a retryable error
//! before passing calls through, to exercise the retry helper and callers' error paths.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Body, ObjectInfo, ObjectKey, ObjectReader, PutMode, Storage, StorageError};

/// Wraps a backend; `fail_next(n)` makes the next `n` calls fail with a retryable error.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    failures: AtomicU32,
    calls: AtomicU32,
}

impl FaultyStorage {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        FaultyStorage { inner, failures: AtomicU32::new(0), calls: AtomicU32::new(0) }
    }

    /// Arms `n` failures.
    pub fn fail_next(&self, n: u32) {
        self.failures.store(n, Ordering::SeqCst);
    }

    /// How many calls reached this wrapper.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn check(&self, op: &'static str, key: &str) -> Result<(), StorageError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let armed = self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if armed {
            Err(StorageError::Remote {
                op,
                key: key.to_string(),
                message: "injected fault (HTTP 500)".into(),
                retryable: true,
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    async fn put(&self, key: &ObjectKey, body: Body, mode: PutMode) -> Result<(), StorageError> {
        self.check("put", key.as_str())?;
        self.inner.put(key, body, mode).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        self.check("get", key.as_str())?;
        self.inner.get(key).await
    }
    async fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StorageError> {
        self.check("read_range", key.as_str())?;
        self.inner.read_range(key, range).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        self.check("head", key.as_str())?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.check("list", prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.check("delete", key.as_str())?;
        self.inner.delete(key).await
    }
    async fn retention(&self, key: &ObjectKey) -> Result<Option<SystemTime>, StorageError> {
        self.check("retention", key.as_str())?;
        self.inner.retention(key).await
    }
    fn scratch_dir(&self) -> Option<PathBuf> {
        self.inner.scratch_dir()
    }
}
