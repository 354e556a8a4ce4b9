//! Who holds something in the repository: a backup id being taken, a restore in progress, a
//! running `expire`. Object stores have no locks; an object created create-if-absent is the
//! closest thing, and its content says who created it, so that a run recognises its own
//! object after a retried PUT that had succeeded (the retry then finds "already exists").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::repository::{Repository, RepositoryError};
use crate::retry::retry;
use storage::{read_all, Body, ObjectKey, PutMode, StorageError};

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

/// What a restore in progress holds, so that `basebackup expire` leaves it alone:
/// `<cluster>/leases/restore-<nonce>.json`. Written before the restore is planned (without a
/// backup: "planning, may need any backup"), updated with the chosen backup and the first WAL
/// segment recovery reads, removed when the restore is over; one that was not removed (a
/// killed `pitr-restore`, a restore whose server is started later by hand) ends at `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreLease {
    /// Who restores.
    pub owner: Owner,
    /// The backup being restored; `None` while the restore is being planned.
    pub backup: Option<String>,
    /// The first WAL segment recovery reads (with `backup`).
    pub wal_from: Option<String>,
    /// Unix time (seconds) when the lease ends by itself.
    pub until_unix: i64,
    /// The same, for people (UTC, RFC 3339).
    pub until: String,
}

/// Prefix of the cluster's leases.
pub fn leases_prefix(cluster: &str) -> String {
    format!("{cluster}/leases/")
}

impl RestoreLease {
    /// Whether the lease still holds at `now` (Unix seconds).
    pub fn active(&self, now: i64) -> bool {
        self.until_unix > now
    }

    fn until_from_now(d: Duration) -> (i64, String) {
        let until = time::OffsetDateTime::now_utc() + d;
        let text = until
            .replace_nanosecond(0)
            .unwrap_or(until)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        (until.unix_timestamp(), text)
    }
}

/// A restore lease this process holds.
#[derive(Debug)]
pub struct RestoreLeaseHandle {
    repo: Repository,
    key: ObjectKey,
    lease: RestoreLease,
}

impl RestoreLeaseHandle {
    /// Records a restore that is being planned, for `hold` at most. Best effort: a repository
    /// that cannot be written (read-only credentials during an incident) must not stop a
    /// restore; that is logged, and `None` returned.
    pub async fn begin(repo: &Repository, hold: Duration) -> Option<RestoreLeaseHandle> {
        let owner = Owner::me();
        let key = ObjectKey::new(format!("{}restore-{}.json", leases_prefix(repo.cluster()), owner.nonce)).ok()?;
        let (until_unix, until) = RestoreLease::until_from_now(hold);
        let lease = RestoreLease { owner, backup: None, wal_from: None, until_unix, until };
        let handle = RestoreLeaseHandle { repo: repo.clone(), key, lease };
        match handle.write().await {
            Ok(()) => Some(handle),
            Err(e) => {
                tracing::warn!(
                    "cannot record a restore lease in the repository ({e}): a basebackup expire running during this \
                     restore could remove the backup or WAL it uses"
                );
                None
            }
        }
    }

    async fn write(&self) -> Result<(), RepositoryError> {
        let body =
            Bytes::from(serde_json::to_vec_pretty(&self.lease).map_err(|e| RepositoryError::Corrupt(e.to_string()))?);
        retry(self.repo.retry_policy(), "write restore lease", || {
            self.repo.storage().put(&self.key, Body::Bytes(body.clone()), PutMode::Overwrite)
        })
        .await?;
        Ok(())
    }

    /// Records the chosen backup and first WAL segment, held for `hold` from now (best effort).
    pub async fn hold(&mut self, backup: &str, wal_from: &str, hold: Duration) {
        self.lease.backup = Some(backup.to_string());
        self.lease.wal_from = Some(wal_from.to_string());
        (self.lease.until_unix, self.lease.until) = RestoreLease::until_from_now(hold);
        if let Err(e) = self.write().await {
            tracing::warn!("cannot update the restore lease {}: {e}", self.key);
        }
    }

    /// Removes the lease: the restore no longer needs anything (best effort; it also ends at
    /// `until`).
    pub async fn release(self) {
        if let Err(e) =
            retry(self.repo.retry_policy(), "remove restore lease", || self.repo.storage().delete(&self.key)).await
        {
            tracing::warn!("cannot remove the restore lease {}: {e} (it ends at {})", self.key, self.lease.until);
        }
    }

    /// The lease as recorded.
    pub fn lease(&self) -> &RestoreLease {
        &self.lease
    }
}

/// Every restore lease of the cluster (listed, then each read by exact key; one removed in
/// between is skipped), with its key. An unreadable one is damage (the caller must not
/// guess what it held).
pub async fn restore_leases(repo: &Repository) -> Result<Vec<(ObjectKey, RestoreLease)>, RepositoryError> {
    let prefix = leases_prefix(repo.cluster());
    let listed = retry(repo.retry_policy(), "list leases", || repo.storage().list(&prefix)).await?;
    let mut out = Vec::new();
    for o in listed {
        let name = o.key.as_str().rsplit('/').next().unwrap_or("");
        if !(name.starts_with("restore-") && name.ends_with(".json")) {
            continue;
        }
        match retry(repo.retry_policy(), "read lease", || read_all(repo.storage().as_ref(), &o.key)).await {
            Ok(b) => {
                let lease = serde_json::from_slice(&b)
                    .map_err(|e| RepositoryError::Corrupt(format!("{} is unreadable: {e}", o.key)))?;
                out.push((o.key, lease));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::retry::RetryPolicy;
    use storage::memory::MemoryStorage;

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

    #[tokio::test]
    async fn restore_leases_are_listed_updated_and_released() {
        let repo = Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0));
        let mut h = RestoreLeaseHandle::begin(&repo, Duration::from_secs(60)).await.unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let listed = restore_leases(&repo).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].1.active(now) && listed[0].1.backup.is_none(), "planning");
        h.hold("20261205T000000Z", "000000010000000000000003", Duration::from_secs(3600)).await;
        let listed = restore_leases(&repo).await.unwrap();
        assert_eq!(listed[0].1.backup.as_deref(), Some("20261205T000000Z"));
        assert!(!listed[0].1.active(now + 7200), "ends by itself");
        h.release().await;
        assert!(restore_leases(&repo).await.unwrap().is_empty());
    }
}
