//! Client-side encryption through the programs: a repository becomes encrypted with the first
//! write that has a key, holds no plaintext, reads back only with one of its keys (every other
//! case fails with one line and exit 11, or 211 for `get`), never takes a plaintext write, and
//! survives a rotation of its key-encryption key without an object being rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pitr_tests::bins::{run, Run};
use pitr_tests::repo::TestRepo;
use pitr_tests::wal::{segment, SYSTEM_ID};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A new key file made by `wal-archiver keys new-key-file`.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["keys", "new-key-file"]).arg(&path);
    assert!(run(c).ok().contains("fingerprint"));
    path
}

fn with_key(repo: &TestRepo, key: Option<&Path>, args: &[&str]) -> Run {
    let mut c = repo.wal_archiver();
    // No prefetch: a segment fetched ahead before the test damages it would be served from
    // the prefetch spool.
    c.env("PITR_PREFETCH", "0");
    if let Some(k) = key {
        c.env("PITR_ENCRYPTION_KEY_FILE", k);
    }
    c.args(args);
    run(c)
}

fn push(repo: &TestRepo, key: Option<&Path>, dir: &Path, segno: u64) -> (Run, String, Vec<u8>) {
    let (name, data) = segment(SYSTEM_ID, 1, segno);
    let path = dir.join(&name);
    std::fs::write(&path, &data).unwrap();
    (with_key(repo, key, &["push", path.to_str().unwrap()]), name, data)
}

