//! The suite every [`Storage`] backend must pass: the contracts written on the trait,
//! exercised the same way against the local directory, memory, and real S3-compatible
//! servers. Each check panics with a message naming the broken contract.

use bytes::Bytes;

use super::{read_all, Body, ObjectKey, PutMode, Storage, StorageError};

fn key(prefix: &str, k: &str) -> ObjectKey {
    ObjectKey::new(format!("{prefix}/{k}")).unwrap()
}

/// Runs every check under `prefix` (which should be empty in the store).
pub async fn run_all(s: &dyn Storage, prefix: &str) {
    put_get_round_trip(s, prefix).await;
    create_new_never_replaces(s, prefix).await;
    overwrite_replaces(s, prefix).await;
    missing_keys_are_not_found(s, prefix).await;
    ranges(s, prefix).await;
    listing(s, prefix).await;
    delete_is_idempotent(s, prefix).await;
    file_bodies(s, prefix).await;
    awkward_names(s, prefix).await;
    empty_object(s, prefix).await;
    no_retention_without_a_lock(s, prefix).await;
}

/// What is put is what is read back, byte for byte.
pub async fn put_get_round_trip(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "rt/obj");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.put(&k, Body::Bytes(Bytes::from(data.clone())), PutMode::CreateNew).await.expect("put");
    assert_eq!(read_all(s, &k).await.expect("get"), data, "get returns the stored bytes");
    assert_eq!(s.head(&k).await.expect("head").size, data.len() as u64, "head reports the size");
}

/// `CreateNew` on an existing key fails with `AlreadyExists` and keeps the old content.
pub async fn create_new_never_replaces(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "cn/obj");
    s.put(&k, Body::Bytes(Bytes::from_static(b"first")), PutMode::CreateNew).await.expect("first put");
    let err = s.put(&k, Body::Bytes(Bytes::from_static(b"second")), PutMode::CreateNew).await;
    assert!(matches!(err, Err(StorageError::AlreadyExists { .. })), "CreateNew on an existing key: {err:?}");
    assert_eq!(read_all(s, &k).await.unwrap(), &b"first"[..], "existing object untouched");
}

/// `Overwrite` replaces the object as a whole.
pub async fn overwrite_replaces(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "ow/obj");
    s.put(&k, Body::Bytes(Bytes::from_static(b"one, longer")), PutMode::Overwrite).await.unwrap();
    s.put(&k, Body::Bytes(Bytes::from_static(b"two")), PutMode::Overwrite).await.unwrap();
    assert_eq!(read_all(s, &k).await.unwrap(), &b"two"[..]);
}

/// Every read of an absent key is `NotFound`, never another error.
pub async fn missing_keys_are_not_found(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "nf/never-written");
    assert!(s.get(&k).await.unwrap_err().is_not_found(), "get of a missing key");
    assert!(s.head(&k).await.unwrap_err().is_not_found(), "head of a missing key");
    assert!(s.read_range(&k, 0..10).await.unwrap_err().is_not_found(), "read_range of a missing key");
    // A "directory" that holds objects is not an object itself.
    s.put(&key(prefix, "nf/dir/child"), Body::Bytes(Bytes::from_static(b"x")), PutMode::CreateNew).await.unwrap();
    assert!(s.head(&key(prefix, "nf/dir")).await.unwrap_err().is_not_found(), "head of a key prefix");
}

/// Ranges inside, across and past the end of an object.
pub async fn ranges(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "rg/obj");
    s.put(&k, Body::Bytes(Bytes::from_static(b"0123456789")), PutMode::CreateNew).await.unwrap();
    assert_eq!(s.read_range(&k, 0..4).await.unwrap(), &b"0123"[..]);
    assert_eq!(s.read_range(&k, 3..7).await.unwrap(), &b"3456"[..]);
    assert_eq!(s.read_range(&k, 8..100).await.unwrap(), &b"89"[..], "range past the end is cut");
    assert!(s.read_range(&k, 10..20).await.unwrap().is_empty(), "range at the end is empty");
}

