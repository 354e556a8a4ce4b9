//! Real S3-compatible servers for tests: moto (complete semantics, atomic conditional writes,
//! accepts any credentials) and s3s-fs (strict: verifies SigV4 and checksums).
//!
//! Discovery: when `PITR_TEST_MOTO_ENDPOINT` / `PITR_TEST_S3S_ENDPOINT` are set (the project's
//! test script starts each server once and exports them, with `PITR_TEST_S3S_ACCESS_KEY` and
//! `PITR_TEST_S3S_SECRET_KEY` for s3s-fs), they are used. Otherwise this test process starts
//! its own server from the install location of `scripts/s3/*.sh` (`$PITR_TOOLS`, default
//! `~/.cache/pitr-tools`) on a free loopback port; the server dies with the process. A server
//! that is not installed is a test failure that says how to install it, never a skip.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::storage::s3::{S3Config, S3Options, S3Storage};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// moto_server: in memory, no signature or checksum checks, atomic `If-None-Match`.
    Moto,
    /// s3s-fs: files on disk, verifies signatures and checksums, non-atomic conditional writes,
    /// and a key cannot also be a "directory" of another key.
    S3sFs,
}

/// A running server and the credentials it accepts.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id it accepts.
    pub access_key: String,
    /// Secret key it accepts.
    pub secret_key: String,
    /// Which server this is.
    pub kind: S3Kind,
}

static MOTO: OnceLock<S3Server> = OnceLock::new();
static SERVERS: std::sync::Mutex<Vec<Child>> = std::sync::Mutex::new(Vec::new());
static S3S: OnceLock<S3Server> = OnceLock::new();

/// The moto server for this test process.
pub fn moto() -> &'static S3Server {
    MOTO.get_or_init(|| {
        if let Some(endpoint) = env_nonempty("PITR_TEST_MOTO_ENDPOINT") {
            return S3Server { endpoint, access_key: "test".into(), secret_key: "test".into(), kind: S3Kind::Moto };
        }
        let venv = env_nonempty("MOTO_VENV").map(PathBuf::from).unwrap_or_else(|| tools_dir().join("moto-venv"));
        let bin = venv.join("bin/moto_server");
        require_installed(&bin, "moto", "scripts/s3/moto.sh install");
        let port = start_owned_server("moto", |port| {
            let mut c = Command::new(&bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        });
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key: "test".into(),
            secret_key: "test".into(),
            kind: S3Kind::Moto,
        }
    })
}

/// The s3s-fs server for this test process.
pub fn s3s_fs() -> &'static S3Server {
    S3S.get_or_init(|| {
        let access_key = env_nonempty("PITR_TEST_S3S_ACCESS_KEY").unwrap_or_else(|| "test-access-key".into());
        let secret_key = env_nonempty("PITR_TEST_S3S_SECRET_KEY").unwrap_or_else(|| "test-secret-key".into());
        if let Some(endpoint) = env_nonempty("PITR_TEST_S3S_ENDPOINT") {
            return S3Server { endpoint, access_key, secret_key, kind: S3Kind::S3sFs };
        }
        let bin = env_nonempty("S3S_BIN").map(PathBuf::from).unwrap_or_else(|| tools_dir().join("s3s-fs/bin/s3s-fs"));
        require_installed(&bin, "s3s-fs", "scripts/s3/s3s-fs.sh install");
        let root = s3s_data_dir();
        let port = start_owned_server("s3s-fs", |port| {
            let mut c = Command::new(&bin);
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&root);
            c
        });
        S3Server { endpoint: format!("http://127.0.0.1:{port}"), access_key, secret_key, kind: S3Kind::S3sFs }
    })
}

/// What a server says of one object (HEAD): its server-side encryption, KMS key and storage
/// class, as the headers name them (`None` when a header is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSettings {
    /// `x-amz-server-side-encryption` (`AES256`, `aws:kms`).
    pub sse: Option<String>,
    /// `x-amz-server-side-encryption-aws-kms-key-id`.
    pub kms_key: Option<String>,
    /// `x-amz-storage-class` (S3 leaves it out for STANDARD).
    pub storage_class: Option<String>,
}

/// What a server says of one object's Object Lock (HEAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLockState {
    /// `x-amz-object-lock-mode` (`GOVERNANCE`, `COMPLIANCE`).
    pub mode: Option<String>,
    /// `x-amz-object-lock-retain-until-date`.
    pub until: Option<SystemTime>,
}

