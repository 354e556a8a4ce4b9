//! What `pitr-restore --json` prints: the plan and the restore's summary, each as one JSON
//! object on stdout, with the target in fields (kind, value, inclusive, timeline) rather than
//! prose, for scripts and monitoring. The shapes are documented in docs/restore.md ("JSON
//! output"); the text for people is `Plan::render` and the lines `restore` prints.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::drill::DrillReport;
use crate::extract::Extracted;
use crate::plan::Plan;
use crate::target::{pg_time_text, Target, TargetKind, TimelineChoice};

/// The target as asked, and the timeline the plan chose for it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetJson {
    /// `latest`, `immediate`, `time`, `lsn`, `xid` or `name`.
    pub kind: &'static str,
    /// The target as text (a time in UTC as written to `recovery_target_time`, an LSN, a
    /// transaction id, a restore point's name); none for `latest` and `immediate`.
    pub value: Option<String>,
    /// Whether recovery stops just after the target (true) or just before it; none where it
    /// does not apply (`latest`, `immediate`, `name`).
    pub inclusive: Option<bool>,
    /// The timeline recovery follows (`recovery_target_timeline`), as the plan chose it.
    pub timeline: u32,
    /// `--target-timeline` as given: `latest`, `current` or a number.
    pub timeline_requested: String,
    /// `recovery_target_action`: `promote`, `pause` or `shutdown`.
    pub action: &'static str,
    /// The target in words, as the text output says it.
    pub description: String,
}

impl TargetJson {
    /// `target`, on the timeline `plan` chose.
    pub fn new(target: &Target, timeline: u32) -> TargetJson {
        let (kind, value) = match &target.kind {
            TargetKind::Latest => ("latest", None),
            TargetKind::Immediate => ("immediate", None),
            TargetKind::Time(t) => ("time", Some(pg_time_text(*t))),
            TargetKind::Lsn(l) => ("lsn", Some(l.to_string())),
            TargetKind::Xid(x) => ("xid", Some(x.to_string())),
            TargetKind::Name(n) => ("name", Some(n.clone())),
        };
        let inclusive = matches!(target.kind, TargetKind::Time(_) | TargetKind::Lsn(_) | TargetKind::Xid(_))
            .then_some(target.inclusive);
        TargetJson {
            kind,
            value,
            inclusive,
            timeline,
            timeline_requested: match target.timeline {
                TimelineChoice::Latest => "latest".into(),
                TimelineChoice::Current => "current".into(),
                TimelineChoice::Id(t) => t.0.to_string(),
            },
            action: target.action.as_str(),
            description: target.describe(),
        }
    }
}

/// The chosen backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupJson {
    /// Its id.
    pub id: String,
    /// Where its WAL starts.
    pub start_lsn: String,
    /// Where it is consistent.
    pub stop_lsn: String,
    /// Its timeline at the end.
    pub timeline: u32,
    /// When it finished (UTC, RFC 3339).
    pub stop_time: String,
}

/// The WAL recovery reads.
#[derive(Debug, Clone, Serialize)]
pub struct WalJson {
    /// The first segment.
    pub first_segment: String,
    /// The last segment (the one holding the target; for latest, the last archived).
    pub last_segment: String,
    /// Segments from first to last.
    pub segments: u64,
    /// The last segment is the streaming receiver's partial object.
    pub last_from_receiver: bool,
    /// Where the valid WAL in the receiver's partial segment ends, when it is used.
    pub receiver_wal_end: Option<String>,
}

/// Where recovery stops.
#[derive(Debug, Clone, Serialize)]
pub struct StopJson {
    /// In words, as the text output says it.
    pub description: String,
    /// The segment where recovery stops.
    pub segment: String,
    /// The LSN where it stops, where the plan knows it (an LSN target, the backup's end for
    /// `immediate`, the end of the valid WAL for `latest`).
    pub lsn: Option<String>,
}

/// `pitr-restore plan --json`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanJson {
    /// The backup to restore.
    pub backup_id: String,
    /// More about it.
    pub backup: BackupJson,
    /// What to recover to.
    pub target: TargetJson,
    /// The timeline path, oldest first ("1 → 2").
    pub timeline_path: String,
    /// The WAL range.
    pub wal: WalJson,
    /// Where recovery stops.
    pub stop: StopJson,
    /// The newest commit/abort time in the WAL that recovery will replay.
    pub last_transaction: Option<String>,
    /// Newer backups skipped as damaged, with why.
    pub skipped_backups: Vec<String>,
}

impl PlanJson {
    /// `plan` for `target`.
    pub fn new(plan: &Plan, target: &Target) -> PlanJson {
        let b = &plan.backup;
        let (end, exact) = plan.replay_end(target);
        PlanJson {
            backup_id: plan.backup_id.clone(),
            backup: BackupJson {
                id: b.id.clone(),
                start_lsn: b.start_lsn.to_string(),
                stop_lsn: b.stop_lsn.to_string(),
                timeline: b.stop_timeline.0,
                stop_time: b.stop_time.clone(),
            },
            target: TargetJson::new(target, plan.timeline),
            timeline_path: plan.timeline_path.clone(),
            wal: WalJson {
                first_segment: plan.first_segment.clone(),
                last_segment: plan.last_segment.clone(),
                segments: plan.segments,
                last_from_receiver: plan.last_segment_from_receiver,
                receiver_wal_end: plan.receiver_wal_end.clone(),
            },
            stop: StopJson {
                description: plan.stop.clone(),
                segment: plan.last_segment.clone(),
                lsn: exact.then(|| end.to_string()),
            },
            last_transaction: plan.last_transaction.clone(),
            skipped_backups: plan.skipped_backups.clone(),
        }
    }
}