/// Listing returns exactly the keys under a prefix, sorted, with sizes.
pub async fn listing(s: &dyn Storage, prefix: &str) {
    let names = ["ls/a/1", "ls/a/2", "ls/a0", "ls/b/x/y", "lsx"];
    for n in names {
        s.put(&key(prefix, n), Body::Bytes(Bytes::from(n.as_bytes().to_vec())), PutMode::CreateNew).await.unwrap();
    }
    let got: Vec<String> =
        s.list(&format!("{prefix}/ls/")).await.unwrap().into_iter().map(|o| o.key.to_string()).collect();
    let want: Vec<String> = names[..4].iter().map(|n| format!("{prefix}/{n}")).collect();
    assert_eq!(got, want, "list with a directory-like prefix");
    let got = s.list(&format!("{prefix}/ls/a")).await.unwrap();
    assert_eq!(got.len(), 3, "a prefix that is not a whole segment matches by text: {got:?}");
    assert_eq!(got[0].size, 6);
    assert!(s.list(&format!("{prefix}/nothing-here/")).await.unwrap().is_empty());
}

/// Deleting removes the object; deleting it again succeeds.
pub async fn delete_is_idempotent(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "del/obj");
    s.put(&k, Body::Bytes(Bytes::from_static(b"x")), PutMode::CreateNew).await.unwrap();
    s.delete(&k).await.unwrap();
    assert!(s.head(&k).await.unwrap_err().is_not_found(), "deleted object is gone");
    s.delete(&k).await.expect("deleting an absent key succeeds");
}

/// A local file body is stored whole and left in place for its owner.
pub async fn file_bodies(s: &dyn Storage, prefix: &str) {
    // One directory per call: backends run this concurrently inside one test process.
    let dir = std::env::temp_dir().join(format!("pitr-conf-{}-{}", std::process::id(), prefix.replace('/', "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("body-{}", prefix.replace('/', "_")));
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    let k = key(prefix, "file/obj");
    s.put(&k, Body::File(p.clone()), PutMode::CreateNew).await.expect("put of a file body");
    assert!(p.exists(), "the caller's file is not removed");
    assert_eq!(read_all(s, &k).await.unwrap(), data, "file body round trip");
    let err = s.put(&k, Body::File(p.clone()), PutMode::CreateNew).await;
    assert!(matches!(err, Err(StorageError::AlreadyExists { .. })), "CreateNew with a file body: {err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The names pitr uses, and a few that trip stores up, survive a round trip.
pub async fn awkward_names(s: &dyn Storage, prefix: &str) {
    for n in
        ["nm/00000002.history.zst", "nm/000000010000000000000003.00000028.backup.zst", "nm/a+b", "nm/sp ace", "nm/ü"]
    {
        let k = key(prefix, n);
        s.put(&k, Body::Bytes(Bytes::from(n.as_bytes().to_vec())), PutMode::CreateNew)
            .await
            .unwrap_or_else(|e| panic!("put {n}: {e}"));
        assert_eq!(read_all(s, &k).await.unwrap(), n.as_bytes(), "{n}");
    }
}

/// A zero-length object exists and reads back empty.
pub async fn empty_object(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "empty/obj");
    s.put(&k, Body::Bytes(Bytes::new()), PutMode::CreateNew).await.unwrap();
    assert_eq!(s.head(&k).await.unwrap().size, 0);
    assert!(read_all(s, &k).await.unwrap().is_empty());
}

/// An object written without Object Lock has no retention date (a backend that can lock
/// answers from the store; the others never lock anything).
pub async fn no_retention_without_a_lock(s: &dyn Storage, prefix: &str) {
    let k = key(prefix, "lock/obj");
    s.put(&k, Body::Bytes(Bytes::from_static(b"x")), PutMode::CreateNew).await.unwrap();
    assert_eq!(s.retention(&k).await.expect("retention"), None, "an object written without a lock is not locked");
}