fn get(repo: &TestRepo, key: Option<&Path>, dir: &Path, name: &str) -> (Run, PathBuf) {
    let out = dir.join(format!("back-{name}-{}", rand_suffix()));
    (with_key(repo, key, &["get", name, out.to_str().unwrap()]), out)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Every stored object whose bytes contain `needle`.
fn holding(snapshot: &BTreeMap<String, Vec<u8>>, needle: &[u8]) -> Vec<String> {
    snapshot.iter().filter(|(_, v)| v.windows(needle.len()).any(|w| w == needle)).map(|(k, _)| k.clone()).collect()
}

#[test]
fn an_encrypted_local_repository_round_trips_refuses_and_rotates() {
    let rt = rt();
    let repo = TestRepo::local();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k1");

    // A plaintext write into an empty repository leaves it unencrypted, so a key for it is
    // refused by readers; the first write with a key makes a new repository encrypted.
    let (r, name3, data3) = push(&repo, Some(&key), dir.path(), 3);
    r.ok();
    let snap = rt.block_on(repo.snapshot());
    assert!(snap.contains_key("_pitr/encryption.json"), "{:?}", snap.keys());
    for (k, v) in &snap {
        if !k.starts_with("_pitr/") {
            assert_eq!(&v[..8], b"PITRENC1", "{k} is not encrypted");
        }
    }
    // No plaintext: not the segment's name (object headers carry it), not its page header,
    // not the system identifier.
    assert!(
        holding(&snap, name3.as_bytes()).is_empty(),
        "segment name readable in {:?}",
        holding(&snap, name3.as_bytes())
    );
    assert!(holding(&snap, &data3[..24]).is_empty(), "WAL page header readable");
    assert!(holding(&snap, SYSTEM_ID.to_string().as_bytes()).is_empty(), "system identifier readable");

    let (r, out) = get(&repo, Some(&key), dir.path(), &name3);
    r.ok();
    assert_eq!(std::fs::read(&out).unwrap(), data3);
    let listed = with_key(&repo, Some(&key), &["list", "--json"]);
    assert!(listed.ok().contains(&name3), "{listed:#?}");
    let v = with_key(&repo, Some(&key), &["verify", "--all"]);
    v.ok();

    // No key, another key: one line, exit 11 (211 for get), nothing written.
    let before = rt.block_on(repo.snapshot());
    let (r, _) = get(&repo, None, dir.path(), &name3);
    r.fails_with(211, "is encrypted");
    let (r, _, _) = push(&repo, None, dir.path(), 4);
    r.fails_with(11, "is encrypted");
    let other = key_file(dir.path(), "other");
    let (r, _) = get(&repo, Some(&other), dir.path(), &name3);
    r.fails_with(211, "is not one of");
    let (r, _, _) = push(&repo, Some(&other), dir.path(), 4);
    r.fails_with(11, "is not one of");
    assert_eq!(rt.block_on(repo.snapshot()), before, "nothing was written");

    // The record needs no key to show; rotation re-wraps the data keys only.
    let keys_list = with_key(&repo, None, &["keys", "list"]);
    assert!(keys_list.ok().contains("encrypted since"), "{keys_list:#?}");
    let (r, name4, data4) = push(&repo, Some(&key), dir.path(), 4);
    r.ok();
    let key2 = key_file(dir.path(), "k2");
    let rot = with_key(&repo, Some(&key), &["keys", "rotate", "--new-key-file", key2.to_str().unwrap()]);
    assert!(rot.ok().contains("keys retire"), "{rot:#?}");
    let after_rotate = rt.block_on(repo.snapshot());
    for (k, v) in &before {
        if !k.starts_with("_pitr/") {
            assert_eq!(after_rotate.get(k), Some(v), "{k} was rewritten by the rotation");
        }
    }
    // Both keys read old objects; a program still on the old key writes with the new data key.
    let (r, name5, data5) = push(&repo, Some(&key), dir.path(), 5);
    r.ok();
    let (r, name6, data6) = push(&repo, Some(&key2), dir.path(), 6);
    r.ok();
    for k in [&key, &key2] {
        for (n, d) in [(&name3, &data3), (&name4, &data4), (&name5, &data5), (&name6, &data6)] {
            let (r, out) = get(&repo, Some(k), dir.path(), n);
            r.ok();
            assert_eq!(&std::fs::read(&out).unwrap(), d);
        }
    }
    // Retire needs the new key configured; afterwards the old key opens nothing.
    with_key(&repo, Some(&key2), &["keys", "retire"]).ok();
    let (r, _) = get(&repo, Some(&key), dir.path(), &name3);
    r.fails_with(211, "is not one of");
    for (n, d) in [(&name3, &data3), (&name6, &data6)] {
        let (r, out) = get(&repo, Some(&key2), dir.path(), n);
        r.ok();
        assert_eq!(&std::fs::read(&out).unwrap(), d);
    }
    let record = String::from_utf8(rt.block_on(repo.snapshot())["_pitr/encryption.json"].clone()).unwrap();
    assert_eq!(record.matches("\"kek\"").count(), 2, "one wrap per data key left: {record}");

    // A damaged object: exit 206, nothing at %p.
    let key_of = |name: &str| format!("main/wal/{}/{name}.zst", &name[..16]);
    let p = repo.dir.as_ref().unwrap().join(key_of(&name4));
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let (r, out) = get(&repo, Some(&key2), dir.path(), &name4);
    assert_eq!(r.code, 206, "{r:#?}");
    assert!(r.stderr.contains("does not decrypt"), "{r:#?}");
    assert!(!out.exists());
}

#[test]
fn keys_and_repositories_that_do_not_match_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k");
    // A repository with plaintext content does not become encrypted.
    let plain = TestRepo::local();
    let (r, name, _) = push(&plain, None, dir.path(), 3);
    r.ok();
    let (r, _, _) = push(&plain, Some(&key), dir.path(), 4);
    r.fails_with(11, "already holds unencrypted objects");
    // A reader with a key on a repository that is not encrypted.
    let (r, _) = get(&plain, Some(&key), dir.path(), &name);
    r.fails_with(211, "is not encrypted");
    // A key file others can read, a key file that is not a key, both kinds of key at once.
    let fresh = TestRepo::local();
    let loose = dir.path().join("loose");
    std::fs::write(&loose, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (r, _, _) = push(&fresh, Some(&loose), dir.path(), 3);
    r.fails_with(11, "chmod 600");
    let mut c = fresh.wal_archiver();
    c.env("PITR_ENCRYPTION_KEY_FILE", &key).env("PITR_ENCRYPTION_KMS_KEY_ID", "alias/x").args(["list"]);
    run(c).fails_with(7, "both set");
    // keys new-key-file never replaces a key.
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["keys", "new-key-file"]).arg(&key);
    assert_eq!(run(c).code, 8);
}