impl S3Server {
    /// A client of this server through the AWS SDK (signed, as a real client would), with
    /// the SDK's own defaults: for what a test checks or arranges behind pitr's back.
    pub fn sdk_client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(&self.access_key, &self.secret_key, None, None, "test"))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates a bucket with Object Lock enabled (S3 makes it versioned), with a name unique
    /// to this call, and returns the name.
    pub async fn new_locked_bucket(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("pitr-lock-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        self.sdk_client()
            .create_bucket()
            .bucket(&name)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name} with Object Lock: {e:?}"));
        name
    }

    /// The Object Lock mode and retain-until date of `key` in `bucket` (HEAD).
    pub async fn object_lock(&self, bucket: &str, key: &str) -> ObjectLockState {
        let head = self.head(bucket, key).await;
        ObjectLockState {
            mode: head.object_lock_mode().map(|m| m.as_str().to_string()),
            until: head.object_lock_retain_until_date().map(|d| UNIX_EPOCH + Duration::from_secs(d.secs() as u64)),
        }
    }

    /// The keys under `prefix` in `bucket` whose newest version is a delete marker.
    pub async fn delete_markers(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .sdk_client()
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list versions of {bucket}/{prefix}: {e:?}"));
        out.delete_markers()
            .iter()
            .filter(|m| m.is_latest() == Some(true))
            .filter_map(|m| m.key().map(String::from))
            .collect()
    }

    /// HEAD of `key` in `bucket`, through the AWS SDK (signed, as a real client would).
    async fn head(&self, bucket: &str, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        self.sdk_client()
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {bucket}/{key}: {e:?}"))
    }

    /// The server-side settings of `key` in `bucket` (HEAD).
    pub async fn object_settings(&self, bucket: &str, key: &str) -> ObjectSettings {
        let head = self.head(bucket, key).await;
        ObjectSettings {
            sse: head.server_side_encryption().map(|s| s.as_str().to_string()),
            kms_key: head.ssekms_key_id().map(String::from),
            storage_class: head.storage_class().map(|c| c.as_str().to_string()),
        }
    }

    /// A config for `bucket` with repository prefix `prefix` on this server.
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            path_style: true,
        }
    }

    /// Client options carrying this server's credentials (independent of the process env).
    pub fn options(&self) -> S3Options {
        S3Options { credentials: Some((self.access_key.clone(), self.secret_key.clone())), ..S3Options::default() }
    }

    /// A connected storage for `bucket`/`prefix`.
    pub async fn storage(&self, bucket: &str, prefix: &str) -> S3Storage {
        S3Storage::connect_with(self.config(bucket, prefix), self.options())
            .await
            .expect("connect to the test S3 server")
    }

    /// Creates a bucket with a name unique to this call and returns the name.
    pub async fn new_bucket(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("pitr-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        self.storage(&name, "").await.ensure_bucket().await.unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        name
    }

    /// A new symmetric KMS key on this server (moto serves KMS on the same endpoint); its id.
    pub async fn kms_key(&self) -> String {
        use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(&self.access_key, &self.secret_key, None, None, "test"))
            .build();
        let out = aws_sdk_kms::Client::from_conf(conf)
            .create_key()
            .description("pitr test key-encryption key")
            .send()
            .await
            .expect("create a KMS key (moto)");
        out.key_metadata().expect("key metadata").key_id().to_string()
    }

    /// Environment for child processes (pitr binaries) that talk to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where `scripts/s3/*.sh install` puts the servers.
fn tools_dir() -> PathBuf {
    if let Some(d) = env_nonempty("PITR_TOOLS") {
        return PathBuf::from(d);
    }
    let home = env_nonempty("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/pitr-tools")
}

fn require_installed(bin: &Path, what: &str, install: &str) {
    assert!(
        bin.is_file(),
        "{what} is not installed at {}: run scripts/test.sh (or `{install}`) to install the test S3 servers",
        bin.display()
    );
}

/// A fresh data directory for an s3s-fs owned by this process; directories left by earlier
/// test processes that are gone are removed.
fn s3s_data_dir() -> PathBuf {
    let base = std::env::temp_dir().join("pitr-test-s3s");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let pid = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a server (built by `command` for a port) on a free loopback port, waits until it
/// accepts connections, and returns the port. The server is killed when this process exits.
fn start_owned_server(name: &str, command: impl Fn(u16) -> Command) -> u16 {
    let log_dir = std::env::temp_dir().join("pitr-test-s3-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let log_path = log_dir.join(format!("{name}-{}-{port}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = command(port);
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let mut child = spawn_tied_to_process(cmd).unwrap_or_else(|e| panic!("start {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // Kept (never waited for) until the process ends and the kernel kills it.
                SERVERS.lock().unwrap().push(child);
                return port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                last = format!("{name} exited ({status}): {}", std::fs::read_to_string(&log_path).unwrap_or_default());
                break; // maybe the port was taken meanwhile: try another
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not start listening on port {port} within 30 s; log: {}", log_path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("could not start {name}: {last}");
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// Spawns `cmd` so that the kernel kills it when this process ends, however it ends.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so the child is
/// spawned from a thread that lives as long as the process (tests run on short-lived threads).
fn spawn_tied_to_process(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pitr-test-server-spawner".into())
            .spawn(move || {
                // Serves spawn requests for the life of the process; `rx` never closes because
                // the sender lives in a static.
                for (cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(cmd));
                }
            })
            .unwrap();
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    sender.lock().unwrap().send((cmd, reply_tx)).unwrap();
    reply_rx.recv().unwrap()
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

// `unsafe` is denied workspace-wide; this is the one place that needs it: `pre_exec` runs
// between fork and exec, where only async-signal-safe calls (prctl, getppid, _exit) are made.
#[allow(unsafe_code)]
fn spawn_with_pdeathsig(mut cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}
