//! `wal-archiver copy`: brings one repository up to date from the other (by default the second
//! repository from the main one; `--from repo2` the other way), incrementally: every object of
//! the cluster that the target lacks is copied, verified, create-if-absent
//! ([`crate::copy_object`]); a second run copies nothing.
//!
//! Order, so that a copy cut off at any point leaves a target every reader accepts: the
//! cluster record first, then history files, WAL segments (and `.partial`, `.backup` files),
//! then each backup's chunks and manifest before its catalog entry, as `basebackup create`
//! writes them (a backup whose object could not be copied gets no catalog entry). Leases,
//! reservations, the receiver's partial segments and objects of interrupted backups (without
//! a catalog entry) are not copied. An object both hold is compared by its header (name, size,
//! digest) or, for JSON, its content: a difference is a conflict, reported, never overwritten.

use std::collections::BTreeSet;
use std::sync::Arc;

use common::catalog;
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::repository::Repository;
use common::retry::retry;
use common::storage::memory::MemoryStorage;
use common::storage::ObjectKey;
use serde::Serialize;

use crate::copy_object::{compare_present, copy_object, Copied};

/// Which way to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the main repository to the second.
    ToRepo2,
    /// From the second repository to the main one.
    FromRepo2,
}

/// What a copy did (the `--json` document).
#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    /// Where objects came from.
    pub source: String,
    /// Where they went.
    pub target: String,
    /// Only listed what would be copied.
    pub dry_run: bool,
    /// Objects copied (or, with `--dry-run`, to copy).
    pub copied: u64,
    /// Their bytes as stored in the source.
    pub bytes: u64,
    /// Objects the target already held, identical.
    pub present: u64,
    /// Backups whose catalog entry was copied.
    pub backups: Vec<String>,
    /// Keys not copied because the source's object is damaged.
    pub damaged: Vec<String>,
    /// Keys both hold with different content.
    pub conflicts: Vec<String>,
    /// Backups whose catalog entry was not copied because one of their objects was not.
    pub backups_skipped: Vec<String>,
}

