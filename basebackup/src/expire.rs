//! `expire`: retention. Without it a repository only grows. It deletes the backups that the
//! retention policy no longer keeps and the WAL that only those backups could use, and never
//! anything a kept backup needs: every restore the policy promises still works afterwards.
//!
//! The policy keeps the newest `keep-backups` backups and/or, with `keep-within D`, every
//! backup from the newest one (by id, the start time) that ended before the window on: a
//! restore to any moment of the last D starts from one of them. Both together keep the union.
//! The policy is applied twice and what either keeps is kept: to all backups, and to the
//! backups on the newest timeline's path (after a point-in-time restore forked a timeline,
//! the newest backups by time may be on the abandoned branch, while the live timeline still
//! needs the backup it was restored from). The newest backup is never expired.
//!
//! Deletion order, so that an interruption leaves nothing a reader could misuse: each expired
//! backup's catalog entry goes first (from then on the backup does not exist), then its chunks
//! and manifest, then the WAL before the lowest first segment of the kept backups (every kept
//! backup starts at or after it, and recovery only reads forward). History files are kept.
//! Objects of backups without a catalog entry (an interrupted backup or expire; checked by
//! exact key, a listing may lag) are deleted once they are older than the oldest kept backup
//! and [`ORPHAN_GRACE`] old: a backup still running has no entry yet either. A recorded
//! backup with missing objects (the listing shows them absent, exact keys confirm) cannot
//! restore: the policy does not count it, so it never stands in for an intact backup, and it
//! is left alone for the operator to look at.
//!
//! With S3 Object Lock, nothing whose lock has not passed is deleted (a DELETE would only
//! hide it behind a delete marker, see [`crate::locks`]): a backup the policy expires but whose
//! objects are still locked is kept, with the WAL it needs, and reported as "locked until";
//! locked WAL and locked objects of interrupted backups are left for a later run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use archive::backup_wal::BackupWal;
use common::catalog::{self, BackupEntry};
use common::config::{Config, Origin, Source};
use common::exit::{Failure, FailureKind};
use common::lease;
use common::repository::{wal_file_of_key, Repository};
use common::retry::retry;
use common::storage::{ObjectInfo, ObjectKey};
use common::wal::timeline_path::TimelinePath;
use common::wal::{TimelineId, WalFileKind, WalSegmentSize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::locks;
use crate::progress::human;

/// How old (by its id, the start time) a backup without a catalog entry must be before its
/// objects are deleted: a backup in progress has no entry yet.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletions in flight at once (each is one request to the store).
const PARALLEL_DELETES: usize = 16;

/// What to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep this many of the newest backups (at least 1).
    pub keep_backups: Option<u32>,
    /// Keep what restores to any moment within this long before now.
    pub keep_within: Option<Duration>,
}

impl Policy {
    /// The policy from the command line; refuses an empty one (an `expire` without a policy
    /// deletes nothing by accident).
    pub fn resolve(keep_backups: Option<u32>, keep_within: Option<&str>) -> Result<Policy, Failure> {
        Policy::resolve_from(keep_backups.map(|n| (n, Source::Flag)), keep_within.map(|w| (w, Source::Flag)))
    }

    /// The policy from values that say where they came from: a bad one is a usage error (2)
    /// from a flag or its variable, a configuration error (7) from `pitr.toml`; the message
    /// names the flag, variable or file.
    pub fn resolve_from(
        keep_backups: Option<(u32, Source)>,
        keep_within: Option<(&str, Source)>,
    ) -> Result<Policy, Failure> {
        let bad = |key: &str, source: &Source, m: String| {
            let kind = if matches!(source, Source::File(_)) { FailureKind::Config } else { FailureKind::Usage };
            Failure::msg(kind, format!("{m} (from {})", Origin { key, source }))
        };
        if let Some((0, source)) = &keep_backups {
            return Err(bad(
                "keep-backups",
                source,
                "keep-backups must be at least 1: the newest backup is never expired".into(),
            ));
        }
        let keep_within = match keep_within {
            Some((s, source)) => Some(humantime::parse_duration(s.trim()).map_err(|e| {
                bad("keep-within", &source, format!("invalid keep-within {s:?}: {e} (use e.g. 7d, 36h, 2weeks)"))
            })?),
            None => None,
        };
        let keep_backups = keep_backups.map(|(n, _)| n);
        if keep_backups.is_none() && keep_within.is_none() {
            return Err(Failure::msg(
                FailureKind::Usage,
                "no retention policy: give --keep-backups N and/or --keep-within DURATION \
                 (or keep-backups / keep-within in pitr.toml)",
            ));
        }
        Ok(Policy { keep_backups, keep_within })
    }

    /// Human description of the policy at `now`.
    pub fn describe(&self, now: OffsetDateTime) -> String {
        let mut parts = vec![];
        if let Some(n) = self.keep_backups {
            parts.push(format!("keep the newest {n} backup(s)"));
        }
        if let Some(d) = self.keep_within {
            let since = window_start(now, d).replace_nanosecond(0).unwrap_or(now).format(&Rfc3339).unwrap_or_default();
            parts.push(format!("keep what restores to any time since {since} ({})", humantime::format_duration(d)));
        }
        parts.join("; ")
    }
}

