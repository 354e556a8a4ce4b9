//! The storage conformance suite against `S3Storage` on real S3-compatible servers (moto and
//! s3s-fs), plus what only S3 can get wrong: credentials, missing buckets, unreachable or
//! silent servers, multipart uploads, and create-if-absent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::storage::conformance::run_all;
use common::storage::s3::{S3Options, S3Storage};
use common::storage::{read_all, Body, ObjectKey, PutMode, Storage, StorageError};
use pitr_tests::s3::{moto, s3s_fs, S3Server};

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

/// A `Remote` error that is a single line naming the operation and the object.
fn assert_clear(err: &StorageError, retryable: bool, needle: &str) {
    let text = err.to_string();
    assert!(matches!(err, StorageError::Remote { .. }), "expected a Remote error, got {err:?}");
    assert_eq!(err.is_retryable(), retryable, "retryable? {text}");
    assert!(!text.contains('\n'), "one line: {text:?}");
    assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    assert!(text.contains("s3://"), "{text:?} should name the bucket");
}

async fn conformance(server: &S3Server) {
    let bucket = server.new_bucket().await;
    let s = server.storage(&bucket, "repo/sub").await;
    run_all(&s, "conf").await;
}

#[tokio::test]
async fn conformance_moto() {
    conformance(moto()).await;
}

/// Every check of `run_all` except one: s3s-fs keeps objects as plain files, so HEAD of a key
/// that is a "directory" of other keys (`nf/dir` over `nf/dir/child`) answers 500 ("Is a
/// directory") instead of 404. The rest of `missing_keys_are_not_found` is checked here.
/// Keep this list in step with `run_all`.
#[tokio::test]
async fn conformance_s3s_fs() {
    use common::storage::conformance as c;
    let server = s3s_fs();
    let bucket = server.new_bucket().await;
    let s = server.storage(&bucket, "repo/sub").await;
    let p = "conf";
    c::put_get_round_trip(&s, p).await;
    c::create_new_never_replaces(&s, p).await;
    c::overwrite_replaces(&s, p).await;
    let k = key("conf/nf/never-written");
    assert!(s.get(&k).await.unwrap_err().is_not_found(), "get of a missing key");
    assert!(s.head(&k).await.unwrap_err().is_not_found(), "head of a missing key");
    assert!(s.read_range(&k, 0..10).await.unwrap_err().is_not_found(), "read_range of a missing key");
    c::ranges(&s, p).await;
    c::listing(&s, p).await;
    c::delete_is_idempotent(&s, p).await;
    c::file_bodies(&s, p).await;
    c::awkward_names(&s, p).await;
    c::empty_object(&s, p).await;
}

#[tokio::test]
async fn s3s_fs_directory_keys_are_a_retryable_server_error_not_not_found() {
    // Documents the quirk above: the answer is a 500, which must never become NotFound.
    let server = s3s_fs();
    let bucket = server.new_bucket().await;
    let s = server.storage(&bucket, "").await;
    s.put(&key("d/child"), Body::Bytes(Bytes::from_static(b"x")), PutMode::CreateNew).await.unwrap();
    let e = s.head(&key("d")).await.unwrap_err();
    assert_clear(&e, true, "HTTP 500");
}

