//! The restore plan, decided before anything is written: which backup, which timeline path,
//! which WAL, and whether the target is reachable. Every refusal names what is missing.
//!
//! - Backup: the newest one on the timeline path that ends before the target (for a time
//!   target, its stop time is not after the target; for an LSN, its stop LSN is not after it;
//!   for an xid or a restore point, its stop LSN is before the segment where that record was
//!   found).
//! - WAL: every segment from the one holding the backup's start to the one holding the target
//!   (at least to the backup's end) must be archived under the name PostgreSQL will ask for,
//!   checked by exact key. The per-segment summaries stored with each segment tell where the
//!   target lies without downloading WAL.
//! - Target: a time target needs an archived commit/abort after it (PostgreSQL stops before
//!   the first such record; without one, recovery would run to the end of the WAL and stop
//!   short of the target); an LSN needs archived WAL past it; an xid, a commit or abort record
//!   of that transaction; a name, its restore point.
//! - The streaming receiver's growing segment: where the archive ends, the receiver's partial
//!   object for exactly the next segment (on the target timeline, which no history file says
//!   ended before that segment's end) is the archive's last segment, as `wal-archiver get`
//!   serves it. Its summary is computed from its records (it is stored without one), so
//!   targets inside its valid WAL are accepted and targets past it refused like any other.

use std::collections::VecDeque;
use std::sync::Arc;

use archive::backup_wal::BackupWal;
use archive::receiver_partial;
use common::catalog::BackupEntry;
use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::wal::history;
use common::wal::record::{PgTimestamp, SegmentSummary};
use common::wal::{TimelineId, WalFileName, WalSegmentSize};
use time::format_description::well_known::Rfc3339;

use crate::source::{Listing, WalSource};
use crate::target::{pg_time_text, Target, TargetKind, TimelineChoice};
use crate::timeline::TimelinePath;

/// Segment summaries read ahead of the one being judged.
const LOOKAHEAD: usize = 16;

/// A plan that can be carried out (`crate::report` prints it as JSON).
#[derive(Debug, Clone)]
pub struct Plan {
    /// The backup to restore.
    pub backup: BackupEntry,
    /// Its id.
    pub backup_id: String,
    /// What was asked.
    pub target: String,
    /// The timeline recovery follows (written as `recovery_target_timeline`).
    pub timeline: u32,
    /// The timeline path, oldest first.
    pub timeline_path: String,
    /// First WAL segment recovery reads.
    pub first_segment: String,
    /// Last WAL segment recovery needs to reach the target (for latest: the last archived).
    pub last_segment: String,
    /// Number of segments from first to last.
    pub segments: u64,
    /// The last segment is the streaming receiver's partial object (its growing segment, not
    /// yet archived complete).
    pub last_segment_from_receiver: bool,
    /// Where the valid WAL in the receiver's partial segment ends, when it is used.
    pub receiver_wal_end: Option<String>,
    /// Where recovery is expected to stop, in words.
    pub stop: String,
    /// The newest commit/abort time in the WAL that recovery will replay, if any.
    pub last_transaction: Option<String>,
    /// For a restore to the latest WAL: the end of the valid WAL in the last segment, where
    /// recovery must get to (`pitr-restore --start` checks that it did).
    pub recovery_end: Option<Lsn>,
    /// The end of the last segment: recovery replays no WAL beyond it.
    pub last_segment_end: Lsn,
    /// Newer backups that would have been chosen but are damaged (missing objects), with why.
    pub skipped_backups: Vec<String>,
}

fn refuse(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Refused, format!("{msg}; nothing was written"))
}

fn stop_time(b: &BackupEntry) -> Result<PgTimestamp, Failure> {
    let t = time::OffsetDateTime::parse(&b.stop_time, &Rfc3339).map_err(|e| {
        Failure::msg(FailureKind::Corrupt, format!("backup {}: unreadable stop time {:?}: {e}", b.id, b.stop_time))
    })?;
    Ok(PgTimestamp::from_unix_micros((t.unix_timestamp_nanos() / 1000) as i64))
}

/// First and last segment a backup needs (`archive::backup_wal`).
fn backup_segments(b: &BackupEntry, size: WalSegmentSize) -> (u64, u64) {
    let r = BackupWal::from_lsns(b, size);
    (r.first_segno, r.last_segno)
}

/// Decides the timeline path for `choice`.
async fn timeline_path(
    src: &dyn WalSource,
    choice: TimelineChoice,
    listing: &Listing,
    backup_tli: Option<TimelineId>,
) -> Result<TimelinePath, Failure> {
    let tli = match choice {
        TimelineChoice::Id(t) => t,
        TimelineChoice::Current => backup_tli.unwrap_or(TimelineId(1)),
        TimelineChoice::Latest => {
            // Start from what the listing shows, then probe by exact key as PostgreSQL does.
            let mut t = listing.histories.iter().next_back().copied().unwrap_or(TimelineId(1));
            while src.history(TimelineId(t.0 + 1)).await?.is_some() {
                t = TimelineId(t.0 + 1);
            }
            t
        }
    };
    if tli.0 == 1 {
        return Ok(TimelinePath::new(tli, &[]));
    }
    match src.history(tli).await? {
        Some(h) => Ok(TimelinePath::new(tli, &h)),
        None => Err(refuse(format!(
            "timeline {tli} has no history file ({:08X}.history) in the repository, so its ancestry is unknown",
            tli.0
        ))),
    }
}

