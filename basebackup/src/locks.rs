//! S3 Object Lock in retention: which of the objects `expire` means to delete are still
//! locked, and whether the configured lock period fits the policy.
//!
//! On a bucket with Object Lock (always versioned), a plain DELETE of a locked object
//! succeeds and only adds a delete marker: the locked version stays, hidden. Deleting it
//! would silently hide data that the lock keeps, so `expire` never deletes an object whose
//! retain-until date is still ahead: it asks first ([`locked_until`]) and keeps what is locked
//! for a later run. How few objects it asks about, and why that is enough, is in
//! `expire::plan`.

use std::time::Duration;

use common::config::{Config, Origin};
use common::exit::{Failure, FailureKind};
use common::repository::Repository;
use common::retry::retry;
use common::storage::ObjectKey;
use time::OffsetDateTime;

/// Questions in flight at once (each is one request to the store; none without a lock).
const PARALLEL_CHECKS: usize = 16;

/// For each of `keys`, its retain-until date when that is after `now`; `None` for an object
/// that is not locked (any more), never was, or is gone. Asked [`PARALLEL_CHECKS`] at a time,
/// each with the configured retries; a store that cannot lock answers without a request.
pub async fn locked_until(
    repo: &Repository,
    keys: &[ObjectKey],
    now: OffsetDateTime,
) -> Result<Vec<Option<OffsetDateTime>>, Failure> {
    let mut out = vec![None; keys.len()];
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = keys.iter().cloned().enumerate();
    loop {
        while tasks.len() < PARALLEL_CHECKS {
            let Some((i, key)) = next.next() else { break };
            let repo = repo.clone();
            tasks.spawn(async move {
                match retry(repo.retry_policy(), "read retention", || repo.storage().retention(&key)).await {
                    Ok(until) => Ok((i, until.map(OffsetDateTime::from))),
                    Err(e) if e.is_not_found() => Ok((i, None)),
                    Err(e) => Err(Failure::from(e)),
                }
            });
        }
        match tasks.join_next().await {
            None => return Ok(out),
            Some(r) => {
                let (i, until) =
                    r.map_err(|e| Failure::msg(FailureKind::LocalIo, format!("retention task: {e}")))??;
                out[i] = until.filter(|u| *u > now);
            }
        }
    }
}

/// Refuses (configuration, exit 7) a lock period longer than the policy's `keep-within`
/// (`window`, which came from `keep_within`): objects would stay locked after the policy
/// stopped keeping them, and `expire` could not delete them on time. A policy of
/// `keep-backups` alone sets no time, so any period fits it (locked backups are then kept
/// past their count until their lock has passed).
pub fn check_period(config: &Config, window: Option<Duration>, keep_within: Option<Origin<'_>>) -> Result<(), Failure> {
    let (Some(lock), Some(window)) = (&config.s3.object_lock, window) else {
        return Ok(());
    };
    if lock.period <= window {
        return Ok(());
    }
    let period_from = if lock.period_from_keep_within {
        format!("the default: {}", config.origin("keep-within"))
    } else {
        config.origin("s3-object-lock-period").to_string()
    };
    let window_from = keep_within.map(|o| o.to_string()).unwrap_or_else(|| "the policy".into());
    Err(Failure::msg(
        FailureKind::Config,
        format!(
            "the Object Lock period {} (from {period_from}) is longer than keep-within {} (from {window_from}): \
             objects would stay locked after the policy stopped keeping them; set s3-object-lock-period to at most \
             the window, or widen the window",
            fmt_duration(lock.period),
            fmt_duration(window)
        ),
    ))
}

fn fmt_duration(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}