async fn prefix_is_applied_and_stripped(server: &S3Server) {
    let bucket = server.new_bucket().await;
    let inner = server.storage(&bucket, "/org/repo/").await; // slashes are trimmed
    inner.put(&key("wal/1"), Body::Bytes(Bytes::from_static(b"one")), PutMode::CreateNew).await.unwrap();
    let listed: Vec<String> = inner.list("").await.unwrap().into_iter().map(|o| o.key.to_string()).collect();
    assert_eq!(listed, ["wal/1"], "keys come back relative to the repository");
    let root = server.storage(&bucket, "").await;
    assert_eq!(read_all(&root, &key("org/repo/wal/1")).await.unwrap(), &b"one"[..], "stored under the prefix");
    // A sibling prefix that starts with the same text is not part of the repository.
    root.put(&key("org/repo2/x"), Body::Bytes(Bytes::from_static(b"x")), PutMode::CreateNew).await.unwrap();
    assert_eq!(inner.list("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn prefix_is_applied_and_stripped_moto() {
    prefix_is_applied_and_stripped(moto()).await;
}

#[tokio::test]
async fn prefix_is_applied_and_stripped_s3s_fs() {
    prefix_is_applied_and_stripped(s3s_fs()).await;
}

#[tokio::test]
async fn wrong_secret_is_a_clear_permanent_error() {
    let server = s3s_fs();
    let bucket = server.new_bucket().await;
    let good = server.storage(&bucket, "").await;
    good.put(&key("a"), Body::Bytes(Bytes::from_static(b"a")), PutMode::CreateNew).await.unwrap();
    let options =
        S3Options { credentials: Some((server.access_key.clone(), "wrong-secret".into())), ..S3Options::default() };
    let bad = S3Storage::connect_with(server.config(&bucket, ""), options).await.unwrap();
    let k = key("a");
    let e = bad.get(&k).await.unwrap_err();
    assert_clear(&e, false, "SignatureDoesNotMatch");
    let e = bad.head(&k).await.unwrap_err();
    assert_clear(&e, false, "403");
    let e = bad.head(&key("never-written")).await.unwrap_err();
    assert!(!e.is_not_found(), "a rejected request is not NotFound: {e}");
    let e = bad.put(&key("b"), Body::Bytes(Bytes::from_static(b"b")), PutMode::Overwrite).await.unwrap_err();
    assert_clear(&e, false, "403");
    let e = bad.list("").await.unwrap_err();
    assert_clear(&e, false, "SignatureDoesNotMatch");
}

async fn missing_bucket(server: &S3Server) {
    let name = format!("pitr-missing-{}", std::process::id());
    let s = server.storage(&name, "repo").await;
    let k = key("wal/1");
    let e = s.head(&k).await.unwrap_err();
    assert_clear(&e, false, &format!("bucket {name} does not exist"));
    let e = s.get(&k).await.unwrap_err();
    assert_clear(&e, false, "does not exist");
    let e = s.read_range(&k, 0..5).await.unwrap_err();
    assert_clear(&e, false, "does not exist");
    let e = s.put(&k, Body::Bytes(Bytes::from_static(b"x")), PutMode::CreateNew).await.unwrap_err();
    assert_clear(&e, false, "does not exist");
    let e = s.list("").await.unwrap_err();
    assert_clear(&e, false, "does not exist");
}

#[tokio::test]
async fn missing_bucket_moto() {
    missing_bucket(moto()).await;
}

#[tokio::test]
async fn missing_bucket_s3s_fs() {
    missing_bucket(s3s_fs()).await;
}

#[tokio::test]
async fn ensure_bucket_is_idempotent() {
    for server in [moto(), s3s_fs()] {
        let bucket = server.new_bucket().await;
        let s = server.storage(&bucket, "").await;
        s.ensure_bucket().await.expect("existing bucket");
        s.ensure_bucket().await.expect("existing bucket, again");
    }
}

#[tokio::test]
async fn server_down_is_retryable_and_quick() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key: "x".into(),
        secret_key: "y".into(),
        kind: pitr_tests::s3::S3Kind::Moto,
    };
    let s = server.storage("some-bucket", "").await;
    let started = Instant::now();
    let e = s.head(&key("a")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_clear(&e, true, "cannot reach");
    let e = s.put(&key("a"), Body::Bytes(Bytes::from_static(b"a")), PutMode::Overwrite).await.unwrap_err();
    assert_clear(&e, true, "cannot reach");
}

#[tokio::test]
async fn silent_server_times_out_retryably() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().take(8) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key: "x".into(),
        secret_key: "y".into(),
        kind: pitr_tests::s3::S3Kind::Moto,
    };
    let options = S3Options { operation_timeout: Duration::from_secs(1), ..server.options() };
    let s = S3Storage::connect_with(server.config("b", ""), options).await.unwrap();
    let started = Instant::now();
    let e = s.head(&key("a")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_clear(&e, true, "no answer within");
}

