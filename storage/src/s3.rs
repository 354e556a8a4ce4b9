//! A repository in an S3 bucket (AWS or an S3-compatible server), through aws-sdk-s3.
//!
//! Why this module exists: it is the only place that speaks S3. It turns the [`Storage`]
//! contracts into S3 requests and turns every S3 answer back into a [`StorageError`] that says
//! which operation on which `s3://bucket/key` failed, what the server said, and whether trying
//! again may help. Callers retry through `crate::retry`, so the SDK's own retries are off.
//!
//! Invariants:
//! - A key `k` is stored as `prefix/k` (or `k` with an empty prefix); listings strip the prefix
//!   again, so callers only ever see keys relative to the repository root.
//! - `NotFound` is returned only for a definite 404 on this exact key. A HEAD has no error body,
//!   so the first 404 from a HEAD is checked against the bucket (a missing bucket also answers
//!   404): a missing bucket is a non-retryable `Remote` error, never `NotFound`.
//! - Every upload carries a CRC32 computed here (`x-amz-checksum-crc32`, per part for multipart)
//!   so strict servers verify integrity; the SDK computes no checksums itself (`WhenRequired`)
//!   because its streaming-checksum encoding breaks on some servers.
//! - `PutMode::CreateNew` HEADs the key first (some stores, e.g. Garage, silently ignore
//!   conditional writes) and then writes with `If-None-Match: *`; 412/409 mean `AlreadyExists`.
//! - A `put` returns `Ok` only after a HEAD shows the object with the size that was sent.
//! - Memory is bounded: files are streamed, and files above the multipart threshold are sent
//!   one part at a time; a failed multipart upload is aborted.
//! - With [`ObjectLock`], every upload its rule selects (single PUT or multipart) carries a
//!   retention mode and a retain-until date of the upload's start plus the lock period, and
//!   [`Storage::retention`] reads that date back (HEAD); the rest are never locked.

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::region::ProfileFileRegionProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, Length};
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    ObjectLockMode, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{Body, ObjectInfo, ObjectKey, ObjectReader, PutMode, Storage, StorageError};

/// Where and how to reach the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Custom endpoint URL (S3-compatible servers), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region; default from the AWS environment, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted servers.
    pub path_style: bool,
}

/// Server-side encryption asked for on every upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3: keys managed by the service (`AES256`).
    S3,
    /// SSE-KMS (`aws:kms`), with this key (id, ARN or alias), else the account's default key.
    Kms(Option<String>),
}

/// The storage class of each object, from its key (relative to the prefix); `None` leaves
/// the bucket's default. Given by whoever knows what the keys hold (this layer does not).
pub type StorageClassRule = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The Object Lock retention mode of locked uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `GOVERNANCE`: a user with `s3:BypassGovernanceRetention` can still delete or shorten
    /// the lock (pitr never does); everyone else cannot.
    Governance,
    /// `COMPLIANCE`: nobody, not even the account's root user, can delete the object version
    /// or shorten its lock until the date has passed.
    Compliance,
}

impl LockMode {
    /// `GOVERNANCE` or `COMPLIANCE`, as S3 names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    fn sdk(self) -> ObjectLockMode {
        match self {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        }
    }
}

/// Whether the object at a key (relative to the prefix) is locked when uploaded. Given by
/// whoever knows what the keys hold (this layer does not): objects that pitr replaces or
/// deletes in normal operation must not be locked.
pub type LockRule = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// S3 Object Lock on uploads (the bucket must have been created with Object Lock enabled).
#[derive(Clone)]
pub struct ObjectLock {
    /// The retention mode.
    pub mode: LockMode,
    /// How long after its upload starts an object stays locked.
    pub period: Duration,
    /// Which keys are locked.
    pub rule: LockRule,
}

impl std::fmt::Debug for ObjectLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLock").field("mode", &self.mode).field("period", &self.period).finish_non_exhaustive()
    }
}

impl ObjectLock {
    /// The retain-until date of an upload that starts at `now`: `now` plus the period,
    /// rounded up to a whole second (S3 and some compatible servers read whole seconds).
    pub fn retain_until(&self, now: SystemTime) -> SystemTime {
        let until = now.checked_add(self.period).unwrap_or(now);
        let secs = until.duration_since(UNIX_EPOCH).map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(0);
        UNIX_EPOCH + Duration::from_secs(secs)
    }
}