/// How a scan of archived segments ended.
struct Scan {
    /// The last segment recovery needs.
    last: u64,
    /// The newest commit/abort time seen.
    last_xact: Option<PgTimestamp>,
    /// When the last segment is the receiver's partial object: the end of its valid WAL.
    partial: Option<Option<Lsn>>,
    /// The end of the valid WAL in the last segment (its summary's).
    end: Option<Lsn>,
}

/// Where a scan stops: `Some(segment)` when the target lies in it.
type Found = Option<u64>;

/// Judges one segment's summary: the segment holding the target, if this is it.
type Judge<'a> = &'a mut (dyn FnMut(u64, &SegmentSummary) -> Found + Send);

/// A summary lookup in flight.
type Lookup = (u64, WalFileName, tokio::task::JoinHandle<Result<Option<SegmentSummary>, Failure>>);

/// What a scan reads from: the archive along one timeline path.
struct Archive<'a> {
    src: &'a Arc<dyn WalSource>,
    path: &'a TimelinePath,
    size: WalSegmentSize,
    listing: &'a Listing,
    /// The restore point a `--target-name` looks for: reaching the end of the archive without
    /// it means there is no such restore point, not a target "beyond" the archive.
    restore_point: Option<&'a str>,
}

/// The refusal when the archive ends before a restore point named `name` was found.
fn no_restore_point(name: &str, from: &WalFileName, end: &str, seen: &std::collections::BTreeSet<String>) -> Failure {
    let others = if seen.is_empty() {
        "it holds none".to_string()
    } else {
        let mut names: Vec<&str> = seen.iter().map(String::as_str).take(10).collect();
        if seen.len() > 10 {
            names.push("...");
        }
        format!("it holds {}", names.join(", "))
    };
    refuse(format!(
        "no restore point named {name:?} in the archived WAL from segment {from} to {end} ({others}); \
         restore points are made with pg_create_restore_point('{name}') and must be archived"
    ))
}

