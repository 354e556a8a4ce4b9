//! The end of a timeline while streaming: the old timeline's last segment is kept as
//! `.partial`, the next timeline's history file is fetched and stored, and the spool moves on.

use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::pgwire::Connection;
use common::wal::{TimelineId, WalFileKind, WalFileName};

use super::errors::{local, pg_error, SessionError};
use super::spool::{self, Spool};
use super::upload::{Job, Uploader};

/// The timeline being received ended at `switch` and `next` follows: store the old
/// timeline's last segment as `.partial` (never as a complete segment), fetch and store
/// the history file of `next`, and point the spool at `next` from the segment start of
/// `switch` (the server resends that segment on the new timeline).
pub(super) async fn switch_timeline(
    slot: &mut Option<Spool>,
    uploader: &Uploader,
    conn: &mut Connection,
    next: u32,
    switch: Lsn,
) -> Result<(), SessionError> {
    let spool = slot.as_ref().expect("spool opened before streaming");
    let old = spool.timeline();
    let seg_size = spool.seg_size();
    if next <= old.0 {
        return Err(SessionError::Fatal(Failure::msg(
            FailureKind::Server,
            format!("the server says timeline {} follows timeline {}", next, old.0),
        )));
    }
    if switch > spool.written() {
        return Err(SessionError::Fatal(Failure::msg(
            FailureKind::Server,
            format!(
                "timeline {next} starts at {switch}, beyond the end of timeline {} received ({})",
                old.0,
                spool.written()
            ),
        )));
    }
    spool::blocking(slot, |s| s.sync()).await.map_err(local)?.map_err(local)?;
    let spool = slot.as_ref().expect("the spool is back");
    tracing::info!(timeline = old.0, next, %switch, "end of timeline");
    eprintln!("wal-archiver receive: timeline {} ended at {switch}; following timeline {next}", old.0);
    let segno = switch.segment_number(seg_size);
    if switch.segment_offset(seg_size) != 0 {
        let last = spool.path(segno, WalFileKind::Partial);
        if last.exists() {
            uploader.send(Job::Segment(last));
        }
    }
    let history = conn.timeline_history(next).await.map_err(|e| pg_error(&format!("TIMELINE_HISTORY {next}"), e))?;
    let name = WalFileName::history(TimelineId(next)).to_string();
    if history.filename != name {
        return Err(SessionError::Fatal(Failure::msg(
            FailureKind::Server,
            format!("TIMELINE_HISTORY {next} returned {:?}", history.filename),
        )));
    }
    let dir = spool.dir().to_path_buf();
    let path = dir.join(&name);
    let (d, p, content) = (dir.clone(), path.clone(), history.content);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let tmp = d.join(format!("{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        spool::sync_dir(&d)
    })
    .await
    .map_err(|e| local(std::io::Error::other(e)))?
    .map_err(local)?;
    uploader.send(Job::Segment(path));
    uploader.send(Job::Timeline(TimelineId(next)));
    let start = switch.segment_start(seg_size);
    let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, seg_size, TimelineId(next), start))
        .await
        .map_err(|e| local(std::io::Error::other(e)))?
        .map_err(local)?;
    *slot = Some(spool);
    Ok(())
}

/// Reads the next timeline and its start from the result set that follows the end of a
/// timeline (`next_tli`, `next_tli_startpos`).
pub(super) fn next_timeline(results: &[common::pgwire::ResultSet]) -> Result<(u32, Lsn), SessionError> {
    let bad = || {
        SessionError::Fatal(Failure::msg(
            FailureKind::Server,
            format!("unexpected answer at the end of a timeline: {results:?}"),
        ))
    };
    let rs = results.iter().find(|rs| rs.column_index("next_tli").is_some()).ok_or_else(bad)?;
    let next: u32 = rs.get(0, "next_tli").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let switch: Lsn = rs.get(0, "next_tli_startpos").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    Ok((next, switch))
}
