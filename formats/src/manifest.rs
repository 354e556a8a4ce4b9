//! PostgreSQL's `backup_manifest` (13+): parsing, its own SHA-256 checksum, and comparing the
//! files it lists with what a backup's tar archives hold.
//!
//! The manifest is one JSON object (`PostgreSQL-Backup-Manifest-Version`, `Files`,
//! `WAL-Ranges`, `Manifest-Checksum`; PostgreSQL 17 adds `System-Identifier`). Two traps:
//! the `Manifest-Checksum` is the SHA-256 of every byte before the line that holds it (as
//! `pg_verifybackup` computes it: up to and including the second-to-last newline), and a
//! `CRC32C` file checksum is written as the hex of the CRC's **little-endian** bytes
//! (pg_control's CRC `0x87208743` appears as `"43872087"`).

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::lsn::Lsn;
use crate::tar::FileDigest;

/// Files `pg_verifybackup` ignores when they are present but not listed: they may be added
/// to a restored directory (recovery settings, signal files) or are the manifest itself.
pub const IGNORED_EXTRA_FILES: [&str; 4] =
    ["backup_manifest", "postgresql.auto.conf", "recovery.signal", "standby.signal"];

/// One file of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path relative to the data directory (tablespace files: `pg_tblspc/<oid>/...`), raw
    /// bytes (decoded from `Encoded-Path` when the server hex-encoded it).
    pub path: Vec<u8>,
    /// Size in bytes.
    pub size: u64,
    /// `Last-Modified` as the server wrote it.
    pub last_modified: String,
    /// `Checksum-Algorithm` (`CRC32C`, `SHA256`, ...), if any.
    pub checksum_algorithm: Option<String>,
    /// `Checksum` (hex), if any.
    pub checksum: Option<String>,
}

impl ManifestFile {
    /// The path as text (lossy for non-UTF-8 names).
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// A `WAL-Ranges` entry: the WAL that makes the backup consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct WalRange {
    /// Timeline.
    #[serde(rename = "Timeline")]
    pub timeline: u32,
    /// First position needed.
    #[serde(rename = "Start-LSN")]
    pub start_lsn: Lsn,
    /// Position where the backup becomes consistent.
    #[serde(rename = "End-LSN")]
    pub end_lsn: Lsn,
}

/// A parsed manifest whose own checksum was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `PostgreSQL-Backup-Manifest-Version` (1 up to PostgreSQL 16, 2 from 17).
    pub version: u32,
    /// `System-Identifier` (version 2 only).
    pub system_identifier: Option<u64>,
    /// The files, in the server's order.
    pub files: Vec<ManifestFile>,
    /// The WAL ranges, newest timeline first.
    pub wal_ranges: Vec<WalRange>,
    /// `Manifest-Checksum`: SHA-256 (hex) of the manifest up to its last line.
    pub checksum: String,
}

/// The manifest is unusable, or a backup does not match it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not a manifest PostgreSQL wrote.
    #[error("backup manifest is unreadable: {0}")]
    Unreadable(String),
    /// Its own checksum does not match its content.
    #[error("backup manifest checksum mismatch: it says {expected}, its content hashes to {actual}")]
    Checksum {
        /// `Manifest-Checksum`.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A file differs from what the manifest says.
    #[error("{0}")]
    Mismatch(String),
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Last-Modified", default)]
    last_modified: String,
    #[serde(rename = "Checksum-Algorithm")]
    checksum_algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    #[serde(rename = "System-Identifier")]
    system_identifier: Option<u64>,
    #[serde(rename = "Files")]
    files: Vec<RawFile>,
    #[serde(rename = "WAL-Ranges", default)]
    wal_ranges: Vec<WalRange>,
    #[serde(rename = "Manifest-Checksum")]
    checksum: String,
}

/// The hex form of a CRC-32C as the manifest writes it: the value's little-endian bytes.
pub fn crc32c_hex(crc: u32) -> String {
    hex::encode(crc.to_le_bytes())
}

