//! `create`: a physical base backup over the replication protocol, streamed into the
//! repository.
//!
//! Order of events, each step refusing before the next one stores anything it should not:
//! 1. connect (physical replication), IDENTIFY_SYSTEM, `SHOW` the version, segment and block
//!    size; check them against the repository's `cluster.json` (registering the cluster when
//!    there is none yet) — another system is refused with exit 4 before anything is stored;
//! 2. the backup id (the UTC second) is reserved by creating `backups/<id>/reservation.json`
//!    create-if-absent: a second `create` in the same second takes the next one, so no two
//!    runs ever store into one prefix;
//! 3. BASE_BACKUP in the server's dialect (15+ or 13/14) with a CRC-32C manifest and
//!    `WAIT false`; every archive streams through [`chunks`](crate::chunks) into chunk objects
//!    while each file's size and CRC-32C are computed;
//! 4. the manifest arrives: its own checksum and every file are checked, then it is stored;
//! 5. every chunk and the manifest are read back by exact key (header: present, and holding
//!    what its key says);
//! 6. every WAL segment from the start to the stop position must be in the repository
//!    (archive_command is archiving them), waiting up to `--wal-timeout`;
//! 7. the catalog entry is written, create-if-absent, last.
//!
//! On any failure the objects this backup stored are removed again (best effort, the
//! reservation last) and no catalog entry exists, so the backup does not exist.

use std::sync::Arc;
use std::time::Duration;

use archive::backup_wal::segment_range;
use archive::identity::{self, IdentityError};
use archive::server::ProbeError;
use bytes::Bytes;
use common::catalog::{self, ArchiveEntry, BackupEntry, CATALOG_VERSION};
use common::codec::{self, CompressOptions};
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::lease::{self, Owner};
use common::lsn::Lsn;
use common::manifest::Manifest;
use common::pgwire::{BaseBackupMessage, ConnParams, Connection, Replication, Response, ResultSet};
use common::repository::Repository;
use common::retry::retry;
use common::storage::{Body, ObjectKey, PutMode, StorageError};
use common::wal::{TimelineId, WalFileName};
use time::OffsetDateTime;

use crate::chunks::{put_chunk, ChunkOptions, Feed, Pipeline, Stats};
use crate::progress::{human, Progress};
use crate::wal;

/// How to take the backup.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// BASE_BACKUP label; `None` for `pitr <id>`.
    pub label: Option<String>,
    /// Immediate (`fast`) or spread checkpoint.
    pub fast: bool,
    /// How long to wait for the WAL the backup needs.
    pub wal_timeout: Duration,
    /// Report progress on stderr.
    pub progress: bool,
    /// Chunking and upload tuning.
    pub chunks: Option<ChunkOptions>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions { label: None, fast: true, wal_timeout: Duration::from_secs(60), progress: true, chunks: None }
    }
}

/// Largest manifest accepted (it is held in memory; PostgreSQL writes about 200 bytes per file).
const MAX_MANIFEST: usize = 1 << 30;

/// Quotes a string for a replication command (standard SQL: single quotes doubled).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The BASE_BACKUP command in the dialect of `server_version_num`: the parenthesized option
/// list of PostgreSQL 15+, or the legacy keywords of 13/14 (each is a syntax error on the
/// other).
pub fn base_backup_command(server_version_num: u32, label: &str, fast: bool) -> String {
    if server_version_num >= 150000 {
        format!(
            "BASE_BACKUP ( LABEL {}, PROGRESS, CHECKPOINT '{}', WAIT false, MANIFEST 'yes', \
             MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP )",
            quote(label),
            if fast { "fast" } else { "spread" }
        )
    } else {
        format!(
            "BASE_BACKUP LABEL {} PROGRESS{} NOWAIT MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C' TABLESPACE_MAP",
            quote(label),
            if fast { " FAST" } else { "" }
        )
    }
}

/// The server this backup is taken from.
#[derive(Debug, Clone)]
struct Server {
    info: archive::server::Server,
    describe: String,
}

impl Server {
    fn version(&self) -> u32 {
        self.info.version_num
    }
}

/// One row of BASE_BACKUP's tablespace result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    /// Oid; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Location on the server.
    pub location: Option<String>,
    /// Estimated size in bytes (the server reports kB with PROGRESS).
    pub size: Option<u64>,
}