/// Reads summaries from `from` on, in order, `LOOKAHEAD` at a time; calls `judge` on each
/// until it returns the segment that holds the target and `min_end` is reached.
/// `judge == None` (latest) scans to the end of the archive.
async fn scan(
    archive: &Archive<'_>,
    from: u64,
    min_end: u64,
    mut judge: Option<Judge<'_>>,
    what: &str,
) -> Result<Scan, Failure> {
    let Archive { src, path, size, listing, restore_point } = *archive;
    let mut seen_points = std::collections::BTreeSet::new();
    let first_name = WalFileName::segment(path.tli_for_segment(from, size), from, size);
    let mut pending: VecDeque<Lookup> = VecDeque::new();
    let mut next = from;
    let mut found: Found = None;
    let mut last_xact: Option<PgTimestamp> = None;
    let mut prev_end: Option<Lsn> = None;
    loop {
        while pending.len() < LOOKAHEAD {
            let name = WalFileName::segment(path.tli_for_segment(next, size), next, size);
            let (s, n) = (src.clone(), name);
            pending.push_back((next, name, tokio::spawn(async move { s.segment(&n).await })));
            next += 1;
        }
        let Some((segno, name, task)) = pending.pop_front() else { unreachable!("the queue was just filled") };
        let summary = task.await.map_err(|e| Failure::msg(FailureKind::LocalIo, format!("lookup task: {e}")))??;
        let Some(summary) = summary else {
            for (_, _, t) in pending {
                t.abort();
            }
            let later = listing
                .segments
                .iter()
                .filter(|n| n.segment_number(size).ok().flatten().is_some_and(|s| s > segno))
                .find(|n| {
                    n.segment_number(size).ok().flatten().is_some_and(|s| path.tli_for_segment(s, size) == n.timeline)
                });
            if segno <= min_end {
                return Err(refuse(format!(
                    "WAL segment {name}, needed to make the backup consistent, is missing from the repository"
                )));
            }
            // The end of the archive: the receiver's growing segment continues it.
            if later.is_none() && name.timeline == path.target() {
                if let Some(p) = usable_partial(src.as_ref(), &name, segno, size).await? {
                    if let Some(t) = p.last_xact_time.max(p.first_xact_time) {
                        last_xact = Some(last_xact.map_or(t, |l| l.max(t)));
                    }
                    let hit = match judge.as_mut() {
                        None => true,
                        Some(j) => j(segno, &p).is_some(),
                    };
                    if hit {
                        return Ok(Scan { last: segno, last_xact, partial: Some(p.valid_end), end: p.valid_end });
                    }
                    if let Some(n) = restore_point {
                        seen_points.extend(p.restore_points.iter().map(|r| r.name.clone()));
                        return Err(no_restore_point(
                            n,
                            &first_name,
                            &format!("the receiver's partial segment {name}"),
                            &seen_points,
                        ));
                    }
                    let last_time = last_xact.map(|t| format!("; newest transaction end: {}", pg_time_text(t)));
                    return Err(refuse(format!(
                        "{what} is beyond the archived WAL: the archive ends in the receiver's partial segment {name} \
                         (valid WAL up to {}{}); restore to a target before it, or to --target latest",
                        p.valid_end.map_or_else(|| "its start".to_string(), |e| e.to_string()),
                        last_time.unwrap_or_default()
                    )));
                }
            }
            if judge.is_none() {
                if let Some(l) = later {
                    return Err(refuse(format!(
                        "WAL segment {name} is missing from the repository although later WAL ({l}) is archived: \
                         recovery would stop at the gap, short of the latest WAL; restore to a target before it \
                         (--target-time/--target-lsn) or find the missing segment"
                    )));
                }
                return Ok(Scan { last: segno - 1, last_xact, partial: None, end: prev_end });
            }
            if let Some(l) = later {
                return Err(refuse(format!(
                    "WAL segment {name}, between the backup and {what}, is missing from the repository \
                     (later WAL such as {l} is archived): recovery would stop at the gap"
                )));
            }
            if let Some(n) = restore_point {
                return Err(no_restore_point(
                    n,
                    &first_name,
                    &format!("the end of the archive (before {name})"),
                    &seen_points,
                ));
            }
            let last_time = last_xact.map(|t| format!(" (newest archived transaction end: {})", pg_time_text(t)));
            return Err(refuse(format!(
                "{what} is beyond the archived WAL: the archive ends before segment {name}{}; wait until the WAL is \
                 archived (pg_switch_wal() on the primary forces the current segment out), or restore to \
                 --target latest",
                last_time.unwrap_or_default()
            )));
        };
        if let Some(t) = summary.last_xact_time.max(summary.first_xact_time) {
            last_xact = Some(last_xact.map_or(t, |l| l.max(t)));
        }
        prev_end = summary.valid_end;
        if restore_point.is_some() {
            seen_points.extend(summary.restore_points.iter().map(|r| r.name.clone()));
        }
        if found.is_none() {
            if let Some(j) = judge.as_mut() {
                found = j(segno, &summary);
            }
        }
        if let Some(f) = found {
            if segno >= min_end.max(f) {
                for (_, _, t) in pending {
                    t.abort();
                }
                return Ok(Scan { last: segno, last_xact, partial: None, end: summary.valid_end });
            }
        }
    }
}

/// The receiver's partial object for segment `segno` (`name`, on the path's target timeline),
/// when there is one and no history file says its timeline ended before the segment's end
/// (the history files of later timelines are read by exact key until one is missing).
async fn usable_partial(
    src: &dyn WalSource,
    name: &WalFileName,
    segno: u64,
    size: WalSegmentSize,
) -> Result<Option<SegmentSummary>, Failure> {
    let Some(partial) = src.receiver_partial(name).await? else {
        return Ok(None);
    };
    let ended = history::timeline_end(name.timeline, |t| src.history(t)).await?;
    if !receiver_partial::may_serve(ended, segno, size) {
        tracing::info!(segment = %name, "the receiver's partial segment is of a timeline that ended: not used");
        return Ok(None);
    }
    Ok(Some(partial))
}

