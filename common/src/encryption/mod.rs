//! Which keys open an encrypted repository, and the record that says it is encrypted.
//!
//! Three levels of keys (see `docs/security.md`):
//! - each object has its own random key, stored sealed in the object's header
//!   ([`storage::encrypted`]);
//! - those are sealed by a **repository data key**; the repository's data keys are listed in
//!   the encryption record `_pitr/encryption.json`, each one sealed (wrapped) by one or more
//!   key-encryption keys, and one of them is current (used for new objects);
//! - a **key-encryption key** (KEK) comes from the configuration: a key file
//!   (`encryption-key-file`) or an AWS KMS key (`encryption-kms-key-id`), see [`kek`].
//!
//! Rotating the key-encryption key ([`rotate`], [`retire`]) re-wraps the data keys in the
//! record and never touches an object. The record exists exactly when the repository is
//! encrypted: [`open`] refuses a repository whose record the configured key cannot open, an
//! encrypted repository without a configured key, and a key for a repository that is not
//! encrypted, so nothing ever writes plaintext into an encrypted repository.

pub mod kek;
mod record;

use std::collections::BTreeMap;
use std::sync::Arc;

use storage::encrypted::{random_key, random_key_id, DataKeys, EncryptedStorage, KeyBytes, CLEAR_PREFIX};
use storage::{Body, ObjectKey, PutMode, Storage};

use crate::exit::{Failure, FailureKind};
use crate::retry::{retry, RetryPolicy};
pub use kek::{Kek, KekSetting};
pub use record::{DataKeyEntry, EncryptionRecord, Wrapped, RECORD_KEY};

fn key_failure(msg: impl Into<String>) -> Failure {
    Failure::msg(FailureKind::Key, msg.into())
}

/// Reads the encryption record; `None` when the repository has none (is not encrypted).
pub async fn read_record(storage: &dyn Storage, policy: RetryPolicy) -> Result<Option<EncryptionRecord>, Failure> {
    let key = record_key();
    match retry(policy, "read the encryption record", || storage::read_all(storage, &key)).await {
        Ok(bytes) => Ok(Some(EncryptionRecord::parse(&bytes)?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Failure::from(e).context("reading the repository's encryption record")),
    }
}

fn record_key() -> ObjectKey {
    ObjectKey::new(RECORD_KEY).expect("a valid key")
}

async fn write_record(
    storage: &dyn Storage,
    policy: RetryPolicy,
    record: &EncryptionRecord,
    mode: PutMode,
) -> Result<(), storage::StorageError> {
    let key = record_key();
    let body = record.to_json();
    retry(policy, "write the encryption record", || storage.put(&key, Body::Bytes(body.clone().into()), mode)).await
}

/// What [`open`] is opening the repository for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading (and the small writes of readers: leases); an unencrypted repository with a
    /// key configured is refused.
    Read,
    /// Writing: a new, empty repository with a key configured becomes encrypted.
    Write,
}

/// The storage to use for `inner` given the configured key-encryption key: `inner` itself
/// for an unencrypted repository without a key, an [`EncryptedStorage`] for an encrypted one
/// with a key that opens it; a [`FailureKind::Key`] failure otherwise. `name` names the
/// repository in messages, `origin` the setting that holds the key.
pub async fn open(
    inner: Arc<dyn Storage>,
    kek: Option<&Kek>,
    access: Access,
    policy: RetryPolicy,
    name: &str,
) -> Result<Arc<dyn Storage>, Failure> {
    let record = read_record(inner.as_ref(), policy).await?;
    match (record, kek) {
        (None, None) => Ok(inner),
        (Some(r), None) => Err(key_failure(format!(
            "repository {name} is encrypted (since {}), and no key-encryption key is configured: set \
             encryption-key-file or encryption-kms-key-id (PITR_ENCRYPTION_KEY_FILE, PITR_ENCRYPTION_KMS_KEY_ID) to \
             one of its keys ({})",
            r.created,
            r.kek_labels().join(", ")
        ))),
        (None, Some(k)) if access == Access::Read => Err(key_failure(format!(
            "a key-encryption key is configured ({}), but repository {name} is not encrypted (it has no {RECORD_KEY}): \
             remove the setting, or point at the encrypted repository",
            k.describe()
        ))),
        (None, Some(k)) => {
            let record = initialize(inner.as_ref(), k, policy, name).await?;
            Ok(Arc::new(EncryptedStorage::new(inner, unwrap_keys(&record, k, access, name).await?)))
        }
        (Some(r), Some(k)) => Ok(Arc::new(EncryptedStorage::new(inner, unwrap_keys(&r, k, access, name).await?))),
    }
}

