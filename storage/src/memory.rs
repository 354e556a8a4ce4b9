//! An in-memory backend for unit tests: a sorted map behind a mutex, nothing durable.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Body, ObjectInfo, ObjectKey, ObjectReader, PutMode, Storage, StorageError};

/// Objects held in process memory.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lookup(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key.as_str())
            .cloned()
            .ok_or_else(|| StorageError::NotFound { key: key.to_string() })
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn put(&self, key: &ObjectKey, body: Body, mode: PutMode) -> Result<(), StorageError> {
        let bytes = match body {
            Body::Bytes(b) => b,
            Body::File(p) => std::fs::read(&p).map_err(|e| StorageError::io("read", &p, e))?.into(),
        };
        let mut map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if mode == PutMode::CreateNew && map.contains_key(key.as_str()) {
            return Err(StorageError::AlreadyExists { key: key.to_string() });
        }
        map.insert(key.to_string(), bytes);
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        Ok(ObjectReader::Bytes(self.lookup(key)?))
    }

    async fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StorageError> {
        let b = self.lookup(key)?;
        let len = b.len() as u64;
        let start = range.start.min(len) as usize;
        let end = range.end.min(len).max(range.start.min(len)) as usize;
        Ok(b.slice(start..end))
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        let b = self.lookup(key)?;
        Ok(ObjectInfo { key: key.clone(), size: b.len() as u64 })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let map = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo { key: ObjectKey(k.clone()), size: v.len() as u64 })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).remove(key.as_str());
        Ok(())
    }

    /// Nothing in memory is ever locked.
    async fn retention(&self, _key: &ObjectKey) -> Result<Option<SystemTime>, StorageError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let s = super::MemoryStorage::new();
        crate::conformance::run_all(&s, "conf").await;
    }
}