/// Whether `name` is an S3 storage class this client knows (`STANDARD`, `STANDARD_IA`,
/// `GLACIER_IR`, …).
pub fn valid_storage_class(name: &str) -> bool {
    storage_class_names().contains(&name)
}

/// The S3 storage classes this client knows.
pub fn storage_class_names() -> &'static [&'static str] {
    StorageClass::values()
}

/// Client settings beyond [`S3Config`]; the defaults suit production.
#[derive(Clone)]
pub struct S3Options {
    /// Static access key id and secret; `None` uses the standard AWS credential chain
    /// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, SSO, web identity, ECS, IMDS).
    pub credentials: Option<(String, String)>,
    /// Bodies larger than this are sent as a multipart upload.
    pub multipart_threshold: u64,
    /// Size of one multipart part (raised when needed to stay within 10,000 parts). This is
    /// also the memory one upload of a file uses.
    pub part_size: u64,
    /// Limit for establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Limit for one request (until the response headers; bodies of uploads get extra time
    /// in proportion to their size, see [`MIN_UPLOAD_RATE`]).
    pub operation_timeout: Duration,
    /// Server-side encryption of every upload; `None` leaves the bucket's default.
    pub sse: Option<Sse>,
    /// Storage class per object; `None` leaves the bucket's default for all.
    pub storage_class: Option<StorageClassRule>,
    /// Object Lock of the uploads its rule selects; `None` locks nothing (and
    /// [`Storage::retention`] then answers `None` without a request).
    pub object_lock: Option<ObjectLock>,
    /// AWS profile (in the shared config and credentials files) whose credentials and region
    /// this client uses, instead of the standard chain: so that two repositories (a copy in
    /// another account or region) can each have their own. `None` uses the standard chain.
    pub profile: Option<String>,
}

/// Uploads are given `operation_timeout` plus their size at this rate (bytes per second).
pub const MIN_UPLOAD_RATE: u64 = 1 << 20;

/// S3 accepts at most this many parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// S3's smallest allowed part (except the last one).
const MIN_PART_SIZE: u64 = 5 << 20;

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            credentials: None,
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(60),
            sse: None,
            storage_class: None,
            object_lock: None,
            profile: None,
        }
    }
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("credentials", &self.credentials.as_ref().map(|(ak, _)| format!("{ak} / <secret>")))
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("sse", &self.sse)
            .field("storage_class", &self.storage_class.as_ref().map(|_| "<rule>"))
            .field("object_lock", &self.object_lock)
            .field("profile", &self.profile)
            .finish()
    }
}

/// A repository in an S3 bucket.
#[derive(Debug)]
pub struct S3Storage {
    client: Client,
    config: S3Config,
    options: S3Options,
    /// Set once the bucket is known to exist (see [`S3Storage::check_bucket`]).
    bucket_seen: AtomicBool,
}

// ---------------------------------------------------------------------------------------------
// Construction and bucket management
// ---------------------------------------------------------------------------------------------

impl S3Storage {
    /// Builds the client from `config` and the standard AWS credential chain. Makes no request.
    pub async fn connect(config: S3Config) -> Result<Self, StorageError> {
        Self::connect_with(config, S3Options::default()).await
    }

