//! Key-encryption keys: where the key that wraps a repository's data keys comes from (a key
//! file, or an AWS KMS key that never leaves KMS), and wrapping and unwrapping with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::region::ProfileFileRegionProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use storage::encrypted::{open_key, random_key, seal_key, KeyBytes};
use zeroize::Zeroizing;

use super::record::{DataKeyEntry, Wrapped};
use crate::exit::{Failure, FailureKind};

/// The configured key-encryption key, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSetting {
    /// A file holding 32 random bytes as 64 hex characters (`wal-archiver keys new-key-file`).
    File(PathBuf),
    /// An AWS KMS key (id, ARN or alias).
    Kms {
        /// The key.
        key_id: String,
        /// Another endpoint than AWS's (a VPC endpoint; a test server).
        endpoint: Option<String>,
        /// The region; else the AWS environment or profile, else us-east-1.
        region: Option<String>,
        /// The AWS profile whose credentials (and region) the KMS client uses instead of the
        /// standard chain: the repository's `s3-profile`.
        profile: Option<String>,
    },
}

/// An opened key-encryption key.
pub enum Kek {
    /// A key read from a file.
    File {
        /// The file.
        path: PathBuf,
        /// A fingerprint that names the key without revealing it.
        fingerprint: String,
        /// The key.
        key: KeyBytes,
    },
    /// An AWS KMS key: wrapping and unwrapping are KMS calls.
    Kms {
        /// The key as configured.
        key_id: String,
        /// The KMS client.
        client: aws_sdk_kms::Client,
    },
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn key_failure(msg: impl Into<String>) -> Failure {
    Failure::msg(FailureKind::Key, msg.into())
}

/// The encryption context (KMS) or authenticated data (key files) of a data key's wrap: the
/// wrap opens only as the data key it was made for.
const CONTEXT_KEY: &str = "pitr-data-key";

fn file_aad(id: &str) -> Vec<u8> {
    format!("pitr data key {id}").into_bytes()
}

/// Reads a key file: 64 hex characters (surrounding whitespace ignored), not readable by
/// other users.
pub fn read_key_file(path: &Path) -> Result<KeyBytes, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| key_failure(format!("cannot read the key file {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(key_failure(format!(
            "the key file {} is accessible to other users (mode {:o}): chmod 600 it (or 640 for a group)",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| key_failure(format!("cannot read the key file {}: {e}", path.display())))?,
    );
    let hex_text = text.trim();
    let mut key = Zeroizing::new([0u8; 32]);
    if hex_text.len() != 64 || hex::decode_to_slice(hex_text, &mut key[..]).is_err() {
        return Err(key_failure(format!(
            "the key file {} does not hold a key: it must hold 64 hexadecimal characters (32 random bytes); make one \
             with `wal-archiver keys new-key-file {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(key)
}

/// Writes a new random key file at `path` (mode 600, never replacing a file).
pub fn new_key_file(path: &Path) -> Result<String, Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = random_key();
    let text = Zeroizing::new(format!("{}\n", hex::encode(&key[..])));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        Failure::msg(FailureKind::LocalIo, format!("cannot create the key file {}: {e}", path.display()))
    })?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| {
        Failure::msg(FailureKind::LocalIo, format!("cannot write the key file {}: {e}", path.display()))
    })?;
    Ok(fingerprint(&key))
}

/// A fingerprint of a key (an HMAC of a fixed text): names it without revealing it.
pub fn fingerprint(key: &[u8; 32]) -> String {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key[..]);
    let tag = aws_lc_rs::hmac::sign(&k, b"pitr key-encryption key fingerprint");
    hex::encode(&tag.as_ref()[..8])
}

/// A KMS error that says this key cannot open this wrap (as opposed to KMS being unreachable).
fn kms_refusal<E: aws_sdk_kms::error::ProvideErrorMetadata>(e: &aws_sdk_kms::error::SdkError<E>) -> Option<String> {
    match e {
        aws_sdk_kms::error::SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("unknown").to_string();
            let msg = s.err().message().unwrap_or("").to_string();
            Some(format!("{code}: {msg}"))
        }
        _ => None,
    }
}

fn kms_failure<E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    key_id: &str,
    e: aws_sdk_kms::error::SdkError<E>,
) -> Failure {
    match kms_refusal(&e) {
        Some(m) => key_failure(format!("KMS refused to {what} with key {key_id}: {m}")),
        None => Failure::msg(
            FailureKind::Storage,
            format!(
                "KMS could not be reached to {what} with key {key_id}: {}",
                aws_sdk_kms::error::DisplayErrorContext(e)
            ),
        )
        .transient(),
    }
}

