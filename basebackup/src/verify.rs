//! `verify`: checks stored backups end to end without a server.
//!
//! For each backup: the stored manifest (codec digest, its own SHA-256 `Manifest-Checksum`,
//! the checksum recorded in the catalog entry); every chunk of every archive (present, its
//! codec digest and size, its header naming this backup, archive and position); the tar
//! streams re-parsed across chunk boundaries; every file's size and CRC-32C against the
//! manifest, with no file missing and none extra; and the WAL range in the repository. Chunks
//! download a few ahead of the one being checked; memory holds only those compressed chunks.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};

use archive::backup_wal::BackupWal;
use bytes::Bytes;
use common::catalog::{self, ArchiveEntry, BackupEntry};
use common::codec::{self, CodecError};
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::manifest::Manifest;
use common::repository::Repository;
use common::storage::ObjectKey;
use common::tar::{FileDigest, FileDigests, TarError, TarReader};

use crate::progress::human;
use crate::wal;

/// Chunks downloaded ahead of the one being checked.
const AHEAD: usize = 2;

fn corrupt(id: &str, msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Corrupt, format!("backup {id}: {msg}"))
}

/// What one verified backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Files checked against the manifest.
    pub files: usize,
    /// Chunks read.
    pub chunks: u64,
    /// Raw bytes re-parsed.
    pub raw_bytes: u64,
}

/// One backup's result as `verify --json` prints it (one object per line).
fn json_line(e: &BackupEntry, result: Result<&Verified, &Failure>) -> String {
    let (files, chunks, bytes, problems) = match result {
        Ok(v) => (Some(v.files as u64), Some(v.chunks), Some(v.raw_bytes), vec![]),
        Err(f) => (None, None, None, vec![f.to_string()]),
    };
    serde_json::json!({
        "id": e.id,
        "ok": result.is_ok(),
        "files": files,
        "chunks": chunks,
        "bytes": bytes,
        "wal_start_segment": e.wal_start_segment,
        "wal_stop_segment": e.wal_stop_segment,
        "problems": problems,
    })
    .to_string()
}

/// Verifies `id`, every backup (`all`), or the newest one; prints one line per backup (a
/// damaged one among several: `DAMAGED` and why; `json`: one JSON object per backup, also a
/// single damaged one, whose problem is then also the error).
pub async fn verify(config: &Config, id: Option<String>, all: bool, json: bool) -> Result<(), Failure> {
    let repo = config.open_repository(false).await?;
    let entries = match id {
        Some(id) => {
            if !catalog::valid_backup_id(&id) {
                return Err(Failure::msg(FailureKind::Usage, format!("{id:?} is not a backup id (YYYYMMDDTHHMMSSZ)")));
            }
            match catalog::read_entry(&repo, &id).await? {
                Some(e) => vec![e],
                None => {
                    return Err(Failure::msg(
                        FailureKind::NotFound,
                        format!("no backup {id} in cluster {:?} (see basebackup list)", repo.cluster()),
                    ))
                }
            }
        }
        None => {
            let mut all_entries = catalog::list_entries(&repo).await?;
            if all {
                all_entries
            } else {
                match all_entries.pop() {
                    Some(e) => vec![e],
                    None => {
                        return Err(Failure::msg(
                            FailureKind::NotFound,
                            format!("cluster {:?} has no backups to verify", repo.cluster()),
                        ))
                    }
                }
            }
        }
    };
    // Every backup is checked and reported, also after a damaged one: one bad backup must not
    // hide another. A failure that is not the backup's (the repository unreachable, a local
    // error) stops the run.
    let mut damaged = Vec::new();
    for e in &entries {
        let result = verify_backup(&repo, e).await;
        if json {
            match &result {
                Ok(v) => println!("{}", json_line(e, Ok(v))),
                Err(f) if f.kind == FailureKind::Corrupt => println!("{}", json_line(e, Err(f))),
                Err(_) => {}
            }
        }
        match result {
            Ok(_) if json => {}
            Ok(v) => println!(
                "{}: ok ({} files, {} chunks, {} raw; WAL {} to {} present)",
                e.id,
                v.files,
                v.chunks,
                human(v.raw_bytes),
                e.wal_start_segment,
                e.wal_stop_segment
            ),
            // One backup checked: its problem is the error line itself.
            Err(f) if entries.len() == 1 => return Err(f),
            Err(f) if f.kind == FailureKind::Corrupt => {
                if !json {
                    println!("{}: DAMAGED: {f}", e.id);
                }
                damaged.push(e.id.clone());
            }
            Err(f) => return Err(f),
        }
    }
    if all && entries.is_empty() && !json {
        println!("no backups in cluster {:?}", repo.cluster());
    }
    match damaged.len() {
        0 => Ok(()),
        n => Err(Failure::msg(
            FailureKind::Corrupt,
            format!("{n} of {} backups are damaged: {}", entries.len(), damaged.join(", ")),
        )),
    }
}

fn codec_failure(id: &str, what: &str, key: &ObjectKey, e: CodecError) -> Failure {
    match e {
        CodecError::Io(e) => Failure::msg(FailureKind::LocalIo, format!("backup {id}: reading {what}: {e}")),
        e => corrupt(id, format!("{what} ({key}) is damaged: {e}")),
    }
}

