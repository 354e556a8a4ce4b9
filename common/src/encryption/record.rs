//! The encryption record `_pitr/encryption.json`: that a repository is encrypted, its data
//! keys and what wraps each of them. Stored in the clear (it holds only wrapped keys).

use base64::Engine;
use serde::{Deserialize, Serialize};
use storage::encrypted::valid_key_id;

use crate::exit::{Failure, FailureKind};

/// Where the record lives, relative to the repository's root (outside every cluster: cluster
/// names cannot start with `_pitr`).
pub const RECORD_KEY: &str = "_pitr/encryption.json";

/// Format version written and understood.
const VERSION: u32 = 1;

/// The record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionRecord {
    /// Format version.
    pub pitr_encryption: u32,
    /// The cipher of objects and wraps.
    pub cipher: String,
    /// When the repository became encrypted (RFC 3339).
    pub created: String,
    /// Id of the data key new objects are written with.
    pub current: String,
    /// Every data key, oldest first.
    pub keys: Vec<DataKeyEntry>,
}

/// One repository data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyEntry {
    /// Its id (16 hex characters), which objects name in their headers.
    pub id: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// The key, sealed by each key-encryption key that opens it.
    pub wrapped: Vec<Wrapped>,
}

/// A data key sealed by one key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrapped {
    /// Which key-encryption key: `file:<fingerprint>` or `kms:<key ARN>`.
    pub kek: String,
    /// The sealed key, base64.
    pub blob: String,
}

impl Wrapped {
    /// The sealed bytes.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD.decode(&self.blob).ok()
    }

    /// A wrap by `kek` of sealed bytes `blob`.
    pub fn new(kek: String, blob: &[u8]) -> Self {
        Wrapped { kek, blob: base64::engine::general_purpose::STANDARD.encode(blob) }
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl DataKeyEntry {
    /// A data key made now.
    pub fn new(id: &str, wrapped: Vec<Wrapped>) -> Self {
        DataKeyEntry { id: id.to_string(), created: now(), wrapped }
    }
}

impl EncryptionRecord {
    /// A new record with one (current) data key.
    pub fn new(first: DataKeyEntry) -> Self {
        EncryptionRecord {
            pitr_encryption: VERSION,
            cipher: "AES-256-GCM".into(),
            created: now(),
            current: first.id.clone(),
            keys: vec![first],
        }
    }

    /// Parses and checks a stored record.
    pub fn parse(bytes: &[u8]) -> Result<Self, Failure> {
        let bad =
            |m: String| Failure::msg(FailureKind::Corrupt, format!("the repository's {RECORD_KEY} is damaged: {m}"));
        let r: EncryptionRecord = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if r.pitr_encryption != VERSION || r.cipher != "AES-256-GCM" {
            return Err(Failure::msg(
                FailureKind::Key,
                format!(
                    "the repository's {RECORD_KEY} is of format {} ({}), which this pitr does not know: upgrade pitr",
                    r.pitr_encryption, r.cipher
                ),
            ));
        }
        if let Some(k) = r.keys.iter().find(|k| !valid_key_id(&k.id) || k.wrapped.is_empty()) {
            return Err(bad(format!("data key {:?} has a bad id or no wrap", k.id)));
        }
        if !r.keys.iter().any(|k| k.id == r.current) {
            return Err(bad(format!("the current data key {} is not listed", r.current)));
        }
        Ok(r)
    }

    /// The JSON stored.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Every key-encryption key that wraps some data key, once each.
    pub fn kek_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.keys.iter().flat_map(|k| k.wrapped.iter().map(|w| w.kek.clone())).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let r =
            EncryptionRecord::new(DataKeyEntry::new("0123456789abcdef", vec![Wrapped::new("file:ab".into(), b"x")]));
        assert_eq!(EncryptionRecord::parse(&r.to_json()).unwrap(), r);
        assert_eq!(r.kek_labels(), vec!["file:ab".to_string()]);
        let mut bad = r.clone();
        bad.current = "ffffffffffffffff".into();
        assert_eq!(EncryptionRecord::parse(&bad.to_json()).unwrap_err().kind, FailureKind::Corrupt);
        let mut newer = r.clone();
        newer.pitr_encryption = 2;
        assert_eq!(EncryptionRecord::parse(&newer.to_json()).unwrap_err().kind, FailureKind::Key);
        assert_eq!(EncryptionRecord::parse(b"{").unwrap_err().kind, FailureKind::Corrupt);
    }
}
