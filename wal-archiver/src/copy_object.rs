//! Copying one object from one repository to another, verified: what `wal-archiver copy` does
//! for every object a repository lacks, and what `push` does for a WAL file that the second
//! repository missed and pg_wal no longer holds.
//!
//! The object is read whole from the source (decrypted when the source is encrypted) and
//! checked before anything is written: an object in the codec format must decompress with
//! its size and BLAKE3 digest and name the file its key says; a JSON object (the cluster
//! record, a catalog entry) must parse. It is then written create-if-absent through the
//! target's own storage, so the target's encryption, storage classes and Object Lock apply.
//! When the target already holds the key, the two must agree (the same name, size and digest;
//! the same JSON), else it is a conflict: nothing is ever overwritten.

use std::io;

use common::codec::{self, ObjectHeader};
use common::exit::{Failure, FailureKind};
use common::repository::Repository;
use common::retry::retry;
use common::storage::{read_all, Body, ObjectKey, PutMode, StorageError};

/// What copying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// Written to the target; this many bytes (as read from the source).
    Copied(u64),
    /// The target already held the same object.
    Present,
}

/// What an object of this key is, by its name.
enum Kind {
    /// The codec format, whose header must name this file.
    Codec(String),
    /// JSON.
    Json,
}

fn kind_of(cluster: &str, key: &ObjectKey) -> Result<Kind, Failure> {
    let k = key.as_str();
    let rest = k.strip_prefix(cluster).and_then(|r| r.strip_prefix('/')).unwrap_or(k);
    if rest.ends_with(".json") {
        return Ok(Kind::Json);
    }
    let name = match rest.split_once('/') {
        Some(("wal", file)) => file.rsplit('/').next().unwrap_or(file),
        Some(("backups", path)) => path,
        _ => return Err(Failure::msg(FailureKind::Invalid, format!("{key}: not an object pitr copies"))),
    };
    match name.strip_suffix(".zst") {
        Some(n) => Ok(Kind::Codec(n.to_string())),
        None => Err(Failure::msg(FailureKind::Invalid, format!("{key}: not an object pitr copies"))),
    }
}

/// Reads the object at `key` from `src` and checks it (see the module documentation); its
/// bytes and, for a codec object, its header.
pub async fn read_verified(src: &Repository, key: &ObjectKey) -> Result<(bytes::Bytes, Option<ObjectHeader>), Failure> {
    let kind = kind_of(src.cluster(), key)?;
    let bytes = retry(src.retry_policy(), "read object", || read_all(src.storage().as_ref(), key)).await?;
    let damaged = |what: String| Failure::msg(FailureKind::Corrupt, format!("{key} in the source is damaged: {what}"));
    match kind {
        Kind::Json => {
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| damaged(format!("not JSON: {e}")))?;
            Ok((bytes, None))
        }
        Kind::Codec(name) => {
            let header = codec::decompress(&bytes[..], &mut io::sink()).map_err(|e| damaged(e.to_string()))?;
            if header.name != name {
                return Err(damaged(format!("it holds {:?}, not {name:?}", header.name)));
            }
            Ok((bytes, Some(header)))
        }
    }
}