    /// Like [`S3Storage::connect`], with explicit [`S3Options`].
    pub async fn connect_with(mut config: S3Config, options: S3Options) -> Result<Self, StorageError> {
        if config.bucket.is_empty() {
            return Err(StorageError::Config("S3 bucket name is empty".into()));
        }
        config.prefix = config.prefix.trim_matches('/').to_string();
        if !config.prefix.is_empty() && ObjectKey::new(config.prefix.clone()).is_err() {
            return Err(StorageError::Config(format!("invalid S3 key prefix {:?}", config.prefix)));
        }
        if options.part_size < MIN_PART_SIZE || options.multipart_threshold < options.part_size {
            return Err(StorageError::Config(format!(
                "S3 part size must be at least 5 MiB and at most the multipart threshold ({options:?})"
            )));
        }

        // Region: configuration, else the named profile's, else the AWS environment or
        // profile, else us-east-1. No IMDS lookup: it would stall every start outside EC2.
        let mut chain = RegionProviderChain::first_try(config.region.clone().map(Region::new));
        if let Some(p) = &options.profile {
            chain = chain.or_else(ProfileFileRegionProvider::builder().profile_name(p).build());
        }
        let region = chain
            .or_else(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::new())
            .region()
            .await
            .unwrap_or_else(|| Region::from_static("us-east-1"));

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            // One attempt per call: callers retry through crate::retry on retryable errors.
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            // Per-request limits are applied here (see `call`); the SDK only bounds connecting.
            .timeout_config(TimeoutConfig::builder().connect_timeout(options.connect_timeout).build());
        if let Some((ak, sk)) = &options.credentials {
            loader = loader.credentials_provider(Credentials::new(ak, sk, None, None, "pitr-static"));
        } else if let Some(p) = &options.profile {
            // The profile's credentials only: AWS_ACCESS_KEY_ID in the environment (another
            // repository's, perhaps) must not win over the profile this repository names.
            loader = loader.credentials_provider(ProfileFileCredentialsProvider::builder().profile_name(p).build());
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(config.path_style)
            // Checksums are computed here and sent as plain headers (see the module doc).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        Ok(S3Storage { client, config, options, bucket_seen: AtomicBool::new(false) })
    }

    /// The configuration this storage was built from (prefix normalised).
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Creates the bucket if it does not exist yet; an existing bucket is fine.
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        let bucket = &self.config.bucket;
        let op_timeout = self.options.operation_timeout;
        match call(op_timeout, self.client.head_bucket().bucket(bucket).send()).await {
            Ok(_) => {
                self.bucket_seen.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err(f) if f.status == Some(404) => {}
            Err(f) => return Err(self.remote_bucket("head bucket", f)),
        }
        let mut req = self.client.create_bucket().bucket(bucket);
        let region = self.client.config().region().map(|r| r.as_ref().to_string());
        if let Some(region) = region.filter(|r| r != "us-east-1") {
            let constraint = BucketLocationConstraint::from(region.as_str());
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(constraint).build(),
            );
        }
        match call(op_timeout, req.send()).await {
            Ok(_) => {}
            Err(f) if matches!(f.code.as_deref(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => {}
            Err(f) => return Err(self.remote_bucket("create bucket", f)),
        }
        self.bucket_seen.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Makes sure a 404 really is about the object: the first time, checks that the bucket
    /// exists (a HEAD on a missing bucket also answers a bare 404, and some servers answer a
    /// GET in a missing bucket with NoSuchKey).
    async fn check_bucket(&self, full_key: &str) -> Result<(), Failure> {
        if self.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A listing answers with an error body (NoSuchBucket, AccessDenied) where HEAD cannot.
        let req = self.client.list_objects_v2().bucket(&self.config.bucket).prefix(full_key).max_keys(1).send();
        call(self.options.operation_timeout, req).await?;
        self.bucket_seen.store(true, Ordering::Relaxed);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and errors
// ---------------------------------------------------------------------------------------------

impl S3Storage {
    /// The object name in the bucket for a repository key or key prefix.
    fn full_key(&self, key: &str) -> String {
        if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.config.prefix, key)
        }
    }

    /// `s3://bucket/object` for messages.
    fn url(&self, full_key: &str) -> String {
        format!("s3://{}/{}", self.config.bucket, full_key)
    }

    fn remote(&self, op: &'static str, full_key: &str, f: Failure) -> StorageError {
        let message = if f.code.as_deref() == Some("NoSuchBucket") {
            format!("bucket {} does not exist (HTTP 404 NoSuchBucket)", self.config.bucket)
        } else if f.dispatch {
            let endpoint = self.config.endpoint.as_deref().unwrap_or("the S3 endpoint");
            format!("cannot reach {endpoint}: {}", f.message)
        } else {
            f.message
        };
        StorageError::Remote { op, key: self.url(full_key), message, retryable: f.retryable }
    }

    fn remote_bucket(&self, op: &'static str, f: Failure) -> StorageError {
        let mut e = self.remote(op, "", f);
        if let StorageError::Remote { key, .. } = &mut e {
            *key = format!("s3://{}", self.config.bucket);
        }
        e
    }

    /// A 404 from `op` on `key`: `NotFound` if the bucket exists, else the bucket's error.
    async fn not_found(&self, op: &'static str, key: &ObjectKey, full_key: &str) -> StorageError {
        match self.check_bucket(full_key).await {
            Ok(()) => StorageError::NotFound { key: key.to_string() },
            Err(f) => self.remote(op, full_key, f),
        }
    }

    /// Whether `f` is a definite "no such key" (a missing bucket is not).
    fn is_no_such_key(f: &Failure) -> bool {
        f.status == Some(404) && matches!(f.code.as_deref(), None | Some("NoSuchKey" | "NotFound"))
    }

    /// Time allowed for a request that uploads `size` bytes.
    fn upload_timeout(&self, size: u64) -> Duration {
        self.options.operation_timeout + Duration::from_secs(size / MIN_UPLOAD_RATE)
    }
}

/// A response body that fails with `TimedOut` when no byte arrives for `limit`: a stalled
/// connection must end in an error (and a retry), never in a download that waits forever
/// while PostgreSQL's recovery waits for it.
struct IdleTimeout<R> {
    inner: R,
    limit: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<R> IdleTimeout<R> {
    fn new(inner: R, limit: Duration) -> Self {
        IdleTimeout { inner, limit, sleep: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + this.limit;
                this.sleep.as_mut().reset(next);
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending => match this.sleep.as_mut().poll(cx) {
                std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data for {} s while reading the object", this.limit.as_secs()),
                ))),
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
        }
    }
}

/// What went wrong with one S3 request, classified.
#[derive(Debug)]
struct Failure {
    /// HTTP status, when the server answered.
    status: Option<u16>,
    /// S3 error code (`NoSuchKey`, `SignatureDoesNotMatch`, ...), when the answer had one.
    code: Option<String>,
    /// One line: what the server or the transport said.
    message: String,
    retryable: bool,
    /// The request never got an answer (connection refused, DNS, ...).
    dispatch: bool,
}

/// Runs one SDK request with a time limit and classifies its error.
async fn call<T, E>(
    limit: Duration,
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, Failure>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Failure {
            status: None,
            code: None,
            message: format!("no answer within {} s", limit.as_secs()),
            retryable: true,
            dispatch: false,
        }),
    }
}

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