/// SHA-256 (hex) of the part of `bytes` that `Manifest-Checksum` covers: everything up to and
/// including the second-to-last newline.
pub fn content_checksum(bytes: &[u8]) -> Result<String, ManifestError> {
    let newlines: Vec<usize> = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i).collect();
    let Some(&penultimate) = newlines.len().checked_sub(2).and_then(|i| newlines.get(i)) else {
        return Err(ManifestError::Unreadable("fewer than two lines".into()));
    };
    let last_line = &bytes[penultimate + 1..];
    if !last_line.starts_with(b"\"Manifest-Checksum\"") {
        return Err(ManifestError::Unreadable("the last line is not the Manifest-Checksum".into()));
    }
    Ok(hex::encode(Sha256::digest(&bytes[..=penultimate])))
}

impl Manifest {
    /// Parses a manifest and verifies its `Manifest-Checksum`.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Unreadable(e.to_string()))?;
        if !(1..=2).contains(&raw.version) {
            return Err(ManifestError::Unreadable(format!("manifest version {} is not supported", raw.version)));
        }
        let actual = content_checksum(bytes)?;
        if !actual.eq_ignore_ascii_case(&raw.checksum) {
            return Err(ManifestError::Checksum { expected: raw.checksum, actual });
        }
        let mut files = Vec::with_capacity(raw.files.len());
        for f in raw.files {
            let path = match (f.path, f.encoded_path) {
                (Some(p), None) => p.into_bytes(),
                (None, Some(e)) => {
                    hex::decode(&e).map_err(|_| ManifestError::Unreadable(format!("bad Encoded-Path {e:?}")))?
                }
                _ => return Err(ManifestError::Unreadable("a file has neither or both Path and Encoded-Path".into())),
            };
            files.push(ManifestFile {
                path,
                size: f.size,
                last_modified: f.last_modified,
                checksum_algorithm: f.checksum_algorithm,
                checksum: f.checksum,
            });
        }
        Ok(Manifest {
            version: raw.version,
            system_identifier: raw.system_identifier,
            files,
            wal_ranges: raw.wal_ranges,
            checksum: raw.checksum.to_ascii_lowercase(),
        })
    }

    /// Compares the manifest with the regular files found in a backup, keyed by manifest
    /// path (tablespace files prefixed `pg_tblspc/<oid>/`): every listed file must be there
    /// with its size and, for `CRC32C`, its checksum; no other file may be there except
    /// [`IGNORED_EXTRA_FILES`] and `pg_wal/` content. The first difference is the error.
    pub fn check_files(&self, found: &BTreeMap<Vec<u8>, FileDigest>) -> Result<(), ManifestError> {
        let mut listed = std::collections::HashSet::with_capacity(self.files.len());
        for f in &self.files {
            listed.insert(f.path.as_slice());
            let name = f.path_lossy();
            let Some(d) = found.get(&f.path) else {
                return Err(ManifestError::Mismatch(format!("{name} is in the manifest but not in the backup")));
            };
            if d.size != f.size {
                return Err(ManifestError::Mismatch(format!(
                    "{name} has {} bytes in the backup, the manifest says {}",
                    d.size, f.size
                )));
            }
            match (f.checksum_algorithm.as_deref(), f.checksum.as_deref()) {
                (Some(alg), Some(sum)) if alg.eq_ignore_ascii_case("CRC32C") => {
                    let got = crc32c_hex(d.crc32c);
                    if !got.eq_ignore_ascii_case(sum) {
                        return Err(ManifestError::Mismatch(format!(
                            "{name}: CRC-32C {got} does not match the manifest's {sum}"
                        )));
                    }
                }
                (None | Some("NONE"), _) => {}
                (Some(alg), _) => {
                    tracing::debug!(file = %name, alg, "checksum algorithm not recomputed; size checked");
                }
            }
        }
        for path in found.keys() {
            if listed.contains(path.as_slice()) {
                continue;
            }
            let ignored =
                IGNORED_EXTRA_FILES.iter().any(|i| path.as_slice() == i.as_bytes()) || path.starts_with(b"pg_wal/");
            if !ignored {
                return Err(ManifestError::Mismatch(format!(
                    "{} is in the backup but not in the manifest",
                    String::from_utf8_lossy(path)
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest as PostgreSQL 15 writes it, with a correct checksum.
    pub(crate) fn sample(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut m = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        for (i, (path, content)) in files.iter().enumerate() {
            if i > 0 {
                m.push_str(",\n");
            }
            m.push_str(&format!(
                "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-11-22 03:56:08 GMT\", \
                 \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                content.len(),
                crc32c_hex(crc32c::crc32c(content))
            ));
        }
        m.push_str(
            "\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }\n],\n",
        );
        let sum = hex::encode(Sha256::digest(m.as_bytes()));
        m.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
        m.into_bytes()
    }

    fn found(files: &[(&str, &[u8])]) -> BTreeMap<Vec<u8>, FileDigest> {
        files
            .iter()
            .map(|(p, c)| (p.as_bytes().to_vec(), FileDigest { size: c.len() as u64, crc32c: crc32c::crc32c(c) }))
            .collect()
    }

    #[test]
    fn crc_is_little_endian_hex() {
        assert_eq!(crc32c_hex(0x8720_8743), "43872087");
    }

    #[test]
    fn parses_and_checks_its_own_checksum() {
        let files: &[(&str, &[u8])] = &[("PG_VERSION", b"15\n"), ("pg_tblspc/16389/PG_15_1/5/16390", b"x")];
        let bytes = sample(files);
        let m = Manifest::parse(&bytes).unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.wal_ranges[0].start_lsn, "0/3000028".parse().unwrap());
        m.check_files(&found(files)).unwrap();

        let text = String::from_utf8(bytes.clone()).unwrap().replace("\"Size\": 3", "\"Size\": 4");
        assert!(matches!(Manifest::parse(text.as_bytes()), Err(ManifestError::Checksum { .. })));
        assert!(matches!(Manifest::parse(b"{}"), Err(ManifestError::Unreadable(_))));
    }

    #[test]
    fn differences_are_named() {
        let files: &[(&str, &[u8])] = &[("PG_VERSION", b"15\n"), ("global/pg_control", b"ctl")];
        let m = Manifest::parse(&sample(files)).unwrap();
        let e = m.check_files(&found(&[("PG_VERSION", b"15\n")])).unwrap_err();
        assert!(e.to_string().contains("global/pg_control is in the manifest but not in the backup"), "{e}");
        let e = m.check_files(&found(&[("PG_VERSION", b"16\n"), ("global/pg_control", b"ctl")])).unwrap_err();
        assert!(e.to_string().contains("PG_VERSION: CRC-32C"), "{e}");
        let e = m.check_files(&found(&[("PG_VERSION", b"15\n\n"), ("global/pg_control", b"ctl")])).unwrap_err();
        assert!(e.to_string().contains("4 bytes in the backup"), "{e}");
        let mut extra = found(files);
        extra.extend(found(&[("pg_wal/000000010000000000000001", b"w"), ("postgresql.auto.conf", b"")]));
        m.check_files(&extra).unwrap();
        extra.extend(found(&[("stray", b"")]));
        let e = m.check_files(&extra).unwrap_err();
        assert!(e.to_string().contains("stray is in the backup but not in the manifest"), "{e}");
    }

    #[test]
    fn encoded_paths_are_decoded() {
        let text = String::from_utf8(sample(&[("PG_VERSION", b"15\n")])).unwrap();
        let body =
            text.replace("\"Path\": \"PG_VERSION\"", &format!("\"Encoded-Path\": \"{}\"", hex::encode("PG_VERSION")));
        // Recompute the checksum over the edited body.
        let cut = body.rfind("\"Manifest-Checksum\"").unwrap();
        let sum = hex::encode(Sha256::digest(&body.as_bytes()[..cut]));
        let fixed = format!("{}\"Manifest-Checksum\": \"{sum}\"}}\n", &body[..cut]);
        let m = Manifest::parse(fixed.as_bytes()).unwrap();
        assert_eq!(m.files[0].path, b"PG_VERSION");
    }
}
