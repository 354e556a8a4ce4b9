//! Who holds something in the repository: a backup id being taken, a restore in progress, a
//! running `expire`. Object stores have no locks; an object created create-if-absent is the
//! closest thing, and its content says who created it, so that a run recognises its own
//! object after a retried PUT that had succeeded (the retry then finds "already exists").

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::repository::{Repository, RepositoryError};
use crate::retry::retry;
use crate::storage::{read_all, Body, ObjectKey, PutMode, StorageError};

/// One process of one host, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Tells this owner from another process with the same host and pid.
    pub nonce: String,
    /// When it took the object (UTC, RFC 3339).
    pub since: String,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Owner {
    /// This process, now.
    pub fn me() -> Owner {
        let host = whoami::fallible::hostname().unwrap_or_else(|_| "unknown".into());
        let now = time::OffsetDateTime::now_utc();
        let mut h = blake3::Hasher::new();
        h.update(host.as_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(&now.unix_timestamp_nanos().to_le_bytes());
        h.update(&SEQ.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let since = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Owner { host, pid: std::process::id(), nonce: h.finalize().to_hex()[..32].to_string(), since }
    }
}

/// Creates `value` at `key` unless an object is there already. True when the object is
/// `value` now (created by this call, or by an earlier attempt of it); false when another
/// owner's object is there.
pub async fn create_exclusive<T>(repo: &Repository, key: &ObjectKey, value: &T) -> Result<bool, RepositoryError>
where
    T: Serialize + DeserializeOwned + PartialEq,
{
    let body = Bytes::from(serde_json::to_vec_pretty(value).map_err(|e| RepositoryError::Corrupt(e.to_string()))?);
    let put =
        retry(repo.retry_policy(), "create", || repo.storage().put(key, Body::Bytes(body.clone()), PutMode::CreateNew))
            .await;
    match put {
        Ok(()) => Ok(true),
        Err(StorageError::AlreadyExists { .. }) => match read_all(repo.storage().as_ref(), key).await {
            Ok(b) => Ok(serde_json::from_slice::<T>(&b).ok().as_ref() == Some(value)),
            // Removed again at once: someone else's, and gone.
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::retry::RetryPolicy;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn only_one_owner_gets_the_object_and_recognises_it_again() {
        let repo = Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0));
        let key = ObjectKey::new("main/x.json").unwrap();
        let (a, b) = (Owner::me(), Owner::me());
        assert_ne!(a, b, "two owners of one process differ");
        assert!(create_exclusive(&repo, &key, &a).await.unwrap());
        assert!(create_exclusive(&repo, &key, &a).await.unwrap(), "a retry finds its own object");
        assert!(!create_exclusive(&repo, &key, &b).await.unwrap());
    }
}
