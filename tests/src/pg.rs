//! A real PostgreSQL cluster for a test: `initdb` in a temporary directory, a free port, the
//! server started with `pg_ctl`, stopped and removed on drop. When the tests run as root the
//! server programs run as the `postgres` OS user (PostgreSQL refuses root).
//!
//! The server programs come from `PITR_TEST_PGBIN`, else the newest
//! `/usr/lib/postgresql/<major>/bin` (Debian's layout). Missing PostgreSQL is a test failure
//! with instructions, never a skip. The version matrix runs servers of other majors
//! ([`server_bin`]: `scripts/pg/install-majors.sh` installs them); client programs (psql,
//! pgbench) always come from [`pg_bin`], they talk to every major.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Directory holding initdb, pg_ctl, postgres, psql, pgbench.
pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PITR_TEST_PGBIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server programs not found: run scripts/test.sh (installs postgresql-15) or set PITR_TEST_PGBIN"
        )
    })
}

/// The majors the version matrix tests, oldest first.
pub const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

/// Directory holding the server programs (initdb, pg_ctl, postgres) of PostgreSQL `major`:
/// Debian's for the major of [`pg_bin`], else `$PITR_PG_CACHE/<major>/bin` (default
/// `/var/cache/pitr-test/postgresql`, filled by `scripts/pg/install-majors.sh`). Missing
/// programs fail the test with instructions.
pub fn server_bin(major: u32) -> PathBuf {
    let default = pg_bin();
    if major_of_bin(&default) == Some(major) {
        return default;
    }
    let cache = std::env::var("PITR_PG_CACHE").unwrap_or_else(|_| "/var/cache/pitr-test/postgresql".into());
    let bin = Path::new(&cache).join(major.to_string()).join("bin");
    assert!(
        bin.join("postgres").exists(),
        "PostgreSQL {major} server programs not found in {}: run scripts/pg/install-majors.sh (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The major version of the `postgres` program in `bin`.
pub fn major_of_bin(bin: &Path) -> Option<u32> {
    let out = Command::new(bin.join("postgres")).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit(' ').next()?.trim().split('.').next()?.parse().ok()
}

/// uid and gid of the OS user that runs PostgreSQL, when we are root.
pub fn server_user() -> Option<(u32, u32)> {
    // SAFETY-free check: /proc/self/status tells our uid.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if uid != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("tests run as root need the `postgres` OS user: run scripts/test.sh (installs postgresql-15)");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().unwrap(), f[3].parse().unwrap()))
}

/// A command run as the server user (itself when not root).
pub fn as_server_user(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = server_user() {
        c.uid(uid).gid(gid);
        c.env("HOME", "/tmp");
    }
    c
}

/// Makes `path` (recursively) owned by the server user, so the server and the commands it
/// runs can write there.
pub fn give_to_server_user(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        if path.is_dir() {
            for e in fs::read_dir(path).into_iter().flatten().flatten() {
                give_to_server_user(&e.path());
            }
        }
    }
}

/// A scratch directory that the server user owns, removed on drop.
pub fn scratch_dir(label: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(&format!("pitr-test-{label}-")).tempdir_in("/tmp").expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    give_to_server_user(d.path());
    d
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running test cluster.
#[derive(Debug)]
pub struct TestCluster {
    /// Data directory.
    pub data: PathBuf,
    /// Port.
    pub port: u16,
    /// Unix socket directory.
    pub socket_dir: PathBuf,
    /// The server programs it runs with.
    pub bin: PathBuf,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    running: bool,
}

impl TestCluster {
    /// `initdb` a new cluster with settings for archiving tests (`extra` lines appended to
    /// postgresql.conf). Not started.
    pub fn init(label: &str, extra: &[String]) -> TestCluster {
        Self::init_with(pg_bin(), label, extra)
    }

    /// [`TestCluster::init`] with the server programs of PostgreSQL `major`.
    pub fn init_major(major: u32, label: &str, extra: &[String]) -> TestCluster {
        Self::init_with(server_bin(major), label, extra)
    }

    fn init_with(bin: PathBuf, label: &str, extra: &[String]) -> TestCluster {
        let dir = scratch_dir(label);
        let data = dir.path().join("data");
        let socket_dir = dir.path().to_path_buf();
        let out = as_server_user(bin.join("initdb"))
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = '{}'", socket_dir.display()),
            "shared_buffers = 32MB".into(),
            "max_wal_size = 256MB".into(),
            "wal_keep_size = 1GB".into(),
            "fsync = off".into(),
            "logging_collector = off".into(),
        ];
        conf.extend_from_slice(extra);
        Self::append_conf(&data, &conf);
        TestCluster { data, port, socket_dir, bin, env: Vec::new(), _dir: Some(dir), running: false }
    }

    /// A cluster on an existing data directory (e.g. a restored one) in `dir`, run with the
    /// server programs of its major (`PG_VERSION`).
    pub fn existing(data: PathBuf, socket_dir: PathBuf) -> TestCluster {
        let major: u32 =
            fs::read_to_string(data.join("PG_VERSION")).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let bin = if major == 0 { pg_bin() } else { server_bin(major) };
        let port = free_port();
        Self::append_conf(
            &data,
            &[format!("port = {port}"), format!("unix_socket_directories = '{}'", socket_dir.display())],
        );
        TestCluster { data, port, socket_dir, bin, env: Vec::new(), _dir: None, running: false }
    }

    /// Appends lines to postgresql.conf.
    pub fn append_conf(data: &Path, lines: &[String]) {
        let p = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&p).unwrap_or_default();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        fs::write(&p, text).unwrap();
    }

    /// Environment for the server (and so for archive_command / restore_command).
    pub fn env(&mut self, k: &str, v: &str) -> &mut Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.try_start(), "pg_ctl start failed:\n{}", self.log());
    }

    /// Starts a server that may stop by itself (e.g. recovery that must fail); returns
    /// whether pg_ctl reported a running server.
    pub fn try_start(&mut self) -> bool {
        let log = self.data.with_extension("log");
        let mut c = as_server_user(self.bin.join("pg_ctl"));
        c.args(["-D", self.data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "120", "start"]);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let ok = c.output().expect("pg_ctl start").status.success();
        self.running = ok;
        ok
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Stops the server (fast mode).
    pub fn stop(&mut self) {
        if self.running {
            let _ = as_server_user(self.bin.join("pg_ctl"))
                .args(["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "-t", "120", "stop"])
                .output();
            self.running = false;
        }
    }

    /// Runs SQL through psql and returns the unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let out = as_server_user(pg_bin().join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.socket_dir.to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates tablespace `name` in a new scratch directory owned by the server's OS user;
    /// returns the directory (keep it alive) and the tablespace's oid.
    pub fn create_tablespace(&self, name: &str) -> (tempfile::TempDir, String) {
        let dir = scratch_dir(&format!("ts-{name}"));
        let location = dir.path().join("ts");
        fs::create_dir(&location).unwrap();
        give_to_server_user(&location);
        self.sql(&format!("CREATE TABLESPACE {name} LOCATION '{}'", location.display()));
        let oid = self.sql(&format!("SELECT oid FROM pg_tablespace WHERE spcname = '{name}'"));
        (dir, oid)
    }

    /// Runs pgbench with `args` against this cluster.
    pub fn pgbench(&self, args: &[&str]) {
        let out = as_server_user(pg_bin().join("pgbench"))
            .args(["-h", self.socket_dir.to_str().unwrap(), "-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .expect("pgbench");
        assert!(out.status.success(), "pgbench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Forces a segment switch and returns the name of the segment that was closed.
    pub fn switch_wal(&self) -> String {
        // Make sure there is something to switch away from.
        self.sql("CREATE TABLE IF NOT EXISTS pitr_switch_marker(i int); INSERT INTO pitr_switch_marker VALUES (1)");
        self.sql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Waits until the archiver has archived `segment` (or a later one), failing the test
    /// with the server's archiver status after `timeout`.
    pub fn wait_archived(&self, segment: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let row = self.sql("SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver");
            let last = row.split('|').next().unwrap_or("").to_string();
            if !last.is_empty() && last.as_str() >= segment && last.len() == segment.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "segment {segment} not archived after {timeout:?}: pg_stat_archiver = {row}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `sql` returns `want`.
    pub fn wait_for(&self, sql: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.sql(sql);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql:?} returned {got:?}, not {want:?}, after {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_server_user(self.bin.join("pg_ctl"))
                .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "-t", "60", "stop"])
                .output();
        }
    }
}