fn protocol(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Server, format!("unexpected answer to BASE_BACKUP: {msg}"))
}

fn server_error(what: &str) -> impl FnOnce(common::pgwire::PgWireError) -> Failure + '_ {
    move |e| {
        let kind =
            if matches!(e, common::pgwire::PgWireError::Config(_)) { FailureKind::Config } else { FailureKind::Server };
        Failure::msg(kind, format!("{what}: {e}"))
    }
}

/// Parses BASE_BACKUP's tablespace result set.
pub fn parse_tablespaces(rs: &ResultSet) -> Result<Vec<Tablespace>, Failure> {
    let mut out = Vec::with_capacity(rs.rows.len());
    for row in &rs.rows {
        let col = |i: usize| row.get(i).cloned().flatten();
        let oid = match col(0) {
            Some(o) => Some(o.parse::<u32>().map_err(|_| protocol(format!("tablespace oid {o:?}")))?),
            None => None,
        };
        let size = col(2).and_then(|s| s.parse::<u64>().ok()).map(|kb| kb * 1024);
        out.push(Tablespace { oid, location: col(1), size });
    }
    Ok(out)
}

/// Reads an LSN and timeline result set (BASE_BACKUP's first and last).
fn position(rs: &ResultSet, what: &str) -> Result<(Lsn, TimelineId), Failure> {
    let row = rs.rows.first().ok_or_else(|| protocol(format!("{what} has no row")))?;
    let lsn = row.first().cloned().flatten().ok_or_else(|| protocol(format!("{what}: no LSN")))?;
    let tli = row.get(1).cloned().flatten().ok_or_else(|| protocol(format!("{what}: no timeline")))?;
    let lsn: Lsn = lsn.parse().map_err(|_| protocol(format!("{what}: LSN {lsn:?}")))?;
    let tli: u32 = tli.parse().map_err(|_| protocol(format!("{what}: timeline {tli:?}")))?;
    if tli == 0 {
        return Err(protocol(format!("{what}: timeline 0")));
    }
    Ok((lsn, TimelineId(tli)))
}

