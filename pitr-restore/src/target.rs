//! What the operator asked to recover to: the recovery target, its timeline and what the
//! server does once there, parsed strictly (a time without a zone is refused rather than read
//! in some server's TimeZone) and written back in the form PostgreSQL reads.

use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::wal::record::PgTimestamp;
use common::wal::TimelineId;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The point recovery stops at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// The end of the archived WAL (no recovery target).
    Latest,
    /// As soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    /// `recovery_target_time`: compared with the commit/abort times in the WAL.
    Time(PgTimestamp),
    /// `recovery_target_lsn`.
    Lsn(Lsn),
    /// `recovery_target_xid`: the commit or abort of this transaction.
    Xid(u32),
    /// `recovery_target_name`: a restore point made with `pg_create_restore_point()`.
    Name(String),
}

/// Which timeline recovery follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The newest timeline in the repository (PostgreSQL's default).
    Latest,
    /// The timeline the backup was taken on.
    Current,
    /// This timeline (its history must be archived).
    Id(TimelineId),
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// End recovery and open the cluster for writes (a new timeline starts).
    Promote,
    /// Stay in recovery, paused at the target, read-only: inspect, then promote with
    /// `pg_wal_replay_resume()` or `pg_promote()`.
    Pause,
    /// Shut the server down at the target.
    Shutdown,
}

impl Action {
    /// The value PostgreSQL reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Pause => "pause",
            Action::Shutdown => "shutdown",
        }
    }
}

/// A complete recovery target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to stop.
    pub kind: TargetKind,
    /// Stop just after the target (true, PostgreSQL's default) or just before it.
    pub inclusive: bool,
    /// The timeline to follow.
    pub timeline: TimelineChoice,
    /// What the server does at the target.
    pub action: Action,
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Usage, msg)
}

/// Zone names accepted besides numeric offsets (in any case): the ones that mean UTC
/// everywhere. Others (`CET`, `Europe/Berlin`, `EST`) depend on a time zone database and on
/// the date, so they are refused with a hint to give the offset.
const UTC_NAMES: [&str; 4] = ["utc", "gmt", "z", "zulu"];

/// Parses a `--target-time`: RFC 3339 or PostgreSQL's `YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM]`
/// (also `Z`, `UTC` or `GMT`, in any case, with or without a space). A zone is required.
pub fn parse_time(text: &str) -> Result<PgTimestamp, Failure> {
    let t = text.trim();
    let mut s = t.replacen(' ', "T", 1);
    let lower = s.to_ascii_lowercase();
    if let Some(name) = UTC_NAMES.iter().find(|n| {
        lower.ends_with(*n) && lower[..lower.len() - n.len()].trim_end().ends_with(|c: char| c.is_ascii_digit())
    }) {
        s = format!("{}Z", s[..s.len() - name.len()].trim_end());
    }
    // After the date and its `T`: the clock and the zone.
    let clock = s.get(11..).filter(|_| s.as_bytes().get(10) == Some(&b'T')).unwrap_or_default();
    if clock.trim_end_matches('Z').chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(usage(format!(
            "--target-time {t:?}: only numeric zones (+01, -05:00) and UTC, GMT or Z are understood; write the \
             offset the time had (e.g. 2026-12-02 03:04:05+01 for CET)"
        )));
    }
    // Normalise a numeric zone: +HH, +HHMM -> +HH:MM.
    let zone_at = s.rfind(['+', '-']).filter(|&i| i > 10);
    if let Some(i) = zone_at {
        let zone = &s[i + 1..];
        let fixed = match zone.len() {
            2 if zone.bytes().all(|b| b.is_ascii_digit()) => Some(format!("{zone}:00")),
            4 if zone.bytes().all(|b| b.is_ascii_digit()) => Some(format!("{}:{}", &zone[..2], &zone[2..])),
            _ => None,
        };
        if let Some(z) = fixed {
            s = format!("{}{z}", &s[..=i]);
        }
    }
    let has_zone = s.ends_with('Z') || zone_at.is_some();
    if !has_zone {
        return Err(usage(format!(
            "--target-time {t:?} has no time zone: write it as 2026-12-02 03:04:05+00, 2026-12-02T03:04:05Z or \
             with the server's offset (PostgreSQL would read a bare time in the server's TimeZone setting; pitr \
             will not guess)"
        )));
    }
    let dt = OffsetDateTime::parse(&s, &Rfc3339)
        .map_err(|e| usage(format!("--target-time {t:?} is not a time (YYYY-MM-DD HH:MM:SS[.ffffff]+HH:MM): {e}")))?;
    let micros = (dt.unix_timestamp_nanos() / 1000) as i64;
    Ok(PgTimestamp::from_unix_micros(micros))
}