/// S3 error codes worth another attempt whatever their HTTP status.
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "ConditionalRequestConflict",
];

fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status_u16 = status.unwrap_or(0);
            let code = e.code().map(str::to_string);
            let retryable = status_u16 >= 500
                || status_u16 == 429
                || status_u16 == 408
                || code.as_deref().is_some_and(|c| RETRYABLE_CODES.contains(&c));
            let mut message = format!("HTTP {status_u16}");
            match (&code, e.message()) {
                (Some(c), Some(m)) if !m.is_empty() => message.push_str(&format!(" {c}: {}", one_line(m))),
                (Some(c), _) => message.push_str(&format!(" {c}")),
                (None, Some(m)) if !m.is_empty() => message.push_str(&format!(": {}", one_line(m))),
                (None, _) => message.push_str(&format!(" {}", reason(status_u16))),
            }
            match (status_u16, code.as_deref()) {
                (_, Some("SignatureDoesNotMatch" | "InvalidAccessKeyId")) => {
                    message.push_str(" (check the access key and secret)")
                }
                (403, None) => message.push_str(" (check the credentials and their permissions)"),
                _ => {}
            }
            Failure { status, code, message, retryable, dispatch: false }
        }
        SdkError::DispatchFailure(d) => {
            // The request was never answered; the chain says why, minus the SDK's own label.
            let chain = error_chain(err);
            let chain = chain.strip_prefix("dispatch failure: ").unwrap_or(&chain);
            let chain = chain.strip_prefix("other: ").unwrap_or(chain).to_string();
            if d.is_other() && d.as_other().is_none() && chain.to_ascii_lowercase().contains("credential") {
                // Loading credentials failed: a setup problem, not a transient one.
                let message = format!(
                    "no usable AWS credentials ({chain}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or an AWS profile"
                );
                return Failure { status, code: None, message, retryable: false, dispatch: false };
            }
            let retryable = if d.is_io() || d.is_timeout() {
                true
            } else if d.is_user() {
                false
            } else {
                !matches!(d.as_other(), Some(aws_smithy_types::retry::ErrorKind::ClientError))
            };
            Failure { status, code: None, message: chain, retryable, dispatch: true }
        }
        SdkError::TimeoutError(_) => {
            Failure { status, code: None, message: error_chain(err), retryable: true, dispatch: false }
        }
        SdkError::ResponseError(_) => {
            let mut message = error_chain(err);
            if let Some(s) = status {
                message = format!("HTTP {s}: {message}");
            }
            Failure { status, code: None, message, retryable: true, dispatch: false }
        }
        // Construction failures and anything new: the request could not be built.
        _ => Failure { status, code: None, message: error_chain(err), retryable: false, dispatch: false },
    }
}