/// Makes an empty repository encrypted: a first data key wrapped by `kek`, in a new record.
/// Refuses a repository that already holds objects (they are in plaintext). Two writers
/// racing: the record is created once, the other one reads it.
async fn initialize(
    storage: &dyn Storage,
    kek: &Kek,
    policy: RetryPolicy,
    name: &str,
) -> Result<EncryptionRecord, Failure> {
    let listed = retry(policy, "list the repository", || storage.list("")).await?;
    if let Some(o) = listed.iter().find(|o| !o.key.as_str().starts_with(CLEAR_PREFIX)) {
        return Err(key_failure(format!(
            "a key-encryption key is configured ({}), but repository {name} already holds unencrypted objects (e.g. \
             {}): client-side encryption starts with an empty repository (a new bucket, prefix or directory); take a \
             new base backup there",
            kek.describe(),
            o.key
        )));
    }
    let id = random_key_id();
    let (data_key, wrapped) = kek.generate(&id).await?;
    drop(data_key);
    let record = EncryptionRecord::new(DataKeyEntry::new(&id, vec![wrapped]));
    match write_record(storage, policy, &record, PutMode::CreateNew).await {
        Ok(()) => {
            tracing::info!(repository = name, data_key = id, kek = kek.describe(), "repository is now encrypted");
            Ok(record)
        }
        Err(storage::StorageError::AlreadyExists { .. }) => read_record(storage, policy)
            .await?
            .ok_or_else(|| Failure::msg(FailureKind::Storage, "the encryption record vanished while it was created")),
        Err(e) => Err(Failure::from(e).context("creating the repository's encryption record")),
    }
}

/// The data keys of `record` that `kek` opens. Writers need the current one.
async fn unwrap_keys(record: &EncryptionRecord, kek: &Kek, access: Access, name: &str) -> Result<DataKeys, Failure> {
    let mut keys: BTreeMap<String, KeyBytes> = BTreeMap::new();
    for entry in &record.keys {
        if let Some(k) = kek.unwrap_entry(entry).await? {
            keys.insert(entry.id.clone(), k);
        }
    }
    if keys.is_empty() {
        return Err(key_failure(format!(
            "the configured key-encryption key ({}) is not one of repository {name}'s (its data keys are wrapped by {})",
            kek.describe(),
            record.kek_labels().join(", ")
        )));
    }
    let current = if keys.contains_key(&record.current) {
        record.current.clone()
    } else if access == Access::Read {
        keys.keys().next().cloned().unwrap_or_default()
    } else {
        return Err(key_failure(format!(
            "the configured key-encryption key ({}) opens some of repository {name}'s data keys but not the current \
             one ({}): finish the rotation (`wal-archiver keys rotate` with the key that wraps it) before writing",
            kek.describe(),
            record.current
        )));
    };
    DataKeys::new(&current, keys).map_err(|e| key_failure(e.to_string()))
}

/// What [`rotate`] and [`retire`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    /// The record as written.
    pub record: EncryptionRecord,
    /// How many data keys got a new wrap or lost an old one.
    pub changed: usize,
}

/// Rotation, step 1: with the current key-encryption key `old`, wraps every data key with
/// `new` as well and adds a new current data key wrapped by both. Objects are not touched;
/// programs configured with either key keep working. Then switch the configuration to `new`
/// and run [`retire`].
pub async fn rotate(
    storage: &dyn Storage,
    policy: RetryPolicy,
    old: &Kek,
    new: &Kek,
    name: &str,
) -> Result<Rewrapped, Failure> {
    let mut record = read_record(storage, policy)
        .await?
        .ok_or_else(|| key_failure(format!("repository {name} is not encrypted: there is nothing to rotate")))?;
    if old.same_key(new) {
        return Err(key_failure(format!(
            "the new key-encryption key ({}) is the configured one: name a different key",
            new.describe()
        )));
    }
    let mut changed = 0;
    for entry in &mut record.keys {
        let Some(k) = old.unwrap_entry(entry).await? else {
            return Err(key_failure(format!(
                "data key {} is not wrapped by the configured key-encryption key ({}): rotate with a key that opens \
                 every data key",
                entry.id,
                old.describe()
            )));
        };
        if new.unwrap_entry(entry).await?.is_none() {
            entry.wrapped.push(new.wrap(&entry.id, &k).await?);
            changed += 1;
        }
    }
    let id = random_key_id();
    let k = random_key();
    let entry = DataKeyEntry::new(&id, vec![old.wrap(&id, &k).await?, new.wrap(&id, &k).await?]);
    record.keys.push(entry);
    record.current = id;
    write_record(storage, policy, &record, PutMode::Overwrite).await?;
    Ok(Rewrapped { record, changed: changed + 1 })
}

