//! Configuration: `pitr.toml`, `PITR_*` environment variables and command-line flags, in that
//! order of increasing precedence (flag > env > file).
//!
//! [`RepoArgs`] is the raw clap layer shared by the binaries (clap resolves flag > env);
//! [`Config::resolve`] fills the gaps from the file, validates everything once and yields the
//! only configuration libraries see. Secrets never live here: S3 credentials come from the
//! standard AWS variables and profiles.
//!
//! The configuration knows where each value came from ([`Source`]: a flag, a `PITR_*`
//! variable, the file, the default). Error messages name it, so an operator knows which of
//! the three to fix, and a command that treats a bad flag differently from a bad file value
//! (`basebackup expire`: usage error 2 against configuration error 7) asks
//! [`Config::source`] instead of guessing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::codec::CompressOptions;
use crate::encryption::{self, Access, Kek, KekSetting};
use crate::exit::{Failure, FailureKind};
use crate::repository::{locked_object, object_class, valid_cluster_name, ObjectClass, Repository};
use crate::retry::RetryPolicy;
use storage::local::LocalStorage;
use storage::s3::{
    storage_class_names, valid_storage_class, LockMode, ObjectLock, S3Config, S3Options, S3Storage, Sse,
    StorageClassRule,
};
use storage::Storage;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pitr/pitr.toml";

/// A libpq connection string or URI (`--dbname`, `dbname` in `pitr.toml`). It may hold a
/// password, so its `Debug` form only says that it is set; the programs never log it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnString(String);

impl ConnString {
    /// The text, for the connection code that parses it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ConnString {
    fn from(s: String) -> Self {
        ConnString(s)
    }
}

impl std::ops::Deref for ConnString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnString(<redacted>)")
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// A `PITR_*` environment variable.
    Env,
    /// The configuration file at this path.
    File(PathBuf),
    /// The built-in default.
    Default,
}

/// A setting's value with where it came from, for messages: `--compress-level`,
/// `PITR_COMPRESS_LEVEL`, `compress-level in /etc/pitr/pitr.toml`, `the default`.
#[derive(Debug)]
pub struct Origin<'a> {
    /// The setting's name (its key in `pitr.toml`, its flag without dashes).
    pub key: &'a str,
    /// Where its value came from.
    pub source: &'a Source,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Source::Flag => write!(f, "--{}", self.key),
            Source::Env => write!(f, "PITR_{}", self.key.replace('-', "_").to_ascii_uppercase()),
            Source::File(p) => write!(f, "{} in {}", self.key, p.display()),
            Source::Default => write!(f, "the default {}", self.key),
        }
    }
}

/// Which of the flags of [`RepoArgs`] were given on the command line and which came from
/// their environment variable (clap knows; the derived struct alone does not). Filled by
/// [`crate::cmdline::parse`]; empty when a `RepoArgs` is built in code, whose values then
/// count as flags.
#[derive(Debug, Clone, Default)]
pub struct ArgSources(BTreeMap<String, Source>);

impl ArgSources {
    /// The sources of every argument in `matches` and its subcommands' matches.
    pub fn from_matches(matches: &clap::ArgMatches) -> Self {
        let mut out = BTreeMap::new();
        let mut m = Some(matches);
        while let Some(cur) = m {
            for id in cur.ids() {
                let source = match cur.value_source(id.as_str()) {
                    Some(clap::parser::ValueSource::CommandLine) => Source::Flag,
                    Some(clap::parser::ValueSource::EnvVariable) => Source::Env,
                    _ => continue,
                };
                // A flag beats its variable, wherever it was seen.
                if out.get(id.as_str()) != Some(&Source::Flag) {
                    out.insert(id.as_str().to_string(), source);
                }
            }
            m = cur.subcommand().map(|(_, sub)| sub);
        }
        ArgSources(out)
    }

    /// Where the value of the argument `key` (kebab-case) came from: a flag unless clap said
    /// it was the environment.
    pub fn get(&self, key: &str) -> Source {
        self.0.get(&key.replace('-', "_")).cloned().unwrap_or(Source::Flag)
    }
}

/// Flags (and their environment variables) common to every pitr command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RepoArgs {
    /// Where each given value came from (flag or environment).
    #[arg(skip)]
    pub sources: ArgSources,
    /// Configuration file [default: /etc/pitr/pitr.toml when present].
    #[arg(long, env = "PITR_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Repository: a directory, file:///path, or s3://bucket/prefix.
    #[arg(long, env = "PITR_REPO", value_name = "URL", global = true)]
    pub repo: Option<String>,
    /// Name of this cluster inside the repository [default: main].
    #[arg(long, env = "PITR_CLUSTER", value_name = "NAME", global = true)]
    pub cluster: Option<String>,
    /// zstd compression level, 1-19 [default: 3].
    #[arg(long, env = "PITR_COMPRESS_LEVEL", value_name = "N", global = true)]
    pub compress_level: Option<i32>,
    /// zstd worker threads per file, 0 = compress on the calling thread [default: 0 for WAL,
    /// whose segments workers would store 0.2-1.2% larger; one per core for base backups].
    #[arg(long, env = "PITR_COMPRESS_THREADS", value_name = "N", global = true)]
    pub compress_threads: Option<u32>,
    /// S3 endpoint URL for S3-compatible servers (e.g. http://127.0.0.1:9000).
    #[arg(long, env = "PITR_S3_ENDPOINT", value_name = "URL", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: from the AWS environment, else us-east-1].
    #[arg(long, env = "PITR_S3_REGION", value_name = "REGION", global = true)]
    pub s3_region: Option<String>,
    /// AWS profile whose credentials and region the S3 client uses, instead of the standard
    /// chain [default: the standard chain].
    #[arg(long, env = "PITR_S3_PROFILE", value_name = "NAME", global = true)]
    pub s3_profile: Option<String>,
    /// Path-style S3 addressing [default: true when --s3-endpoint is set].
    #[arg(long, env = "PITR_S3_PATH_STYLE", value_name = "BOOL", global = true)]
    pub s3_path_style: Option<bool>,
    /// Seconds an S3 request may take until its answer starts, and the longest pause while a
    /// body arrives; a request over it fails and is retried [default: 60].
    #[arg(long, env = "PITR_S3_TIMEOUT", value_name = "SECS", global = true)]
    pub s3_timeout: Option<u32>,
    /// S3 server-side encryption of every upload: AES256 (SSE-S3) or aws:kms (SSE-KMS)
    /// [default: the bucket's default].
    #[arg(long, env = "PITR_S3_SSE", value_name = "AES256|aws:kms", global = true)]
    pub s3_sse: Option<String>,
    /// KMS key (id, ARN or alias) for SSE-KMS; implies --s3-sse aws:kms [default: the
    /// account's default key].
    #[arg(long, env = "PITR_S3_SSE_KMS_KEY_ID", value_name = "KEY", global = true)]
    pub s3_sse_kms_key_id: Option<String>,
    /// S3 storage class of WAL segments, e.g. STANDARD_IA [default: the bucket's default].
    #[arg(long, env = "PITR_S3_STORAGE_CLASS_WAL", value_name = "CLASS", global = true)]
    pub s3_storage_class_wal: Option<String>,
    /// S3 storage class of base backups' chunks and manifests, e.g. GLACIER_IR [default: the
    /// bucket's default].
    #[arg(long, env = "PITR_S3_STORAGE_CLASS_BACKUP", value_name = "CLASS", global = true)]
    pub s3_storage_class_backup: Option<String>,
    /// Client-side encryption: a file holding the key-encryption key (64 hexadecimal characters,
    /// mode 600; make one with `wal-archiver keys new-key-file`). See docs/security.md.
    #[arg(long, env = "PITR_ENCRYPTION_KEY_FILE", value_name = "FILE", global = true)]
    pub encryption_key_file: Option<PathBuf>,
    /// Client-side encryption with an AWS KMS key (id, ARN or alias) as the key-encryption key.
    #[arg(long, env = "PITR_ENCRYPTION_KMS_KEY_ID", value_name = "KEY", global = true)]
    pub encryption_kms_key_id: Option<String>,
    /// KMS endpoint URL [default: AWS's endpoint for the region].
    #[arg(long, env = "PITR_ENCRYPTION_KMS_ENDPOINT", value_name = "URL", global = true)]
    pub encryption_kms_endpoint: Option<String>,
    /// KMS region [default: s3-region, else the AWS environment or profile].
    #[arg(long, env = "PITR_ENCRYPTION_KMS_REGION", value_name = "REGION", global = true)]
    pub encryption_kms_region: Option<String>,
    /// S3 Object Lock on WAL, backups and catalog entries: governance or compliance; the bucket
    /// must have Object Lock enabled [default: no lock].
    #[arg(long, env = "PITR_S3_OBJECT_LOCK_MODE", value_name = "governance|compliance", global = true)]
    pub s3_object_lock_mode: Option<String>,
    /// How long each locked object stays locked after its upload, e.g. 7d; at most keep-within
    /// [default: keep-within from pitr.toml].
    #[arg(long, env = "PITR_S3_OBJECT_LOCK_PERIOD", value_name = "DURATION", global = true)]
    pub s3_object_lock_period: Option<String>,
    /// PostgreSQL data directory.
    #[arg(long, short = 'D', env = "PITR_PGDATA", value_name = "DIR", global = true)]
    pub pgdata: Option<PathBuf>,
    /// A second repository: a pitr.toml of its own (repo, s3-*, encryption-*), where WAL is
    /// stored as well and from which reads fall back. See docs/security.md.
    #[arg(long, env = "PITR_REPO2_CONFIG", value_name = "FILE", global = true)]
    pub repo2_config: Option<PathBuf>,
    /// Retries of a failed repository request before giving up [default: 4].
    #[arg(long, env = "PITR_RETRIES", value_name = "N", global = true)]
    pub retries: Option<u32>,
    /// Segments `get` fetches ahead of the one PostgreSQL asks for, in the background;
    /// 0 disables prefetching [default: 8].
    #[arg(long, env = "PITR_PREFETCH", value_name = "N", global = true)]
    pub prefetch: Option<u32>,
    /// Parallel background pushes of segments that wait in the archiver's queue (`.ready`),
    /// started by `push`; 0 pushes only the file PostgreSQL asks for [default: 2].
    #[arg(long, env = "PITR_PUSH_AHEAD", value_name = "N", global = true)]
    pub push_ahead: Option<u32>,
}