fn window_start(now: OffsetDateTime, d: Duration) -> OffsetDateTime {
    let d = time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
    now.checked_sub(d).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Index (into `entries`, oldest first) of the oldest backup `policy` keeps at `now`;
/// `None` when there are no backups. Every backup from there on is kept.
pub fn oldest_kept(entries: &[&BackupEntry], policy: &Policy, now: OffsetDateTime) -> Result<Option<usize>, Failure> {
    let Some(newest) = entries.len().checked_sub(1) else {
        return Ok(None);
    };
    let mut keep_from = newest;
    if let Some(n) = policy.keep_backups {
        keep_from = keep_from.min(entries.len().saturating_sub(n as usize));
    }
    if let Some(d) = policy.keep_within {
        let start = window_start(now, d);
        // The newest backup that ended at or before the window's start restores to its
        // first moment; with none, every backup ended inside the window.
        let mut from = 0;
        for (i, e) in entries.iter().enumerate() {
            let stop = OffsetDateTime::parse(&e.stop_time, &Rfc3339).map_err(|err| {
                Failure::msg(
                    FailureKind::Corrupt,
                    format!("backup {}: stop time {:?} in its catalog entry: {err}", e.id, e.stop_time),
                )
            })?;
            if stop <= start {
                from = i;
            }
        }
        keep_from = keep_from.min(from);
    }
    Ok(Some(keep_from))
}

/// Which of `entries` (oldest first) `policy` keeps: the policy applied to all backups, and
/// applied again to the backups on `latest`, the newest timeline's path (those a restore
/// of the live timeline can start from, as `pitr-restore` chooses them); kept by either.
/// After a point-in-time restore forked a new timeline, the newest backups by time may lie
/// on the abandoned branch, while the live timeline still needs the backup it was restored
/// from and the WAL after it.
pub fn kept(
    entries: &[BackupEntry],
    latest: &TimelinePath,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Vec<bool>, Failure> {
    let mut keep = vec![false; entries.len()];
    let all: Vec<usize> = (0..entries.len()).collect();
    let on_path: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| {
            let b = &entries[i];
            latest.holds(b.start_timeline, b.start_lsn) && latest.holds(b.stop_timeline, b.stop_lsn)
        })
        .collect();
    for set in [all, on_path] {
        let refs: Vec<&BackupEntry> = set.iter().map(|&i| &entries[i]).collect();
        if let Some(from) = oldest_kept(&refs, policy, now)? {
            for &i in &set[from..] {
                keep[i] = true;
            }
        }
    }
    Ok(keep)
}

/// The newest timeline (from the history files listed, probing the next ones by exact key
/// as PostgreSQL does, and the backups' own) and its path. Without its history file nothing
/// can tell which backups restore it: refused, nothing deleted.
async fn latest_path(
    repo: &Repository,
    histories: &[TimelineId],
    entries: &[BackupEntry],
) -> Result<TimelinePath, Failure> {
    let listed = histories.iter().chain(entries.iter().map(|e| &e.stop_timeline)).max().copied();
    let mut tli = listed.unwrap_or(TimelineId(1));
    while repo.history(TimelineId(tli.0 + 1)).await?.is_some() {
        tli = TimelineId(tli.0 + 1);
    }
    if tli.0 == 1 {
        return Ok(TimelinePath::new(tli, &[]));
    }
    match repo.history(tli).await? {
        Some(h) => Ok(TimelinePath::new(tli, &h)),
        None => Err(Failure::msg(
            FailureKind::Corrupt,
            format!(
                "timeline {tli}, the newest, has no history file ({:08X}.history) in the repository: which backups \
                 restore it is unknown, so nothing is expired",
                tli.0
            ),
        )),
    }
}

/// Everything one run deletes (or, dry, would delete).
#[derive(Debug, Default)]
pub struct ExpirePlan {
    /// The newest timeline's path (`1 → 2 (from …)`), whose backups the policy also keeps.
    pub latest_path: String,
    /// Backups kept, oldest first.
    pub kept: Vec<BackupEntry>,
    /// Backups expired, oldest first.
    pub expired: Vec<BackupEntry>,
    /// The first WAL segment kept: the lowest first segment of the kept backups.
    pub wal_keep_from: Option<String>,
    /// WAL objects before it (segments, `.partial`, `.backup`; the receiver's partials).
    pub wal: Vec<ObjectInfo>,
    /// Objects of the expired backups, catalog entries excluded.
    pub backup_objects: Vec<ObjectInfo>,
    /// Ids of backups without a catalog entry whose objects are deleted.
    pub orphans: Vec<String>,
    /// Their objects.
    pub orphan_objects: Vec<ObjectInfo>,
    /// Ids of backups without a catalog entry that are kept (possibly in progress).
    pub incomplete: Vec<String>,
    /// Backups kept because a restore in progress holds them (its lease), by id.
    pub leased: Vec<String>,
    /// A restore is being planned (a lease without a backup yet): it may choose any backup,
    /// so nothing is expired this run. The lease's key.
    pub planning_restore: Option<String>,
    /// Leases that have ended, deleted with the run.
    pub ended_leases: Vec<ObjectKey>,
    /// Recorded backups with missing objects (confirmed by exact key), with what is missing:
    /// they cannot restore, so the policy does not count them (a damaged newest backup must
    /// not be the reason to expire the intact ones before it); left alone, never deleted.
    pub damaged: Vec<(BackupEntry, Vec<String>)>,
    /// Backups the policy expires that stay because their objects are still locked (S3
    /// Object Lock; they are in `kept`), with the lock's end.
    pub locked: Vec<(String, OffsetDateTime)>,
    /// Backups without a catalog entry left whole because objects of theirs are still
    /// locked, with the latest lock's end.
    pub locked_orphans: Vec<(String, OffsetDateTime)>,
    /// WAL objects before the kept backups' first segment that stay because they are still
    /// locked, with each lock's end.
    pub locked_wal: Vec<(ObjectInfo, OffsetDateTime)>,
}

impl ExpirePlan {
    /// Objects and bytes deleted in all.
    pub fn totals(&self) -> (usize, u64) {
        let entries = self.expired.len();
        let all = self.wal.iter().chain(&self.backup_objects).chain(&self.orphan_objects);
        let (n, b) = all.fold((0usize, 0u64), |(n, b), o| (n + 1, b + o.size));
        (n + entries, b)
    }
}

/// The backup id an object under `<cluster>/backups/` belongs to: `<id>.json` or `<id>/…`.
fn backup_id_of(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let id = rest.split('/').next()?.trim_end_matches(".json");
    catalog::valid_backup_id(id).then(|| id.to_string())
}

/// The segment size, and the lowest first segment (number and name) of the kept backups:
/// WAL before it is needed by none of them. Usually the oldest backup's, but not always: a
/// backup taken on a timeline that forked before an older backup's start begins lower.
fn wal_cut(kept: &[BackupEntry]) -> Result<(WalSegmentSize, u64, String), Failure> {
    let mut cut: Option<BackupWal> = None;
    for e in kept {
        let range = BackupWal::of(e).map_err(|err| Failure::msg(FailureKind::Corrupt, err))?;
        if cut.as_ref().is_none_or(|c| range.first_segno < c.first_segno) {
            cut = Some(range);
        }
    }
    let cut = cut.expect("at least one backup is kept");
    Ok((cut.size, cut.first_segno, cut.first.to_string()))
}

/// Works out what `policy` expires at `now`, from listings, catalog entries and history files.
pub async fn plan(repo: &Repository, policy: &Policy, now: OffsetDateTime) -> Result<ExpirePlan, Failure> {
    // One listing of `backups/` serves both the catalog entries and the objects to delete.
    let prefix = catalog::backups_prefix(repo.cluster());
    let objects = retry(repo.retry_policy(), "list backups", || repo.storage().list(&prefix)).await?;
    let mut entries = catalog::entries_listed(repo, &objects).await?;
    // Backups whose objects the listing does not show, confirmed by exact key.
    let listed: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut damaged = Vec::new();
    for e in &entries {
        let expected = catalog::backup_objects(repo.cluster(), &e.id, &e.archives)?;
        if expected.iter().all(|o| listed.contains(o.key.as_str())) {
            continue;
        }
        let problems = catalog::missing_objects(repo, &e.id, &e.archives).await?;
        if !problems.is_empty() {
            tracing::warn!(backup = %e.id, "damaged backup (not counted by the policy, left alone): {}", problems[0]);
            damaged.push((e.clone(), problems));
        }
    }
    entries.retain(|e| !damaged.iter().any(|(d, _)| d.id == e.id));
    if entries.is_empty() {
        return Ok(ExpirePlan { damaged, ..Default::default() });
    }
    let mut wal = vec![];
    for prefix in [repo.wal_prefix(), repo.receiver_prefix()] {
        wal.extend(retry(repo.retry_policy(), "list WAL", || repo.storage().list(&prefix)).await?);
    }
    let histories: Vec<TimelineId> = wal
        .iter()
        .filter_map(|o| wal_file_of_key(&o.key))
        .filter(|n| n.kind == WalFileKind::History)
        .map(|n| n.timeline)
        .collect();
    let path = latest_path(repo, &histories, &entries).await?;
    let mut keep = kept(&entries, &path, policy, now)?;
    let mut plan = ExpirePlan { latest_path: path.describe(), ..Default::default() };
    // Restores in progress keep what they use.
    for (key, l) in lease::restore_leases(repo).await? {
        if !l.active(now.unix_timestamp()) {
            plan.ended_leases.push(key);
            continue;
        }
        match &l.backup {
            None => plan.planning_restore = Some(key.to_string()),
            Some(id) => {
                if let Some(i) = entries.iter().position(|e| &e.id == id) {
                    if !keep[i] {
                        plan.leased.push(id.clone());
                    }
                    keep[i] = true;
                }
            }
        }
    }
    if plan.planning_restore.is_some() {
        keep.iter_mut().for_each(|k| *k = true);
    }
    // A backup the policy expires but whose objects are still locked stays, with the WAL it
    // needs, until a run after its lock. Its catalog entry answers for all its objects: the
    // entry is written last, by the process that wrote the chunks and the manifest, with the
    // same lock period, so its retain-until date is the latest of them (one request per
    // backup instead of one per chunk).
    let expiring: Vec<usize> = (0..entries.len()).filter(|&i| !keep[i]).collect();
    let entry_keys = expiring
        .iter()
        .map(|&i| ObjectKey::new(catalog::entry_key(repo.cluster(), &entries[i].id)))
        .collect::<Result<Vec<_>, _>>()?;
    for (&i, until) in expiring.iter().zip(locks::locked_until(repo, &entry_keys, now).await?) {
        if let Some(until) = until {
            keep[i] = true;
            plan.locked.push((entries[i].id.clone(), until));
        }
    }
    let damaged_ids: BTreeSet<String> = damaged.iter().map(|(e, _)| e.id.clone()).collect();
    plan.damaged = damaged;
    for (e, k) in entries.iter().zip(keep) {
        if k { &mut plan.kept } else { &mut plan.expired }.push(e.clone());
    }
    let oldest_kept_id = plan.kept[0].id.clone();
    let (size, cut, first) = wal_cut(&plan.kept)?;
    plan.wal_keep_from = Some(first);

    let entry_ids: BTreeSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let expired_ids: BTreeSet<&str> = plan.expired.iter().map(|e| e.id.as_str()).collect();
    let grace_start = catalog::backup_id(window_start(now, ORPHAN_GRACE));
    // Ids without a catalog entry in the listing, checked by exact key (a listing may lag):
    // true when the entry exists after all.
    let mut entry_exists: BTreeMap<String, bool> = BTreeMap::new();
    for o in objects {
        let Some(id) = backup_id_of(&prefix, o.key.as_str()) else { continue };
        if expired_ids.contains(id.as_str()) {
            if !o.key.as_str().ends_with(".json") {
                plan.backup_objects.push(o);
            }
            continue;
        }
        if entry_ids.contains(id.as_str()) || damaged_ids.contains(&id) {
            continue;
        }
        if !entry_exists.contains_key(&id) {
            let exists = catalog::read_entry(repo, &id).await?.is_some();
            entry_exists.insert(id.clone(), exists);
        }
        // No catalog entry: an interrupted backup or expire, or one still running. An
        // entry that a lagging listing did not show is left alone as well.
        if !entry_exists[&id] && id < oldest_kept_id && id < grace_start {
            if plan.orphans.last() != Some(&id) {
                plan.orphans.push(id);
            }
            plan.orphan_objects.push(o);
        } else if plan.incomplete.last() != Some(&id) {
            plan.incomplete.push(id);
        }
    }

    lock_orphans(repo, &prefix, &mut plan, now).await?;

    for o in wal {
        let Some(name) = wal_file_of_key(&o.key) else { continue };
        if name.kind == WalFileKind::History {
            continue;
        }
        if matches!(name.segment_number(size), Ok(Some(n)) if n < cut) {
            plan.wal.push(o);
        }
    }
    // Each WAL object is asked on its own (as many requests as deleting them takes): WAL is
    // written by many processes over time, each under the period configured then, and
    // segments of one timeline may be archived late or out of order, so no object's date
    // answers for another's. Locked ones wait for a later run; the kept backups need none.
    let keys: Vec<ObjectKey> = plan.wal.iter().map(|o| o.key.clone()).collect();
    let until = locks::locked_until(repo, &keys, now).await?;
    let (mut free, mut locked) = (vec![], vec![]);
    for (o, u) in std::mem::take(&mut plan.wal).into_iter().zip(until) {
        match u {
            Some(u) => locked.push((o, u)),
            None => free.push(o),
        }
    }
    (plan.wal, plan.locked_wal) = (free, locked);
    Ok(plan)
}

/// Leaves whole (and reports) each backup without a catalog entry some of whose objects are
/// still locked: with no entry to answer for them, every object is asked.
async fn lock_orphans(
    repo: &Repository,
    prefix: &str,
    plan: &mut ExpirePlan,
    now: OffsetDateTime,
) -> Result<(), Failure> {
    let keys: Vec<ObjectKey> = plan.orphan_objects.iter().map(|o| o.key.clone()).collect();
    let mut locked: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    for (key, until) in keys.iter().zip(locks::locked_until(repo, &keys, now).await?) {
        let (Some(until), Some(id)) = (until, backup_id_of(prefix, key.as_str())) else { continue };
        let latest = locked.entry(id).or_insert(until);
        *latest = (*latest).max(until);
    }
    if !locked.is_empty() {
        plan.orphan_objects.retain(|o| backup_id_of(prefix, o.key.as_str()).is_none_or(|id| !locked.contains_key(&id)));
        plan.orphans.retain(|id| !locked.contains_key(id));
        plan.locked_orphans = locked.into_iter().collect();
    }
    Ok(())
}

/// A lock's end for the report: RFC 3339, whole seconds.
fn until_text(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0).unwrap_or(t).format(&Rfc3339).unwrap_or_default()
}