/// Runs `wal-archiver copy`.
pub async fn copy(config: &Config, direction: Direction, dry_run: bool, json: bool) -> Result<(), Failure> {
    let second = config.repo2()?.ok_or_else(|| {
        Failure::msg(
            FailureKind::Config,
            "copy needs a second repository: set repo2-config in pitr.toml, PITR_REPO2_CONFIG or --repo2-config",
        )
    })?;
    let (src_cfg, dst_cfg) = match direction {
        Direction::ToRepo2 => (config, &second),
        Direction::FromRepo2 => (&second, config),
    };
    let src = src_cfg.open_repository(false).await.map_err(|f| f.context(format!("source {}", src_cfg.repo)))?;
    let dst = match dst_cfg.open_repository(!dry_run).await {
        Ok(r) => r,
        // A dry run writes nothing, not even the encryption record of a new target or its
        // directory: a target that a reader cannot open yet is one that holds nothing.
        Err(f) if dry_run && matches!(f.kind, FailureKind::Key | FailureKind::Config) => {
            tracing::info!(target = %dst_cfg.repo, "the target cannot be opened for reading ({f}); taken as empty");
            Repository::new(Arc::new(MemoryStorage::new()), &dst_cfg.cluster, dst_cfg.retry)
        }
        Err(f) => return Err(f.context(format!("target {}", dst_cfg.repo))),
    };
    let mut report = CopyReport {
        source: src_cfg.repo.to_string(),
        target: dst_cfg.repo.to_string(),
        dry_run,
        ..CopyReport::default()
    };
    copy_repository(&src, &dst, dry_run, &mut report).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Failure::new(FailureKind::LocalIo, e))?);
    } else {
        print!("{}", render(&report));
    }
    if !report.conflicts.is_empty() {
        return Err(Failure::msg(
            FailureKind::Conflict,
            format!(
                "{} object(s) differ between the repositories: {}",
                report.conflicts.len(),
                report.conflicts.join(", ")
            ),
        ));
    }
    if !report.damaged.is_empty() {
        return Err(Failure::msg(
            FailureKind::Corrupt,
            format!(
                "{} damaged object(s) in the source were not copied: {}",
                report.damaged.len(),
                report.damaged.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The report as text.
pub fn render(r: &CopyReport) -> String {
    let verb = if r.dry_run { "would copy" } else { "copied" };
    let mut out = format!(
        "{} -> {}: {verb} {} object(s), {} bytes; {} already present\n",
        r.source, r.target, r.copied, r.bytes, r.present
    );
    if !r.backups.is_empty() {
        out.push_str(&format!("backups {verb}: {}\n", r.backups.join(", ")));
    }
    for k in &r.damaged {
        out.push_str(&format!("damaged in the source, not copied: {k}\n"));
    }
    for k in &r.conflicts {
        out.push_str(&format!("conflict (different content in the target, not overwritten): {k}\n"));
    }
    for id in &r.backups_skipped {
        out.push_str(&format!("backup {id} not copied: one of its objects could not be\n"));
    }
    out
}

/// The source's objects to copy, in order (see the module documentation), with the backup
/// each belongs to.
fn plan(cluster: &str, keys: &[String]) -> Vec<(String, Option<String>)> {
    let wal = format!("{cluster}/wal/");
    let mut out = Vec::new();
    let record = format!("{cluster}/cluster.json");
    if keys.contains(&record) {
        out.push((record, None));
    }
    let (history, other): (Vec<&String>, Vec<&String>) =
        keys.iter().filter(|k| k.starts_with(&wal)).partition(|k| k.ends_with(".history.zst"));
    out.extend(history.into_iter().chain(other).map(|k| (k.clone(), None)));
    for k in keys {
        let Some(id) = catalog::id_of_entry_key(cluster, k) else { continue };
        let dir = format!("{cluster}/backups/{id}/");
        let reservation = catalog::reservation_key(cluster, id);
        for o in keys.iter().filter(|o| o.starts_with(&dir) && **o != reservation && o.ends_with(".zst")) {
            out.push((o.clone(), Some(id.to_string())));
        }
        out.push((k.clone(), Some(id.to_string())));
    }
    out
}

/// Copies every object of `src`'s cluster that `dst` lacks, recording what happened.
pub async fn copy_repository(
    src: &Repository,
    dst: &Repository,
    dry_run: bool,
    report: &mut CopyReport,
) -> Result<(), Failure> {
    let cluster = src.cluster().to_string();
    let prefix = format!("{cluster}/");
    let listed = retry(src.retry_policy(), "list source", || src.storage().list(&prefix)).await?;
    let sizes: std::collections::BTreeMap<String, u64> =
        listed.iter().map(|o| (o.key.as_str().to_string(), o.size)).collect();
    let keys: Vec<String> = sizes.keys().cloned().collect();
    let present: BTreeSet<String> = retry(dst.retry_policy(), "list target", || dst.storage().list(&prefix))
        .await?
        .into_iter()
        .map(|o| o.key.as_str().to_string())
        .collect();
    let mut failed_backups: BTreeSet<String> = BTreeSet::new();
    for (key, backup) in plan(&cluster, &keys) {
        let is_entry = backup.as_deref().is_some_and(|id| key == catalog::entry_key(&cluster, id));
        if let Some(id) = backup.as_deref().filter(|id| failed_backups.contains(*id)) {
            if is_entry {
                report.backups_skipped.push(id.to_string());
            }
            continue;
        }
        let k = ObjectKey::new(key.clone())?;
        let result = if present.contains(&key) {
            compare_present(src, dst, &k).await.map(|()| Copied::Present)
        } else if dry_run {
            Ok(Copied::Copied(sizes.get(&key).copied().unwrap_or(0)))
        } else {
            copy_object(src, dst, &k).await
        };
        match result {
            Ok(Copied::Copied(n)) => {
                report.copied += 1;
                report.bytes += n;
                tracing::info!(key = %key, bytes = n, "copied");
                if is_entry {
                    report.backups.push(backup.clone().unwrap_or_default());
                }
            }
            Ok(Copied::Present) => report.present += 1,
            Err(f) if matches!(f.kind, FailureKind::Corrupt | FailureKind::Conflict) => {
                tracing::warn!(key = %key, "{f}");
                if f.kind == FailureKind::Corrupt {
                    report.damaged.push(key.clone());
                } else {
                    report.conflicts.push(key.clone());
                }
                if let Some(id) = backup {
                    if is_entry {
                        report.backups_skipped.push(id.clone());
                    }
                    failed_backups.insert(id);
                }
            }
            // Listed a moment ago, gone now (expired): nothing to copy.
            Err(f) if f.kind == FailureKind::NotFound => {
                if let Some(id) = backup {
                    if is_entry {
                        report.backups_skipped.push(id.clone());
                    }
                    failed_backups.insert(id);
                }
            }
            Err(f) => return Err(f.context(format!("copying {key}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_orders_record_history_wal_then_backups_entry_last() {
        let keys: Vec<String> = [
            "main/backups/20260101T000000Z.json",
            "main/backups/20260101T000000Z/backup_manifest.zst",
            "main/backups/20260101T000000Z/base.tar/000000.zst",
            "main/backups/20260101T000000Z/reservation.json",
            "main/backups/20260102T000000Z/base.tar/000000.zst",
            "main/cluster.json",
            "main/leases/restore-1.json",
            "main/receiver/000000010000000000000004.partial.zst",
            "main/wal/0000000100000000/000000010000000000000003.zst",
            "main/wal/00000002.history.zst",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let planned = plan("main", &keys);
        let p: Vec<&str> = planned.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            p,
            [
                "main/cluster.json",
                "main/wal/00000002.history.zst",
                "main/wal/0000000100000000/000000010000000000000003.zst",
                "main/backups/20260101T000000Z/backup_manifest.zst",
                "main/backups/20260101T000000Z/base.tar/000000.zst",
                "main/backups/20260101T000000Z.json",
            ]
        );
    }
}
