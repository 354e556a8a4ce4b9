//! `get`: PostgreSQL's restore_command.
//!
//! Contract: exit 0 with the exact original bytes at the destination, written to a temporary
//! name in the same directory and renamed (no fsync: after a crash PostgreSQL asks again);
//! "not found" only when the repository answered that this exact key does not exist (and it
//! holds the configured cluster); every other failure, after retries for transient ones, is
//! reported as such, which `main` turns into an exit status above 125 so that PostgreSQL
//! aborts recovery instead of promoting early.
//!
//! Segments may come from the prefetch spool (see [`crate::prefetch`]): files there were
//! verified like any download, so serving one is a rename.
//!
//! A segment that is not archived may be served from the streaming receiver's growing
//! segment (`<cluster>/receiver/<segment>.partial.zst`, see `wal-archiver receive`): the
//! full-size `.partial` file, valid WAL then zeros, under the requested name. Only when that
//! object is for exactly this segment and its timeline is the newest of its branch (no
//! history file in the repository says the timeline ended before the segment's end), and
//! pg_wal (beside the destination) holds no copy of that segment with as much valid WAL or
//! more, which PostgreSQL would otherwise replace with what `get` serves. Recovery
//! then stops at the end of its valid WAL; a standby re-runs restore_command for the same
//! segment when it reaches that end, and so gets the grown partial or the complete segment.
//! The prefetch worker never fetches partial objects ([`fetch`] reads `wal/` only), so a
//! stale partial is never kept in the spool.
//!
//! With a second repository (`repo2-config`), a file the main repository does not have, or
//! cannot give (unreachable after retries, or damaged), is fetched from the second one. "Not
//! found" (exit 1) then needs both answers: the main repository said absent and the second
//! one said absent too. When the main repository could not be reached and the second one
//! lacks the file, that is not certain (the copy may lag behind): a storage failure (205),
//! so that PostgreSQL aborts recovery instead of ending it early. The receiver's partial
//! segment and the prefetch spool are the main repository's only.

use std::path::Path;

use archive::fetch::{fetch, fetch_key};
use archive::receiver_partial;
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::repository::Repository;
use common::wal::record;
use common::wal::{WalFileKind, WalFileName};

use crate::prefetch;

/// Fetches WAL file `name` into `dest`: from the main repository, else from the second one
/// (see the module documentation).
pub async fn get(config: &Config, name: &str, dest: &Path) -> Result<(), Failure> {
    let wal = WalFileName::parse(name).map_err(|e| Failure::msg(FailureKind::Invalid, e))?;
    let main = get_main(config, &wal, name, dest).await;
    if config.repo2_config.is_none() {
        return main;
    }
    let main_failure = match main {
        Ok(()) => return Ok(()),
        Err(f) if matches!(f.kind, FailureKind::NotFound | FailureKind::Storage | FailureKind::Corrupt) => f,
        Err(f) => return Err(f),
    };
    // Read only now: a second repository's file that cannot be used fails only the gets that
    // need it.
    let Some(second) = config.repo2()? else { return Err(main_failure) };
    if main_failure.kind != FailureKind::NotFound {
        tracing::warn!(
            file = name,
            "the main repository failed, trying the second one ({}): {main_failure}",
            second.repo
        );
    }
    let from_second = async {
        let repo2 = second.open_repository(false).await?;
        match fetch(&repo2, &wal, dest).await {
            Err(f) if f.kind == FailureKind::NotFound => Err(absent(&repo2, name).await),
            r => r,
        }
    }
    .await;
    match from_second {
        Ok(header) => {
            tracing::info!(file = name, bytes = header.raw_size, repository = %second.repo, "restored from the second repository");
            Ok(())
        }
        Err(f) if f.kind == FailureKind::NotFound && main_failure.kind == FailureKind::NotFound => Err(Failure::msg(
            FailureKind::NotFound,
            format!("{name} is in neither repository (cluster {:?})", config.cluster),
        )),
        Err(f) if f.kind == FailureKind::NotFound => Err(Failure::msg(
            FailureKind::Storage,
            format!(
                "{name}: the main repository failed ({main_failure}) and the second one ({}) does not have it, which \
                 is not certain absence (the copy may lag behind): not ending recovery here",
                second.repo
            ),
        )),
        // Absent from the main repository, unknown in the second: not certain either.
        Err(f) if main_failure.kind == FailureKind::NotFound => {
            Err(f.context(format!("{name} is not in the main repository; the second one ({}) failed", second.repo)))
        }
        Err(f) => Err(main_failure.context(format!("the second repository ({}) failed too: {f}", second.repo))),
    }
}

