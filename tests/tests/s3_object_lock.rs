//! S3 Object Lock against a real S3 server (moto, on buckets created with Object Lock
//! enabled, which makes them versioned): what pitr locks and what it leaves unlocked, that
//! `basebackup expire` keeps a backup (and its WAL) whose objects are still locked instead of
//! hiding them behind delete markers and deletes what is no longer locked, and the settings'
//! errors. moto records the lock of a single PUT, refuses to delete a locked version and hides
//! an object behind a delete marker on a plain DELETE, as S3 does; it ignores the lock of a
//! multipart upload (pitr's uploads here are below the multipart threshold).

use std::time::{Duration, SystemTime};

use common::catalog::{self, BackupEntry};
use common::config::{Config, RepoArgs};
use common::lsn::Lsn;
use common::storage::{read_all, Body, ObjectKey, PutMode, Storage};
use common::wal::{SystemId, TimelineId, WalFileName, WalSegmentSize};
use pitr_tests::bins::{basebackup, run, wal_archiver};
use pitr_tests::repo::TestRepo;
use pitr_tests::s3::{moto, ObjectLockState};
use pitr_tests::wal::{segment, SYSTEM_ID};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The bucket of an `s3://bucket/prefix` URL, and the prefix.
fn bucket_and_prefix(url: &str) -> (String, String) {
    let rest = url.strip_prefix("s3://").unwrap();
    let (b, p) = rest.split_once('/').unwrap();
    (b.to_string(), p.to_string())
}

/// The repository's storage as every program opens it, with `mode` and `period` of Object
/// Lock (the credentials from the environment, as in production).
async fn locked_storage(repo: &TestRepo, mode: &str, period: &str) -> std::sync::Arc<dyn Storage> {
    for (k, v) in &repo.env {
        if k.starts_with("AWS_") {
            std::env::set_var(k, v);
        }
    }
    let args = RepoArgs {
        repo: Some(repo.url.clone()),
        s3_endpoint: Some(moto().endpoint.clone()),
        s3_object_lock_mode: Some(mode.into()),
        s3_object_lock_period: Some(period.into()),
        ..Default::default()
    };
    Config::resolve(&args).unwrap().open_storage(true).await.unwrap()
}