/// `outer: inner: innermost` on one line, repeated links dropped.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cur {
        let s = one_line(&e.to_string());
        if !s.is_empty() && !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------------------------

/// An upload's content and its size.
enum Source {
    Bytes(Bytes),
    File(PathBuf),
}

fn crc32_b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// CRC32 of the first `size` bytes of `path`, read in bounded chunks.
async fn file_crc32(path: &Path, size: u64) -> Result<u32, StorageError> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| StorageError::io("open", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want]).await.map_err(|e| StorageError::io("read", path, e))?;
        hasher.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(hasher.finalize())
}

fn is_precondition_failed(f: &Failure) -> bool {
    matches!(f.status, Some(412) | Some(409))
        && matches!(f.code.as_deref(), None | Some("PreconditionFailed" | "ConditionalRequestConflict"))
}

/// What an upload of one key asks for besides its content.
struct UploadSettings {
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    class: Option<StorageClass>,
    /// The Object Lock mode and retain-until date, when the key is locked.
    lock: Option<(ObjectLockMode, DateTime)>,
}

impl S3Storage {
    /// The encryption, KMS key, storage class and lock an upload of `key` that starts now
    /// asks for.
    fn upload_settings(&self, key: &ObjectKey) -> UploadSettings {
        let (sse, kms_key) = match &self.options.sse {
            None => (None, None),
            Some(Sse::S3) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms(k)) => (Some(ServerSideEncryption::AwsKms), k.clone()),
        };
        let class = self
            .options
            .storage_class
            .as_ref()
            .and_then(|rule| rule(key.as_str()))
            .map(|c| StorageClass::from(c.as_str()));
        let lock = self.options.object_lock.as_ref().filter(|l| (l.rule)(key.as_str())).map(|l| {
            let until = l.retain_until(SystemTime::now());
            (l.mode.sdk(), DateTime::from(until))
        });
        UploadSettings { sse, kms_key, class, lock }
    }

    /// `f`'s error for an upload, with what to do when the bucket cannot lock objects.
    fn upload_error(&self, op: &'static str, full: &str, mut f: Failure) -> StorageError {
        let lock_refused = f.code.as_deref() == Some("InvalidRequest")
            && f.message.to_ascii_lowercase().replace(' ', "").contains("objectlockconfiguration");
        if self.options.object_lock.is_some() && lock_refused {
            f.message.push_str(
                " (s3-object-lock-mode needs a bucket created with Object Lock enabled; see docs/security.md, \
                 \"Object Lock\")",
            );
            f.retryable = false;
        }
        self.remote(op, full, f)
    }

    /// One PutObject of the whole body.
    async fn put_single(
        &self,
        key: &ObjectKey,
        full: &str,
        source: &Source,
        size: u64,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        let (body, crc) = match source {
            Source::Bytes(b) => (ByteStream::from(b.clone()), crc32fast::hash(b)),
            Source::File(p) => {
                let crc = file_crc32(p, size).await?;
                let body = ByteStream::read_from().path(p).length(Length::Exact(size)).build().await.map_err(|e| {
                    StorageError::Io { op: "open", path: p.display().to_string(), error: std::io::Error::other(e) }
                })?;
                (body, crc)
            }
        };
        let mut req = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(full)
            .content_length(size as i64)
            .checksum_crc32(crc32_b64(crc))
            .body(body);
        if mode == PutMode::CreateNew {
            req = req.if_none_match("*");
        }
        let up = self.upload_settings(key);
        req = req.set_server_side_encryption(up.sse).set_ssekms_key_id(up.kms_key).set_storage_class(up.class);
        if let Some((lock_mode, until)) = up.lock {
            // S3 requires Content-MD5 or x-amz-sdk-checksum-algorithm with a lock; the CRC32
            // above is ours (the SDK adds no checksum when one is set).
            req = req
                .object_lock_mode(lock_mode)
                .object_lock_retain_until_date(until)
                .checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        match call(self.upload_timeout(size), req.send()).await {
            Ok(_) => Ok(()),
            Err(f) if mode == PutMode::CreateNew && is_precondition_failed(&f) => {
                Err(StorageError::AlreadyExists { key: key.to_string() })
            }
            Err(f) => Err(self.upload_error("put", full, f)),
        }
    }

    /// A multipart upload, one part in memory at a time; aborted if anything fails.
    async fn put_multipart(
        &self,
        key: &ObjectKey,
        full: &str,
        source: &Source,
        size: u64,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        let up = self.upload_settings(key);
        let (lock_mode, until) = up.lock.unzip();
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_server_side_encryption(up.sse)
            .set_ssekms_key_id(up.kms_key)
            .set_storage_class(up.class)
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(until);
        let created = call(self.options.operation_timeout, req.send())
            .await
            .map_err(|f| self.upload_error("put (start multipart)", full, f))?;
        let Some(upload_id) = created.upload_id else {
            return Err(StorageError::Remote {
                op: "put (start multipart)",
                key: self.url(full),
                message: "the server returned no upload id".into(),
                retryable: true,
            });
        };
        let result = self.upload_parts(key, full, &upload_id, source, size, mode).await;
        if result.is_err() {
            let abort =
                self.client.abort_multipart_upload().bucket(&self.config.bucket).key(full).upload_id(&upload_id).send();
            if let Err(f) = call(self.options.operation_timeout, abort).await {
                tracing::warn!(key = %self.url(full), upload_id, error = %f.message, "could not abort a failed multipart upload");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        full: &str,
        upload_id: &str,
        source: &Source,
        size: u64,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        // Round up to whole MiB so that no upload needs more than MAX_PARTS parts.
        let needed = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
        let part_size = self.options.part_size.max(needed);
        let mut file = match source {
            Source::File(p) => Some((tokio::fs::File::open(p).await.map_err(|e| StorageError::io("open", p, e))?, p)),
            Source::Bytes(_) => None,
        };
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = part_size.min(size - offset);
            let data = match (&mut file, source) {
                (Some((f, p)), _) => {
                    let mut buf = vec![0u8; len as usize];
                    f.read_exact(&mut buf).await.map_err(|e| StorageError::io("read", p, e))?;
                    Bytes::from(buf)
                }
                (None, Source::Bytes(b)) => b.slice(offset as usize..(offset + len) as usize),
                (None, Source::File(_)) => unreachable!("file sources are opened above"),
            };
            let crc = crc32_b64(crc32fast::hash(&data));
            let req = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .checksum_crc32(&crc)
                .body(ByteStream::from(data));
            let out = call(self.upload_timeout(len), req.send())
                .await
                .map_err(|f| self.remote("put (upload part)", full, f))?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).checksum_crc32(crc).build());
            offset += len;
            number += 1;
        }
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        if mode == PutMode::CreateNew {
            req = req.if_none_match("*");
        }
        match call(self.upload_timeout(size), req.send()).await {
            Ok(_) => Ok(()),
            Err(f) if mode == PutMode::CreateNew && is_precondition_failed(&f) => {
                Err(StorageError::AlreadyExists { key: key.to_string() })
            }
            Err(f) => Err(self.remote("put (complete multipart)", full, f)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Storage contract
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, key: &ObjectKey, body: Body, mode: PutMode) -> Result<(), StorageError> {
        let full = self.full_key(key.as_str());
        let (source, size) = match body {
            Body::Bytes(b) => {
                let n = b.len() as u64;
                (Source::Bytes(b), n)
            }
            Body::File(p) => {
                let meta = tokio::fs::metadata(&p).await.map_err(|e| StorageError::io("stat", &p, e))?;
                (Source::File(p), meta.len())
            }
        };
        if mode == PutMode::CreateNew {
            // Stores that ignore If-None-Match would silently replace the object.
            match self.head(key).await {
                Ok(_) => return Err(StorageError::AlreadyExists { key: key.to_string() }),
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if size > self.options.multipart_threshold {
            self.put_multipart(key, &full, &source, size, mode).await?;
        } else {
            self.put_single(key, &full, &source, size, mode).await?;
        }
        // The contract: acknowledged and readable on return, whole.
        let stored = match self.head(key).await {
            Ok(info) => info.size,
            Err(StorageError::NotFound { .. }) => {
                return Err(StorageError::Remote {
                    op: "put",
                    key: self.url(&full),
                    message: "the server acknowledged the upload but the object is not there".into(),
                    retryable: true,
                })
            }
            Err(e) => return Err(e),
        };
        if stored != size {
            return Err(StorageError::Remote {
                op: "put",
                key: self.url(&full),
                message: format!("stored object has {stored} bytes, {size} were sent"),
                retryable: true,
            });
        }
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        let full = self.full_key(key.as_str());
        let req = self.client.get_object().bucket(&self.config.bucket).key(&full).send();
        match call(self.options.operation_timeout, req).await {
            Ok(out) => Ok(ObjectReader::Stream(Box::new(IdleTimeout::new(
                out.body.into_async_read(),
                self.options.operation_timeout,
            )))),
            Err(f) if Self::is_no_such_key(&f) => Err(self.not_found("get", key, &full).await),
            Err(f) => Err(self.remote("get", &full, f)),
        }
    }

    async fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StorageError> {
        if range.start >= range.end {
            // HTTP cannot ask for nothing; still answer NotFound for a missing key.
            self.head(key).await?;
            return Ok(Bytes::new());
        }
        let full = self.full_key(key.as_str());
        let req = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send();
        let out = match call(self.options.operation_timeout, req).await {
            Ok(out) => out,
            // The object exists and the range starts at or after its end.
            Err(f) if f.status == Some(416) => return Ok(Bytes::new()),
            Err(f) if Self::is_no_such_key(&f) => return Err(self.not_found("read range", key, &full).await),
            Err(f) => return Err(self.remote("read range", &full, f)),
        };
        let ranged = out.content_range.is_some();
        let limit = self.options.operation_timeout;
        let data = match tokio::time::timeout(limit, out.body.collect()).await {
            Ok(r) => r.map_err(|e| StorageError::Remote {
                op: "read range",
                key: self.url(&full),
                message: error_chain(&e),
                retryable: true,
            })?,
            Err(_) => {
                return Err(StorageError::Remote {
                    op: "read range",
                    key: self.url(&full),
                    message: format!("the body did not arrive within {} s", limit.as_secs()),
                    retryable: true,
                })
            }
        };
        let data = data.into_bytes();
        let want = (range.end - range.start) as usize;
        if ranged {
            Ok(data.slice(..data.len().min(want)))
        } else {
            // The server ignored Range and sent the whole object.
            let len = data.len() as u64;
            Ok(data.slice(range.start.min(len) as usize..range.end.min(len) as usize))
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        let full = self.full_key(key.as_str());
        let req = self.client.head_object().bucket(&self.config.bucket).key(&full).send();
        match call(self.options.operation_timeout, req).await {
            Ok(out) => match out.content_length {
                Some(n) if n >= 0 => Ok(ObjectInfo { key: key.clone(), size: n as u64 }),
                _ => Err(StorageError::Remote {
                    op: "head",
                    key: self.url(&full),
                    message: "the server sent no Content-Length".into(),
                    retryable: false,
                }),
            },
            Err(f) if Self::is_no_such_key(&f) => Err(self.not_found("head", key, &full).await),
            Err(f) => Err(self.remote("head", &full, f)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.config.prefix.is_empty() { String::new() } else { format!("{}/", self.config.prefix) };
        let mut pages =
            self.client.list_objects_v2().bucket(&self.config.bucket).prefix(&full_prefix).into_paginator().send();
        let mut out = Vec::new();
        loop {
            let limit = self.options.operation_timeout;
            let page = match tokio::time::timeout(limit, pages.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(page))) => page,
                Ok(Some(Err(e))) => return Err(self.remote("list", &full_prefix, classify(&e))),
                Err(_) => {
                    return Err(StorageError::Remote {
                        op: "list",
                        key: self.url(&full_prefix),
                        message: format!("no answer within {} s", limit.as_secs()),
                        retryable: true,
                    })
                }
            };
            for obj in page.contents() {
                let Some(name) = obj.key() else { continue };
                let Some(rel) = name.strip_prefix(&strip) else { continue };
                match ObjectKey::new(rel) {
                    Ok(key) => out.push(ObjectInfo { key, size: obj.size().unwrap_or(0).max(0) as u64 }),
                    Err(_) => {
                        tracing::warn!(object = %self.url(name), "ignoring an object whose name is not a valid key")
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let full = self.full_key(key.as_str());
        let req = self.client.delete_object().bucket(&self.config.bucket).key(&full).send();
        match call(self.options.operation_timeout, req).await {
            Ok(_) => Ok(()),
            Err(f) if f.status == Some(404) && f.code.as_deref() == Some("NoSuchKey") => Ok(()),
            Err(f) => Err(self.remote("delete", &full, f)),
        }
    }

    /// From a HEAD (`x-amz-object-lock-retain-until-date`), which S3 answers only to a
    /// caller with `s3:GetObjectRetention`; GetObjectRetention itself is not implemented by
    /// every S3-compatible server (moto answers it with the object). Without Object Lock
    /// configured, `None` without a request.
    async fn retention(&self, key: &ObjectKey) -> Result<Option<SystemTime>, StorageError> {
        if self.options.object_lock.is_none() {
            return Ok(None);
        }
        let full = self.full_key(key.as_str());
        let req = self.client.head_object().bucket(&self.config.bucket).key(&full).send();
        match call(self.options.operation_timeout, req).await {
            Ok(out) => Ok(out.object_lock_retain_until_date().map(|d| {
                let secs = d.secs();
                if secs >= 0 {
                    UNIX_EPOCH + Duration::new(secs as u64, d.subsec_nanos())
                } else {
                    UNIX_EPOCH
                }
            })),
            Err(f) if Self::is_no_such_key(&f) => Err(self.not_found("retention", key, &full).await),
            Err(f) => Err(self.remote("retention", &full, f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            path_style: true,
        }
    }

    #[tokio::test]
    async fn configuration_is_checked_without_a_request() {
        assert!(S3Storage::connect(config("", "")).await.is_err(), "empty bucket");
        assert!(S3Storage::connect(config("b", "a//b")).await.is_err(), "bad prefix");
        let small = S3Options { part_size: 1 << 20, ..S3Options::default() };
        assert!(S3Storage::connect_with(config("b", ""), small).await.is_err(), "part below 5 MiB");
        let s = S3Storage::connect(config("b", "/org/repo/")).await.unwrap();
        assert_eq!(s.config().prefix, "org/repo");
        assert_eq!(s.full_key("wal/1"), "org/repo/wal/1");
        assert_eq!(s.full_key(""), "org/repo/", "listing the whole repository stays inside it");
        let s = S3Storage::connect(config("b", "")).await.unwrap();
        assert_eq!(s.full_key("wal/1"), "wal/1");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let o = S3Options { credentials: Some(("AKID".into(), "s3cr3t".into())), ..S3Options::default() };
        let text = format!("{o:?}");
        assert!(text.contains("AKID") && !text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn checksums_are_big_endian_base64() {
        // CRC32 of "123456789" is 0xCBF43926.
        assert_eq!(crc32_b64(crc32fast::hash(b"123456789")), "y/Q5Jg==");
    }

    #[test]
    fn retain_until_is_the_period_after_the_upload_in_whole_seconds() {
        let lock = ObjectLock {
            mode: LockMode::Governance,
            period: Duration::from_secs(86400),
            rule: Arc::new(|_: &str| true),
        };
        let t = UNIX_EPOCH + Duration::new(1_000, 1);
        assert_eq!(lock.retain_until(t), UNIX_EPOCH + Duration::from_secs(1_000 + 86400 + 1), "rounded up");
        let t = UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(lock.retain_until(t), UNIX_EPOCH + Duration::from_secs(86405));
        assert_eq!(format!("{lock:?}"), "ObjectLock { mode: Governance, period: 86400s, .. }");
    }
}