/// Parses a `--target-xid` (a 32-bit transaction id, as `txid_current() % 2^32` or `xid`).
pub fn parse_xid(text: &str) -> Result<u32, Failure> {
    let v: u64 = text.trim().parse().map_err(|_| usage(format!("--target-xid {text:?} is not a transaction id")))?;
    // txid_current() returns the epoch in the high bits; PostgreSQL compares the low 32.
    let xid = (v & 0xFFFF_FFFF) as u32;
    if xid < 3 {
        return Err(usage(format!("--target-xid {text}: transaction ids below 3 are special, not a transaction")));
    }
    Ok(xid)
}

/// Parses `--target-timeline`: `latest`, `current` or a number.
pub fn parse_timeline(text: &str) -> Result<TimelineChoice, Failure> {
    match text.trim() {
        "latest" => Ok(TimelineChoice::Latest),
        "current" => Ok(TimelineChoice::Current),
        n => match n.parse::<u32>() {
            Ok(v) if v >= 1 => Ok(TimelineChoice::Id(TimelineId(v))),
            _ => {
                Err(usage(format!("--target-timeline {text:?}: use latest, current or a timeline number (1, 2, ...)")))
            }
        },
    }
}

/// A timestamp as PostgreSQL reads it in `recovery_target_time` (always UTC).
pub fn pg_time_text(t: PgTimestamp) -> String {
    let us = t.unix_micros();
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000) {
        Ok(dt) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
            );
            dt.format(&fmt).unwrap_or_else(|_| t.to_string())
        }
        Err(_) => t.to_string(),
    }
}

impl Target {
    /// One line for people: "time 2026-... (inclusive) on the latest timeline".
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            TargetKind::Latest => return format!("the end of the archived WAL ({})", self.timeline_text()),
            TargetKind::Immediate => return "the end of the backup (first consistent point)".to_string(),
            TargetKind::Time(t) => format!("time {}", pg_time_text(*t)),
            TargetKind::Lsn(l) => format!("LSN {l}"),
            TargetKind::Xid(x) => format!("transaction {x}"),
            TargetKind::Name(n) => format!("restore point {n:?}"),
        };
        let how = if self.inclusive { "inclusive" } else { "exclusive" };
        format!("{what} ({how}; {})", self.timeline_text())
    }

    fn timeline_text(&self) -> String {
        match self.timeline {
            TimelineChoice::Latest => "latest timeline".into(),
            TimelineChoice::Current => "the backup's timeline".into(),
            TimelineChoice::Id(t) => format!("timeline {t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone_and_round_trip() {
        let a = parse_time("2026-12-02 03:04:05+00").unwrap();
        assert_eq!(parse_time("2026-12-02T03:04:05Z").unwrap(), a);
        assert_eq!(parse_time("2026-12-02 03:04:05 UTC").unwrap(), a);
        assert_eq!(parse_time("2026-12-02 04:04:05+0100").unwrap(), a);
        assert_eq!(parse_time("2026-12-02 05:04:05+02:00").unwrap(), a);
        assert_eq!(pg_time_text(a), "2026-12-02 03:04:05.000000+00");
        let b = parse_time("2026-12-02 03:04:05.123456-05").unwrap();
        assert_eq!(pg_time_text(b), "2026-12-02 08:04:05.123456+00");
        let e = parse_time("2026-12-02 03:04:05").unwrap_err();
        assert!(e.to_string().contains("no time zone"), "{e}");
        assert!(parse_time("yesterday+00").is_err());
        for utc in ["utc", "GMT", "gmt", " z", "Z", "UTC", " Zulu"] {
            assert_eq!(parse_time(&format!("2026-12-02 03:04:05{utc}")).unwrap(), a, "{utc:?}");
            assert_eq!(parse_time(&format!("2026-12-02 03:04:05 {}", utc.trim())).unwrap(), a, "{utc:?}");
        }
        for named in ["2026-12-02 03:04:05 CET", "2026-12-02 03:04:05 Europe/Berlin", "2026-12-02 03:04:05EST"] {
            let e = parse_time(named).unwrap_err();
            assert!(e.to_string().contains("only numeric zones"), "{named}: {e}");
        }
    }

    #[test]
    fn xids_and_timelines() {
        assert_eq!(parse_xid("1234").unwrap(), 1234);
        assert_eq!(parse_xid(&((5u64 << 32) + 777).to_string()).unwrap(), 777);
        assert!(parse_xid("2").is_err());
        assert!(parse_xid("x").is_err());
        assert_eq!(parse_timeline("latest").unwrap(), TimelineChoice::Latest);
        assert_eq!(parse_timeline("3").unwrap(), TimelineChoice::Id(TimelineId(3)));
        assert!(parse_timeline("0").is_err());
    }
}
