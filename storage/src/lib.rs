//! The one narrow interface pitr stores everything through, and its backends.
//!
//! A repository is a flat namespace of [`ObjectKey`]s holding immutable blobs. Every backend
//! (local directory, S3, memory) keeps the contracts written on [`Storage`]'s methods and
//! passes the shared suite in [`conformance`]. Nothing above this layer knows which backend
//! it talks to. Decisions about absence are made from exact-key reads, never from listings.
//!
//! The crate also holds the retry helper ([`retry`]) that every remote call and every backoff
//! loop above it goes through. It knows nothing of PostgreSQL or of what the objects hold.

pub mod encrypted;
pub mod local;
pub mod memory;
pub mod s3;

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
#[cfg(any(test, feature = "test-support"))]
pub mod faulty;
pub mod retry;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

/// A validated object name relative to the repository root: `/`-separated segments, none
/// empty, none `.` or `..`, none starting with `.` (names starting with a dot are reserved for
/// backends' own scratch files), no NUL or backslash.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.len() <= 1024
            && key.split('/').all(|s| !s.is_empty() && !s.starts_with('.'))
            && !key.contains(['\0', '\\']);
        if ok {
            Ok(ObjectKey(key))
        } else {
            Err(StorageError::InvalidKey(key))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.0)
    }
}

/// What `put` does when the key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`StorageError::AlreadyExists`] and leave the existing object untouched.
    CreateNew,
    /// Replace the existing object atomically.
    Overwrite,
}

/// The content of a `put`.
#[derive(Debug)]
pub enum Body {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A complete local file, read by the backend (never modified or removed by it). A file
    /// inside [`Storage::scratch_dir`] can be stored without a copy.
    File(PathBuf),
}

/// Size and name of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
}

/// A readable object: a local file (read in place), bytes, or a byte stream.
pub enum ObjectReader {
    /// A file opened for reading.
    File(std::fs::File),
    /// The whole object in memory.
    Bytes(Bytes),
    /// A stream from a remote store.
    Stream(Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    /// A local reader that produces the object as it is read (an encrypted local file,
    /// decrypted chunk by chunk). A damaged part fails a read with `InvalidData`.
    Reader(Box<dyn std::io::Read + Send>),
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectReader::File(_) => f.write_str("ObjectReader::File"),
            ObjectReader::Bytes(b) => write!(f, "ObjectReader::Bytes({} bytes)", b.len()),
            ObjectReader::Stream(_) => f.write_str("ObjectReader::Stream"),
            ObjectReader::Reader(_) => f.write_str("ObjectReader::Reader"),
        }
    }
}

/// Storage operations fail in these ways; [`StorageError::is_retryable`] tells the retry
/// helper which ones are worth another attempt.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key does not exist (an exact-key answer, never inferred from a listing).
    #[error("{key} does not exist in the repository")]
    NotFound {
        /// The key.
        key: String,
    },
    /// `PutMode::CreateNew` and the key exists.
    #[error("{key} already exists in the repository")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key is not a valid [`ObjectKey`].
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// A local filesystem error.
    /// (The cause is part of the message and not also a `source()`, so that a printed error
    /// chain does not say it twice.)
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: String,
        /// The cause.
        error: std::io::Error,
    },
    /// A remote store's error.
    #[error("{op} {key}: {message}")]
    Remote {
        /// The operation.
        op: &'static str,
        /// The key (or bucket) involved.
        key: String,
        /// What the store or the transport said.
        message: String,
        /// Whether trying again may help (5xx, throttling, timeouts, connection errors).
        retryable: bool,
    },
    /// The backend cannot be used as configured.
    #[error("{0}")]
    Config(String),
    /// An encrypted object does not decrypt: it is damaged, was stored under another name, or
    /// is not encrypted at all.
    #[error("{key} {message}")]
    Damaged {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An encrypted object was written with a key this program does not hold.
    #[error("{key} cannot be read: {message}")]
    KeyUnavailable {
        /// The key.
        key: String,
        /// Which key is missing.
        message: String,
    },
}