/// Multipart uploads with a small threshold: file and in-memory bodies, an uneven last part,
/// and CreateNew refusing to replace the result.
async fn multipart_small_parts(server: &S3Server) {
    let bucket = server.new_bucket().await;
    let options = S3Options { multipart_threshold: 5 << 20, part_size: 5 << 20, ..server.options() };
    let s = S3Storage::connect_with(server.config(&bucket, "mp"), options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern((12 << 20) + 12345, 1);
    let path = dir.path().join("big");
    std::fs::write(&path, &data).unwrap();

    s.put(&key("file"), Body::File(path.clone()), PutMode::CreateNew).await.expect("multipart put of a file");
    assert_eq!(s.head(&key("file")).await.unwrap().size, data.len() as u64);
    assert!(read_all(&s, &key("file")).await.unwrap() == data, "file round trip");
    let mid = s.read_range(&key("file"), (5 << 20) - 10..(5 << 20) + 10).await.unwrap();
    assert_eq!(&mid[..], &data[(5 << 20) - 10..(5 << 20) + 10], "range across a part boundary");

    let other = Bytes::from(pattern(11 << 20, 2));
    let e = s.put(&key("file"), Body::Bytes(other.clone()), PutMode::CreateNew).await.unwrap_err();
    assert!(matches!(e, StorageError::AlreadyExists { .. }), "{e:?}");
    assert!(read_all(&s, &key("file")).await.unwrap() == data, "untouched");

    s.put(&key("file"), Body::Bytes(other.clone()), PutMode::Overwrite).await.expect("multipart overwrite from bytes");
    assert!(read_all(&s, &key("file")).await.unwrap() == other, "bytes round trip");
    assert!(path.exists(), "the caller's file is left alone");
}

#[tokio::test]
async fn multipart_small_parts_moto() {
    multipart_small_parts(moto()).await;
}

#[tokio::test]
async fn multipart_small_parts_s3s_fs() {
    multipart_small_parts(s3s_fs()).await;
}

/// A 70 MiB file with the default settings (above the 64 MiB threshold).
async fn multipart_default_threshold(server: &S3Server) {
    let bucket = server.new_bucket().await;
    let s = server.storage(&bucket, "").await;
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(70 << 20, 3);
    let path = dir.path().join("seg");
    std::fs::write(&path, &data).unwrap();
    s.put(&key("big"), Body::File(path), PutMode::CreateNew).await.expect("70 MiB put");
    assert_eq!(s.head(&key("big")).await.unwrap().size, 70 << 20);
    let tail = s.read_range(&key("big"), (70 << 20) - 100..(70 << 20) + 100).await.unwrap();
    assert_eq!(&tail[..], &data[data.len() - 100..]);
    assert!(read_all(&s, &key("big")).await.unwrap() == data, "70 MiB round trip");
}

#[tokio::test]
async fn multipart_default_threshold_moto() {
    multipart_default_threshold(moto()).await;
}

#[tokio::test]
async fn multipart_default_threshold_s3s_fs() {
    multipart_default_threshold(s3s_fs()).await;
}

/// CreateNew never replaces, for every body kind and size path.
async fn create_new_never_replaces(server: &S3Server) {
    let bucket = server.new_bucket().await;
    let s = server.storage(&bucket, "cn").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"from a file").unwrap();
    s.put(&key("k"), Body::Bytes(Bytes::from_static(b"first")), PutMode::CreateNew).await.unwrap();
    for _ in 0..3 {
        let e = s.put(&key("k"), Body::Bytes(Bytes::from_static(b"second")), PutMode::CreateNew).await.unwrap_err();
        assert!(matches!(e, StorageError::AlreadyExists { .. }), "{e:?}");
        let e = s.put(&key("k"), Body::File(path.clone()), PutMode::CreateNew).await.unwrap_err();
        assert!(matches!(e, StorageError::AlreadyExists { .. }), "{e:?}");
        assert!(!e.is_retryable());
    }
    assert_eq!(read_all(&s, &key("k")).await.unwrap(), &b"first"[..]);
    // An empty object exists too.
    s.put(&key("empty"), Body::Bytes(Bytes::new()), PutMode::CreateNew).await.unwrap();
    let e = s.put(&key("empty"), Body::Bytes(Bytes::from_static(b"x")), PutMode::CreateNew).await.unwrap_err();
    assert!(matches!(e, StorageError::AlreadyExists { .. }), "{e:?}");
    assert!(s.read_range(&key("empty"), 0..10).await.unwrap().is_empty());
}

#[tokio::test]
async fn create_new_never_replaces_moto() {
    create_new_never_replaces(moto()).await;
}

#[tokio::test]
async fn create_new_never_replaces_s3s_fs() {
    create_new_never_replaces(s3s_fs()).await;
}

/// Racing CreateNew writers: exactly one wins (moto only: s3s-fs checks and then writes, so
/// its conditional writes are not atomic).
#[tokio::test]
async fn create_new_race_has_one_winner_moto() {
    let server = moto();
    let bucket = server.new_bucket().await;
    let s = Arc::new(server.storage(&bucket, "").await);
    for round in 0..5 {
        let k = key(&format!("race/{round}"));
        let tasks: Vec<_> = (0..6u8)
            .map(|i| {
                let (s, k) = (s.clone(), k.clone());
                tokio::spawn(async move { s.put(&k, Body::Bytes(Bytes::from(vec![i; 100])), PutMode::CreateNew).await })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(()) => winners.push(i as u8),
                Err(StorageError::AlreadyExists { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        assert_eq!(read_all(s.as_ref(), &k).await.unwrap(), vec![winners[0]; 100]);
    }
}