/// How long each phase of a restore took, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Durations {
    /// Opening the repository, the plan, checking the destinations, the manifest.
    pub planning: f64,
    /// Downloading and writing the files, checked against the manifest.
    pub files: f64,
    /// The recovery settings and syncing the file systems.
    pub settings: f64,
    /// `--start`: from starting the server to the target (none without `--start`).
    pub recovery: Option<f64>,
    /// All of it, to the end of the checks after recovery.
    pub total: f64,
}

/// Seconds, to the millisecond.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// What `--start` saw.
#[derive(Debug, Clone, Serialize)]
pub struct DrillJson {
    /// `promoted`, `paused at the target` or `shut down at the target`.
    pub state: String,
    /// The time of the last transaction recovered (`pg_last_xact_replay_timestamp()`).
    pub last_transaction: Option<String>,
    /// From starting the server to the target, in seconds.
    pub recovery_seconds: f64,
    /// The smoke query.
    pub smoke_query: String,
    /// The first value it returned (none after a shutdown).
    pub smoke_result: Option<String>,
    /// The server log.
    pub log: String,
}

/// `pitr-restore --json`: the summary of a restore that succeeded.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreJson {
    /// The backup restored.
    pub backup_id: String,
    /// The data directory.
    pub pgdata: String,
    /// What recovery goes to.
    pub target: TargetJson,
    /// The WAL range recovery reads.
    pub wal: WalJson,
    /// Where recovery stops.
    pub stop: StopJson,
    /// Regular files written.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Of them, written with `O_DIRECT`.
    pub direct_bytes: u64,
    /// Chunks downloaded.
    pub chunks: u64,
    /// Seconds per phase.
    pub durations: Durations,
    /// `--start`: what the server did (none without `--start`).
    pub drill: Option<DrillJson>,
}

impl RestoreJson {
    /// The summary of a restore of `plan` into `pgdata`.
    pub fn new(
        plan: &Plan,
        target: &Target,
        pgdata: &Path,
        stats: &Extracted,
        durations: Durations,
        drill: Option<(&DrillReport, &str)>,
    ) -> RestoreJson {
        let p = PlanJson::new(plan, target);
        RestoreJson {
            backup_id: p.backup_id,
            pgdata: pgdata.display().to_string(),
            target: p.target,
            wal: p.wal,
            stop: p.stop,
            files: stats.files,
            bytes: stats.bytes,
            direct_bytes: stats.direct_bytes,
            chunks: stats.chunks,
            durations,
            drill: drill.map(|(r, smoke_query)| DrillJson {
                state: r.state.clone(),
                last_transaction: r.last_transaction.clone(),
                recovery_seconds: secs(r.recovery),
                smoke_query: smoke_query.to_string(),
                smoke_result: r.smoke.clone(),
                log: r.log.display().to_string(),
            }),
        }
    }
}

/// One line of JSON.
pub fn to_line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"cannot serialize the report: {e}\"}}"))
}

#[cfg(test)]
mod tests {
    use common::lsn::Lsn;
    use common::wal::TimelineId;

    use super::*;
    use crate::target::{parse_time, Action};

    fn target(kind: TargetKind) -> Target {
        Target { kind, inclusive: true, timeline: TimelineChoice::Latest, action: Action::Promote }
    }

    #[test]
    fn targets_are_fields_not_prose() {
        let t = target(TargetKind::Time(parse_time("2026-12-02 03:04:05+01").unwrap()));
        let v = serde_json::to_value(TargetJson::new(&t, 2)).unwrap();
        assert_eq!(v["kind"], "time");
        assert_eq!(v["value"], "2026-12-02 02:04:05.000000+00");
        assert_eq!(v["inclusive"], true);
        assert_eq!(v["timeline"], 2);
        assert_eq!(v["timeline_requested"], "latest");
        assert_eq!(v["action"], "promote");
        let t = Target {
            inclusive: false,
            timeline: TimelineChoice::Id(TimelineId(3)),
            action: Action::Pause,
            ..target(TargetKind::Lsn(Lsn(0x3A000028)))
        };
        let v = serde_json::to_value(TargetJson::new(&t, 3)).unwrap();
        assert_eq!((v["kind"].as_str(), v["value"].as_str()), (Some("lsn"), Some("0/3A000028")));
        assert_eq!((v["inclusive"].as_bool(), v["timeline_requested"].as_str()), (Some(false), Some("3")));
        assert_eq!(v["action"], "pause");
        let v = serde_json::to_value(TargetJson::new(&target(TargetKind::Latest), 1)).unwrap();
        assert_eq!((v["kind"].as_str(), v["value"].is_null(), v["inclusive"].is_null()), (Some("latest"), true, true));
        let v = serde_json::to_value(TargetJson::new(&target(TargetKind::Name("before-b".into())), 1)).unwrap();
        assert_eq!((v["kind"].as_str(), v["value"].as_str()), (Some("name"), Some("before-b")));
        let v = serde_json::to_value(TargetJson::new(&target(TargetKind::Xid(777)), 1)).unwrap();
        assert_eq!((v["kind"].as_str(), v["value"].as_str()), (Some("xid"), Some("777")));
    }

    #[test]
    fn seconds_to_the_millisecond() {
        assert_eq!(secs(Duration::from_micros(2_345_678)), 2.346);
        let d = Durations { planning: 0.1, files: 2.5, settings: 0.2, recovery: None, total: 2.8 };
        let v = serde_json::to_value(d).unwrap();
        assert!(v["recovery"].is_null() && v["files"] == 2.5, "{v}");
    }
}