/// Deletes `keys`, [`PARALLEL_DELETES`] at a time, each with the configured retries.
async fn delete_all(repo: &Repository, keys: Vec<ObjectKey>) -> Result<(), Failure> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut keys = keys.into_iter();
    loop {
        while tasks.len() < PARALLEL_DELETES {
            let Some(key) = keys.next() else { break };
            let repo = repo.clone();
            tasks.spawn(async move {
                retry(repo.retry_policy(), "delete", || repo.storage().delete(&key)).await.map_err(Failure::from)
            });
        }
        match tasks.join_next().await {
            None => return Ok(()),
            Some(r) => r.map_err(|e| Failure::msg(FailureKind::LocalIo, format!("delete task: {e}")))??,
        }
    }
}

/// Carries out `plan`: catalog entries first, then the backups' objects, then WAL. Returns
/// why the objects and WAL were left for the next run, if they were.
///
/// A restore writes its lease before it plans. One that chose an expired backup did so
/// before that backup's catalog entry was deleted, so its lease exists when the leases are
/// read again right after the entries are gone: if any restore lease appeared that is still
/// planning or holds an expired backup, nothing more is deleted this run (the objects become
/// orphans of entries that no longer exist, deleted by a later run).
pub async fn execute(repo: &Repository, plan: &ExpirePlan) -> Result<Option<String>, Failure> {
    for e in &plan.expired {
        let key = ObjectKey::new(catalog::entry_key(repo.cluster(), &e.id))?;
        retry(repo.retry_policy(), "delete catalog entry", || repo.storage().delete(&key)).await?;
        tracing::info!(backup = %e.id, "expired: catalog entry deleted");
    }
    if !plan.expired.is_empty() {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for (key, l) in lease::restore_leases(repo).await? {
            let holds_expired = l.backup.as_ref().is_none_or(|id| plan.expired.iter().any(|e| &e.id == id));
            if l.active(now) && holds_expired {
                return Ok(Some(format!(
                    "a restore started while expire ran ({key}): the expired backups' chunks and the WAL before \
                     {} are left for the next run",
                    plan.wal_keep_from.as_deref().unwrap_or("the kept backups")
                )));
            }
        }
    }
    let objects = plan.backup_objects.iter().chain(&plan.orphan_objects);
    delete_all(repo, objects.map(|o| o.key.clone()).collect()).await?;
    delete_all(repo, plan.wal.iter().map(|o| o.key.clone()).collect()).await?;
    delete_all(repo, plan.ended_leases.clone()).await?;
    Ok(None)
}

