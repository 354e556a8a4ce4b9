//! S3 server-side options against a real S3 server (moto, which records and returns them; it
//! does not encrypt anything itself nor move objects between classes): SSE-KMS with a key id
//! or SSE-S3 on every object, and the storage class per object kind (WAL segments; backup
//! chunks and manifests; the small objects read often stay in the bucket's default class).

use common::config::{Config, RepoArgs};
use common::storage::{Body, ObjectKey, PutMode};
use pitr_tests::bins::run;
use pitr_tests::repo::TestRepo;
use pitr_tests::s3::{moto, ObjectSettings};
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

/// push through the program with the settings in its environment (as archive_command has
/// them): the segment is SSE-KMS with the key and in the WAL class, the cluster record
/// SSE-KMS in the default class; get reads it back.
#[test]
fn push_stores_wal_encrypted_in_its_class() {
    let rt = rt();
    let mut repo = rt.block_on(TestRepo::s3(moto()));
    repo.env.extend([
        ("PITR_S3_SSE_KMS_KEY_ID".to_string(), "alias/pitr-test".to_string()),
        ("PITR_S3_STORAGE_CLASS_WAL".to_string(), "STANDARD_IA".to_string()),
        ("PITR_S3_STORAGE_CLASS_BACKUP".to_string(), "GLACIER_IR".to_string()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let path = dir.path().join(&name);
    std::fs::write(&path, &data).unwrap();
    let mut c = repo.wal_archiver();
    c.arg("push").arg(&path);
    run(c).ok();

    let (bucket, prefix) = bucket_and_prefix(&repo.url);
    let seg = rt.block_on(moto().object_settings(&bucket, &format!("{prefix}/main/wal/{}/{name}.zst", &name[..16])));
    assert_eq!(
        seg,
        ObjectSettings {
            sse: Some("aws:kms".into()),
            kms_key: Some("alias/pitr-test".into()),
            storage_class: Some("STANDARD_IA".into())
        }
    );
    let record = rt.block_on(moto().object_settings(&bucket, &format!("{prefix}/main/cluster.json")));
    assert_eq!((record.sse.as_deref(), record.storage_class.as_deref()), (Some("aws:kms"), None), "{record:?}");

    let out = dir.path().join("back");
    let mut g = repo.wal_archiver();
    g.args(["get", &name]).arg(&out);
    run(g).ok();
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

/// Through the configuration every program uses: SSE-S3, and the backup class on a backup's
/// chunks and manifest but not on its catalog entry.
#[test]
fn backup_data_goes_to_its_class() {
    let rt = rt();
    let repo = rt.block_on(TestRepo::s3(moto()));
    let args = RepoArgs {
        repo: Some(repo.url.clone()),
        s3_endpoint: Some(moto().endpoint.clone()),
        s3_sse: Some("AES256".into()),
        s3_storage_class_backup: Some("GLACIER_IR".into()),
        ..Default::default()
    };
    // The SDK reads the credentials from the environment, as in production.
    for (k, v) in &repo.env {
        if k.starts_with("AWS_") {
            std::env::set_var(k, v);
        }
    }
    let config = Config::resolve(&args).unwrap();
    let (bucket, prefix) = bucket_and_prefix(&repo.url);
    let id = "20261205T083549Z";
    let keys = [
        (format!("main/backups/{id}/base.tar/000000.zst"), Some("GLACIER_IR")),
        (format!("main/backups/{id}/backup_manifest.zst"), Some("GLACIER_IR")),
        (format!("main/backups/{id}.json"), None),
    ];
    rt.block_on(async {
        let storage = config.open_storage(true).await.unwrap();
        for (key, _) in &keys {
            storage
                .put(&ObjectKey::new(key.clone()).unwrap(), Body::Bytes(b"x".to_vec().into()), PutMode::CreateNew)
                .await
                .unwrap();
        }
    });
    for (key, class) in keys {
        let s = rt.block_on(moto().object_settings(&bucket, &format!("{prefix}/{key}")));
        assert_eq!(s.sse.as_deref(), Some("AES256"), "{key}: {s:?}");
        assert_eq!(s.kms_key, None, "{key}");
        assert_eq!(s.storage_class.as_deref(), class, "{key}");
    }
}

/// Bad values are refused with one line naming their source.
#[test]
fn bad_settings_are_refused() {
    let repo = "s3://bucket-x/p";
    for (env, needle) in [
        (("PITR_S3_SSE", "aes"), "invalid s3-sse \"aes\""),
        (("PITR_S3_STORAGE_CLASS_WAL", "COLD"), "invalid s3-storage-class-wal \"COLD\""),
    ] {
        let mut c = pitr_tests::bins::wal_archiver();
        c.env(env.0, env.1).args(["--repo", repo, "list"]);
        run(c).fails_with(7, needle);
    }
    let mut c = pitr_tests::bins::wal_archiver();
    c.args(["--repo", repo, "--s3-sse", "AES256", "--s3-sse-kms-key-id", "k", "list"]);
    run(c).fails_with(7, "from --s3-sse-kms-key-id");
}