impl Kek {
    /// Opens the configured key: reads the key file, or connects to KMS (no request yet).
    pub async fn open(setting: &KekSetting) -> Result<Kek, Failure> {
        match setting {
            KekSetting::File(path) => {
                let key = read_key_file(path)?;
                Ok(Kek::File { path: path.clone(), fingerprint: fingerprint(&key), key })
            }
            KekSetting::Kms { key_id, endpoint, region, profile } => {
                let mut chain = RegionProviderChain::first_try(region.clone().map(Region::new));
                if let Some(p) = profile {
                    chain = chain.or_else(ProfileFileRegionProvider::builder().profile_name(p).build());
                }
                let region =
                    chain.or_default_provider().region().await.unwrap_or_else(|| Region::from_static("us-east-1"));
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(p) = profile {
                    loader =
                        loader.credentials_provider(ProfileFileCredentialsProvider::builder().profile_name(p).build());
                }
                let sdk = loader
                    .region(region)
                    .retry_config(RetryConfig::standard().with_max_attempts(3))
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_timeout(Duration::from_secs(30))
                            .build(),
                    )
                    .load()
                    .await;
                let mut b = aws_sdk_kms::config::Builder::from(&sdk);
                if let Some(e) = endpoint {
                    b = b.endpoint_url(e);
                }
                Ok(Kek::Kms { key_id: key_id.clone(), client: aws_sdk_kms::Client::from_conf(b.build()) })
            }
        }
    }

    /// For messages: which key this is.
    pub fn describe(&self) -> String {
        match self {
            Kek::File { path, fingerprint, .. } => format!("key file {} (fingerprint {fingerprint})", path.display()),
            Kek::Kms { key_id, .. } => format!("KMS key {key_id}"),
        }
    }

    /// Whether `other` is the same key.
    pub fn same_key(&self, other: &Kek) -> bool {
        match (self, other) {
            (Kek::File { fingerprint: a, .. }, Kek::File { fingerprint: b, .. }) => a == b,
            (Kek::Kms { key_id: a, .. }, Kek::Kms { key_id: b, .. }) => a == b,
            _ => false,
        }
    }

    /// A new data key `id`, and its wrap by this key.
    pub async fn generate(&self, id: &str) -> Result<(KeyBytes, Wrapped), Failure> {
        match self {
            Kek::File { .. } => {
                let k = random_key();
                let w = self.wrap(id, &k).await?;
                Ok((k, w))
            }
            Kek::Kms { key_id, client } => {
                let out = client
                    .generate_data_key()
                    .key_id(key_id)
                    .key_spec(DataKeySpec::Aes256)
                    .encryption_context(CONTEXT_KEY, id)
                    .send()
                    .await
                    .map_err(|e| kms_failure("generate a data key", key_id, e))?;
                let plain = out.plaintext().map(|b| b.as_ref()).unwrap_or_default();
                let blob = out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
                if plain.len() != 32 || blob.is_empty() {
                    return Err(key_failure(format!("KMS key {key_id} returned a data key of {} bytes", plain.len())));
                }
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(plain);
                let arn = out.key_id().unwrap_or(key_id);
                Ok((k, Wrapped::new(format!("kms:{arn}"), &blob)))
            }
        }
    }

    /// Wraps data key `id` with this key.
    pub async fn wrap(&self, id: &str, key: &KeyBytes) -> Result<Wrapped, Failure> {
        match self {
            Kek::File { fingerprint, key: kek, .. } => {
                Ok(Wrapped::new(format!("file:{fingerprint}"), &seal_key(kek, key, &file_aad(id))))
            }
            Kek::Kms { key_id, client } => {
                let out = client
                    .encrypt()
                    .key_id(key_id)
                    .plaintext(Blob::new(key.to_vec()))
                    .encryption_context(CONTEXT_KEY, id)
                    .send()
                    .await
                    .map_err(|e| kms_failure("wrap a data key", key_id, e))?;
                let blob = out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
                let arn = out.key_id().unwrap_or(key_id);
                Ok(Wrapped::new(format!("kms:{arn}"), &blob))
            }
        }
    }

    /// The data key of `entry` and the wrap that opened it, when this key opens one of its
    /// wraps; `None` when none is this key's.
    async fn open_entry(&self, entry: &DataKeyEntry) -> Result<Option<(KeyBytes, Wrapped)>, Failure> {
        let damaged = |w: &Wrapped| {
            Failure::msg(
                FailureKind::Corrupt,
                format!("the wrap of data key {} by {} in the encryption record is damaged", entry.id, w.kek),
            )
        };
        match self {
            Kek::File { fingerprint, key, .. } => {
                let label = format!("file:{fingerprint}");
                let Some(w) = entry.wrapped.iter().find(|w| w.kek == label) else {
                    return Ok(None);
                };
                let sealed = w.bytes().ok_or_else(|| damaged(w))?;
                let k = open_key(key, &sealed, &file_aad(&entry.id)).ok_or_else(|| damaged(w))?;
                Ok(Some((k, w.clone())))
            }
            Kek::Kms { key_id, client } => {
                let mut refusals = Vec::new();
                for w in entry.wrapped.iter().filter(|w| w.kek.starts_with("kms:")) {
                    let sealed = w.bytes().ok_or_else(|| damaged(w))?;
                    let r = client
                        .decrypt()
                        .key_id(key_id)
                        .ciphertext_blob(Blob::new(sealed))
                        .encryption_context(CONTEXT_KEY, &entry.id)
                        .send()
                        .await;
                    match r {
                        Ok(out) => {
                            let plain = out.plaintext().map(|b| b.as_ref()).unwrap_or_default();
                            if plain.len() != 32 {
                                return Err(damaged(w));
                            }
                            let mut k = Zeroizing::new([0u8; 32]);
                            k.copy_from_slice(plain);
                            return Ok(Some((k, w.clone())));
                        }
                        Err(e) => match kms_refusal(&e) {
                            Some(m) => refusals.push(format!("{}: {m}", w.kek)),
                            None => return Err(kms_failure("unwrap a data key", key_id, e)),
                        },
                    }
                }
                if !refusals.is_empty() {
                    tracing::debug!(data_key = entry.id, refusals = refusals.join("; "), "KMS did not unwrap");
                }
                Ok(None)
            }
        }
    }

    /// The data key of `entry`, when this key opens it.
    pub async fn unwrap_entry(&self, entry: &DataKeyEntry) -> Result<Option<KeyBytes>, Failure> {
        Ok(self.open_entry(entry).await?.map(|(k, _)| k))
    }

    /// The wrap of `entry` that this key opens.
    pub async fn find_wrap(&self, entry: &DataKeyEntry) -> Result<Option<Wrapped>, Failure> {
        Ok(self.open_entry(entry).await?.map(|(_, w)| w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn key_files_wrap_and_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let fp = new_key_file(&path).unwrap();
        assert!(new_key_file(&path).is_err(), "never replaces a key file");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let kek = Kek::open(&KekSetting::File(path.clone())).await.unwrap();
        assert!(kek.describe().contains(&fp));
        let (k, w) = kek.generate("0123456789abcdef").await.unwrap();
        let entry = DataKeyEntry::new("0123456789abcdef", vec![w.clone()]);
        assert_eq!(kek.unwrap_entry(&entry).await.unwrap().unwrap()[..], k[..]);
        // The wrap opens only as the data key it was made for.
        let moved = DataKeyEntry::new("fedcba9876543210", vec![w]);
        assert_eq!(kek.unwrap_entry(&moved).await.unwrap_err().kind, FailureKind::Corrupt);
        // Another key file does not open it.
        let other = dir.path().join("o");
        new_key_file(&other).unwrap();
        let other = Kek::open(&KekSetting::File(other)).await.unwrap();
        assert!(other.unwrap_entry(&entry).await.unwrap().is_none());
        assert!(!other.same_key(&kek));
    }

    #[tokio::test]
    async fn bad_key_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        for (text, mode, says) in [
            ("00".repeat(31), 0o600, "64 hexadecimal"),
            ("zz".repeat(32), 0o600, "64 hexadecimal"),
            ("ab".repeat(32), 0o644, "chmod 600"),
        ] {
            std::fs::write(&path, &text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Kek::open(&KekSetting::File(path.clone())).await.unwrap_err();
            assert_eq!(e.kind, FailureKind::Key);
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = Kek::open(&KekSetting::File(dir.path().join("missing"))).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Key);
    }
}