/// The report `expire` prints.
/// The report's lines about what is kept and what goes (printed before anything is deleted).
pub fn report(plan: &ExpirePlan, policy: &Policy, now: OffsetDateTime) -> String {
    let mut out = format!("policy: {}\n", policy.describe(now));
    if plan.latest_path.contains('→') {
        out.push_str(&format!(
            "timelines: {} (the newest timeline's path; the policy keeps its backups too)\n",
            plan.latest_path
        ));
    }
    for e in &plan.kept {
        out.push_str(&format!("keep    {}  stopped {}  {} stored\n", e.id, e.stop_time, human(e.stored_bytes)));
    }
    for e in &plan.expired {
        out.push_str(&format!("expire  {}  stopped {}  {} stored\n", e.id, e.stop_time, human(e.stored_bytes)));
    }
    if let Some(first) = &plan.wal_keep_from {
        let bytes: u64 = plan.wal.iter().map(|o| o.size).sum();
        out.push_str(&format!("WAL before {first}: {} file(s), {}\n", plan.wal.len(), human(bytes)));
    }
    if !plan.orphans.is_empty() {
        let bytes: u64 = plan.orphan_objects.iter().map(|o| o.size).sum();
        out.push_str(&format!(
            "interrupted backup(s) without a catalog entry: {} ({} file(s), {})\n",
            plan.orphans.join(", "),
            plan.orphan_objects.len(),
            human(bytes)
        ));
    }
    if let Some(key) = &plan.planning_restore {
        out.push_str(&format!(
            "a restore is being planned ({key}): it may choose any backup, so nothing is expired this run\n"
        ));
    }
    for id in &plan.leased {
        out.push_str(&format!("kept    {id}  because a restore in progress uses it (a lease in leases/)\n"));
    }
    for (id, until) in &plan.locked {
        out.push_str(&format!(
            "kept    {id}  locked until {} (S3 Object Lock): the policy expires it, a run after that deletes it\n",
            until_text(*until)
        ));
    }
    if let Some(latest) = plan.locked_wal.iter().map(|(_, u)| *u).max() {
        let bytes: u64 = plan.locked_wal.iter().map(|(o, _)| o.size).sum();
        out.push_str(&format!(
            "WAL left: {} file(s), {}, locked until {} at the latest (S3 Object Lock), for a later run\n",
            plan.locked_wal.len(),
            human(bytes),
            until_text(latest)
        ));
    }
    for (id, until) in &plan.locked_orphans {
        out.push_str(&format!(
            "left    {id}  (no catalog entry) locked until {} (S3 Object Lock), for a later run\n",
            until_text(*until)
        ));
    }
    for (e, problems) in &plan.damaged {
        out.push_str(&format!(
            "damaged {}  stopped {}  {} object(s) missing, e.g. {}: not counted by the policy, left alone (see \
             basebackup verify)\n",
            e.id,
            e.stop_time,
            problems.len(),
            problems[0]
        ));
    }
    if !plan.incomplete.is_empty() {
        out.push_str(&format!(
            "left alone (no catalog entry yet, may be in progress): {}\n",
            plan.incomplete.join(", ")
        ));
    }
    out
}

/// The report's last line, once the deletions are done (or, dry, instead of them).
pub fn outcome(plan: &ExpirePlan, dry_run: bool) -> String {
    let (files, bytes) = plan.totals();
    if dry_run {
        format!("dry run: nothing deleted; would delete {files} object(s), {}\n", human(bytes))
    } else {
        format!("expired {} backup(s); deleted {files} object(s), {}\n", plan.expired.len(), human(bytes))
    }
}

/// The same as one JSON document.
pub fn report_json(plan: &ExpirePlan, dry_run: bool) -> serde_json::Value {
    let (files, bytes) = plan.totals();
    serde_json::json!({
        "dry_run": dry_run,
        "timelines": plan.latest_path,
        "kept": plan.kept.iter().map(|e| &e.id).collect::<Vec<_>>(),
        "expired": plan.expired.iter().map(|e| serde_json::json!({"id": e.id, "stored_bytes": e.stored_bytes})).collect::<Vec<_>>(),
        "wal_keep_from": plan.wal_keep_from,
        "wal_files": plan.wal.len(),
        "wal_bytes": plan.wal.iter().map(|o| o.size).sum::<u64>(),
        "orphans": plan.orphans,
        "incomplete": plan.incomplete,
        "leased": plan.leased,
        "planning_restore": plan.planning_restore,
        "damaged": plan.damaged.iter().map(|(e, p)| serde_json::json!({"id": e.id, "problems": p})).collect::<Vec<_>>(),
        "locked": plan.locked.iter().map(|(id, u)| serde_json::json!({"id": id, "locked_until": until_text(*u)})).collect::<Vec<_>>(),
        "locked_orphans": plan.locked_orphans.iter().map(|(id, u)| serde_json::json!({"id": id, "locked_until": until_text(*u)})).collect::<Vec<_>>(),
        "locked_wal_files": plan.locked_wal.len(),
        "locked_wal_until": plan.locked_wal.iter().map(|(_, u)| *u).max().map(until_text),
        "deleted_objects": files,
        "deleted_bytes": bytes,
    })
}