/// Every stored object of `objects` (key → bytes), and the content of those that are zstd
/// frames (what pitr's objects are when not encrypted), searched for `needle`.
fn found_in(objects: &BTreeMap<String, Vec<u8>>, needle: &[u8]) -> Vec<String> {
    let has = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    objects
        .iter()
        .filter(|(_, v)| has(v) || zstd::decode_all(&v[..]).is_ok_and(|d| has(&d)))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A real PostgreSQL archiving into an S3 repository encrypted under a KMS key (moto): a base
/// backup and point-in-time restores through push, get, backup and restore (to a time, then
/// on the timeline that restore forked), after which no stored object holds the table's
/// contents, WAL record bytes, the data directory's file names or the system identifier,
/// while the same objects decrypted do.
#[test]
fn a_kms_encrypted_s3_repository_restores_to_a_time_and_holds_no_plaintext() {
    let rt = rt();
    let server = pitr_tests::s3::moto();
    let mut repo = rt.block_on(TestRepo::s3(server));
    let kms_key = rt.block_on(server.kms_key());
    repo.env.push(("PITR_ENCRYPTION_KMS_KEY_ID".into(), kms_key.clone()));
    repo.env.push(("PITR_ENCRYPTION_KMS_ENDPOINT".into(), server.endpoint.clone()));
    const CANARY: &str = "pitr-canary-table-contents";
    pitr_tests::matrix::backup_and_point_in_time_in(15, &repo, |c| {
        c.sql(&format!("CREATE TABLE canary AS SELECT '{CANARY}-' || g AS s FROM generate_series(1, 3000) g"));
    });

    let stored = rt.block_on(repo.snapshot());
    assert!(stored.keys().any(|k| k.contains("/backups/")), "{:?}", stored.keys());
    for (k, v) in &stored {
        if !k.starts_with("_pitr/") {
            assert_eq!(&v[..8.min(v.len())], b"PITRENC1", "{k} is not encrypted");
        }
    }
    // The same objects, decrypted with the key.
    for (k, v) in server.env() {
        std::env::set_var(k, v);
    }
    let args = common::config::RepoArgs {
        repo: Some(repo.url.clone()),
        s3_endpoint: Some(server.endpoint.clone()),
        encryption_kms_key_id: Some(kms_key),
        encryption_kms_endpoint: Some(server.endpoint.clone()),
        ..Default::default()
    };
    let config = common::config::Config::resolve(&args).unwrap();
    let decrypted: BTreeMap<String, Vec<u8>> = rt.block_on(async {
        let s = config.open_storage(false).await.unwrap();
        let mut out = BTreeMap::new();
        for k in stored.keys().filter(|k| !k.starts_with("_pitr/")) {
            let key = common::storage::ObjectKey::new(k.clone()).unwrap();
            out.insert(k.clone(), common::storage::read_all(s.as_ref(), &key).await.unwrap().to_vec());
        }
        out
    });
    let record: serde_json::Value = serde_json::from_slice(&decrypted["main/cluster.json"]).unwrap();
    let sysid = record["system_id"].as_str().unwrap().to_string();
    // WAL record bytes: 48 bytes of the first record of each WAL segment (after the long page
    // header), as PostgreSQL wrote them.
    let mut wal_bytes = Vec::new();
    for (k, v) in &decrypted {
        if k.contains("/wal/0000") && !k.contains(".history") && !k.contains(".backup") {
            let raw = zstd::decode_all(&v[..]).unwrap();
            wal_bytes.push(raw[40..88].to_vec());
        }
    }
    assert!(wal_bytes.len() >= 3, "WAL segments: {}", wal_bytes.len());
    let mut needles: Vec<Vec<u8>> = vec![
        CANARY.as_bytes().to_vec(),
        b"PG_VERSION".to_vec(),
        b"pg_control".to_vec(),
        b"pg_filenode.map".to_vec(),
        b"postgresql.auto.conf".to_vec(),
        sysid.as_bytes().to_vec(),
    ];
    needles.extend(wal_bytes);
    for needle in &needles {
        let shown = String::from_utf8_lossy(needle);
        assert!(!found_in(&decrypted, needle).is_empty(), "{shown:?} is not in the decrypted objects");
        let leaks = found_in(&stored, needle);
        assert!(leaks.is_empty(), "{shown:?} is readable in stored objects {leaks:?}");
    }

    // Rotation from the KMS key to a key file: both open everything in between; after
    // `retire` only the key file does. No object changes.
    let dir = tempfile::tempdir().unwrap();
    let file = key_file(dir.path(), "new");
    let kms = |args: &[&str]| {
        let mut c = repo.wal_archiver();
        c.args(args);
        run(c)
    };
    let by_file = |args: &[&str]| {
        let mut c = repo.wal_archiver();
        c.env_remove("PITR_ENCRYPTION_KMS_KEY_ID").env_remove("PITR_ENCRYPTION_KMS_ENDPOINT");
        c.env("PITR_ENCRYPTION_KEY_FILE", &file).args(args);
        run(c)
    };
    kms(&["keys", "rotate", "--new-key-file", file.to_str().unwrap()]).ok();
    let listed = kms(&["list"]);
    assert_eq!(by_file(&["list"]).ok(), listed.ok());
    by_file(&["keys", "retire"]).ok();
    by_file(&["verify", "--all"]).ok();
    kms(&["list"]).fails_with(11, "is not one of");
    let after = rt.block_on(repo.snapshot());
    for (k, v) in &stored {
        if !k.starts_with("_pitr/") {
            assert_eq!(after.get(k), Some(v), "{k} changed in the rotation");
        }
    }
}