/// The keys of `pitr.toml` (same names as the flags).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// See [`RepoArgs::repo`].
    pub repo: Option<String>,
    /// See [`RepoArgs::cluster`].
    pub cluster: Option<String>,
    /// See [`RepoArgs::compress_level`].
    pub compress_level: Option<i32>,
    /// See [`RepoArgs::compress_threads`].
    pub compress_threads: Option<u32>,
    /// See [`RepoArgs::s3_endpoint`].
    pub s3_endpoint: Option<String>,
    /// See [`RepoArgs::s3_region`].
    pub s3_region: Option<String>,
    /// See [`RepoArgs::s3_profile`].
    pub s3_profile: Option<String>,
    /// See [`RepoArgs::repo2_config`].
    pub repo2_config: Option<PathBuf>,
    /// See [`RepoArgs::s3_path_style`].
    pub s3_path_style: Option<bool>,
    /// See [`RepoArgs::s3_timeout`].
    pub s3_timeout: Option<u32>,
    /// See [`RepoArgs::s3_sse`].
    pub s3_sse: Option<String>,
    /// See [`RepoArgs::s3_sse_kms_key_id`].
    pub s3_sse_kms_key_id: Option<String>,
    /// See [`RepoArgs::s3_storage_class_wal`].
    pub s3_storage_class_wal: Option<String>,
    /// See [`RepoArgs::s3_storage_class_backup`].
    pub s3_storage_class_backup: Option<String>,
    /// See [`RepoArgs::encryption_key_file`].
    pub encryption_key_file: Option<PathBuf>,
    /// See [`RepoArgs::encryption_kms_key_id`].
    pub encryption_kms_key_id: Option<String>,
    /// See [`RepoArgs::encryption_kms_endpoint`].
    pub encryption_kms_endpoint: Option<String>,
    /// See [`RepoArgs::encryption_kms_region`].
    pub encryption_kms_region: Option<String>,
    /// See [`RepoArgs::s3_object_lock_mode`].
    pub s3_object_lock_mode: Option<String>,
    /// See [`RepoArgs::s3_object_lock_period`].
    pub s3_object_lock_period: Option<String>,
    /// See [`RepoArgs::pgdata`].
    pub pgdata: Option<PathBuf>,
    /// See [`RepoArgs::retries`].
    pub retries: Option<u32>,
    /// See [`RepoArgs::prefetch`].
    pub prefetch: Option<u32>,
    /// See [`RepoArgs::push_ahead`].
    pub push_ahead: Option<u32>,
    /// Connection string for `receive` and `basebackup` (read by those programs).
    pub dbname: Option<ConnString>,
    /// Where `receive` serves its metrics and health endpoint (`IP:PORT`).
    pub metrics_listen: Option<String>,
    /// `basebackup expire`: how many of the newest backups to keep.
    pub keep_backups: Option<u32>,
    /// `basebackup expire`: keep what restores to any time within this long (e.g. `7d`).
    pub keep_within: Option<String>,
}

/// Where the repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket and key prefix.
    S3 {
        /// Bucket.
        bucket: String,
        /// Prefix inside the bucket, without slashes at either end.
        prefix: String,
    },
}

impl RepoLocation {
    /// Parses a repository URL: `s3://bucket[/prefix]`, `file:///abs/path`, or a path.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !valid_bucket {
                return Err(format!("{url:?}: {bucket:?} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)"));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|s| s.starts_with('.')) || prefix.contains("//") {
                return Err(format!("{url:?}: prefix must not contain empty or dot-segments"));
            }
            Ok(RepoLocation::S3 { bucket: bucket.to_string(), prefix })
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!("{url:?}: a file:// URL needs an absolute path (file:///var/lib/pitr)"));
            }
            Ok(RepoLocation::Local(PathBuf::from(path)))
        } else if url.contains("://") {
            Err(format!("{url:?}: unsupported scheme (use a directory, file:///path or s3://bucket/prefix)"))
        } else if url.is_empty() {
            Err("the repository location is empty".into())
        } else {
            Ok(RepoLocation::Local(PathBuf::from(url)))
        }
    }
}

/// S3 client settings other than the location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Custom endpoint.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// AWS profile for credentials and region.
    pub profile: Option<String>,
    /// Path-style addressing.
    pub path_style: bool,
    /// Request and body-idle time limit.
    pub timeout: std::time::Duration,
    /// Server-side encryption of uploads.
    pub sse: Option<Sse>,
    /// Storage class of WAL segments.
    pub storage_class_wal: Option<String>,
    /// Storage class of backup chunks and manifests.
    pub storage_class_backup: Option<String>,
    /// Object Lock of WAL, backups and catalog entries.
    pub object_lock: Option<LockSettings>,
}

/// S3 Object Lock as configured: how every object [`locked_object`] selects is locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    /// The retention mode.
    pub mode: LockMode,
    /// How long after its upload an object stays locked.
    pub period: std::time::Duration,
    /// The period was not set: it is `keep-within` from the file.
    pub period_from_keep_within: bool,
}

/// The longest lock period accepted (S3 itself allows 100 years).
pub const MAX_LOCK_PERIOD: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86400);

/// A duration as `keep-within` and `s3-object-lock-period` take it: `7d`, `36h`, `2weeks`,
/// `1d 12h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (use e.g. 7d, 36h, 2weeks)"))
}