/// `basebackup expire`: plans, prints, and unless `dry_run` deletes.
pub async fn expire(config: &Config, policy: Policy, dry_run: bool, json: bool) -> Result<(), Failure> {
    let repo = config.open_repository(false).await?;
    let now = OffsetDateTime::now_utc();
    let plan = plan(&repo, &policy, now).await?;
    // The plan first: if a deletion fails part-way, what was meant to go is on record.
    if !json {
        print!("{}", report(&plan, &policy, now));
        std::io::Write::flush(&mut std::io::stdout()).map_err(|e| Failure::new(FailureKind::LocalIo, e))?;
    }
    let mut left = None;
    if !dry_run {
        left = execute(&repo, &plan).await?;
    }
    if let Some(why) = &left {
        eprintln!("basebackup expire: {why}");
    }
    if json {
        println!("{}", report_json(&plan, dry_run));
    } else {
        print!("{}", outcome(&plan, dry_run));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{Body, PutMode, Storage};
    use common::wal::{SystemId, TimelineId};
    use time::macros::datetime;

    use common::wal::WalFileName;

    use super::*;

    /// A backup that started at `start` and ended a minute later, its WAL in segment `seg`.
    fn entry(start: OffsetDateTime, seg: u64) -> BackupEntry {
        let size = WalSegmentSize::DEFAULT;
        let first = WalFileName::segment(TimelineId(1), seg, size).to_string();
        BackupEntry {
            version: catalog::CATALOG_VERSION,
            id: catalog::backup_id(start),
            label: "t".into(),
            system_id: SystemId(1),
            server_version_num: 150000,
            segment_size: size.bytes(),
            start_lsn: common::lsn::Lsn(seg * size.bytes() + 40),
            start_timeline: TimelineId(1),
            stop_lsn: common::lsn::Lsn(seg * size.bytes() + 400),
            stop_timeline: TimelineId(1),
            start_time: start.format(&Rfc3339).unwrap(),
            stop_time: (start + time::Duration::minutes(1)).format(&Rfc3339).unwrap(),
            archives: vec![],
            manifest_checksum: "00".into(),
            wal_start_segment: first.clone(),
            wal_stop_segment: first,
            raw_bytes: 10,
            stored_bytes: 5,
        }
    }

    pub(super) const NOW: OffsetDateTime = datetime!(2026-12-10 12:00 UTC);

    /// Backups on days 1, 3, 5, 7 and 9 of December, at noon, in segments 2, 4, 6, 8, 10.
    pub(super) fn five() -> Vec<BackupEntry> {
        (0..5).map(|i| entry(datetime!(2026-12-01 12:00 UTC) + time::Duration::days(2 * i), 2 + 2 * i as u64)).collect()
    }

    pub(super) fn policy(n: Option<u32>, within: Option<&str>) -> Policy {
        Policy::resolve(n, within).unwrap()
    }

    #[test]
    fn policy_needs_a_rule_and_a_positive_count() {
        assert_eq!(Policy::resolve(None, None).unwrap_err().kind, FailureKind::Usage);
        assert_eq!(Policy::resolve(Some(0), None).unwrap_err().kind, FailureKind::Usage);
        let e = Policy::resolve(None, Some("a week")).unwrap_err();
        assert_eq!(e.kind, FailureKind::Usage);
        assert!(e.to_string().contains("keep-within"), "{e}");
        assert_eq!(policy(None, Some("7d")).keep_within, Some(Duration::from_secs(7 * 86400)));
    }

    /// A bad value is a usage error from a flag or its variable, a configuration error from
    /// the file, and the message says which to fix.
    #[test]
    fn a_bad_value_is_judged_by_where_it_came_from() {
        let file = Source::File("/etc/pitr/pitr.toml".into());
        let e = Policy::resolve_from(Some((0, file.clone())), None).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains("keep-backups in /etc/pitr/pitr.toml"), "{e}");
        let e = Policy::resolve_from(Some((0, Source::Flag)), None).unwrap_err();
        assert_eq!(e.kind, FailureKind::Usage);
        assert!(e.to_string().contains("--keep-backups"), "{e}");
        let e = Policy::resolve_from(None, Some(("soon", Source::Env))).unwrap_err();
        assert_eq!(e.kind, FailureKind::Usage);
        assert!(e.to_string().contains("PITR_KEEP_WITHIN"), "{e}");
        let e = Policy::resolve_from(Some((2, Source::Flag)), Some(("soon", file))).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config, "the file's bad value, though a flag is fine");
    }

    #[test]
    fn keep_backups_keeps_the_newest() {
        let b = five();
        let b: Vec<&BackupEntry> = b.iter().collect();
        assert_eq!(oldest_kept(&b, &policy(Some(2), None), NOW).unwrap(), Some(3));
        assert_eq!(oldest_kept(&b, &policy(Some(1), None), NOW).unwrap(), Some(4));
        assert_eq!(oldest_kept(&b, &policy(Some(9), None), NOW).unwrap(), Some(0));
        assert_eq!(oldest_kept(&[], &policy(Some(1), None), NOW).unwrap(), None);
    }

    #[test]
    fn keep_within_keeps_the_backup_before_the_window() {
        let b = five();
        let b: Vec<&BackupEntry> = b.iter().collect();
        // Window from Dec 6 12:00: the Dec 5 backup (ended 12:01) restores to its start.
        assert_eq!(oldest_kept(&b, &policy(None, Some("4d")), NOW).unwrap(), Some(2));
        // Window from Dec 5 12:01 exactly: the Dec 5 backup ended at its start, still needed.
        let w = policy(None, Some("4days 23h 59min"));
        assert_eq!(oldest_kept(&b, &w, NOW).unwrap(), Some(2));
        // Every backup ended inside a long window: all kept.
        assert_eq!(oldest_kept(&b, &policy(None, Some("30d")), NOW).unwrap(), Some(0));
        // A short window keeps the newest backup, never none.
        assert_eq!(oldest_kept(&b, &policy(None, Some("1h")), NOW).unwrap(), Some(4));
        // Both rules: the union.
        assert_eq!(oldest_kept(&b, &policy(Some(4), Some("1h")), NOW).unwrap(), Some(1));
        assert_eq!(oldest_kept(&b, &policy(Some(1), Some("4d")), NOW).unwrap(), Some(2));
    }

    /// The scenario of a point-in-time restore: backups B1..B3 on timeline 1 (segments 2, 4,
    /// 6); a restore to a time after B1 from B1 forked timeline 2 in segment 3; B4 was then
    /// taken on timeline 2. The newest backups by time include B3, on the abandoned branch;
    /// the live timeline needs B1 (and the WAL from segment 2), and B4.
    #[test]
    fn backups_on_the_newest_timelines_path_are_kept_too() {
        let size = WalSegmentSize::DEFAULT;
        let mut b = five()[..4].to_vec();
        b[3].start_timeline = TimelineId(2);
        b[3].stop_timeline = TimelineId(2);
        b[3].start_lsn = common::lsn::Lsn(4 * size.bytes() + 40);
        b[3].stop_lsn = common::lsn::Lsn(4 * size.bytes() + 400);
        b[3].wal_start_segment = WalFileName::segment(TimelineId(2), 4, size).to_string();
        let fork = common::wal::history::HistoryEntry {
            parent: TimelineId(1),
            switch_point: common::lsn::Lsn(3 * size.bytes() + 100),
            reason: String::new(),
        };
        let path = TimelinePath::new(TimelineId(2), &[fork]);
        let keep = |n: Option<u32>, w: Option<&str>| kept(&b, &path, &policy(n, w), NOW).unwrap();
        // By time alone B3 and B4 are the two newest; on timeline 2's path B1 and B4 are.
        assert_eq!(keep(Some(2), None), [true, false, true, true]);
        assert_eq!(keep(Some(1), None), [false, false, false, true]);
        // Dec 7 12:00: on all, B4 (Dec 7) is inside and B3 (Dec 5) before: B3, B4; on the
        // path, B1 (Dec 1) is the newest before the window.
        assert_eq!(keep(None, Some("3d")), [true, false, true, true]);
        let kept_entries: Vec<BackupEntry> =
            b.iter().zip(keep(Some(2), None)).filter(|(_, k)| *k).map(|(e, _)| e.clone()).collect();
        assert_eq!(wal_cut(&kept_entries).unwrap().1, 2, "the WAL from B1 on stays");
        // Timeline 1 only: the policy by time.
        let one = TimelinePath::new(TimelineId(1), &[]);
        assert_eq!(kept(&b[..3], &one, &policy(Some(1), None), NOW).unwrap(), [false, false, true]);
    }

    #[test]
    fn wal_is_kept_from_the_lowest_start_of_any_kept_backup() {
        // The newest backup is on timeline 2, which forked (after a restore to an earlier
        // time) before the older kept backup's start: its WAL starts lower.
        let mut b = five()[3..].to_vec();
        let size = WalSegmentSize::DEFAULT;
        b[1].start_timeline = TimelineId(2);
        b[1].wal_start_segment = WalFileName::segment(TimelineId(2), 6, size).to_string();
        let (_, cut, name) = wal_cut(&b).unwrap();
        assert_eq!((cut, name.as_str()), (6, "000000020000000000000006"));
        b[1].wal_start_segment = "garbage".into();
        assert_eq!(wal_cut(&b).unwrap_err().kind, FailureKind::Corrupt);
    }

    async fn put(storage: &dyn Storage, key: &str, len: usize) {
        let key = ObjectKey::new(key).unwrap();
        storage.put(&key, Body::Bytes(Bytes::from(vec![0u8; len])), PutMode::CreateNew).await.unwrap();
    }

    async fn keys(storage: &dyn Storage) -> Vec<String> {
        storage.list("").await.unwrap().into_iter().map(|o| o.key.as_str().to_string()).collect()
    }

    #[tokio::test]
    async fn expires_entries_chunks_and_wal_before_the_oldest_kept_backup() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let repo = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let backups = five();
        for b in &backups {
            let json = serde_json::to_vec(b).unwrap();
            let key = ObjectKey::new(catalog::entry_key("main", &b.id)).unwrap();
            storage.put(&key, Body::Bytes(Bytes::from(json)), PutMode::CreateNew).await.unwrap();
            put(&*storage, &catalog::chunk_key("main", &b.id, "base.tar", 0), 100).await;
            put(&*storage, &catalog::manifest_key("main", &b.id), 10).await;
        }
        // WAL segments 1..=11 of timeline 1, a .backup and a .partial file, two history files,
        // the receiver's partial of segment 3 and of segment 11.
        let size = WalSegmentSize::DEFAULT;
        for seg in 1..=11 {
            let n = WalFileName::segment(TimelineId(1), seg, size);
            put(&*storage, &format!("main/wal/{}/{n}.zst", n.timeline_log_prefix()), 7).await;
        }
        put(&*storage, "main/wal/0000000100000000/000000010000000000000004.00000028.backup.zst", 1).await;
        put(&*storage, "main/wal/0000000100000000/000000010000000000000005.partial.zst", 3).await;
        // A history file (a real object: expire reads the newest timeline's), of a timeline
        // that forked after the last backup.
        let history = b"1\t0/B000000\tno recovery target specified\n";
        let mut obj = std::io::Cursor::new(Vec::new());
        let opts = common::codec::CompressOptions { level: 3, workers: 0 };
        common::codec::compress(&[], &mut &history[..], &mut obj, "00000002.history", None, opts).unwrap();
        let key = ObjectKey::new("main/wal/00000002.history.zst").unwrap();
        storage.put(&key, Body::Bytes(Bytes::from(obj.into_inner())), PutMode::CreateNew).await.unwrap();
        put(&*storage, "main/receiver/000000010000000000000003.partial.zst", 2).await;
        put(&*storage, "main/receiver/00000001000000000000000B.partial.zst", 2).await;
        // An interrupted backup long ago, one whose entry an interrupted expire deleted, and
        // one still running (newer than the kept ones).
        put(&*storage, "main/backups/20261101T000000Z/base.tar/000000.zst", 50).await;
        put(&*storage, "main/backups/20261102T000000Z/backup_manifest.zst", 5).await;
        put(&*storage, "main/backups/20261210T110000Z/base.tar/000000.zst", 50).await;
        // Another cluster's objects are not touched.
        put(&*storage, "other/wal/0000000100000000/000000010000000000000001.zst", 7).await;
        let before = keys(&*storage).await;

        let p = policy(Some(2), None);
        let dry = plan(&repo, &p, NOW).await.unwrap();
        assert_eq!(
            dry.expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            [&backups[0].id, &backups[1].id, &backups[2].id]
        );
        assert_eq!(dry.kept.len(), 2);
        assert_eq!(dry.wal_keep_from.as_deref(), Some("000000010000000000000008"));
        assert_eq!(dry.orphans, ["20261101T000000Z", "20261102T000000Z"]);
        assert_eq!(dry.incomplete, ["20261210T110000Z"]);
        let text = report(&dry, &p, NOW) + &outcome(&dry, true);
        assert!(text.contains("dry run: nothing deleted"), "{text}");
        assert!(text.contains("timelines: 1 → 2 (from 0/B000000)"), "{text}");
        assert_eq!(keys(&*storage).await, before, "planning deletes nothing");

        assert_eq!(execute(&repo, &dry).await.unwrap(), None);
        let after = keys(&*storage).await;
        let mut expected: Vec<String> = before
            .iter()
            .filter(|k| {
                let gone_backup =
                    [&backups[0].id, &backups[1].id, &backups[2].id, "20261101T000000Z", "20261102T000000Z"]
                        .iter()
                        .any(|id| k.starts_with(&format!("main/backups/{id}")));
                let gone_wal = k.starts_with("main/wal/0000000100000000/00000001000000000000000")
                    && k.as_bytes()["main/wal/0000000100000000/00000001000000000000000".len()] < b'8';
                let gone_rx = k.as_str() == "main/receiver/000000010000000000000003.partial.zst";
                !(gone_backup || gone_wal || gone_rx)
            })
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(after, expected);
        assert!(after.contains(&"main/wal/00000002.history.zst".to_string()));
        assert!(after.contains(&"main/wal/0000000100000000/000000010000000000000008.zst".to_string()));
        assert!(after.contains(&"other/wal/0000000100000000/000000010000000000000001.zst".to_string()));
        assert_eq!(catalog::list_entries(&repo).await.unwrap(), backups[3..].to_vec());

        // A second run finds nothing more to do.
        let again = plan(&repo, &p, NOW).await.unwrap();
        assert_eq!(again.totals(), (0, 0));
        assert!(again.expired.is_empty());
    }

    /// A recorded backup with a missing chunk (what a concurrent create's cleanup once left)
    /// cannot restore: `--keep-backups 1` keeps the newest intact backup and its WAL instead of
    /// keeping only the broken one, and the broken one is reported and left alone.
    #[tokio::test]
    async fn a_damaged_backup_never_counts_as_kept() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let repo = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let mut backups = five()[2..].to_vec();
        for b in &mut backups {
            b.archives = vec![catalog::ArchiveEntry {
                name: "base.tar".into(),
                tablespace_oid: None,
                tablespace_path: None,
                chunks: 1,
                raw_bytes: 10,
                stored_bytes: 5,
            }];
            let json = serde_json::to_vec(b).unwrap();
            let key = ObjectKey::new(catalog::entry_key("main", &b.id)).unwrap();
            storage.put(&key, Body::Bytes(Bytes::from(json)), PutMode::CreateNew).await.unwrap();
            put(&*storage, &catalog::chunk_key("main", &b.id, "base.tar", 0), 100).await;
            put(&*storage, &catalog::manifest_key("main", &b.id), 10).await;
        }
        let newest = backups[2].id.clone();
        storage.delete(&ObjectKey::new(catalog::chunk_key("main", &newest, "base.tar", 0)).unwrap()).await.unwrap();

        let p = policy(Some(1), None);
        let plan = plan(&repo, &p, NOW).await.unwrap();
        assert_eq!(plan.kept.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [backups[1].id.as_str()]);
        assert_eq!(plan.expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [backups[0].id.as_str()]);
        assert_eq!(plan.damaged.len(), 1);
        assert_eq!(plan.damaged[0].0.id, newest);
        assert!(plan.backup_objects.iter().all(|o| !o.key.as_str().contains(&newest)), "the damaged one stays");
        let text = report(&plan, &p, NOW);
        assert!(text.contains(&format!("damaged {newest}")) && text.contains("object(s) missing"), "{text}");
    }

    /// Three backups with a chunk and a manifest each, and WAL segments 1..=11.
    async fn three_backups(storage: &Arc<dyn Storage>) -> Vec<BackupEntry> {
        let backups = five()[2..].to_vec();
        for b in &backups {
            let json = serde_json::to_vec(b).unwrap();
            let key = ObjectKey::new(catalog::entry_key("main", &b.id)).unwrap();
            storage.put(&key, Body::Bytes(Bytes::from(json)), PutMode::CreateNew).await.unwrap();
            put(&**storage, &catalog::chunk_key("main", &b.id, "base.tar", 0), 100).await;
            put(&**storage, &catalog::manifest_key("main", &b.id), 10).await;
        }
        for seg in 1..=11 {
            let n = WalFileName::segment(TimelineId(1), seg, WalSegmentSize::DEFAULT);
            put(&**storage, &format!("main/wal/{}/{n}.zst", n.timeline_log_prefix()), 7).await;
        }
        backups
    }

    /// A restore in progress keeps what it uses: the backup its lease names (and the WAL from
    /// it on); a restore still planning keeps everything; a lease that has ended keeps nothing
    /// and is deleted.
    #[tokio::test]
    async fn restore_leases_keep_what_a_restore_uses() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let repo = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let backups = three_backups(&storage).await;
        let p = policy(Some(1), None);
        let now = OffsetDateTime::now_utc();

        let mut planning = lease::RestoreLeaseHandle::begin(&repo, Duration::from_secs(600)).await.unwrap();
        let plan1 = plan(&repo, &p, now).await.unwrap();
        assert!(plan1.expired.is_empty() && plan1.planning_restore.is_some(), "{plan1:?}");
        assert!(report(&plan1, &p, now).contains("a restore is being planned"));

        planning.hold(&backups[0].id, &backups[0].wal_start_segment, Duration::from_secs(600)).await;
        let plan2 = plan(&repo, &p, now).await.unwrap();
        assert_eq!(plan2.leased, [backups[0].id.clone()]);
        assert_eq!(plan2.expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [backups[1].id.as_str()]);
        assert_eq!(plan2.wal_keep_from.as_deref(), Some(backups[0].wal_start_segment.as_str()));

        // Ended: not honoured, and deleted with the run.
        planning.hold(&backups[0].id, &backups[0].wal_start_segment, Duration::ZERO).await;
        let plan3 = plan(&repo, &p, now + time::Duration::seconds(5)).await.unwrap();
        assert_eq!(plan3.expired.len(), 2);
        assert_eq!(plan3.ended_leases.len(), 1);
        assert_eq!(execute(&repo, &plan3).await.unwrap(), None);
        assert!(lease::restore_leases(&repo).await.unwrap().is_empty());
    }

    /// A restore that starts while expire runs (its lease written after expire planned) and
    /// may have chosen a backup that expire is removing: expire stops after the catalog
    /// entries and leaves the chunks and the WAL for a later run.
    #[tokio::test]
    async fn a_restore_that_starts_during_expire_keeps_its_chunks_and_wal() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let repo = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let backups = three_backups(&storage).await;
        let p = policy(Some(1), None);
        let plan = plan(&repo, &p, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(plan.expired.len(), 2);
        let before = keys(&*storage).await;
        let lease = lease::RestoreLeaseHandle::begin(&repo, Duration::from_secs(600)).await.unwrap();
        let left = execute(&repo, &plan).await.unwrap();
        assert!(left.is_some_and(|w| w.contains("a restore started while expire ran")));
        let after = keys(&*storage).await;
        for e in &backups[..2] {
            assert!(!after.contains(&catalog::entry_key("main", &e.id)), "entry deleted");
            assert!(after.contains(&catalog::chunk_key("main", &e.id, "base.tar", 0)), "chunk kept");
        }
        let wal = |k: &&String| k.contains("/wal/");
        assert_eq!(after.iter().filter(wal).count(), before.iter().filter(wal).count(), "no WAL deleted");
        lease.release().await;
    }
}

