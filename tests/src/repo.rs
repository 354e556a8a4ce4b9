//! A repository for a test, local or on a real S3 server, with what the binaries need to
//! reach it (URL and environment) and a snapshot of its content to prove "unchanged".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::storage::local::LocalStorage;
use common::storage::{read_all, Storage};

use crate::bins;
use crate::pg::scratch_dir;
use crate::s3::S3Server;

/// A repository under test.
#[derive(Debug)]
pub struct TestRepo {
    /// What `--repo` / `PITR_REPO` is set to.
    pub url: String,
    /// Environment for processes that use it (S3 endpoint and credentials).
    pub env: Vec<(String, String)>,
    /// The backend, for inspecting content directly.
    pub storage: Arc<dyn Storage>,
    /// For a local repository: its directory.
    pub dir: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestRepo {
    /// A fresh local repository in a directory the PostgreSQL user can write.
    pub fn local() -> TestRepo {
        let tmp = scratch_dir("repo");
        let dir = tmp.path().join("repo");
        let storage = Arc::new(LocalStorage::open(&dir).unwrap());
        crate::pg::give_to_server_user(tmp.path());
        TestRepo {
            url: dir.display().to_string(),
            env: vec![("PITR_REPO".into(), dir.display().to_string())],
            storage,
            dir: Some(dir),
            _tmp: Some(tmp),
        }
    }

    /// A local repository in `dir` (which the caller keeps, e.g. on a small file system).
    pub fn at(dir: &std::path::Path) -> TestRepo {
        let storage = Arc::new(LocalStorage::open(dir).unwrap());
        TestRepo {
            url: dir.display().to_string(),
            env: vec![("PITR_REPO".into(), dir.display().to_string())],
            storage,
            dir: Some(dir.to_path_buf()),
            _tmp: None,
        }
    }

    /// A fresh bucket on `server`, with the repository under a prefix.
    pub async fn s3(server: &'static S3Server) -> TestRepo {
        let bucket = server.new_bucket().await;
        TestRepo::s3_in(server, bucket).await
    }

    /// A fresh bucket with S3 Object Lock enabled (and so versioned) on `server`, with the
    /// repository under a prefix.
    pub async fn s3_object_lock(server: &'static S3Server) -> TestRepo {
        let bucket = server.new_locked_bucket().await;
        TestRepo::s3_in(server, bucket).await
    }

    async fn s3_in(server: &'static S3Server, bucket: String) -> TestRepo {
        let url = format!("s3://{bucket}/pitr-test");
        let mut env = server.env();
        env.push(("PITR_REPO".into(), url.clone()));
        env.push(("PITR_S3_ENDPOINT".into(), server.endpoint.clone()));
        let storage = Arc::new(server.storage(&bucket, "pitr-test").await);
        TestRepo { url, env, storage, dir: None, _tmp: None }
    }

    /// A fresh bucket on `server` that the programs reach through `endpoint` (a fault
    /// proxy in front of it); the test's own `storage` goes to the server directly.
    pub async fn s3_via(server: &'static S3Server, endpoint: &str) -> TestRepo {
        let mut repo = TestRepo::s3(server).await;
        for (k, v) in &mut repo.env {
            if k == "PITR_S3_ENDPOINT" {
                *v = endpoint.to_string();
            }
        }
        repo
    }

    /// `wal-archiver` configured for this repository (through the environment, as a server
    /// running archive_command would have it).
    pub fn wal_archiver(&self) -> Command {
        let mut c = bins::wal_archiver();
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Every object and its bytes.
    pub async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for o in self.storage.list("").await.expect("list repository") {
            let b = read_all(self.storage.as_ref(), &o.key).await.expect("read object");
            out.insert(o.key.to_string(), b.to_vec());
        }
        out
    }

    /// `program` run as the server's OS user (as a cron job or an operator of the postgres
    /// user would run it, so that what it creates stays usable by archive_command) with this
    /// repository's environment.
    pub fn as_server_user(&self, mut program: Command) -> Command {
        use std::os::unix::process::CommandExt;
        program.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some((uid, gid)) = crate::pg::server_user() {
            program.uid(uid).gid(gid);
            program.env("HOME", "/tmp");
        }
        program.env("PGUSER", "postgres");
        program
    }

    /// The shell-quoted archive_command for PostgreSQL.
    pub fn archive_command(&self) -> String {
        format!("archive_command = '{} push %p'", bins::bin("wal-archiver").display())
    }

    /// The restore_command for PostgreSQL.
    pub fn restore_command(&self) -> String {
        format!("restore_command = '{} get %f \"%p\"'", bins::bin("wal-archiver").display())
    }
}