/// Checks one backup; the error names the backup and the damaged archive, chunk or file.
pub async fn verify_backup(repo: &Repository, e: &BackupEntry) -> Result<Verified, Failure> {
    let id = e.id.as_str();
    let manifest_key = ObjectKey::new(catalog::manifest_key(repo.cluster(), id))?;
    let obj = catalog::read_backup_object(repo, &manifest_key, id, "the manifest").await?;
    let mut bytes = Vec::new();
    codec::decompress(&obj[..], &mut bytes).map_err(|err| codec_failure(id, "the manifest", &manifest_key, err))?;
    let manifest = Manifest::parse(&bytes).map_err(|err| corrupt(id, err))?;
    if !manifest.checksum.eq_ignore_ascii_case(&e.manifest_checksum) {
        return Err(corrupt(
            id,
            format!(
                "the stored manifest has checksum {}, the catalog entry records {}",
                manifest.checksum, e.manifest_checksum
            ),
        ));
    }
    drop(bytes);

    let mut files = BTreeMap::new();
    let mut chunks = 0;
    let mut raw_bytes = 0;
    for a in &e.archives {
        let (found, raw) = verify_archive(repo, id, a).await?;
        chunks += u64::from(a.chunks);
        raw_bytes += raw;
        let prefix = a.tablespace_oid.map(|o| format!("pg_tblspc/{o}/")).unwrap_or_default();
        for (path, d) in found {
            let mut p = prefix.clone().into_bytes();
            p.extend_from_slice(&path);
            files.insert(p, d);
        }
    }
    manifest.check_files(&files).map_err(|err| corrupt(id, err))?;

    let range = BackupWal::of(e).map_err(|err| Failure::msg(FailureKind::Corrupt, err))?;
    if let Some(m) =
        wal::first_missing(repo, range.first.timeline, range.first_segno, range.last_segno, range.size).await?
    {
        return Err(corrupt(
            id,
            format!("WAL segment {m}, needed to make it consistent, is missing from the repository"),
        ));
    }
    Ok(Verified { files: manifest.files.len(), chunks, raw_bytes })
}

/// Feeds decompressed bytes to the tar reader, keeping the first tar error for later (so
/// that a damaged chunk is reported as such, not as the tar damage it causes).
struct TarSink {
    reader: TarReader,
    digests: FileDigests,
    error: Option<TarError>,
}

impl Write for TarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none() {
            if let Err(e) = self.reader.feed(buf, &mut self.digests) {
                self.error = Some(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn verify_archive(
    repo: &Repository,
    id: &str,
    a: &ArchiveEntry,
) -> Result<(BTreeMap<Vec<u8>, FileDigest>, u64), Failure> {
    let keys: Vec<ObjectKey> = (0..a.chunks)
        .map(|n| ObjectKey::new(catalog::chunk_key(repo.cluster(), id, &a.name, n)))
        .collect::<Result<_, _>>()?;
    let mut pending: VecDeque<tokio::task::JoinHandle<Result<Bytes, Failure>>> = VecDeque::new();
    let mut next_download = 0;
    let mut sink = Some(TarSink { reader: TarReader::new(), digests: FileDigests::new(), error: None });
    let (mut raw, mut stored) = (0u64, 0u64);
    for (n, key) in keys.iter().enumerate() {
        while next_download < keys.len() && next_download <= n + AHEAD {
            let (r, k, i) = (repo.clone(), keys[next_download].clone(), id.to_string());
            let what = format!("archive {} chunk {next_download:06}", a.name);
            pending.push_back(tokio::spawn(async move { catalog::read_backup_object(&r, &k, &i, &what).await }));
            next_download += 1;
        }
        let what = format!("archive {} chunk {n:06}", a.name);
        let obj = pending
            .pop_front()
            .ok_or_else(|| Failure::msg(FailureKind::LocalIo, "download queue empty"))?
            .await
            .map_err(|err| Failure::msg(FailureKind::LocalIo, format!("download task failed: {err}")))??;
        stored += obj.len() as u64;
        let mut s = sink.take().ok_or_else(|| Failure::msg(FailureKind::LocalIo, "tar state lost"))?;
        let (s, result) = tokio::task::spawn_blocking(move || {
            let r = codec::decompress(&obj[..], &mut s);
            (s, r)
        })
        .await
        .map_err(|err| Failure::msg(FailureKind::LocalIo, format!("decompression task failed: {err}")))?;
        let header = result.map_err(|err| codec_failure(id, &what, key, err))?;
        let expected_name = format!("{id}/{}/{n:06}", a.name);
        if header.name != expected_name {
            return Err(corrupt(id, format!("{what} ({key}) holds {:?}, not {expected_name:?}", header.name)));
        }
        if let Some(err) = &s.error {
            return Err(corrupt(id, format!("archive {}: the tar stream is broken in chunk {n:06}: {err}", a.name)));
        }
        raw += header.raw_size;
        sink = Some(s);
    }
    let s = sink.ok_or_else(|| Failure::msg(FailureKind::LocalIo, "tar state lost"))?;
    if raw != a.raw_bytes || stored != a.stored_bytes {
        return Err(corrupt(
            id,
            format!(
                "archive {}: its chunks hold {raw} bytes ({stored} stored), the catalog entry records {} ({})",
                a.name, a.raw_bytes, a.stored_bytes
            ),
        ));
    }
    s.reader.finish().map_err(|err| corrupt(id, format!("archive {}: {err}", a.name)))?;
    Ok((s.digests.files, raw))
}