/// Fetches WAL file `wal` into `dest` from the main repository (the prefetch spool, the
/// archive, the receiver's partial segment).
async fn get_main(config: &Config, wal: &WalFileName, name: &str, dest: &Path) -> Result<(), Failure> {
    let wal = *wal;
    let spool = (config.prefetch > 0 && wal.kind == WalFileKind::Segment).then(|| prefetch::spool_dir(dest));
    if let Some(spool) = &spool {
        if prefetch::take(spool, &wal, dest) {
            tracing::info!(file = name, "restored from the prefetch spool");
            prefetch::kick(config, spool, &wal, dest);
            return Ok(());
        }
    }
    let repo = config.open_repository(false).await?;
    let header = match fetch(&repo, &wal, dest).await {
        Err(f) if f.kind == FailureKind::NotFound && wal.kind == WalFileKind::Segment => {
            match from_receiver(&repo, &wal, dest).await? {
                FromReceiver::Served => return Ok(()),
                FromReceiver::Refused => return Err(absent(&repo, name).await),
                // The receiver may have stored the complete segment (and removed its partial
                // object) since the first look: "absent" must be certain.
                FromReceiver::NoPartial => match fetch(&repo, &wal, dest).await {
                    Err(f) if f.kind == FailureKind::NotFound => return Err(absent(&repo, name).await),
                    r => r?,
                },
            }
        }
        Err(f) if f.kind == FailureKind::NotFound => return Err(absent(&repo, name).await),
        r => r?,
    };
    tracing::info!(file = name, bytes = header.raw_size, "restored");
    if let Some(spool) = &spool {
        prefetch::kick(config, spool, &wal, dest);
    }
    Ok(())
}

/// What the receiver's partial object could do for a missing segment.
enum FromReceiver {
    /// Served at the destination.
    Served,
    /// There is no partial object for this segment.
    NoPartial,
    /// There is one, but it is not served: its timeline ended before the segment's end, or
    /// pg_wal holds a copy of the segment with at least as much valid WAL.
    Refused,
}

/// Serves the receiver's partial object for segment `wal` at `dest`, when there is one for
/// exactly this segment and its timeline has not ended before the segment's end.
async fn from_receiver(repo: &Repository, wal: &WalFileName, dest: &Path) -> Result<FromReceiver, Failure> {
    let key = repo.receiver_partial_key(wal);
    if repo.object_header(&key).await?.is_none() {
        return Ok(FromReceiver::NoPartial);
    }
    let Some(cluster) = repo.cluster_info().await? else {
        return Ok(FromReceiver::NoPartial); // `absent` explains
    };
    let size = cluster.segment_size;
    let segno = wal.segment_number(size).map_err(|e| Failure::msg(FailureKind::Invalid, e))?.unwrap_or(0);
    let end = repo.timeline_end(wal.timeline).await?;
    if !receiver_partial::may_serve(end, segno, size) {
        tracing::info!(
            file = %wal,
            %key,
            "not serving the receiver's partial segment: timeline {} ended at {} (history files)",
            wal.timeline,
            end.unwrap_or_default()
        );
        return Ok(FromReceiver::Refused);
    }
    let expected = receiver_partial::object_name(wal);
    let header = match fetch_key(repo, &key, wal, &expected, dest).await {
        Err(f) if f.kind == FailureKind::NotFound => return Ok(FromReceiver::NoPartial),
        r => r?,
    };
    // Up to where it holds valid WAL: from its header when the receiver stored a summary,
    // else from its records (a few milliseconds, and only at the end of the archive).
    let valid_end = header.wal.and_then(|s| s.valid_end).or_else(|| valid_end_of(dest));
    let upto = valid_end.map_or_else(|| "unknown".to_string(), |e| e.to_string());
    // PostgreSQL asks restore_command before it looks in pg_wal, and replaces pg_wal's copy
    // with what it gets. A copy there with at least as much valid WAL (the receiver's spool
    // file copied in by an operator, the old server's own file, what a standby restored
    // before) must win: answer "absent" so that PostgreSQL reads it.
    let local = dest.with_file_name(wal.to_string());
    if local != dest && local.exists() {
        let local_end = valid_end_of(&local);
        if local_end.is_some() && local_end >= valid_end {
            let _ = std::fs::remove_file(dest);
            tracing::info!(
                file = %wal,
                %key,
                "not serving the receiver's partial segment (valid WAL up to {upto}): {} holds as much or more \
                 (up to {})",
                local.display(),
                local_end.map_or_else(String::new, |e| e.to_string())
            );
            return Ok(FromReceiver::Refused);
        }
    }
    tracing::info!(
        file = %wal,
        %key,
        valid_wal_up_to = %upto,
        "restored from the receiver's partial segment (not yet archived complete): valid WAL up to {upto}"
    );
    Ok(FromReceiver::Served)
}

/// The end of the valid WAL in the segment file at `path`, when it is a readable segment.
fn valid_end_of(path: &Path) -> Option<Lsn> {
    let bytes = std::fs::read(path).ok()?;
    record::summarize(&bytes).ok()?.valid_end
}

/// The file is missing: "not found" is only certain if the repository really holds this
/// cluster. A mistyped `--cluster` or an empty repository is a configuration error, so that
/// PostgreSQL aborts recovery instead of ending it early.
async fn absent(repo: &Repository, name: &str) -> Failure {
    match repo.cluster_info().await {
        Ok(Some(_)) => Failure::msg(
            FailureKind::NotFound,
            format!("{name} is not in the repository (cluster {:?})", repo.cluster()),
        ),
        Ok(None) => Failure::msg(
            FailureKind::Config,
            format!(
                "the repository holds no cluster {:?} (no {}): check --repo and --cluster",
                repo.cluster(),
                repo.cluster_info_key()
            ),
        ),
        Err(e) => e.into(),
    }
}