async fn next_result_set(conn: &mut Connection, what: &str) -> Result<ResultSet, Failure> {
    match conn.next_response().await.map_err(server_error("BASE_BACKUP failed"))? {
        Response::ResultSet(rs) if !rs.columns.is_empty() => Ok(rs),
        other => Err(protocol(format!("expected the {what}, got {other:?}"))),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

async fn probe(conn: &mut Connection, params: &ConnParams) -> Result<Server, Failure> {
    let describe = params.describe();
    let ctx = format!("server at {describe}");
    let info = archive::server::probe(conn).await.map_err(|e| match e {
        ProbeError::Wire(e) => server_error(&ctx)(e),
        ProbeError::Unsupported(m) => Failure::msg(FailureKind::Invalid, format!("{ctx}: {m}; nothing was stored")),
        ProbeError::BadAnswer(m) => protocol(m),
    })?;
    Ok(Server { info, describe })
}

/// Checks the server against the repository's cluster record, writing one if there is none.
async fn check_cluster(repo: &Repository, server: &Server) -> Result<(), Failure> {
    match identity::check_or_register(repo, &server.info.identity).await {
        Ok(_) => Ok(()),
        Err(IdentityError::Mismatch(m)) => Err(Failure::msg(
            FailureKind::Conflict,
            format!(
                "the server at {} {m}: each cluster needs its own --cluster name; nothing was stored",
                server.describe
            ),
        )),
        Err(IdentityError::Repository(e)) => Err(e.into()),
    }
}

/// Reserves a backup id: the current UTC second, or the next ones if taken. The id is taken
/// by creating its reservation object create-if-absent, so two `basebackup create` started
/// in the same second (by cron and by hand, or by two hosts) never share an id: before this,
/// both stored into one prefix, counted each other's identical chunks as their own, and the
/// loser's cleanup deleted chunks of the winner's finished backup. Everything under
/// `backups/<id>/` belongs to the run holding the reservation (or to a dead run that held it
/// earlier), so that run may delete it on failure.
async fn new_id(repo: &Repository) -> Result<(String, OffsetDateTime, ObjectKey), Failure> {
    let me = Owner::me();
    for _ in 0..10 {
        let now = OffsetDateTime::now_utc();
        let id = catalog::backup_id(now);
        let entry = ObjectKey::new(catalog::entry_key(repo.cluster(), &id))?;
        let entry_exists = match retry(repo.retry_policy(), "check backup id", || repo.storage().head(&entry)).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        if !entry_exists {
            let key = ObjectKey::new(catalog::reservation_key(repo.cluster(), &id))?;
            if lease::create_exclusive(repo, &key, &me).await? {
                return Ok((id, now, key));
            }
            tracing::info!(backup = %id, "backup id taken by another run; trying the next second");
        }
        let wait = 1_000_000_000 - now.nanosecond() as u64 + 1_000_000;
        tokio::time::sleep(Duration::from_nanos(wait)).await;
    }
    Err(Failure::msg(
        FailureKind::Conflict,
        "could not reserve a backup id in 10 s: other backups of this cluster are starting at the same time; \
         nothing was stored",
    ))
}

/// What the COPY phase produced.
struct Streamed {
    manifest: Vec<u8>,
    end: ResultSet,
}

fn archive_feed(name: &str, tablespace_path: &str) -> Result<Feed, Failure> {
    let stem = name.strip_suffix(".tar").ok_or_else(|| protocol(format!("archive {name:?} is not a plain tar")))?;
    let oid = if stem == "base" {
        None
    } else {
        Some(stem.parse::<u32>().map_err(|_| protocol(format!("unexpected archive name {name:?}")))?)
    };
    Ok(Feed::Archive {
        name: name.to_string(),
        tablespace_oid: oid,
        tablespace_path: (!tablespace_path.is_empty()).then(|| tablespace_path.to_string()),
    })
}

fn add_manifest(manifest: &mut Vec<u8>, data: &[u8]) -> Result<(), Failure> {
    if manifest.len() + data.len() > MAX_MANIFEST {
        return Err(protocol("the backup manifest is larger than 1 GiB"));
    }
    manifest.extend_from_slice(data);
    Ok(())
}

/// PostgreSQL 15+: one COPY OUT carrying typed messages for every archive and the manifest.
async fn stream_v15(conn: &mut Connection, pipeline: &mut Pipeline) -> Result<Streamed, Failure> {
    match conn.next_response().await.map_err(server_error("BASE_BACKUP failed"))? {
        Response::CopyOut(_) => {}
        other => return Err(protocol(format!("expected COPY OUT, got {other:?}"))),
    }
    let mut manifest: Option<Vec<u8>> = None;
    let mut archives = 0;
    while let Some(payload) = conn.next_copy_data().await.map_err(server_error("BASE_BACKUP failed"))? {
        match BaseBackupMessage::parse(payload).map_err(server_error("BASE_BACKUP"))? {
            BaseBackupMessage::NewArchive { name, tablespace_path } => {
                if manifest.is_some() {
                    return Err(protocol("an archive after the manifest"));
                }
                archives += 1;
                pipeline.send(archive_feed(&name, &tablespace_path)?).await?;
            }
            BaseBackupMessage::ManifestStart => manifest = Some(Vec::new()),
            BaseBackupMessage::Data(d) => match manifest.as_mut() {
                Some(m) => add_manifest(m, &d)?,
                None if archives == 0 => return Err(protocol("data before the first archive")),
                None => pipeline.send(Feed::Data(d)).await?,
            },
            BaseBackupMessage::Progress(_) => {}
        }
    }
    let mut results = conn.read_results().await.map_err(server_error("BASE_BACKUP failed"))?;
    if results.is_empty() || results[0].columns.is_empty() {
        return Err(protocol("no end position after the data"));
    }
    let end = results.swap_remove(0);
    let manifest = manifest.ok_or_else(|| protocol("the server sent no backup manifest"))?;
    Ok(Streamed { manifest, end })
}

/// PostgreSQL 13/14: one COPY OUT of raw tar per tablespace (base last), each without the two
/// zero blocks that end a tar archive (appended here), then one COPY OUT with the manifest.
async fn stream_legacy(
    conn: &mut Connection,
    pipeline: &mut Pipeline,
    tablespaces: &[Tablespace],
) -> Result<Streamed, Failure> {
    let mut next = 0;
    let mut manifest: Option<Vec<u8>> = None;
    let end = loop {
        match conn.next_response().await.map_err(server_error("BASE_BACKUP failed"))? {
            Response::CopyOut(_) if next < tablespaces.len() => {
                let t = &tablespaces[next];
                next += 1;
                let name = t.oid.map(|o| format!("{o}.tar")).unwrap_or_else(|| "base.tar".into());
                pipeline.send(archive_feed(&name, t.location.as_deref().unwrap_or(""))?).await?;
                while let Some(d) = conn.next_copy_data().await.map_err(server_error("BASE_BACKUP failed"))? {
                    pipeline.send(Feed::Data(d)).await?;
                }
                pipeline.send(Feed::Data(Bytes::from_static(&[0u8; 1024]))).await?;
            }
            Response::CopyOut(_) if manifest.is_none() => {
                let mut m = Vec::new();
                while let Some(d) = conn.next_copy_data().await.map_err(server_error("BASE_BACKUP failed"))? {
                    add_manifest(&mut m, &d)?;
                }
                manifest = Some(m);
            }
            Response::ResultSet(rs) if !rs.columns.is_empty() => break rs,
            other => return Err(protocol(format!("{other:?} where an archive or the end position was expected"))),
        }
    };
    conn.read_results().await.map_err(server_error("BASE_BACKUP failed"))?;
    if next < tablespaces.len() {
        return Err(protocol(format!("{} of {} archives arrived", next, tablespaces.len())));
    }
    let manifest = manifest.ok_or_else(|| protocol("the server sent no backup manifest"))?;
    Ok(Streamed { manifest, end })
}

/// Takes a backup; returns its catalog entry (already stored).
pub async fn create(config: &Config, conninfo: &str, opts: CreateOptions) -> Result<BackupEntry, Failure> {
    let params = ConnParams::parse(conninfo)
        .map_err(|e| Failure::msg(FailureKind::Config, format!("--dbname: {e}")))?
        .with_replication(Replication::Physical)
        .with_fallback_application_name("pitr-basebackup");
    let repo = config.open_repository(true).await?;
    let mut conn = Connection::connect(&params).await.map_err(server_error("cannot connect"))?;
    let server = probe(&mut conn, &params).await?;
    check_cluster(&repo, &server).await?;

    if opts.label.as_ref().is_some_and(|l| l.len() > 1024 || l.contains('\0')) {
        return Err(Failure::msg(FailureKind::Usage, "--label must be at most 1024 bytes, without NUL"));
    }
    let (id, started, reservation) = new_id(&repo).await?;
    let label = opts.label.clone().unwrap_or_else(|| format!("pitr {id}"));
    // The reservation goes last when a failed backup is cleaned up: its id stays taken
    // until everything else of it is gone.
    let mut stored: Vec<ObjectKey> = vec![reservation];
    let result = backup(&mut conn, &repo, config, &server, &id, started, &label, &opts, &mut stored).await;
    match result {
        Ok(entry) => {
            let _ = conn.terminate().await;
            Ok(entry)
        }
        Err(f) => {
            drop(conn);
            for key in stored.iter().rev() {
                if let Err(e) = retry(repo.retry_policy(), "remove object", || repo.storage().delete(key)).await {
                    tracing::warn!(%key, error = %e, "could not remove an object of the failed backup");
                }
            }
            Err(f)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn backup(
    conn: &mut Connection,
    repo: &Repository,
    config: &Config,
    server: &Server,
    id: &str,
    started: OffsetDateTime,
    label: &str,
    opts: &CreateOptions,
    stored: &mut Vec<ObjectKey>,
) -> Result<BackupEntry, Failure> {
    let cmd = base_backup_command(server.version(), label, opts.fast);
    tracing::info!(backup = id, server = %server.describe, "{cmd}");
    conn.send_query(&cmd).await.map_err(server_error("BASE_BACKUP failed"))?;
    let start_rs = next_result_set(conn, "start position").await?;
    let (start_lsn, start_tli) = position(&start_rs, "BASE_BACKUP start position")?;
    let tablespaces = parse_tablespaces(&next_result_set(conn, "tablespace list").await?)?;
    let estimate: u64 = tablespaces.iter().filter_map(|t| t.size).sum();
    tracing::info!(backup = id, start = %start_lsn, timeline = %start_tli, tablespaces = tablespaces.len(), "backup started");

    let stats = Arc::new(Stats::default());
    let chunk_opts = opts.chunks.unwrap_or_else(|| ChunkOptions::new(config.backup_compress()));
    let mut pipeline = Pipeline::start(repo.clone(), id, chunk_opts, stats.clone());
    let progress = Progress::start(stats.clone(), estimate, opts.progress);
    let streamed = if server.version() >= 150000 {
        stream_v15(conn, &mut pipeline).await
    } else {
        stream_legacy(conn, &mut pipeline, &tablespaces).await
    };
    let stopped = OffsetDateTime::now_utc();
    let streamed = match streamed {
        Ok(s) => s,
        Err(f) => {
            stored.extend(pipeline.abort().await);
            return Err(f);
        }
    };
    let keys = pipeline.stored_keys();
    let out = pipeline.finish().await;
    stored.extend(std::mem::take(&mut *keys.lock().unwrap_or_else(|p| p.into_inner())));
    let out = out?;
    let (stop_lsn, stop_tli) = position(&streamed.end, "BASE_BACKUP end position")?;

    // The stream against the server's own manifest.
    let manifest = Manifest::parse(&streamed.manifest).map_err(|e| {
        Failure::msg(FailureKind::Corrupt, format!("backup {id}: the server's {e}; nothing was recorded"))
    })?;
    if let Some(sys) = manifest.system_identifier.filter(|s| *s != server.info.identity.system_id.0) {
        return Err(Failure::msg(
            FailureKind::Corrupt,
            format!("backup {id}: the manifest names system {sys}, the server said {}", server.info.identity.system_id),
        ));
    }
    manifest.check_files(&out.files).map_err(|e| {
        Failure::msg(
            FailureKind::Corrupt,
            format!("backup {id}: {e} (the stream does not match the server's manifest); nothing was recorded"),
        )
    })?;
    let manifest_key = ObjectKey::new(catalog::manifest_key(repo.cluster(), id))?;
    let mut obj = std::io::Cursor::new(Vec::new());
    let header = codec::compress(
        &[],
        &mut &streamed.manifest[..],
        &mut obj,
        &format!("{id}/backup_manifest"),
        Some(streamed.manifest.len() as u64),
        CompressOptions { level: config.compress.level, workers: 0 },
    )?;
    let manifest_stored = obj.get_ref().len() as u64;
    put_chunk(repo, &manifest_key, Bytes::from(obj.into_inner()), &header).await?;
    stored.push(manifest_key);

    // Every object of the backup must be in the repository, under its own name, before the
    // catalog entry says the backup exists.
    let archives: Vec<ArchiveEntry> = out.archives;
    let problems = catalog::missing_objects(repo, id, &archives).await?;
    if !problems.is_empty() {
        return Err(Failure::msg(
            FailureKind::Storage,
            format!(
                "backup {id}: {} of its objects are not in the repository after they were stored ({}); nothing was \
                 recorded",
                problems.len(),
                problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
        ));
    }

    // The WAL that makes the backup consistent must be archived before the backup exists.
    let seg = server.info.identity.segment_size;
    let ranges: Vec<(TimelineId, Lsn, Lsn)> = if manifest.wal_ranges.is_empty() {
        vec![(start_tli, start_lsn, stop_lsn)]
    } else {
        manifest.wal_ranges.iter().map(|r| (TimelineId(r.timeline), r.start_lsn, r.end_lsn)).collect()
    };
    for (tli, from, to) in ranges {
        let (first, last) = segment_range(from, to, seg);
        let missing = wal::wait_for(repo, tli, first, last, seg, opts.wal_timeout, |m| {
            progress.set_phase(format!("waiting for WAL {m}"));
        })
        .await?;
        if let Some(m) = missing {
            return Err(Failure::msg(
                FailureKind::NotFound,
                format!(
                    "backup {id}: WAL segment {m} did not reach the repository within {} s: check that the server \
                     archives (archive_mode = on, archive_command = 'wal-archiver push %p') into this repository \
                     and cluster {:?} (pg_stat_archiver shows failures); nothing was recorded",
                    opts.wal_timeout.as_secs(),
                    repo.cluster()
                ),
            ));
        }
    }
    progress.finish();

    let (first, _) = segment_range(start_lsn, stop_lsn, seg);
    let (_, last) = segment_range(start_lsn, stop_lsn, seg);
    let raw_bytes = archives.iter().map(|a| a.raw_bytes).sum();
    let stored_bytes = archives.iter().map(|a| a.stored_bytes).sum::<u64>() + manifest_stored;
    let entry = BackupEntry {
        version: CATALOG_VERSION,
        id: id.to_string(),
        label: label.to_string(),
        system_id: server.info.identity.system_id,
        server_version_num: server.version(),
        segment_size: seg.bytes(),
        start_lsn,
        start_timeline: start_tli,
        stop_lsn,
        stop_timeline: stop_tli,
        start_time: rfc3339(started),
        stop_time: rfc3339(stopped),
        archives,
        manifest_checksum: manifest.checksum.clone(),
        wal_start_segment: WalFileName::segment(start_tli, first, seg).to_string(),
        wal_stop_segment: WalFileName::segment(stop_tli, last, seg).to_string(),
        raw_bytes,
        stored_bytes,
    };
    let body = serde_json::to_vec_pretty(&entry).map_err(|e| Failure::msg(FailureKind::LocalIo, e))?;
    let key = ObjectKey::new(catalog::entry_key(repo.cluster(), id))?;
    let put = retry(repo.retry_policy(), "write backup entry", || {
        repo.storage().put(&key, Body::Bytes(Bytes::from(body.clone())), PutMode::CreateNew)
    })
    .await;
    match put {
        Ok(()) => {}
        Err(StorageError::AlreadyExists { .. }) => {
            // A retried PUT that had succeeded: ours if the content is.
            let existing = catalog::read_entry(repo, id).await?;
            if existing.as_ref() != Some(&entry) {
                return Err(Failure::msg(
                    FailureKind::Conflict,
                    format!("{key} already exists; refusing to overwrite it"),
                ));
            }
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        backup = id,
        raw = %human(entry.raw_bytes),
        stored = %human(entry.stored_bytes),
        stop = %stop_lsn,
        "backup finished"
    );
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::pgwire::Column;

    #[test]
    fn commands_in_both_dialects() {
        assert_eq!(
            base_backup_command(150020, "it's", true),
            "BASE_BACKUP ( LABEL 'it''s', PROGRESS, CHECKPOINT 'fast', WAIT false, MANIFEST 'yes', \
             MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP )"
        );
        assert!(base_backup_command(170000, "x", false).contains("CHECKPOINT 'spread'"));
        assert_eq!(
            base_backup_command(140011, "x", true),
            "BASE_BACKUP LABEL 'x' PROGRESS FAST NOWAIT MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C' TABLESPACE_MAP"
        );
        assert!(!base_backup_command(130000, "x", false).contains("FAST"));
    }

    fn rs(rows: Vec<Vec<Option<&str>>>) -> ResultSet {
        ResultSet {
            columns: vec![Column { name: "a".into(), type_oid: 25 }],
            rows: rows.into_iter().map(|r| r.into_iter().map(|v| v.map(String::from)).collect()).collect(),
            raw_rows: vec![],
            command_tag: "SELECT".into(),
        }
    }

    #[test]
    fn result_sets() {
        let t = parse_tablespaces(&rs(vec![
            vec![Some("16389"), Some("/srv/ts"), Some("9")],
            vec![None, None, Some("23220")],
        ]))
        .unwrap();
        assert_eq!(t[0], Tablespace { oid: Some(16389), location: Some("/srv/ts".into()), size: Some(9 * 1024) });
        assert_eq!(t[1].oid, None);
        assert_eq!(position(&rs(vec![vec![Some("0/3000028"), Some("1")]]), "x").unwrap().0, Lsn(0x3000028));
        assert!(position(&rs(vec![vec![Some("0/3000028"), Some("0")]]), "x").is_err());
        assert!(matches!(
            archive_feed("16389.tar", "/srv/ts").unwrap(),
            Feed::Archive { tablespace_oid: Some(16389), .. }
        ));
        assert!(matches!(
            archive_feed("base.tar", "").unwrap(),
            Feed::Archive { tablespace_oid: None, tablespace_path: None, .. }
        ));
        assert!(archive_feed("base.tar.gz", "").is_err());
        assert!(archive_feed("../x.tar", "").is_err());
    }
}