/// Makes the plan for restoring to `target`, from `backup_id` or the best backup.
pub async fn make_plan(
    src: Arc<dyn WalSource>,
    mut backups: Vec<BackupEntry>,
    target: &Target,
    size: WalSegmentSize,
    backup_id: Option<&str>,
) -> Result<Plan, Failure> {
    backups.retain(|b| b.segment_size == size.bytes());
    if let Some(id) = backup_id {
        backups.retain(|b| b.id == id);
        if backups.is_empty() {
            return Err(Failure::msg(FailureKind::NotFound, format!("no backup {id} (see basebackup list)")));
        }
    }
    if backups.is_empty() {
        return Err(refuse("there is no backup of this cluster in the repository (run basebackup create)"));
    }
    backups.sort_by_key(|b| (b.stop_lsn, b.id.clone()));
    let listing = src.listed().await?;
    let current_tli = backups.last().map(|b| b.stop_timeline);
    let path = timeline_path(src.as_ref(), target.timeline, &listing, current_tli).await?;
    let total = backups.len();
    backups.retain(|b| path.holds(b.start_timeline, b.start_lsn) && path.holds(b.stop_timeline, b.stop_lsn));
    if backups.is_empty() {
        return Err(refuse(format!(
            "none of the {total} backup(s) lies on the history of timeline {} ({}): they were taken on a timeline \
             that forked off; choose --target-timeline accordingly",
            path.target(),
            path.describe()
        )));
    }
    let what = target.describe();
    let restore_point = match &target.kind {
        TargetKind::Name(n) => Some(n.as_str()),
        _ => None,
    };
    let archive = Archive { src: &src, path: &path, size, listing: &listing, restore_point };

    // Choose the backup.
    let oldest = backups[0].clone();
    let chosen = match &target.kind {
        TargetKind::Latest | TargetKind::Immediate => backups.last().cloned(),
        TargetKind::Time(t) => {
            let mut best = None;
            for b in &backups {
                if stop_time(b)? <= *t {
                    best = Some(b.clone());
                }
            }
            if best.is_none() {
                return Err(refuse(format!(
                    "{what} is before the end of the oldest usable backup ({} ended at {}): a restore can only \
                     reach points after a backup has finished",
                    oldest.id, oldest.stop_time
                )));
            }
            best
        }
        TargetKind::Lsn(l) => {
            let best = backups.iter().rev().find(|b| b.stop_lsn <= *l).cloned();
            if best.is_none() {
                return Err(refuse(format!(
                    "{what} is before the end of the oldest usable backup ({} ends at LSN {})",
                    oldest.id, oldest.stop_lsn
                )));
            }
            best
        }
        TargetKind::Xid(_) | TargetKind::Name(_) => {
            // Find the record first, scanning from the oldest backup.
            let (from, min_end) = backup_segments(&oldest, size);
            let mut at: Option<(u64, Lsn)> = None;
            let mut judge = |segno: u64, s: &SegmentSummary| -> Found {
                let hit = match &target.kind {
                    TargetKind::Xid(x) => match (s.xid_min, s.xid_max) {
                        (Some(lo), Some(hi)) if lo <= *x && *x <= hi => Some(Lsn(segno * size.bytes())),
                        _ => None,
                    },
                    TargetKind::Name(n) => s.restore_points.iter().find(|r| &r.name == n).map(|r| r.lsn),
                    _ => None,
                };
                hit.map(|lsn| {
                    at = Some((segno, lsn));
                    segno
                })
            };
            scan(&archive, from, min_end, Some(&mut judge), &what).await?;
            let (_, lsn) = at.ok_or_else(|| refuse(format!("{what} was not found")))?;
            backups.iter().rev().find(|b| b.stop_lsn <= lsn).cloned().or(Some(oldest.clone()))
        }
    };
    let backup = chosen.ok_or_else(|| refuse("no backup precedes the target"))?;
    let (from, min_end) = backup_segments(&backup, size);

    // Check the WAL from the backup to the target.
    let mut stop = String::new();
    let scanned = match &target.kind {
        TargetKind::Latest => {
            let s = scan(&archive, from, min_end, None, &what).await?;
            stop = match s.partial {
                Some(end) => format!(
                    "at the end of the valid WAL in the receiver's partial segment ({}): the last durable commit",
                    end.map_or_else(|| "its start".to_string(), |e| e.to_string())
                ),
                None => "at the end of the archived WAL".into(),
            };
            s
        }
        kind => {
            let mut judge = |segno: u64, s: &SegmentSummary| -> Found {
                let hit = match kind {
                    TargetKind::Immediate => true,
                    TargetKind::Time(t) => {
                        let newest = s.last_xact_time.max(s.first_xact_time);
                        newest.is_some_and(|x| if target.inclusive { x > *t } else { x >= *t })
                    }
                    TargetKind::Lsn(l) => {
                        let seg_of_l = l.segment_number(size);
                        segno > seg_of_l || (segno == seg_of_l && s.valid_end.is_some_and(|e| e > *l))
                    }
                    TargetKind::Xid(x) => {
                        matches!((s.xid_min, s.xid_max), (Some(lo), Some(hi)) if lo <= *x && *x <= hi)
                    }
                    TargetKind::Name(n) => s.restore_points.iter().any(|r| &r.name == n),
                    TargetKind::Latest => false,
                };
                if hit {
                    let name = WalFileName::segment(path.tli_for_segment(segno, size), segno, size);
                    stop = match kind {
                        TargetKind::Immediate => {
                            format!("once backup {} is consistent (LSN {})", backup.id, backup.stop_lsn)
                        }
                        TargetKind::Time(_) => format!(
                            "at the last transaction end not after the target time, found in or before segment {name}"
                        ),
                        TargetKind::Lsn(l) => format!("at LSN {l} (segment {name})"),
                        TargetKind::Xid(x) => format!("at the end of transaction {x}, expected in segment {name}"),
                        TargetKind::Name(n) => format!("at restore point {n:?} in segment {name}"),
                        TargetKind::Latest => String::new(),
                    };
                    Some(segno)
                } else {
                    None
                }
            };
            scan(&archive, from, min_end, Some(&mut judge), &what).await?
        }
    };
    let first = WalFileName::segment(path.tli_for_segment(from, size), from, size);
    let last = WalFileName::segment(path.tli_for_segment(scanned.last, size), scanned.last, size);
    Ok(Plan {
        backup_id: backup.id.clone(),
        backup,
        target: what,
        timeline: path.target().0,
        timeline_path: path.describe(),
        first_segment: first.to_string(),
        last_segment: last.to_string(),
        segments: scanned.last - from + 1,
        last_segment_from_receiver: scanned.partial.is_some(),
        receiver_wal_end: scanned.partial.flatten().map(|l| l.to_string()),
        stop,
        last_transaction: scanned.last_xact.map(pg_time_text),
        recovery_end: if target.kind == TargetKind::Latest { scanned.end } else { None },
        last_segment_end: Lsn((scanned.last + 1) * size.bytes()),
        skipped_backups: Vec::new(),
    })
}