impl StorageError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Remote { retryable, .. } => *retryable,
            StorageError::Io { error, .. } => matches!(
                error.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// Whether this is a certain "no such object".
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    pub(crate) fn io(op: &'static str, path: &Path, error: std::io::Error) -> Self {
        StorageError::Io { op, path: path.display().to_string(), error }
    }
}

/// A repository backend.
///
/// Contracts every implementation keeps (checked by [`conformance`]):
/// - **Atomic visibility**: a reader sees either no object or a complete one, never a prefix.
/// - **Durability**: when `put` returns `Ok`, the object survives a crash of this host
///   (local: file and directory fsynced) or is acknowledged and readable (remote).
/// - **Create-if-absent**: `put(CreateNew)` never replaces an object; if the key exists it
///   returns `AlreadyExists`. Backends whose store may ignore conditional writes check for
///   the key first as well.
/// - **Not found**: `get`, `read_range` and `head` return `NotFound` only when the store
///   answered that this exact key does not exist; transport errors are `Remote`/`Io`.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Stores `body` under `key` (see the trait's contracts).
    async fn put(&self, key: &ObjectKey, body: Body, mode: PutMode) -> Result<(), StorageError>;

    /// Opens the whole object for reading.
    async fn get(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError>;

    /// Reads `range` of the object; the result is shorter when the object ends first, and
    /// empty when the range starts at or after its end.
    async fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StorageError>;

    /// Size of the object.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError>;

    /// Every object whose key starts with `prefix`, sorted by key. Listings may lag behind
    /// writes on some stores: use them to enumerate, never to decide that a key is absent.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;

    /// Removes the object; removing an absent key succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// Until when the object is protected from deletion (its S3 Object Lock retain-until
    /// date), or `None` when it carries no retention; a date in the past means the lock has
    /// passed. Backends that cannot lock objects (local, memory) answer `None` without
    /// looking. A missing key is `NotFound` where the backend looks, `None` elsewhere.
    ///
    /// Required, with no default, so that a wrapper around another backend must decide to
    /// pass it through: a wrapper that answered `None` for a locked object would let
    /// `basebackup expire` "delete" it (on a versioned bucket: hide it behind a delete marker).
    async fn retention(&self, key: &ObjectKey) -> Result<Option<SystemTime>, StorageError>;

    /// A directory on the same filesystem as the objects, where callers may stage files
    /// that `put(Body::File)` then stores without a copy. `None` for remote stores.
    fn scratch_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// Reads a whole object into memory (for small objects such as catalog entries).
pub async fn read_all(storage: &dyn Storage, key: &ObjectKey) -> Result<Bytes, StorageError> {
    into_bytes(key, storage.get(key).await?).await
}

/// Reads what `reader` (the object at `key`) yields into memory.
pub async fn into_bytes(key: &ObjectKey, reader: ObjectReader) -> Result<Bytes, StorageError> {
    match reader {
        ObjectReader::Bytes(b) => Ok(b),
        ObjectReader::File(mut f) => {
            // Sized from the start: growing by doubling copies a 16 MiB object about twice over.
            let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
            let mut v = Vec::with_capacity(len);
            std::io::Read::read_to_end(&mut f, &mut v)
                .map_err(|e| StorageError::io("read", Path::new(key.as_str()), e))?;
            Ok(v.into())
        }
        ObjectReader::Reader(mut r) => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut v).map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => {
                    StorageError::Damaged { key: key.to_string(), message: e.to_string() }
                }
                _ => StorageError::io("read", Path::new(key.as_str()), e),
            })?;
            Ok(v.into())
        }
        ObjectReader::Stream(mut s) => {
            let mut v = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut v).await.map_err(|e| StorageError::Remote {
                op: "read",
                key: key.to_string(),
                message: e.to_string(),
                retryable: true,
            })?;
            Ok(v.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for good in ["a", "main/cluster.json", "main/wal/0000000100000000/000000010000000000000001.zst"] {
            assert!(ObjectKey::new(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", ".tmp/x", "a/.hidden", "a\\b", "a\0b"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
    }
}