/// Validated configuration. Its `Debug` leaves out the connection string, which may hold a
/// password.
#[derive(Clone)]
pub struct Config {
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where each setting's value came from (see [`Config::source`]).
    sources: BTreeMap<&'static str, Source>,
    /// The repository (a local path is absolute: a relative one was resolved against the
    /// current directory, see [`Config::repo_was_relative`]).
    pub repo: RepoLocation,
    /// The repository was given as a relative path.
    pub repo_was_relative: bool,
    /// The cluster's name in the repository.
    pub cluster: String,
    /// Compression (of WAL files: `workers` is 0 unless configured).
    pub compress: CompressOptions,
    /// `compress-threads` when configured (flag, environment or file).
    pub compress_threads: Option<u32>,
    /// S3 settings.
    pub s3: S3Settings,
    /// Client-side encryption: the key-encryption key, when configured.
    pub encryption: Option<KekSetting>,
    /// The second repository's configuration file (absolute), when one is configured (see
    /// [`Config::repo2`]).
    pub repo2_config: Option<PathBuf>,
    /// The data directory, when given.
    pub pgdata: Option<PathBuf>,
    /// Retries of repository requests.
    pub retry: RetryPolicy,
    /// Segments fetched ahead by `get`.
    pub prefetch: u32,
    /// Parallel look-ahead pushes.
    pub push_ahead: u32,
    /// The connection string from the file, if any.
    pub dbname: Option<ConnString>,
    /// `receive`'s metrics address from the file, if any.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `basebackup expire`'s `keep-backups` from the file, if any.
    pub keep_backups: Option<u32>,
    /// `basebackup expire`'s `keep-within` from the file, if any (parsed by `basebackup`).
    pub keep_within: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("file", &self.file)
            .field("repo", &self.repo)
            .field("cluster", &self.cluster)
            .field("compress", &self.compress)
            .field("s3", &self.s3)
            .field("repo2_config", &self.repo2_config)
            .field("pgdata", &self.pgdata)
            .field("retry", &self.retry)
            .field("prefetch", &self.prefetch)
            .field("push_ahead", &self.push_ahead)
            .field("dbname", &self.dbname)
            .field("metrics_listen", &self.metrics_listen)
            .field("keep_backups", &self.keep_backups)
            .field("keep_within", &self.keep_within)
            .finish_non_exhaustive()
    }
}

fn config_error(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Config, msg)
}

/// Reads `pitr.toml` from `explicit` (which must exist) or the default path (if present);
/// returns it with the path that was read.
pub fn load_file(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), Failure> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
        None => return Ok((FileConfig::default(), None)),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| config_error(format!("cannot read configuration file {}: {e}", path.display())))?;
    let file = toml::from_str(&text)
        .map_err(|e| config_error(format!("configuration file {}: {}", path.display(), e.message().trim())))?;
    Ok((file, Some(path)))
}

/// Picks each setting from the flags (or their variables), else the file, else the default,
/// and records where it came from.
struct Picker<'a> {
    args: &'a ArgSources,
    file: Option<PathBuf>,
    sources: BTreeMap<&'static str, Source>,
}

impl Picker<'_> {
    fn pick<T>(&mut self, key: &'static str, arg: Option<T>, file: Option<T>) -> Option<T> {
        let (value, source) = match (arg, file) {
            (Some(v), _) => (Some(v), self.args.get(key)),
            (None, Some(v)) => (Some(v), Source::File(self.file.clone().unwrap_or_default())),
            (None, None) => (None, Source::Default),
        };
        self.sources.insert(key, source);
        value
    }

    /// A configuration error about `key`'s value, naming where it came from.
    fn bad(&self, key: &'static str, message: impl fmt::Display) -> Failure {
        let source = self.sources.get(key).unwrap_or(&Source::Default);
        config_error(format!("{message} (from {})", Origin { key, source }))
    }
}

/// The key-encryption key setting: a key file (made absolute: PostgreSQL runs push and get
/// inside the data directory) or a KMS key, not both.
fn resolve_encryption(
    p: &mut Picker<'_>,
    args: &RepoArgs,
    [kms_file, endpoint_file, region_file]: [Option<String>; 3],
    key_file: Option<PathBuf>,
    s3_region: Option<&str>,
    s3_profile: Option<&str>,
) -> Result<Option<KekSetting>, Failure> {
    let file = p.pick("encryption-key-file", args.encryption_key_file.clone(), key_file);
    let kms = p.pick("encryption-kms-key-id", args.encryption_kms_key_id.clone(), kms_file);
    let endpoint = p.pick("encryption-kms-endpoint", args.encryption_kms_endpoint.clone(), endpoint_file);
    let region = p.pick("encryption-kms-region", args.encryption_kms_region.clone(), region_file);
    for (key, v) in
        [("encryption-kms-key-id", &kms), ("encryption-kms-endpoint", &endpoint), ("encryption-kms-region", &region)]
    {
        if v.as_deref().is_some_and(|v| v.is_empty() || v.chars().any(char::is_control)) {
            return Err(p.bad(key, format!("invalid {key}: it is empty or contains a control character")));
        }
    }
    if let Some(f) = &file {
        if f.as_os_str().is_empty() || f.to_string_lossy().chars().any(char::is_control) {
            return Err(p.bad("encryption-key-file", "invalid encryption-key-file: empty, or a control character"));
        }
    }
    match (file, kms) {
        (Some(_), Some(_)) => Err(p.bad(
            "encryption-kms-key-id",
            "encryption-key-file and encryption-kms-key-id are both set: a repository's key-encryption key is one \
             or the other (rotate from one to the other with `wal-archiver keys rotate`)",
        )),
        (Some(path), None) => {
            if endpoint.is_some() || region.is_some() {
                return Err(
                    p.bad("encryption-kms-endpoint", "encryption-kms-endpoint/-region need encryption-kms-key-id")
                );
            }
            let path = std::path::absolute(&path)
                .map_err(|e| p.bad("encryption-key-file", format!("encryption-key-file {}: {e}", path.display())))?;
            Ok(Some(KekSetting::File(path)))
        }
        (None, Some(key_id)) => Ok(Some(KekSetting::Kms {
            key_id,
            endpoint,
            region: region.or_else(|| s3_region.map(str::to_string)),
            profile: s3_profile.map(str::to_string),
        })),
        (None, None) if endpoint.is_some() || region.is_some() => {
            Err(p.bad("encryption-kms-endpoint", "encryption-kms-endpoint/-region need encryption-kms-key-id"))
        }
        (None, None) => Ok(None),
    }
}

/// Object Lock from its settings: a mode needs a period (its own, else `keep-within`); a
/// period needs a mode, and may not exceed `keep-within`, or `expire` could not delete on
/// time what the policy no longer keeps. Like every `s3-*` setting it is checked whatever
/// the repository, and does nothing for a local directory, which cannot lock.
fn resolve_object_lock(
    p: &Picker<'_>,
    mode: Option<String>,
    period: Option<String>,
    keep_within: Option<&str>,
) -> Result<Option<LockSettings>, Failure> {
    let mode = match (mode, &period) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(p.bad(
                "s3-object-lock-period",
                "s3-object-lock-period needs s3-object-lock-mode (governance or compliance)",
            ))
        }
        (Some(m), _) => match m.to_ascii_lowercase().as_str() {
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            _ => {
                return Err(p.bad(
                    "s3-object-lock-mode",
                    format!("invalid s3-object-lock-mode {m:?}: use governance or compliance"),
                ))
            }
        },
    };
    let keep_within = match keep_within {
        Some(w) => {
            Some(parse_duration(w).map_err(|e| p.bad("keep-within", format!("invalid keep-within {w:?}: {e}")))?)
        }
        None => None,
    };
    let (period, period_from_keep_within) = match (period, keep_within) {
        (Some(t), _) => {
            let d = parse_duration(&t)
                .map_err(|e| p.bad("s3-object-lock-period", format!("invalid s3-object-lock-period {t:?}: {e}")))?;
            (d, false)
        }
        (None, Some(w)) => (w, true),
        (None, None) => {
            return Err(p.bad(
                "s3-object-lock-mode",
                "s3-object-lock-mode needs a lock period: set s3-object-lock-period (e.g. 7d), or keep-within in \
                 pitr.toml, from which it defaults",
            ))
        }
    };
    let key = if period_from_keep_within { "keep-within" } else { "s3-object-lock-period" };
    if period.is_zero() || period > MAX_LOCK_PERIOD {
        return Err(p.bad(key, "the Object Lock period must be more than 0 and at most 100 years"));
    }
    if let Some(w) = keep_within.filter(|w| period > *w) {
        return Err(p.bad(
            "s3-object-lock-period",
            format!(
                "s3-object-lock-period {} is longer than keep-within {} (from {}): basebackup expire could not delete \
                 on time what the policy no longer keeps; use at most keep-within",
                humantime::format_duration(period),
                humantime::format_duration(w),
                Origin { key: "keep-within", source: p.sources.get("keep-within").unwrap_or(&Source::Default) }
            ),
        ));
    }
    Ok(Some(LockSettings { mode, period, period_from_keep_within }))
}