/// Copies the object at `key` from `src` to `dst` (see the module documentation).
pub async fn copy_object(src: &Repository, dst: &Repository, key: &ObjectKey) -> Result<Copied, Failure> {
    let (bytes, header) = read_verified(src, key).await?;
    let len = bytes.len() as u64;
    let put = retry(dst.retry_policy(), "copy object", || {
        dst.storage().put(key, Body::Bytes(bytes.clone()), PutMode::CreateNew)
    })
    .await;
    match put {
        Ok(()) => Ok(Copied::Copied(len)),
        Err(StorageError::AlreadyExists { .. }) => {
            same_in_target(dst, key, &bytes, header.as_ref()).await.map(|()| Copied::Present)
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks that the target's object at `key` holds what the source's does (`bytes`, with
/// `header` for a codec object): `Ok` when it does, a conflict (exit 4) when not.
pub async fn same_in_target(
    dst: &Repository,
    key: &ObjectKey,
    bytes: &[u8],
    header: Option<&ObjectHeader>,
) -> Result<(), Failure> {
    let conflict = |what: String| {
        Failure::msg(
            FailureKind::Conflict,
            format!(
                "{key}: the two repositories hold different objects under this key ({what}); nothing was overwritten"
            ),
        )
    };
    match header {
        Some(h) => match dst.object_header(key).await? {
            Some(t) if t.name == h.name && t.raw_size == h.raw_size && t.blake3 == h.blake3 => Ok(()),
            Some(t) => Err(conflict(format!(
                "source: {} {} bytes blake3 {:.16}; target: {} {} bytes blake3 {:.16}",
                h.name, h.raw_size, h.blake3, t.name, t.raw_size, t.blake3
            ))),
            None => Err(Failure::msg(FailureKind::Storage, format!("{key} exists in the target but cannot be read"))
                .transient()),
        },
        None => {
            let theirs = retry(dst.retry_policy(), "read object", || read_all(dst.storage().as_ref(), key)).await?;
            let a: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            match serde_json::from_slice::<serde_json::Value>(&theirs) {
                Ok(b) if a == b => Ok(()),
                _ => Err(conflict("different JSON".into())),
            }
        }
    }
}

/// Compares the object at `key` in both repositories by header (codec objects) or content
/// (JSON), without reading a codec object's body.
pub async fn compare_present(src: &Repository, dst: &Repository, key: &ObjectKey) -> Result<(), Failure> {
    match kind_of(src.cluster(), key)? {
        Kind::Codec(_) => match src.object_header(key).await? {
            Some(h) => same_in_target(dst, key, &[], Some(&h)).await,
            None => Ok(()),
        },
        Kind::Json => {
            let mine = retry(src.retry_policy(), "read object", || read_all(src.storage().as_ref(), key)).await?;
            same_in_target(dst, key, &mine, None).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::codec::CompressOptions;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;

    use super::*;

    fn repo() -> Repository {
        Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0))
    }

    async fn put_codec(r: &Repository, key: &str, name: &str, data: &[u8]) {
        let mut out = io::Cursor::new(Vec::new());
        codec::compress(data, &mut io::empty(), &mut out, name, None, CompressOptions::default()).unwrap();
        let key = ObjectKey::new(key).unwrap();
        r.storage().put(&key, Body::Bytes(out.into_inner().into()), PutMode::CreateNew).await.unwrap();
    }

    /// Copied once, present the second time; a damaged or misnamed source object is refused
    /// and not written; different content under one key is a conflict.
    #[tokio::test]
    async fn copies_verified_and_never_overwrites() {
        let (a, b) = (repo(), repo());
        let key = ObjectKey::new("main/wal/0000000100000000/000000010000000000000003.zst").unwrap();
        put_codec(&a, key.as_str(), "000000010000000000000003", b"wal bytes").await;
        assert!(matches!(copy_object(&a, &b, &key).await.unwrap(), Copied::Copied(_)));
        assert_eq!(copy_object(&a, &b, &key).await.unwrap(), Copied::Present);
        compare_present(&a, &b, &key).await.unwrap();

        let other = ObjectKey::new("main/wal/0000000100000000/000000010000000000000004.zst").unwrap();
        put_codec(&a, other.as_str(), "000000010000000000000003", b"wal bytes").await;
        assert_eq!(copy_object(&a, &b, &other).await.unwrap_err().kind, FailureKind::Corrupt);
        assert!(b.storage().head(&other).await.unwrap_err().is_not_found());

        let c = repo();
        put_codec(&c, key.as_str(), "000000010000000000000003", b"other bytes").await;
        assert_eq!(copy_object(&c, &b, &key).await.unwrap_err().kind, FailureKind::Conflict);
        assert_eq!(compare_present(&c, &b, &key).await.unwrap_err().kind, FailureKind::Conflict);

        let json = ObjectKey::new("main/cluster.json").unwrap();
        a.storage().put(&json, Body::Bytes(b"{\"a\":1}".to_vec().into()), PutMode::CreateNew).await.unwrap();
        assert!(matches!(copy_object(&a, &b, &json).await.unwrap(), Copied::Copied(7)));
        c.storage().put(&json, Body::Bytes(b"{\"a\":2}".to_vec().into()), PutMode::CreateNew).await.unwrap();
        assert_eq!(copy_object(&c, &b, &json).await.unwrap_err().kind, FailureKind::Conflict);
    }
}
