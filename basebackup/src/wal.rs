//! Waiting for the WAL a backup needs (`archive::backup_wal` says which): every segment of the
//! range on the backup's timeline, checked by exact key.

use std::time::{Duration, Instant};

use common::exit::Failure;
use common::repository::Repository;
use common::retry::Backoff;
use common::wal::{TimelineId, WalFileName, WalSegmentSize};

/// The first segment of `first..=last` on `timeline` that is not in the repository.
pub async fn first_missing(
    repo: &Repository,
    timeline: TimelineId,
    first: u64,
    last: u64,
    size: WalSegmentSize,
) -> Result<Option<WalFileName>, Failure> {
    for seg in first..=last {
        let name = WalFileName::segment(timeline, seg, size);
        if repo.wal_header(&name).await?.is_none() {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// First pause between two checks of [`wait_for`]; it doubles up to [`MAX_PAUSE`]. The last
/// segment usually arrives a few tens of milliseconds after the backup's end (archive_command
/// is one process per segment), so a fixed half-second pause would add most of it to every
/// backup.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// Longest pause between two checks of [`wait_for`].
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Waits until every segment of `first..=last` is in the repository; `Ok(Some(name))` names
/// the one still missing when `timeout` ran out. Found segments are not asked for again.
pub async fn wait_for(
    repo: &Repository,
    timeline: TimelineId,
    first: u64,
    last: u64,
    size: WalSegmentSize,
    timeout: Duration,
    mut on_wait: impl FnMut(&WalFileName),
) -> Result<Option<WalFileName>, Failure> {
    let deadline = Instant::now() + timeout;
    let mut next = first;
    let mut pause = Backoff::new(FIRST_PAUSE, MAX_PAUSE);
    loop {
        match first_missing(repo, timeline, next, last, size).await? {
            None => return Ok(None),
            Some(missing) => {
                next = missing.segment_number(size).ok().flatten().unwrap_or(next);
                if Instant::now() >= deadline {
                    return Ok(Some(missing));
                }
                on_wait(&missing);
                tokio::time::sleep(pause.next_delay().min(deadline.saturating_duration_since(Instant::now()))).await;
            }
        }
    }
}