async fn put(s: &dyn Storage, key: &str, mode: PutMode) {
    s.put(&ObjectKey::new(key).unwrap(), Body::Bytes(key.as_bytes().to_vec().into()), mode)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// push with the lock in its environment (as archive_command has it): the segment is locked
/// in governance mode until a day after the push, the cluster record is not; get reads the
/// segment back. Through the configuration: a backup's chunk, manifest and catalog entry and
/// a history file are locked (compliance here); the reservation, a restore lease and the
/// receiver's partial are not, and the last two are replaced and deleted as usual.
#[test]
fn wal_and_backups_are_locked_what_pitr_replaces_is_not() {
    let rt = rt();
    let mut repo = rt.block_on(TestRepo::s3_object_lock(moto()));
    repo.env.extend([
        ("PITR_S3_OBJECT_LOCK_MODE".to_string(), "governance".to_string()),
        ("PITR_S3_OBJECT_LOCK_PERIOD".to_string(), "1d".to_string()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let path = dir.path().join(&name);
    std::fs::write(&path, &data).unwrap();
    let before = SystemTime::now();
    let mut c = repo.wal_archiver();
    c.arg("push").arg(&path);
    run(c).ok();
    let after = SystemTime::now();

    let (bucket, prefix) = bucket_and_prefix(&repo.url);
    let day = Duration::from_secs(86400);
    let seg = rt.block_on(moto().object_lock(&bucket, &format!("{prefix}/main/wal/{}/{name}.zst", &name[..16])));
    assert_eq!(seg.mode.as_deref(), Some("GOVERNANCE"), "{seg:?}");
    let until = seg.until.expect("a retain-until date");
    assert!(until >= before + day - Duration::from_secs(1) && until <= after + day + Duration::from_secs(1), "{seg:?}");
    let record = rt.block_on(moto().object_lock(&bucket, &format!("{prefix}/main/cluster.json")));
    assert_eq!(record.mode, None, "the cluster record is not locked");
    let out = dir.path().join("back");
    let mut g = repo.wal_archiver();
    g.args(["get", &name]).arg(&out);
    run(g).ok();
    assert_eq!(std::fs::read(&out).unwrap(), data);

    let id = "20261205T083549Z";
    let locked = [
        format!("main/backups/{id}/base.tar/000000.zst"),
        format!("main/backups/{id}/backup_manifest.zst"),
        format!("main/backups/{id}.json"),
        "main/wal/00000002.history.zst".to_string(),
    ];
    let free = [
        format!("main/backups/{id}/reservation.json"),
        "main/leases/restore-0123456789abcdef.json".to_string(),
        format!("main/receiver/{name}.partial.zst"),
    ];
    rt.block_on(async {
        let s = locked_storage(&repo, "compliance", "2h").await;
        for key in locked.iter().chain(&free) {
            put(&*s, key, PutMode::CreateNew).await;
        }
        for key in &free {
            let l = moto().object_lock(&bucket, &format!("{prefix}/{key}")).await;
            assert_eq!(l, ObjectLockState { mode: None, until: None }, "{key} is not locked");
        }
        // What pitr replaces and deletes in normal operation still works.
        for key in &free[1..] {
            put(&*s, key, PutMode::Overwrite).await;
            s.delete(&ObjectKey::new(key.as_str()).unwrap()).await.unwrap();
            assert!(s.head(&ObjectKey::new(key.as_str()).unwrap()).await.unwrap_err().is_not_found(), "{key}");
        }
        // The backend reads the date back, for expire.
        let until = s.retention(&ObjectKey::new(locked[2].as_str()).unwrap()).await.unwrap().expect("locked");
        assert!(until > SystemTime::now() + Duration::from_secs(7000), "{until:?}");
        assert_eq!(s.retention(&ObjectKey::new(free[0].as_str()).unwrap()).await.unwrap(), None);
    });
    for key in &locked {
        let l = rt.block_on(moto().object_lock(&bucket, &format!("{prefix}/{key}")));
        assert_eq!(l.mode.as_deref(), Some("COMPLIANCE"), "{key}: {l:?}");
    }
}

/// A catalog entry for a backup of segment `seg` (no archives: its objects are its manifest
/// and whatever else the test stores under its directory).
fn entry(id: &str, seg: u64) -> BackupEntry {
    let size = WalSegmentSize::DEFAULT;
    let first = WalFileName::segment(TimelineId(1), seg, size).to_string();
    let time = format!("{}-{}-{}T{}:{}:{}Z", &id[..4], &id[4..6], &id[6..8], &id[9..11], &id[11..13], &id[13..15]);
    BackupEntry {
        version: catalog::CATALOG_VERSION,
        id: id.into(),
        label: "t".into(),
        system_id: SystemId(SYSTEM_ID),
        server_version_num: 150000,
        segment_size: size.bytes(),
        start_lsn: Lsn(seg * size.bytes() + 40),
        start_timeline: TimelineId(1),
        stop_lsn: Lsn(seg * size.bytes() + 400),
        stop_timeline: TimelineId(1),
        start_time: time.clone(),
        stop_time: time,
        archives: vec![],
        manifest_checksum: "00".into(),
        wal_start_segment: first.clone(),
        wal_stop_segment: first,
        raw_bytes: 10,
        stored_bytes: 5,
    }
}

fn wal_key(seg: u64) -> String {
    let n = WalFileName::segment(TimelineId(1), seg, WalSegmentSize::DEFAULT);
    format!("main/wal/{}/{n}.zst", n.timeline_log_prefix())
}

/// Three backups (segments 6, 8, 10) and WAL 1..=11. The oldest backup and segment 3 were
/// written with a lock of a day, the rest with a lock of 2 seconds, which has passed when
/// `expire --keep-backups 1` runs. It keeps the oldest backup ("locked until"), and with it the
/// WAL from segment 6, leaves segment 3, exits 0, and deletes the middle backup and segments
/// 1, 2, 4 and 5. The locked objects are still readable afterwards: no delete marker hides them.
#[test]
fn expire_keeps_what_is_locked_and_deletes_what_is_not() {
    let rt = rt();
    let mut repo = rt.block_on(TestRepo::s3_object_lock(moto()));
    let (b1, b2, b3) = ("20261201T120000Z", "20261203T120000Z", "20261205T120000Z");
    let backup_keys = |id: &str| {
        [
            catalog::entry_key("main", id),
            catalog::manifest_key("main", id),
            catalog::chunk_key("main", id, "base.tar", 0),
        ]
    };
    rt.block_on(async {
        let day = locked_storage(&repo, "governance", "1d").await;
        let short = locked_storage(&repo, "governance", "2s").await;
        for (id, seg, s) in [(b1, 6, &day), (b2, 8, &short), (b3, 10, &short)] {
            let [entry_key, manifest, chunk] = backup_keys(id);
            put(&**s, &manifest, PutMode::CreateNew).await;
            put(&**s, &chunk, PutMode::CreateNew).await;
            let json = serde_json::to_vec(&entry(id, seg)).unwrap();
            s.put(&ObjectKey::new(entry_key).unwrap(), Body::Bytes(json.into()), PutMode::CreateNew).await.unwrap();
        }
        for seg in 1..=11 {
            put(if seg == 3 { &*day } else { &*short }, &wal_key(seg), PutMode::CreateNew).await;
        }
    });
    std::thread::sleep(Duration::from_millis(3500));

    repo.env.extend([
        ("PITR_S3_OBJECT_LOCK_MODE".to_string(), "governance".to_string()),
        ("PITR_S3_OBJECT_LOCK_PERIOD".to_string(), "1d".to_string()),
    ]);
    let expire = |extra: &[&str]| {
        let mut c = basebackup();
        c.envs(repo.env.iter().map(|(k, v)| (k, v))).args(["expire", "--keep-backups", "1"]).args(extra);
        run(c)
    };
    let dry = expire(&["--dry-run", "--json"]);
    let json: serde_json::Value = serde_json::from_str(dry.ok()).unwrap();
    assert_eq!(json["locked"][0]["id"], b1, "{json}");
    assert!(json["locked"][0]["locked_until"].as_str().unwrap().ends_with('Z'), "{json}");
    assert_eq!(json["expired"][0]["id"], b2, "{json}");
    assert_eq!(json["expired"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!((json["wal_files"].as_u64(), json["locked_wal_files"].as_u64()), (Some(4), Some(1)), "{json}");

    let out = expire(&[]);
    let text = out.ok();
    assert!(text.contains(&format!("kept    {b1}  locked until ")), "{text}");
    assert!(text.contains("WAL left: 1 file(s)"), "{text}");
    assert!(text.contains("expired 1 backup(s)"), "{text}");

    let (bucket, prefix) = bucket_and_prefix(&repo.url);
    let markers = rt.block_on(moto().delete_markers(&bucket, &format!("{prefix}/")));
    let s = &repo.storage;
    rt.block_on(async {
        for key in backup_keys(b1).iter().chain(backup_keys(b3).iter()).chain([&wal_key(3), &wal_key(6), &wal_key(11)])
        {
            let k = ObjectKey::new(key.as_str()).unwrap();
            assert!(read_all(s.as_ref(), &k).await.is_ok(), "{key} is readable");
            assert!(!markers.contains(&format!("{prefix}/{key}")), "{key} is not behind a delete marker");
        }
        for key in backup_keys(b2).iter().chain([&wal_key(1), &wal_key(2), &wal_key(4), &wal_key(5)]) {
            let k = ObjectKey::new(key.as_str()).unwrap();
            assert!(s.head(&k).await.unwrap_err().is_not_found(), "{key} is deleted");
        }
    });
    let mut list = basebackup();
    list.envs(repo.env.iter().map(|(k, v)| (k, v))).args(["list", "--json"]);
    let listed = run(list);
    assert_eq!(listed.ok().lines().count(), 2, "{listed:?}");
}

/// A plain DELETE of a locked object in a versioned bucket "succeeds" and hides it behind a
/// delete marker (what `expire` must never do); deleting the locked version itself is refused.
/// This is the store behaviour the planner's checks exist for.
#[test]
fn a_plain_delete_hides_a_locked_object_and_its_version_cannot_be_deleted() {
    let rt = rt();
    let repo = rt.block_on(TestRepo::s3_object_lock(moto()));
    let (bucket, prefix) = bucket_and_prefix(&repo.url);
    let key = wal_key(7);
    rt.block_on(async {
        let s = locked_storage(&repo, "governance", "1h").await;
        put(&*s, &key, PutMode::CreateNew).await;
        s.delete(&ObjectKey::new(key.as_str()).unwrap()).await.expect("a plain DELETE succeeds");
        assert!(s.head(&ObjectKey::new(key.as_str()).unwrap()).await.unwrap_err().is_not_found(), "hidden");
    });
    let full = format!("{prefix}/{key}");
    assert_eq!(rt.block_on(moto().delete_markers(&bucket, &full)), [full.as_str()]);
    let client = moto().sdk_client();
    let versions = rt.block_on(client.list_object_versions().bucket(&bucket).prefix(&full).send()).unwrap();
    let version = versions.versions()[0].version_id().unwrap().to_string();
    let e = rt.block_on(client.delete_object().bucket(&bucket).key(&full).version_id(&version).send());
    assert!(format!("{e:?}").contains("AccessDenied"), "{e:?}");
}

/// A lock on a bucket created without Object Lock fails the upload with what to do.
#[test]
fn a_bucket_without_object_lock_is_named_as_the_cause() {
    let rt = rt();
    let mut repo = rt.block_on(TestRepo::s3(moto()));
    repo.env.extend([
        ("PITR_S3_OBJECT_LOCK_MODE".to_string(), "governance".to_string()),
        ("PITR_S3_OBJECT_LOCK_PERIOD".to_string(), "1d".to_string()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let path = dir.path().join(&name);
    std::fs::write(&path, &data).unwrap();
    let mut c = repo.wal_archiver();
    c.arg("push").arg(&path);
    run(c).fails_with(5, "InvalidRequest: Bucket is missing ObjectLockConfiguration (s3-object-lock-mode needs a bucket created with Object Lock enabled; see docs/security.md");
}

/// Settings that cannot work are refused before anything is stored, naming their source.
#[test]
fn lock_settings_that_cannot_work_are_refused() {
    let repo = "s3://bucket-x/p";
    let mut c = wal_archiver();
    c.args(["--repo", repo, "--s3-object-lock-period", "1d", "list"]);
    run(c).fails_with(7, "needs s3-object-lock-mode (governance or compliance) (from --s3-object-lock-period)");
    let mut c = wal_archiver();
    c.env("PITR_S3_OBJECT_LOCK_MODE", "governance").args(["--repo", repo, "list"]);
    run(c).fails_with(7, "(from PITR_S3_OBJECT_LOCK_MODE)");

    // A lock longer than the window expire applies: refused by expire, naming both.
    let mut c = basebackup();
    c.args(["--repo", repo, "--s3-object-lock-mode", "governance", "--s3-object-lock-period", "7d"]);
    c.args(["expire", "--keep-within", "3d"]);
    run(c).fails_with(7, "longer than keep-within 3days (from --keep-within)");
    // The period's default comes from keep-within in the file; a narrower window on the
    // command line is refused, naming the file as the period's source.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pitr.toml");
    std::fs::write(&f, format!("repo = \"{repo}\"\nkeep-within = \"3d\"\ns3-object-lock-mode = \"governance\"\n"))
        .unwrap();
    let mut c = basebackup();
    c.arg("--config").arg(&f).args(["expire", "--keep-within", "2d"]);
    run(c).fails_with(7, &format!("(from the default: keep-within in {})", f.display()));
}

/// A multipart upload asks for the lock in CreateMultipartUpload, which moto accepts (it
/// does not record the lock of a multipart upload, so only the request is checked here).
#[test]
fn multipart_uploads_ask_for_the_lock_too() {
    use common::storage::s3::{LockMode, ObjectLock, S3Options, S3Storage};
    let rt = rt();
    let bucket = rt.block_on(moto().new_locked_bucket());
    let options = S3Options {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        object_lock: Some(ObjectLock {
            mode: LockMode::Governance,
            period: Duration::from_secs(3600),
            rule: std::sync::Arc::new(|_: &str| true),
        }),
        ..moto().options()
    };
    rt.block_on(async {
        let s = S3Storage::connect_with(moto().config(&bucket, "p"), options).await.unwrap();
        let data: Vec<u8> = (0..(11u32 << 20)).map(|i| (i % 251) as u8).collect();
        let key = ObjectKey::new("main/backups/20261205T083549Z/base.tar/000000.zst").unwrap();
        s.put(&key, Body::Bytes(data.clone().into()), PutMode::CreateNew).await.expect("multipart upload with a lock");
        assert_eq!(read_all(&s, &key).await.unwrap(), data);
    });
}