impl Plan {
    /// Where replay of this plan ends for `target`, and whether that is where recovery stops
    /// (`true`: an LSN target, the backup's end for `immediate`, the end of the valid WAL for
    /// latest) or only a bound (`false`: the end of the segment holding the target).
    pub fn replay_end(&self, target: &Target) -> (Lsn, bool) {
        match &target.kind {
            TargetKind::Lsn(l) => (*l, true),
            TargetKind::Immediate => (self.backup.stop_lsn, true),
            TargetKind::Latest => self.recovery_end.map_or((self.last_segment_end, false), |e| (e, true)),
            TargetKind::Time(_) | TargetKind::Xid(_) | TargetKind::Name(_) => (self.last_segment_end, false),
        }
    }

    /// The plan for people.
    pub fn render(&self) -> String {
        let b = &self.backup;
        let mut out = String::new();
        out.push_str(&format!("target:        {}\n", self.target));
        out.push_str(&format!(
            "backup:        {} (LSN {} to {}, timeline {}, finished {})\n",
            b.id, b.start_lsn, b.stop_lsn, b.stop_timeline, b.stop_time
        ));
        out.push_str(&format!("timelines:     {}\n", self.timeline_path));
        if self.last_segment_from_receiver {
            out.push_str(&format!(
                "WAL:           {} .. {} ({} segments; the last one is the receiver's partial segment, not yet \
                 archived complete, valid WAL up to {})\n",
                self.first_segment,
                self.last_segment,
                self.segments,
                self.receiver_wal_end.as_deref().unwrap_or("its start")
            ));
        } else {
            out.push_str(&format!(
                "WAL:           {} .. {} ({} segments, all archived)\n",
                self.first_segment, self.last_segment, self.segments
            ));
        }
        for s in &self.skipped_backups {
            out.push_str(&format!("skipped:       damaged {s}\n"));
        }
        out.push_str(&format!("recovery stops {}\n", self.stop));
        if let Some(t) = &self.last_transaction {
            out.push_str(&format!("newest transaction end in that WAL: {t}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use common::wal::history::HistoryEntry;
    use common::wal::record::RestorePoint;
    use common::wal::SystemId;

    use super::*;
    use crate::source::Listing;
    use crate::target::{Action, TimelineChoice};

    const SIZE: WalSegmentSize = WalSegmentSize::DEFAULT;
    const SEG: u64 = 16 << 20;

    /// Segments by name, histories by timeline.
    #[derive(Default)]
    struct Fake {
        segments: BTreeMap<WalFileName, SegmentSummary>,
        histories: BTreeMap<TimelineId, Vec<HistoryEntry>>,
        /// The receiver's partial objects, by segment name.
        partials: BTreeMap<WalFileName, SegmentSummary>,
    }

    #[async_trait]
    impl WalSource for Fake {
        async fn segment(&self, name: &WalFileName) -> Result<Option<SegmentSummary>, Failure> {
            Ok(self.segments.get(name).cloned())
        }
        async fn receiver_partial(&self, name: &WalFileName) -> Result<Option<SegmentSummary>, Failure> {
            Ok(self.partials.get(name).cloned())
        }
        async fn history(&self, tli: TimelineId) -> Result<Option<Vec<HistoryEntry>>, Failure> {
            Ok(self.histories.get(&tli).cloned())
        }
        async fn listed(&self) -> Result<Listing, Failure> {
            Ok(Listing {
                segments: self.segments.keys().copied().collect(),
                histories: self.histories.keys().copied().collect(),
            })
        }
    }

    /// Unix seconds → PgTimestamp.
    fn ts(secs: i64) -> PgTimestamp {
        PgTimestamp::from_unix_micros(secs * 1_000_000)
    }

    impl Fake {
        /// Segment `segno` on `tli` with transactions ending at `times` (xids from `xid`).
        fn seg(&mut self, tli: u32, segno: u64, times: &[i64], xid: u32) -> &mut SegmentSummary {
            let mut s = SegmentSummary {
                valid_end: Some(Lsn(segno * SEG + SEG - 8)),
                xact_ends: times.len() as u32,
                ..Default::default()
            };
            if let (Some(f), Some(l)) = (times.first(), times.last()) {
                s.first_xact_time = Some(ts(*f));
                s.last_xact_time = Some(ts(*l));
                s.xid_min = Some(xid);
                s.xid_max = Some(xid + times.len() as u32 - 1);
            }
            let name = WalFileName::segment(TimelineId(tli), segno, SIZE);
            self.segments.insert(name, s);
            self.segments.get_mut(&name).unwrap()
        }
    }

    fn backup(id: &str, tli: u32, start_seg: u64, stop_seg: u64, stop_unix: i64) -> BackupEntry {
        let stop_time = time::OffsetDateTime::from_unix_timestamp(stop_unix).unwrap().format(&Rfc3339).unwrap();
        BackupEntry {
            version: 1,
            id: id.into(),
            label: id.into(),
            system_id: SystemId(1),
            server_version_num: 150000,
            segment_size: SEG,
            start_lsn: Lsn(start_seg * SEG + 0x28),
            start_timeline: TimelineId(tli),
            stop_lsn: Lsn(stop_seg * SEG + 0x100),
            stop_timeline: TimelineId(tli),
            start_time: stop_time.clone(),
            stop_time,
            archives: vec![],
            manifest_checksum: String::new(),
            wal_start_segment: String::new(),
            wal_stop_segment: String::new(),
            raw_bytes: 0,
            stored_bytes: 0,
        }
    }

    fn target(kind: TargetKind) -> Target {
        Target { kind, inclusive: true, timeline: TimelineChoice::Latest, action: Action::Promote }
    }

    /// Two backups (segments 2-3 ending at t=1000, 6-7 ending at t=2000), segments 2..=10
    /// with one transaction every 100 s per segment from t=900.
    fn archive() -> (Fake, Vec<BackupEntry>) {
        let mut f = Fake::default();
        for segno in 2..=10u64 {
            let t = 900 + 150 * (segno as i64 - 2);
            f.seg(1, segno, &[t, t + 100], 1000 + 10 * segno as u32);
        }
        (f, vec![backup("B1", 1, 2, 3, 1000), backup("B2", 1, 6, 7, 2000)])
    }

    async fn plan(f: Fake, b: Vec<BackupEntry>, t: Target) -> Result<Plan, Failure> {
        make_plan(Arc::new(f), b, &t, SIZE, None).await
    }

    #[tokio::test]
    async fn time_targets_pick_the_newest_backup_before_and_the_segment_after() {
        let (f, b) = archive();
        // t=1500: B1 (B2 ended at 2000). First segment with a transaction after 1500: segment 6
        // (1500, 1600)? segment 6 holds 1500 and 1600: 1600 > 1500.
        let p = plan(f, b.clone(), target(TargetKind::Time(ts(1500)))).await.unwrap();
        assert_eq!(p.backup_id, "B1");
        assert_eq!(p.first_segment, "000000010000000000000002");
        assert_eq!(p.last_segment, "000000010000000000000006");
        let (f, _) = archive();
        let p = plan(f, b.clone(), target(TargetKind::Time(ts(2050)))).await.unwrap();
        assert_eq!(p.backup_id, "B2");
        assert_eq!(p.last_segment, "00000001000000000000000A", "segment 9 ends at 2050 (not after); 10 holds 2100");
    }

    #[tokio::test]
    async fn refusals_name_the_problem() {
        let (f, b) = archive();
        let e = plan(f, b.clone(), target(TargetKind::Time(ts(999)))).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Refused);
        assert!(e.to_string().contains("before the end of the oldest usable backup"), "{e}");

        let (f, _) = archive();
        let e = plan(f, b.clone(), target(TargetKind::Time(ts(3000)))).await.unwrap_err();
        assert!(e.to_string().contains("beyond the archived WAL"), "{e}");

        let (mut f, _) = archive();
        f.segments.remove(&WalFileName::segment(TimelineId(1), 8, SIZE));
        let e = plan(f, b.clone(), target(TargetKind::Time(ts(2150)))).await.unwrap_err();
        assert!(e.to_string().contains("000000010000000000000008") && e.to_string().contains("missing"), "{e}");

        let (mut f, _) = archive();
        f.segments.remove(&WalFileName::segment(TimelineId(1), 8, SIZE));
        let e = plan(f, b.clone(), target(TargetKind::Latest)).await.unwrap_err();
        assert!(e.to_string().contains("although later WAL"), "{e}");

        let (mut f, _) = archive();
        f.segments.remove(&WalFileName::segment(TimelineId(1), 7, SIZE));
        let e = plan(f, vec![b[1].clone()], target(TargetKind::Immediate)).await.unwrap_err();
        assert!(e.to_string().contains("needed to make the backup consistent"), "{e}");

        let e = plan(Fake::default(), vec![], target(TargetKind::Latest)).await.unwrap_err();
        assert!(e.to_string().contains("no backup"), "{e}");
    }

    #[tokio::test]
    async fn lsn_xid_name_latest_immediate() {
        let (f, b) = archive();
        let t = target(TargetKind::Lsn(Lsn(5 * SEG + 100)));
        let p = plan(f, b.clone(), t.clone()).await.unwrap();
        assert_eq!((p.backup_id.as_str(), p.last_segment.as_str()), ("B1", "000000010000000000000005"));
        assert_eq!(p.replay_end(&t), (Lsn(5 * SEG + 100), true), "an LSN target is where replay ends");
        let j = serde_json::to_value(crate::report::PlanJson::new(&p, &t)).unwrap();
        assert_eq!((j["backup_id"].as_str(), j["backup"]["id"].as_str()), (Some("B1"), Some("B1")));
        assert_eq!((j["target"]["kind"].as_str(), j["target"]["value"].as_str()), (Some("lsn"), Some("0/5000064")));
        assert_eq!((j["target"]["timeline"].as_u64(), j["target"]["inclusive"].as_bool()), (Some(1), Some(true)));
        assert_eq!(j["wal"]["first_segment"], "000000010000000000000002");
        assert_eq!(
            (j["wal"]["last_segment"].as_str(), j["wal"]["segments"].as_u64()),
            (Some(&*p.last_segment), Some(4))
        );
        assert_eq!(
            (j["stop"]["segment"].as_str(), j["stop"]["lsn"].as_str()),
            (Some(&*p.last_segment), Some("0/5000064"))
        );
        assert!(j["stop"]["description"].as_str().unwrap().starts_with("at LSN 0/5000064"), "{j}");

        let (f, _) = archive();
        let t = target(TargetKind::Xid(1091));
        let p = plan(f, b.clone(), t.clone()).await.unwrap();
        assert_eq!((p.backup_id.as_str(), p.last_segment.as_str()), ("B2", "000000010000000000000009"));
        assert_eq!(p.replay_end(&t), (Lsn(10 * SEG), false), "at most the end of the target's segment");
        let j = serde_json::to_value(crate::report::PlanJson::new(&p, &t)).unwrap();
        assert!(j["stop"]["lsn"].is_null() && j["target"]["value"] == "1091", "{j}");

        let (f, _) = archive();
        let e = plan(f, b.clone(), target(TargetKind::Xid(5000))).await.unwrap_err();
        assert!(e.to_string().contains("beyond the archived WAL"), "{e}");

        let (mut f, _) = archive();
        f.seg(1, 4, &[1200], 1040).restore_points.push(RestorePoint {
            name: "before".into(),
            lsn: Lsn(4 * SEG + 500),
            time: ts(1200),
        });
        let p = plan(f, b.clone(), target(TargetKind::Name("before".into()))).await.unwrap();
        assert_eq!((p.backup_id.as_str(), p.last_segment.as_str()), ("B1", "000000010000000000000004"));

        // A name that was never made: said so, with the names that do exist.
        let (mut f, _) = archive();
        f.seg(1, 4, &[1200], 1040).restore_points.push(RestorePoint {
            name: "before".into(),
            lsn: Lsn(4 * SEG + 500),
            time: ts(1200),
        });
        let e = plan(f, b.clone(), target(TargetKind::Name("befor".into()))).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Refused);
        assert!(
            e.to_string().contains("no restore point named \"befor\"") && e.to_string().contains("it holds before"),
            "{e}"
        );

        let (f, _) = archive();
        let p = plan(f, b.clone(), target(TargetKind::Latest)).await.unwrap();
        assert_eq!((p.backup_id.as_str(), p.last_segment.as_str(), p.segments), ("B2", "00000001000000000000000A", 5));
        assert_eq!(p.recovery_end, Some(Lsn(10 * SEG + SEG - 8)), "the last segment's valid end");
        assert_eq!(p.replay_end(&target(TargetKind::Latest)), (Lsn(10 * SEG + SEG - 8), true));

        let (f, _) = archive();
        let p = plan(f, b.clone(), target(TargetKind::Immediate)).await.unwrap();
        assert_eq!((p.backup_id.as_str(), p.last_segment.as_str()), ("B2", "000000010000000000000007"));
    }

    #[tokio::test]
    async fn timelines_are_followed() {
        // Timeline 2 forks from 1 inside segment 5; timeline 1 continues (another history).
        let (mut f, b) = archive();
        f.histories.insert(
            TimelineId(2),
            vec![HistoryEntry { parent: TimelineId(1), switch_point: Lsn(5 * SEG + 4096), reason: String::new() }],
        );
        for segno in 5..=7u64 {
            let t = 5000 + 100 * segno as i64;
            f.seg(2, segno, &[t], 9000 + segno as u32);
        }
        // Latest timeline is 2: B2 (timeline 1 after the fork) is not on its history.
        let p = plan(f, b.clone(), target(TargetKind::Time(ts(5550)))).await.unwrap();
        assert_eq!(p.backup_id, "B1");
        assert_eq!(p.timeline, 2);
        assert_eq!(p.first_segment, "000000010000000000000002");
        assert_eq!(p.last_segment, "000000020000000000000006", "5600 on timeline 2 is the first after 5550");
        assert_eq!(p.segments, 5);

        // Timeline 1 explicitly: the original history, B2 usable.
        let (mut f, b) = archive();
        f.histories.insert(
            TimelineId(2),
            vec![HistoryEntry { parent: TimelineId(1), switch_point: Lsn(5 * SEG + 4096), reason: String::new() }],
        );
        let mut t = target(TargetKind::Time(ts(2050)));
        t.timeline = TimelineChoice::Id(TimelineId(1));
        let p = plan(f, b, t).await.unwrap();
        assert_eq!((p.backup_id.as_str(), p.timeline), ("B2", 1));

        let (f, b) = archive();
        let mut t = target(TargetKind::Latest);
        t.timeline = TimelineChoice::Id(TimelineId(3));
        let e = plan(f, b, t).await.unwrap_err();
        assert!(e.to_string().contains("no history file"), "{e}");
    }

    /// [`archive`] plus the receiver's partial object for segment 11 (the next one): two
    /// transactions (t=2600, 2650, xids 2000-2001), valid WAL up to 11*SEG+5000.
    fn archive_with_partial() -> (Fake, Vec<BackupEntry>) {
        let (mut f, b) = archive();
        let name = WalFileName::segment(TimelineId(1), 11, SIZE);
        f.seg(1, 11, &[2600, 2650], 2000).valid_end = Some(Lsn(11 * SEG + 5000));
        let p = f.segments.remove(&name).unwrap();
        f.partials.insert(name, p);
        (f, b)
    }

    #[tokio::test]
    async fn the_receivers_partial_segment_ends_the_archive() {
        let (f, b) = archive_with_partial();
        let p = plan(f, b.clone(), target(TargetKind::Latest)).await.unwrap();
        assert_eq!((p.last_segment.as_str(), p.segments), ("00000001000000000000000B", 6));
        assert!(p.last_segment_from_receiver);
        assert_eq!(p.receiver_wal_end.as_deref(), Some("0/B001388"));
        assert_eq!(p.recovery_end, Some(Lsn(11 * SEG + 5000)), "recovery must get to the partial's end");
        assert!(p.stop.contains("receiver's partial segment"), "{}", p.stop);
        assert!(p.render().contains("the last one is the receiver's partial segment"), "{}", p.render());
        assert_eq!(p.last_transaction.as_deref(), Some(pg_time_text(ts(2650)).as_str()));

        // Targets inside its valid WAL are accepted.
        let (f, _) = archive_with_partial();
        let p = plan(f, b.clone(), target(TargetKind::Time(ts(2620)))).await.unwrap();
        assert_eq!((p.backup_id.as_str(), p.last_segment.as_str()), ("B2", "00000001000000000000000B"));
        assert!(p.last_segment_from_receiver);
        let (f, _) = archive_with_partial();
        let p = plan(f, b.clone(), target(TargetKind::Lsn(Lsn(11 * SEG + 4000)))).await.unwrap();
        assert_eq!(p.last_segment, "00000001000000000000000B");
        let (f, _) = archive_with_partial();
        let p = plan(f, b.clone(), target(TargetKind::Xid(2001))).await.unwrap();
        assert_eq!(p.last_segment, "00000001000000000000000B");

        // Past its valid end: refused, naming it.
        for t in [TargetKind::Time(ts(2650)), TargetKind::Lsn(Lsn(11 * SEG + 5000)), TargetKind::Xid(2002)] {
            let (f, _) = archive_with_partial();
            let e = plan(f, b.clone(), target(t.clone())).await.unwrap_err();
            assert_eq!(e.kind, FailureKind::Refused);
            assert!(e.to_string().contains("beyond the archived WAL"), "{e}");
            assert!(e.to_string().contains("receiver's partial segment 00000001000000000000000B"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_partial_segment_that_does_not_continue_the_archive_is_not_used() {
        // Not the next segment: ignored.
        let (mut f, b) = archive_with_partial();
        let p = f.partials.pop_first().unwrap().1;
        f.partials.insert(WalFileName::segment(TimelineId(1), 12, SIZE), p);
        let r = plan(f, b.clone(), target(TargetKind::Latest)).await.unwrap();
        assert_eq!((r.last_segment.as_str(), r.last_segment_from_receiver), ("00000001000000000000000A", false));

        // A segment is missing before it: the gap is refused as before.
        let (mut f, _) = archive_with_partial();
        f.segments.remove(&WalFileName::segment(TimelineId(1), 10, SIZE));
        let e = plan(f, b.clone(), target(TargetKind::Time(ts(2620)))).await.unwrap_err();
        assert!(e.to_string().contains("beyond the archived WAL: the archive ends before segment"), "{e}");

        // Timeline 1 ended (timeline 2 forked in segment 5): its partial is stale.
        let (mut f, b) = archive_with_partial();
        f.histories.insert(
            TimelineId(2),
            vec![HistoryEntry { parent: TimelineId(1), switch_point: Lsn(5 * SEG + 4096), reason: String::new() }],
        );
        let mut t = target(TargetKind::Latest);
        t.timeline = TimelineChoice::Id(TimelineId(1));
        let r = plan(f, b, t).await.unwrap();
        assert_eq!((r.last_segment.as_str(), r.last_segment_from_receiver), ("00000001000000000000000A", false));
    }
}