/// `url` with the user information of its authority (`user:password@`) replaced by `***`,
/// when it has any; `None` when it has none.
pub fn redact_userinfo(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let prefix = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    Some(format!("{prefix}***@{}", &rest[at + 1..]))
}

impl std::fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoLocation::Local(p) => write!(f, "{}", p.display()),
            RepoLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl Config {
    /// The `PITR_*` environment that gives a background worker (a child process) this same
    /// configuration: every value this one resolved, and the same configuration file for the
    /// keys only the file sets (`/dev/null`, an empty file, when none was read, so that the
    /// worker never reads a default file its parent did not).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let file = self.file.as_deref().unwrap_or(Path::new("/dev/null"));
        let mut env = vec![
            ("PITR_CONFIG".to_string(), file.display().to_string()),
            ("PITR_REPO".to_string(), self.repo.to_string()),
            ("PITR_CLUSTER".to_string(), self.cluster.clone()),
            ("PITR_COMPRESS_LEVEL".to_string(), self.compress.level.to_string()),
            ("PITR_COMPRESS_THREADS".to_string(), self.compress.workers.to_string()),
            ("PITR_S3_PATH_STYLE".to_string(), self.s3.path_style.to_string()),
            ("PITR_S3_TIMEOUT".to_string(), self.s3.timeout.as_secs().to_string()),
            ("PITR_RETRIES".to_string(), self.retry.retries.to_string()),
            ("PITR_PREFETCH".to_string(), self.prefetch.to_string()),
            ("PITR_PUSH_AHEAD".to_string(), self.push_ahead.to_string()),
        ];
        if let Some(e) = &self.s3.endpoint {
            env.push(("PITR_S3_ENDPOINT".into(), e.clone()));
        }
        if let Some(r) = &self.s3.region {
            env.push(("PITR_S3_REGION".into(), r.clone()));
        }
        if let Some(p) = &self.s3.profile {
            env.push(("PITR_S3_PROFILE".into(), p.clone()));
        }
        if let Some(f) = &self.repo2_config {
            env.push(("PITR_REPO2_CONFIG".into(), f.display().to_string()));
        }
        match &self.s3.sse {
            None => {}
            Some(Sse::S3) => env.push(("PITR_S3_SSE".into(), "AES256".into())),
            Some(Sse::Kms(key)) => {
                env.push(("PITR_S3_SSE".into(), "aws:kms".into()));
                if let Some(k) = key {
                    env.push(("PITR_S3_SSE_KMS_KEY_ID".into(), k.clone()));
                }
            }
        }
        if let Some(c) = &self.s3.storage_class_wal {
            env.push(("PITR_S3_STORAGE_CLASS_WAL".into(), c.clone()));
        }
        if let Some(c) = &self.s3.storage_class_backup {
            env.push(("PITR_S3_STORAGE_CLASS_BACKUP".into(), c.clone()));
        }
        if let Some(l) = &self.s3.object_lock {
            env.push(("PITR_S3_OBJECT_LOCK_MODE".into(), l.mode.as_str().to_ascii_lowercase()));
            env.push(("PITR_S3_OBJECT_LOCK_PERIOD".into(), humantime::format_duration(l.period).to_string()));
        }
        env.extend(self.encryption_env());
        env
    }

    /// The `PITR_*` variables of the encryption settings.
    pub fn encryption_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        match &self.encryption {
            None => {}
            Some(KekSetting::File(path)) => env.push(("PITR_ENCRYPTION_KEY_FILE".into(), path.display().to_string())),
            Some(KekSetting::Kms { key_id, endpoint, region, .. }) => {
                env.push(("PITR_ENCRYPTION_KMS_KEY_ID".into(), key_id.clone()));
                if let Some(e) = endpoint {
                    env.push(("PITR_ENCRYPTION_KMS_ENDPOINT".into(), e.clone()));
                }
                if let Some(r) = region {
                    env.push(("PITR_ENCRYPTION_KMS_REGION".into(), r.clone()));
                }
            }
        }
        env
    }

    /// Merges flags/env with the file and validates the result.
    pub fn resolve(args: &RepoArgs) -> Result<Config, Failure> {
        let (file, file_path) = load_file(args.config.as_deref())?;
        let mut p = Picker { args: &args.sources, file: file_path.clone(), sources: BTreeMap::new() };
        let repo = p.pick("repo", args.repo.clone(), file.repo).ok_or_else(|| {
            config_error(
                "no repository configured: pass --repo DIR|s3://bucket/prefix, set PITR_REPO, or set repo in pitr.toml",
            )
        })?;
        if let Some(c) = repo.chars().find(|c| c.is_control()) {
            return Err(p.bad(
                "repo",
                format!(
                    "invalid repository {repo:?}: it contains the control character {c:?} (a newline cannot be \
                     written into restore_command or postgresql.conf)"
                ),
            ));
        }
        let mut repo = RepoLocation::parse(&repo).map_err(|e| p.bad("repo", format!("invalid repository: {e}")))?;
        let mut repo_was_relative = false;
        if let RepoLocation::Local(path) = &mut repo {
            if path.is_relative() {
                repo_was_relative = true;
                *path = std::path::absolute(&*path)
                    .map_err(|e| p.bad("repo", format!("repository {}: {e}", path.display())))?;
            }
        }
        let cluster = p.pick("cluster", args.cluster.clone(), file.cluster).unwrap_or_else(|| "main".to_string());
        if !valid_cluster_name(&cluster) {
            return Err(p.bad("cluster", format!("invalid cluster name {cluster:?}: use 1-64 of A-Z a-z 0-9 _ . -, not starting with a dot, not _pitr")));
        }
        let level = p.pick("compress-level", args.compress_level, file.compress_level).unwrap_or(3);
        if !(-7..=22).contains(&level) || level == 0 {
            return Err(p.bad(
                "compress-level",
                format!("invalid compress-level {level}: use 1 to 19 (or -7 to -1 for faster, 20-22 for smaller)"),
            ));
        }
        // 0 by default: zstd workers compress a file in independent jobs, which stores WAL
        // 0.2-1.2% larger (benches/RESULTS.md); push-ahead already keeps the cores busy.
        let compress_threads = p.pick("compress-threads", args.compress_threads, file.compress_threads);
        let workers = compress_threads.unwrap_or(0);
        if workers > 64 {
            return Err(p.bad("compress-threads", format!("invalid compress-threads {workers}: at most 64")));
        }
        let endpoint = p.pick("s3-endpoint", args.s3_endpoint.clone(), file.s3_endpoint);
        let path_style = p.pick("s3-path-style", args.s3_path_style, file.s3_path_style).unwrap_or(endpoint.is_some());
        let timeout = p.pick("s3-timeout", args.s3_timeout, file.s3_timeout).unwrap_or(60);
        if !(1..=3600).contains(&timeout) {
            return Err(p.bad("s3-timeout", format!("invalid s3-timeout {timeout}: use 1 to 3600 seconds")));
        }
        let sse_name = p.pick("s3-sse", args.s3_sse.clone(), file.s3_sse);
        let kms_key = p.pick("s3-sse-kms-key-id", args.s3_sse_kms_key_id.clone(), file.s3_sse_kms_key_id);
        let sse = match (sse_name.as_deref(), kms_key) {
            (None, None) => None,
            (Some("AES256"), None) => Some(Sse::S3),
            (Some("AES256"), Some(_)) => {
                return Err(
                    p.bad("s3-sse-kms-key-id", "s3-sse-kms-key-id needs s3-sse aws:kms (or no s3-sse), not AES256")
                )
            }
            (Some("aws:kms") | None, key) => Some(Sse::Kms(key)),
            (Some(other), _) => {
                return Err(
                    p.bad("s3-sse", format!("invalid s3-sse {other:?}: use AES256 (SSE-S3) or aws:kms (SSE-KMS)"))
                )
            }
        };
        let mut classes = [None, None];
        for (slot, key, arg, from_file) in [
            (0, "s3-storage-class-wal", args.s3_storage_class_wal.clone(), file.s3_storage_class_wal),
            (1, "s3-storage-class-backup", args.s3_storage_class_backup.clone(), file.s3_storage_class_backup),
        ] {
            if let Some(class) = p.pick(key, arg, from_file) {
                if !valid_storage_class(&class) {
                    return Err(p.bad(
                        key,
                        format!(
                            "invalid {key} {class:?}: use an S3 storage class ({})",
                            storage_class_names().join(", ")
                        ),
                    ));
                }
                classes[slot] = Some(class);
            }
        }
        let [storage_class_wal, storage_class_backup] = classes;
        let mut s3 = S3Settings {
            endpoint,
            region: p.pick("s3-region", args.s3_region.clone(), file.s3_region),
            profile: p.pick("s3-profile", args.s3_profile.clone(), file.s3_profile),
            path_style,
            timeout: std::time::Duration::from_secs(u64::from(timeout)),
            sse,
            storage_class_wal,
            storage_class_backup,
            object_lock: None,
        };
        let retries = p.pick("retries", args.retries, file.retries).unwrap_or(RetryPolicy::default().retries);
        let metrics_listen = match p.pick("metrics-listen", None, file.metrics_listen) {
            Some(a) => Some(a.parse().map_err(|_| {
                p.bad("metrics-listen", format!("invalid metrics-listen {a:?}: use IP:PORT, e.g. 127.0.0.1:9857"))
            })?),
            None => None,
        };
        if let Some(e) = &s3.endpoint {
            if let Some(redacted) = redact_userinfo(e) {
                return Err(p.bad(
                    "s3-endpoint",
                    format!(
                        "invalid s3-endpoint {redacted}: credentials do not belong in the endpoint URL (they would end \
                         up in logs and in restore_command); give them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY \
                         or an AWS profile"
                    ),
                ));
            }
        }
        let kms_key = match &s3.sse {
            Some(Sse::Kms(k)) => k.clone(),
            _ => None,
        };
        for (key, v) in [
            ("s3-endpoint", &s3.endpoint),
            ("s3-region", &s3.region),
            ("s3-profile", &s3.profile),
            ("s3-sse-kms-key-id", &kms_key),
        ] {
            if v.as_deref().is_some_and(|v| v.is_empty() || v.chars().any(char::is_control)) {
                return Err(p.bad(key, format!("invalid {key}: it contains a control character")));
            }
        }
        let encryption = resolve_encryption(
            &mut p,
            args,
            [file.encryption_kms_key_id, file.encryption_kms_endpoint, file.encryption_kms_region],
            file.encryption_key_file,
            s3.region.as_deref(),
            s3.profile.as_deref(),
        )?;
        let repo2_config = match p.pick("repo2-config", args.repo2_config.clone(), file.repo2_config) {
            Some(f) if f.as_os_str().is_empty() || f.to_string_lossy().chars().any(char::is_control) => {
                return Err(p.bad("repo2-config", "invalid repo2-config: empty, or a control character"))
            }
            Some(f) => Some(
                std::path::absolute(&f)
                    .map_err(|e| p.bad("repo2-config", format!("repo2-config {}: {e}", f.display())))?,
            ),
            None => None,
        };
        let pgdata = p.pick("pgdata", args.pgdata.clone(), file.pgdata);
        let prefetch = p.pick("prefetch", args.prefetch, file.prefetch).unwrap_or(8).min(256);
        let push_ahead = p.pick("push-ahead", args.push_ahead, file.push_ahead).unwrap_or(2).min(32);
        let dbname = p.pick("dbname", None, file.dbname);
        let keep_backups = p.pick("keep-backups", None, file.keep_backups);
        let keep_within = p.pick("keep-within", None, file.keep_within);
        let lock_mode = p.pick("s3-object-lock-mode", args.s3_object_lock_mode.clone(), file.s3_object_lock_mode);
        let lock_period =
            p.pick("s3-object-lock-period", args.s3_object_lock_period.clone(), file.s3_object_lock_period);
        s3.object_lock = resolve_object_lock(&p, lock_mode, lock_period, keep_within.as_deref())?;
        Ok(Config {
            file: file_path,
            sources: p.sources,
            repo,
            repo_was_relative,
            cluster,
            compress: CompressOptions { level, workers },
            compress_threads,
            s3,
            encryption,
            repo2_config,
            pgdata,
            retry: RetryPolicy::with_retries(retries),
            prefetch,
            push_ahead,
            dbname,
            metrics_listen,
            keep_backups,
            keep_within,
        })
    }

    /// Where the value of `key` (a `pitr.toml` key: `compress-level`, `keep-within`, …) came
    /// from; [`Source::Default`] for a key that was not set.
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }

    /// `key` with where its value came from, for messages (`--keep-within`,
    /// `keep-within in /etc/pitr/pitr.toml`).
    pub fn origin<'a>(&'a self, key: &'a str) -> Origin<'a> {
        Origin { key, source: self.sources.get(key).unwrap_or(&Source::Default) }
    }

    /// Refuses a repository given as a relative path, for commands that PostgreSQL runs
    /// (archive_command, restore_command) with the data directory as the current directory,
    /// where a relative path would silently name a directory inside the data directory.
    pub fn require_absolute_repo(&self, what: &str) -> Result<(), Failure> {
        if self.repo_was_relative {
            return Err(config_error(format!(
                "{what}: the repository must be an absolute path or URL, not relative ({} resolved against the \
                 current directory); PostgreSQL runs {what} inside the data directory",
                self.repo
            )));
        }
        Ok(())
    }

    /// Compression of base-backup chunks: the configured threads, else one zstd worker per
    /// core (a backup's chunks are compressed one after another, so workers are its only
    /// parallelism; the size cost is small next to a data file's).
    pub fn backup_compress(&self) -> CompressOptions {
        let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let workers = self.compress_threads.unwrap_or(if cores >= 2 { cores.min(8) } else { 0 });
        CompressOptions { level: self.compress.level, workers }
    }

    /// Opens the configured backend; `create` makes a missing local repository directory
    /// (for writers), otherwise a missing directory is a configuration error. An encrypted
    /// repository comes back wrapped in its encryption, which the configured key must open
    /// (see [`encryption::open`]); a writer with a key makes a new, empty repository encrypted.
    pub async fn open_storage(&self, create: bool) -> Result<Arc<dyn Storage>, Failure> {
        let inner = self.open_backend(create).await?;
        let kek = self.open_kek().await?;
        let access = if create { Access::Write } else { Access::Read };
        encryption::open(inner, kek.as_ref(), access, self.retry, &self.repo.to_string()).await
    }

    /// Opens the configured backend as it is, without its encryption: what the key
    /// commands and tests that look at stored bytes use.
    pub async fn open_backend(&self, create: bool) -> Result<Arc<dyn Storage>, Failure> {
        match &self.repo {
            RepoLocation::Local(path) if create => Ok(Arc::new(LocalStorage::open(path)?)),
            RepoLocation::Local(path) => Ok(Arc::new(LocalStorage::open_existing(path)?)),
            RepoLocation::S3 { bucket, prefix } => {
                let cfg = S3Config {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    endpoint: self.s3.endpoint.clone(),
                    region: self.s3.region.clone(),
                    path_style: self.s3.path_style,
                };
                let (wal, backup) = (self.s3.storage_class_wal.clone(), self.s3.storage_class_backup.clone());
                let storage_class: Option<StorageClassRule> = (wal.is_some() || backup.is_some()).then(|| {
                    let rule: StorageClassRule = Arc::new(move |key: &str| match object_class(key) {
                        Some(ObjectClass::Wal) => wal.clone(),
                        Some(ObjectClass::Backup) => backup.clone(),
                        None => None,
                    });
                    rule
                });
                let options = S3Options {
                    operation_timeout: self.s3.timeout,
                    sse: self.s3.sse.clone(),
                    storage_class,
                    object_lock: self.object_lock(),
                    profile: self.s3.profile.clone(),
                    ..S3Options::default()
                };
                Ok(Arc::new(S3Storage::connect_with(cfg, options).await?))
            }
        }
    }

    /// The configured key-encryption key, opened (the key file read; a KMS client made).
    pub async fn open_kek(&self) -> Result<Option<Kek>, Failure> {
        match &self.encryption {
            None => Ok(None),
            Some(s) => Kek::open(s).await.map(Some).map_err(|e| {
                let key = match s {
                    KekSetting::File(_) => "encryption-key-file",
                    KekSetting::Kms { .. } => "encryption-kms-key-id",
                };
                e.context(format!("the key-encryption key ({})", self.origin(key)))
            }),
        }
    }

    /// The Object Lock the S3 backend applies: the configured mode and period, on the objects
    /// [`locked_object`] selects.
    fn object_lock(&self) -> Option<ObjectLock> {
        self.s3.object_lock.as_ref().map(|l| ObjectLock {
            mode: l.mode,
            period: l.period,
            rule: Arc::new(locked_object),
        })
    }

    /// The second repository's configuration, when `repo2-config` is set: resolved from its
    /// file alone (nothing of this program's flags or `PITR_*` variables applies to it), with
    /// this configuration's cluster. A `repo2-config` inside that
    /// file is ignored (there is no chain of copies); a different `cluster` there is refused
    /// (exit 7): a copy holds the same cluster under the same name.
    pub fn repo2(&self) -> Result<Option<Config>, Failure> {
        let Some(file) = &self.repo2_config else { return Ok(None) };
        let args = RepoArgs { config: Some(file.clone()), ..Default::default() };
        let mut c = Config::resolve(&args).map_err(|f| {
            Failure::msg(f.kind, format!("the second repository ({}): {:#}", self.origin("repo2-config"), f.error))
        })?;
        if c.source("cluster") != Source::Default && c.cluster != self.cluster {
            return Err(config_error(format!(
                "the second repository's file {} names cluster {:?}, but this cluster is {:?}: a copy holds the same \
                 cluster under the same name; remove cluster from {} or make it {:?}",
                file.display(),
                c.cluster,
                self.cluster,
                file.display(),
                self.cluster
            )));
        }
        c.cluster = self.cluster.clone();
        c.repo2_config = None;
        Ok(Some(c))
    }

    /// Opens this cluster's part of the repository (see [`Config::open_storage`]).
    pub async fn open_repository(&self, create: bool) -> Result<Repository, Failure> {
        Ok(Repository::new(self.open_storage(create).await?, &self.cluster, self.retry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls() {
        assert_eq!(RepoLocation::parse("/var/lib/pitr").unwrap(), RepoLocation::Local("/var/lib/pitr".into()));
        assert_eq!(RepoLocation::parse("file:///x/y").unwrap(), RepoLocation::Local("/x/y".into()));
        assert_eq!(
            RepoLocation::parse("s3://my-bucket/a/b/").unwrap(),
            RepoLocation::S3 { bucket: "my-bucket".into(), prefix: "a/b".into() }
        );
        assert_eq!(
            RepoLocation::parse("s3://bkt").unwrap(),
            RepoLocation::S3 { bucket: "bkt".into(), prefix: "".into() }
        );
        for bad in ["", "s3://", "s3://B_ad/x", "file://rel", "gs://x/y", "s3://bkt/a/../b/.x"] {
            assert!(RepoLocation::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A relative repository is made absolute (and remembered as relative, which the commands
    /// PostgreSQL runs refuse); control characters, which cannot be written into
    /// restore_command or postgresql.conf, are refused everywhere.
    #[test]
    fn relative_and_unwritable_repositories() {
        let c = Config::resolve(&RepoArgs { repo: Some("rel/repo".into()), ..Default::default() }).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.repo, RepoLocation::Local(cwd.join("rel/repo")));
        assert!(c.repo_was_relative);
        let e = c.require_absolute_repo("archive_command").unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains("absolute"), "{e}");
        let c = Config::resolve(&RepoArgs { repo: Some("/abs/repo".into()), ..Default::default() }).unwrap();
        assert!(!c.repo_was_relative && c.require_absolute_repo("x").is_ok());
        for bad in ["/srv/re\npo", "/srv/repo\r", "s3://bkt/a\nb"] {
            let e = Config::resolve(&RepoArgs { repo: Some(bad.into()), ..Default::default() }).unwrap_err();
            assert_eq!(e.kind, FailureKind::Config, "{bad:?}");
        }
        let args = RepoArgs { repo: Some("/r".into()), s3_endpoint: Some("http://h\n".into()), ..Default::default() };
        assert_eq!(Config::resolve(&args).unwrap_err().kind, FailureKind::Config);
    }

    /// Credentials in an S3 endpoint are refused, and the error does not repeat them.
    #[test]
    fn credentials_in_the_endpoint_are_refused_unechoed() {
        let args = RepoArgs {
            repo: Some("s3://bkt/x".into()),
            s3_endpoint: Some("http://admin:s3cr3t@127.0.0.1:9000/".into()),
            ..Default::default()
        };
        let e = Config::resolve(&args).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        let text = e.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("admin"), "{text}");
        assert!(text.contains("http://***@127.0.0.1:9000/"), "{text}");
        assert_eq!(redact_userinfo("https://h:1/p@x"), None, "an @ in the path is not user information");
        assert_eq!(redact_userinfo("h@x:1").as_deref(), Some("***@x:1"));
    }

    #[test]
    fn environment_round_trip() {
        let args = RepoArgs {
            repo: Some("s3://bkt/a/b".into()),
            cluster: Some("c1".into()),
            s3_endpoint: Some("http://127.0.0.1:9".into()),
            prefetch: Some(3),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!(env["PITR_REPO"], "s3://bkt/a/b");
        assert_eq!(RepoLocation::parse(&env["PITR_REPO"]).unwrap(), c.repo);
        assert_eq!(env["PITR_PREFETCH"], "3");
        assert_eq!(env["PITR_S3_ENDPOINT"], "http://127.0.0.1:9");
    }

    #[test]
    fn flags_beat_file_and_file_fills_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pitr.toml");
        std::fs::write(&f, "repo = \"/from/file\"\ncluster = \"filecluster\"\ncompress-level = 9\n").unwrap();
        let args = RepoArgs { config: Some(f.clone()), cluster: Some("flag".into()), ..Default::default() };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.repo, RepoLocation::Local("/from/file".into()));
        assert_eq!(c.cluster, "flag");
        assert_eq!(c.compress.level, 9);
    }

    #[test]
    fn wal_compresses_on_one_thread_backups_on_every_core_unless_configured() {
        let args = RepoArgs { repo: Some("/r".into()), ..Default::default() };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.compress.workers, 0);
        let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        assert_eq!(c.backup_compress().workers, if cores >= 2 { cores.min(8) } else { 0 });
        let args = RepoArgs { repo: Some("/r".into()), compress_threads: Some(1), ..Default::default() };
        let c = Config::resolve(&args).unwrap();
        assert_eq!((c.compress.workers, c.backup_compress().workers), (1, 1));
    }
    #[test]
    fn bad_configuration_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pitr.toml");
        std::fs::write(&f, "repo = \"/x\"\nrepository = \"typo\"\n").unwrap();
        let e = Config::resolve(&RepoArgs { config: Some(f), ..Default::default() }).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains("repository"), "{e}");
        let e = Config::resolve(&RepoArgs { config: Some(dir.path().join("missing.toml")), ..Default::default() })
            .unwrap_err();
        assert!(e.to_string().contains("missing.toml"), "{e}");
        let e = Config::resolve(&RepoArgs { repo: Some("/x".into()), compress_level: Some(0), ..Default::default() })
            .unwrap_err();
        assert!(e.to_string().contains("compress-level"), "{e}");
    }

    #[test]
    fn metrics_listen_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pitr.toml");
        std::fs::write(&f, "repo = \"/x\"\nmetrics-listen = \"127.0.0.1:9857\"\n").unwrap();
        let c = Config::resolve(&RepoArgs { config: Some(f.clone()), ..Default::default() }).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9857".parse().unwrap()));
        std::fs::write(&f, "repo = \"/x\"\nmetrics-listen = \"localhost\"\n").unwrap();
        let e = Config::resolve(&RepoArgs { config: Some(f), ..Default::default() }).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains("metrics-listen"), "{e}");
    }

    #[test]
    fn retention_keys_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pitr.toml");
        std::fs::write(&f, "repo = \"/x\"\nkeep-backups = 3\nkeep-within = \"7d\"\n").unwrap();
        let c = Config::resolve(&RepoArgs { config: Some(f), ..Default::default() }).unwrap();
        assert_eq!(c.keep_backups, Some(3));
        assert_eq!(c.keep_within.as_deref(), Some("7d"));
    }

    /// Each value remembers where it came from, and an error names it.
    #[test]
    fn values_know_where_they_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pitr.toml");
        std::fs::write(&f, "repo = \"/x\"\ncompress-level = 0\ndbname = \"host=h password=hunter2\"\n").unwrap();
        let e = Config::resolve(&RepoArgs { config: Some(f.clone()), ..Default::default() }).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains(&format!("from compress-level in {}", f.display())), "{e}");

        let mut args =
            RepoArgs { config: Some(f.clone()), compress_level: Some(5), retries: Some(1), ..Default::default() };
        args.sources.0.insert("retries".into(), Source::Env);
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.source("repo"), Source::File(f.clone()));
        assert_eq!(c.source("compress-level"), Source::Flag);
        assert_eq!(c.source("retries"), Source::Env);
        assert_eq!(c.source("prefetch"), Source::Default);
        assert_eq!(c.origin("retries").to_string(), "PITR_RETRIES");
        assert_eq!(c.origin("compress-level").to_string(), "--compress-level");
        assert_eq!(c.origin("dbname").to_string(), format!("dbname in {}", f.display()));

        args.compress_level = Some(99);
        let e = Config::resolve(&args).unwrap_err();
        assert!(e.to_string().contains("from --compress-level"), "{e}");
        args.compress_level = Some(5);
        args.sources.0.insert("s3_timeout".into(), Source::Env);
        args.s3_timeout = Some(0);
        let e = Config::resolve(&args).unwrap_err();
        assert!(e.to_string().contains("from PITR_S3_TIMEOUT"), "{e}");
    }

    /// The connection string (which may hold a password) never shows in `Debug`.
    #[test]
    fn debug_leaves_out_the_connection_string() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pitr.toml");
        std::fs::write(&f, "repo = \"/x\"\ndbname = \"host=h password=hunter2\"\n").unwrap();
        let c = Config::resolve(&RepoArgs { config: Some(f), ..Default::default() }).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && dbg.contains("<redacted>"), "{dbg}");
        let file = load_file(Some(&dir.path().join("pitr.toml"))).unwrap();
        assert!(!format!("{file:?}").contains("hunter2"));
        assert_eq!(c.dbname.as_deref(), Some("host=h password=hunter2"));
    }

    /// A background worker gets its parent's file, or an empty one: never a default file its
    /// parent did not read.
    #[test]
    fn workers_get_the_parents_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("other.toml");
        std::fs::write(&f, "repo = \"/x\"\n").unwrap();
        let c = Config::resolve(&RepoArgs { config: Some(f.clone()), ..Default::default() }).unwrap();
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!(env["PITR_CONFIG"], f.display().to_string());
        let c = Config::resolve(&RepoArgs {
            config: Some("/dev/null".into()),
            repo: Some("/y".into()),
            ..Default::default()
        })
        .unwrap();
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!(env["PITR_CONFIG"], "/dev/null");
        let c = Config::resolve(&RepoArgs { repo: Some("/y".into()), ..Default::default() });
        if Path::new(DEFAULT_CONFIG_PATH).exists() {
            return;
        }
        let env: std::collections::HashMap<_, _> = c.unwrap().to_env().into_iter().collect();
        assert_eq!(env["PITR_CONFIG"], "/dev/null");
    }

    /// clap says which flags came from the command line and which from their variable.
    #[test]
    fn argument_sources_from_clap() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            repo: RepoArgs,
        }
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Cli::command();
        // PITR_RETRIES is not set in the test environment; --retries is a flag here.
        let m = cmd.try_get_matches_from(["x", "--repo", "/r", "--retries", "2"]).unwrap();
        let mut cli = Cli::from_arg_matches(&m).unwrap();
        cli.repo.sources = ArgSources::from_matches(&m);
        assert_eq!(cli.repo.sources.get("repo"), Source::Flag);
        assert_eq!(cli.repo.sources.get("retries"), Source::Flag);
        assert!(!cli.repo.sources.0.contains_key("cluster"));
    }

    /// S3 encryption and storage classes: parsed, validated, and handed to workers.
    #[test]
    fn s3_server_side_settings() {
        let base = || RepoArgs { repo: Some("s3://bkt/p".into()), ..Default::default() };
        let c = Config::resolve(&RepoArgs { s3_sse_kms_key_id: Some("alias/k".into()), ..base() }).unwrap();
        assert_eq!(c.s3.sse, Some(Sse::Kms(Some("alias/k".into()))), "a key id implies aws:kms");
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!((env["PITR_S3_SSE"].as_str(), env["PITR_S3_SSE_KMS_KEY_ID"].as_str()), ("aws:kms", "alias/k"));
        let c = Config::resolve(&RepoArgs { s3_sse: Some("AES256".into()), ..base() }).unwrap();
        assert_eq!(c.s3.sse, Some(Sse::S3));
        let e =
            Config::resolve(&RepoArgs { s3_sse: Some("AES256".into()), s3_sse_kms_key_id: Some("k".into()), ..base() })
                .unwrap_err();
        assert!(e.to_string().contains("needs s3-sse aws:kms"), "{e}");
        let e = Config::resolve(&RepoArgs { s3_sse: Some("kms".into()), ..base() }).unwrap_err();
        assert!(e.to_string().contains("invalid s3-sse"), "{e}");
        let c = Config::resolve(&RepoArgs { s3_storage_class_wal: Some("STANDARD_IA".into()), ..base() }).unwrap();
        assert_eq!(c.s3.storage_class_wal.as_deref(), Some("STANDARD_IA"));
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!(env["PITR_S3_STORAGE_CLASS_WAL"], "STANDARD_IA");
        assert!(!env.contains_key("PITR_S3_SSE"));
        let e = Config::resolve(&RepoArgs { s3_storage_class_backup: Some("ICE".into()), ..base() }).unwrap_err();
        assert!(
            e.to_string().contains("invalid s3-storage-class-backup \"ICE\"") && e.to_string().contains("GLACIER_IR")
        );
    }

    /// Encryption settings: one kind of key, a key file made absolute, KMS region from
    /// s3-region, handed to workers; KMS options without a KMS key are refused.
    #[test]
    fn encryption_settings() {
        let base = || RepoArgs { repo: Some("/r".into()), ..Default::default() };
        let c = Config::resolve(&RepoArgs { encryption_key_file: Some("k.key".into()), ..base() }).unwrap();
        let abs = std::env::current_dir().unwrap().join("k.key");
        assert_eq!(c.encryption, Some(KekSetting::File(abs.clone())));
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!(env["PITR_ENCRYPTION_KEY_FILE"], abs.display().to_string());
        let c = Config::resolve(&RepoArgs {
            encryption_kms_key_id: Some("alias/k".into()),
            s3_region: Some("eu-west-1".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(
            c.encryption,
            Some(KekSetting::Kms {
                key_id: "alias/k".into(),
                endpoint: None,
                region: Some("eu-west-1".into()),
                profile: None
            })
        );
        assert_eq!(
            c.encryption_env(),
            vec![
                ("PITR_ENCRYPTION_KMS_KEY_ID".to_string(), "alias/k".to_string()),
                ("PITR_ENCRYPTION_KMS_REGION".to_string(), "eu-west-1".to_string())
            ]
        );
        for (args, says) in [
            (
                RepoArgs { encryption_key_file: Some("k".into()), encryption_kms_key_id: Some("x".into()), ..base() },
                "both set",
            ),
            (RepoArgs { encryption_kms_endpoint: Some("http://h".into()), ..base() }, "need encryption-kms-key-id"),
            (RepoArgs { encryption_kms_key_id: Some("a\nb".into()), ..base() }, "control character"),
        ] {
            let e = Config::resolve(&args).unwrap_err();
            assert_eq!(e.kind, FailureKind::Config);
            assert!(e.to_string().contains(says), "{e}");
        }
        assert_eq!(Config::resolve(&base()).unwrap().encryption, None);
        // The repository's AWS profile is the KMS client's too.
        let c = Config::resolve(&RepoArgs {
            encryption_kms_key_id: Some("alias/k".into()),
            s3_profile: Some("copy".into()),
            ..base()
        })
        .unwrap();
        assert!(matches!(c.encryption, Some(KekSetting::Kms { profile: Some(ref p), .. }) if p == "copy"));
    }

    /// Object Lock: a mode with a period of its own or keep-within's, refused with its source
    /// when it cannot be derived, exceeds keep-within, or has no mode or no S3 repository.
    #[test]
    fn object_lock_settings() {
        use std::time::Duration;
        let day = Duration::from_secs(86400);
        let base = || RepoArgs { repo: Some("s3://bkt/p".into()), ..Default::default() };
        let args = RepoArgs {
            s3_object_lock_mode: Some("GOVERNANCE".into()),
            s3_object_lock_period: Some("7d".into()),
            ..base()
        };
        let c = Config::resolve(&args).unwrap();
        let want = LockSettings { mode: LockMode::Governance, period: 7 * day, period_from_keep_within: false };
        assert_eq!(c.s3.object_lock, Some(want.clone()));
        let lock = c.object_lock().unwrap();
        assert!((lock.rule)("main/wal/0000000100000000/000000010000000000000003.zst"));
        assert!(!(lock.rule)("main/receiver/000000010000000000000003.partial.zst"));
        // Workers get the same lock.
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!(env["PITR_S3_OBJECT_LOCK_MODE"], "governance");
        let worker = RepoArgs {
            s3_object_lock_mode: Some(env["PITR_S3_OBJECT_LOCK_MODE"].clone()),
            s3_object_lock_period: Some(env["PITR_S3_OBJECT_LOCK_PERIOD"].clone()),
            ..base()
        };
        assert_eq!(Config::resolve(&worker).unwrap().s3.object_lock, Some(want));

        // The period defaults to keep-within from the file; a longer one is refused.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pitr.toml");
        std::fs::write(&f, "repo = \"s3://bkt/p\"\nkeep-within = \"14d\"\ns3-object-lock-mode = \"compliance\"\n")
            .unwrap();
        let c = Config::resolve(&RepoArgs { config: Some(f.clone()), ..Default::default() }).unwrap();
        let lock = c.s3.object_lock.unwrap();
        assert_eq!((lock.mode, lock.period, lock.period_from_keep_within), (LockMode::Compliance, 14 * day, true));
        let args =
            RepoArgs { config: Some(f.clone()), s3_object_lock_period: Some("15d".into()), ..Default::default() };
        let e = Config::resolve(&args).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        let text = e.to_string();
        assert!(text.contains("longer than keep-within 14days"), "{text}");
        assert!(text.contains(&format!("from keep-within in {}", f.display())), "{text}");
        assert!(text.ends_with("(from --s3-object-lock-period)"), "{text}");

        for (args, needle) in [
            (RepoArgs { s3_object_lock_mode: Some("governance".into()), ..base() }, "needs a lock period"),
            (RepoArgs { s3_object_lock_period: Some("1d".into()), ..base() }, "needs s3-object-lock-mode"),
            (RepoArgs { s3_object_lock_mode: Some("legal".into()), ..base() }, "invalid s3-object-lock-mode \"legal\""),
            (
                RepoArgs {
                    s3_object_lock_mode: Some("governance".into()),
                    s3_object_lock_period: Some("1 fortnight".into()),
                    ..base()
                },
                "invalid s3-object-lock-period",
            ),
            (
                RepoArgs {
                    s3_object_lock_mode: Some("governance".into()),
                    s3_object_lock_period: Some("0s".into()),
                    ..base()
                },
                "more than 0",
            ),
        ] {
            let e = Config::resolve(&args).unwrap_err();
            assert_eq!(e.kind, FailureKind::Config, "{needle}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        let e = Config::resolve(&RepoArgs { s3_object_lock_mode: Some("governance".into()), ..base() }).unwrap_err();
        assert!(e.to_string().ends_with("(from --s3-object-lock-mode)"), "{e}");
    }

    /// The second repository: resolved from its own file alone, with this cluster; another
    /// cluster name there is refused; workers and the profile get their variables.
    #[test]
    fn second_repository_from_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let f2 = dir.path().join("repo2.toml");
        std::fs::write(&f2, "repo = \"s3://copy-bkt/p\"\ns3-profile = \"copy\"\nretries = 1\n").unwrap();
        let args = RepoArgs {
            repo: Some("/r".into()),
            cluster: Some("c1".into()),
            s3_endpoint: Some("http://main:9000".into()),
            repo2_config: Some(f2.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        let second = c.repo2().unwrap().unwrap();
        assert_eq!(second.repo, RepoLocation::S3 { bucket: "copy-bkt".into(), prefix: "p".into() });
        assert_eq!(second.cluster, "c1");
        assert_eq!(second.s3.endpoint, None, "nothing of the main settings leaks into the copy");
        assert_eq!(second.s3.profile.as_deref(), Some("copy"));
        assert_eq!(second.retry.retries, 1);
        assert_eq!(second.repo2_config, None);
        let env: std::collections::HashMap<_, _> = c.to_env().into_iter().collect();
        assert_eq!(env["PITR_REPO2_CONFIG"], f2.display().to_string());
        let env: std::collections::HashMap<_, _> = second.to_env().into_iter().collect();
        assert_eq!(env["PITR_S3_PROFILE"], "copy");

        std::fs::write(&f2, "repo = \"/copy\"\ncluster = \"other\"\n").unwrap();
        let e = c.repo2().unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains("names cluster \"other\""), "{e}");
        std::fs::write(&f2, "repo = \"/copy\"\nrepository = \"typo\"\n").unwrap();
        let e = c.repo2().unwrap_err();
        assert!(e.to_string().contains("the second repository"), "{e}");
        assert!(Config::resolve(&RepoArgs { repo: Some("/r".into()), ..Default::default() })
            .unwrap()
            .repo2()
            .unwrap()
            .is_none());
    }
}