/// Rotation, step 2: with the new key-encryption key configured, removes every other key's
/// wraps, so that the old key no longer opens anything (and may be destroyed). Refuses when
/// the configured key does not open every data key.
pub async fn retire(storage: &dyn Storage, policy: RetryPolicy, kek: &Kek, name: &str) -> Result<Rewrapped, Failure> {
    let mut record = read_record(storage, policy)
        .await?
        .ok_or_else(|| key_failure(format!("repository {name} is not encrypted: there is nothing to retire")))?;
    let mut changed = 0;
    for entry in &mut record.keys {
        let Some(mine) = kek.find_wrap(entry).await? else {
            return Err(key_failure(format!(
                "data key {} is not wrapped by the configured key-encryption key ({}): run `wal-archiver keys rotate` \
                 first (with the old key configured and the new one named), then retire with the new one",
                entry.id,
                kek.describe()
            )));
        };
        if entry.wrapped.len() > 1 {
            entry.wrapped = vec![mine];
            changed += 1;
        }
    }
    write_record(storage, policy, &record, PutMode::Overwrite).await?;
    Ok(Rewrapped { record, changed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::memory::MemoryStorage;

    fn policy() -> RetryPolicy {
        RetryPolicy::with_retries(0)
    }

    async fn file_kek(dir: &std::path::Path, name: &str) -> Kek {
        let path = dir.join(name);
        kek::new_key_file(&path).unwrap();
        Kek::open(&KekSetting::File(path)).await.unwrap()
    }

    #[tokio::test]
    async fn racing_writers_agree_on_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let k = file_kek(dir.path(), "k").await;
        let s = MemoryStorage::new();
        let first = initialize(&s, &k, policy(), "r").await.unwrap();
        // The second writer saw an empty repository too, made its own data key, and lost the
        // create-if-absent: it takes the first one's record.
        let second = initialize(&s, &k, policy(), "r").await.unwrap();
        assert_eq!(first, second);
        assert_eq!(read_record(&s, policy()).await.unwrap(), Some(first));
    }

    #[tokio::test]
    async fn rotation_needs_another_key_and_retire_needs_every_data_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (file_kek(dir.path(), "a").await, file_kek(dir.path(), "b").await);
        let s: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        open(s.clone(), Some(&a), Access::Write, policy(), "r").await.unwrap();
        assert_eq!(rotate(s.as_ref(), policy(), &a, &a, "r").await.unwrap_err().kind, FailureKind::Key);
        // b opens nothing yet, so it can neither retire nor write.
        assert_eq!(retire(s.as_ref(), policy(), &b, "r").await.unwrap_err().kind, FailureKind::Key);
        assert_eq!(open(s.clone(), Some(&b), Access::Write, policy(), "r").await.unwrap_err().kind, FailureKind::Key);
        let done = rotate(s.as_ref(), policy(), &a, &b, "r").await.unwrap();
        assert_eq!((done.record.keys.len(), done.changed), (2, 2));
        // Between rotate and retire, both keys write (with the new current data key).
        for k in [&a, &b] {
            open(s.clone(), Some(k), Access::Write, policy(), "r").await.unwrap();
        }
        let done = retire(s.as_ref(), policy(), &b, "r").await.unwrap();
        assert!(done.record.keys.iter().all(|k| k.wrapped.len() == 1));
        assert_eq!(open(s.clone(), Some(&a), Access::Read, policy(), "r").await.unwrap_err().kind, FailureKind::Key);
        open(s.clone(), Some(&b), Access::Read, policy(), "r").await.unwrap();
    }
}