/// S3 Object Lock in the plan, against a store whose objects carry the retain-until dates a
/// test gives them (the planner's `now` moves instead of the clock).
#[cfg(test)]
mod lock_tests {
    use std::collections::BTreeMap;
    use std::ops::Range;
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use bytes::Bytes;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{Body, ObjectReader, PutMode, Storage, StorageError};
    use common::wal::{TimelineId, WalFileName};
    use time::macros::datetime;

    use super::tests::{five, policy, NOW};
    use super::*;

    /// Memory, plus a retain-until date per key.
    #[derive(Debug, Default)]
    struct Locked {
        inner: MemoryStorage,
        until: Mutex<BTreeMap<String, SystemTime>>,
    }

    impl Locked {
        fn lock(&self, key: &str, until: OffsetDateTime) {
            self.until.lock().unwrap().insert(key.to_string(), until.into());
        }
    }

    #[async_trait::async_trait]
    impl Storage for Locked {
        async fn put(&self, key: &ObjectKey, body: Body, mode: PutMode) -> Result<(), StorageError> {
            self.inner.put(key, body, mode).await
        }
        async fn get(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
            self.inner.get(key).await
        }
        async fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StorageError> {
            self.inner.read_range(key, range).await
        }
        async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
            // As S3 without a version id: a locked object is "deleted" (hidden), and the test
            // fails if that ever happens to one whose lock is ahead.
            let until = self.until.lock().unwrap().get(key.as_str()).copied();
            assert!(
                until.is_none_or(|u| OffsetDateTime::from(u) <= datetime!(2026-12-13 12:00 UTC)),
                "deleted a locked object: {key}"
            );
            self.inner.delete(key).await
        }
        async fn retention(&self, key: &ObjectKey) -> Result<Option<SystemTime>, StorageError> {
            self.inner.head(key).await?;
            Ok(self.until.lock().unwrap().get(key.as_str()).copied())
        }
    }

    async fn put(storage: &dyn Storage, key: &str) {
        let key = ObjectKey::new(key).unwrap();
        storage.put(&key, Body::Bytes(Bytes::from_static(b"0123456")), PutMode::CreateNew).await.unwrap();
    }

    async fn left(storage: &dyn Storage, prefix: &str) -> Vec<String> {
        storage.list(prefix).await.unwrap().into_iter().map(|o| o.key.to_string()).collect()
    }

    fn seg(n: u64) -> String {
        let name = WalFileName::segment(TimelineId(1), n, WalSegmentSize::DEFAULT);
        format!("main/wal/{}/{name}.zst", name.timeline_log_prefix())
    }

    /// Backups of Dec 5, 7 and 9 (segments 6, 8, 10), WAL 1..=11 and an interrupted backup of
    /// Nov 1. Locked until after NOW (Dec 10): the Dec 5 backup's catalog entry, segment 3,
    /// a chunk of the interrupted backup. The Dec 7 backup's lock has passed. With the newest
    /// backup kept, the plan keeps Dec 5 (and the WAL from segment 6) and says until when,
    /// expires Dec 7, leaves segment 3 and the interrupted backup; a plan after the locks
    /// (Dec 13) expires them, and nothing locked is ever deleted.
    #[tokio::test]
    async fn locked_backups_and_wal_stay_until_their_lock_has_passed() {
        let locked = Arc::new(Locked::default());
        let storage: Arc<dyn Storage> = locked.clone();
        let repo = Repository::new(storage.clone(), "main", RetryPolicy::with_retries(0));
        let backups = five()[2..].to_vec();
        for b in &backups {
            let key = ObjectKey::new(catalog::entry_key("main", &b.id)).unwrap();
            storage
                .put(&key, Body::Bytes(Bytes::from(serde_json::to_vec(b).unwrap())), PutMode::CreateNew)
                .await
                .unwrap();
            put(&*storage, &catalog::chunk_key("main", &b.id, "base.tar", 0)).await;
            put(&*storage, &catalog::manifest_key("main", &b.id)).await;
        }
        for n in 1..=11 {
            put(&*storage, &seg(n)).await;
        }
        put(&*storage, "main/backups/20261101T000000Z/base.tar/000000.zst").await;
        put(&*storage, "main/backups/20261101T000000Z/base.tar/000001.zst").await;
        let (dec5, dec7) = (&backups[0].id, &backups[1].id);
        locked.lock(&catalog::entry_key("main", dec5), datetime!(2026-12-12 12:00 UTC));
        locked.lock(&catalog::entry_key("main", dec7), datetime!(2026-12-09 12:00 UTC));
        locked.lock(&seg(3), datetime!(2026-12-11 00:00 UTC));
        locked.lock("main/backups/20261101T000000Z/base.tar/000001.zst", datetime!(2026-12-11 06:00 UTC));

        let p = policy(Some(1), None);
        let plan1 = plan(&repo, &p, NOW).await.unwrap();
        let ids = |v: &[BackupEntry]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&plan1.kept), [dec5.clone(), backups[2].id.clone()]);
        assert_eq!(ids(&plan1.expired), [dec7.as_str()]);
        assert_eq!(plan1.locked, [(dec5.clone(), datetime!(2026-12-12 12:00 UTC))]);
        assert_eq!(plan1.wal_keep_from.as_deref(), Some(backups[0].wal_start_segment.as_str()));
        let wal: Vec<&str> = plan1.wal.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(wal, [seg(1), seg(2), seg(4), seg(5)]);
        assert_eq!(plan1.locked_wal.len(), 1);
        assert_eq!(plan1.locked_wal[0].0.key.as_str(), seg(3));
        assert!(plan1.orphans.is_empty() && plan1.orphan_objects.is_empty(), "{plan1:?}");
        assert_eq!(plan1.locked_orphans, [("20261101T000000Z".to_string(), datetime!(2026-12-11 06:00 UTC))]);

        let text = report(&plan1, &p, NOW);
        assert!(
            text.contains(&format!("kept    {dec5}  locked until 2026-12-12T12:00:00Z (S3 Object Lock)")),
            "{text}"
        );
        assert!(text.contains("WAL left: 1 file(s)") && text.contains("until 2026-12-11T00:00:00Z"), "{text}");
        assert!(
            text.contains("left    20261101T000000Z  (no catalog entry) locked until 2026-12-11T06:00:00Z"),
            "{text}"
        );
        let json = report_json(&plan1, false);
        assert_eq!(json["locked"], serde_json::json!([{"id": dec5, "locked_until": "2026-12-12T12:00:00Z"}]));
        assert_eq!(json["locked_wal_files"], 1);
        assert_eq!(json["locked_wal_until"], "2026-12-11T00:00:00Z");
        assert_eq!(json["locked_orphans"][0]["id"], "20261101T000000Z");

        assert_eq!(execute(&repo, &plan1).await.unwrap(), None);
        assert!(!left(&*storage, "main/backups/").await.iter().any(|k| k.contains(dec7.as_str())));
        assert_eq!(left(&*storage, &format!("main/backups/{dec5}")).await.len(), 3, "entry, chunk and manifest stay");
        assert_eq!(left(&*storage, "main/backups/20261101T000000Z/").await.len(), 2, "left whole");
        let wal_left = left(&*storage, "main/wal/").await;
        assert_eq!(wal_left[0], seg(3));
        assert_eq!(wal_left[1], seg(6));

        // Once the locks have passed, the policy has its way.
        let later = datetime!(2026-12-13 12:00 UTC);
        let plan2 = plan(&repo, &p, later).await.unwrap();
        assert_eq!(ids(&plan2.expired), [dec5.as_str()]);
        assert!(plan2.locked.is_empty() && plan2.locked_wal.is_empty() && plan2.locked_orphans.is_empty());
        assert_eq!(plan2.orphans, ["20261101T000000Z"]);
        assert_eq!(execute(&repo, &plan2).await.unwrap(), None);
        assert_eq!(left(&*storage, "main/wal/").await[0], seg(10));
        assert!(left(&*storage, "main/backups/20261101T000000Z/").await.is_empty());
    }
}
