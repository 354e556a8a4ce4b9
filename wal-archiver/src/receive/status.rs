//! The status task: owns the connection's writer and sends standby status updates when the
//! flush position advances, when the server asks, and every `--status-interval`. It never
//! waits for uploads.

use std::time::Duration;

use common::lsn::Lsn;
use common::pgwire::{ConnectionWriter, PgWireError, StandbyStatusUpdate};
use tokio::sync::{mpsc, watch};

use super::state::{Durability, Positions};

/// Commands for the status task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatusCmd {
    /// A keepalive asked for a reply.
    Reply,
    /// Send a last update and CopyDone, then hand the writer back.
    Stop,
}

/// Sends status updates: when the flush position advances, on request, and every
/// `interval`. Returns the writer after CopyDone (clean stop).
pub(super) async fn status_task(
    mut writer: ConnectionWriter,
    mut positions: watch::Receiver<Positions>,
    durability: Durability,
    interval: Duration,
    mut cmds: mpsc::Receiver<StatusCmd>,
) -> Result<ConnectionWriter, PgWireError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent: Option<(Lsn, Lsn)> = None;
    let mut positions_open = true;
    loop {
        let send = tokio::select! {
            _ = tick.tick() => true,
            c = cmds.recv() => match c {
                Some(StatusCmd::Reply) => true,
                Some(StatusCmd::Stop) => {
                    let p = *positions.borrow();
                    writer.send_status_update(&StandbyStatusUpdate::new(p.written, p.flush(durability), Lsn(0))).await?;
                    writer.send_copy_done().await?;
                    return Ok(writer);
                }
                // The reader is gone (connection failed): nothing more to say.
                None => return Ok(writer),
            },
            r = positions.changed(), if positions_open => {
                if r.is_err() {
                    positions_open = false;
                    false
                } else {
                    let p = *positions.borrow_and_update();
                    last_sent.map(|(_, f)| f) != Some(p.flush(durability))
                }
            }
        };
        if send {
            let p = *positions.borrow_and_update();
            let flush = p.flush(durability);
            writer.send_status_update(&StandbyStatusUpdate::new(p.written, flush, Lsn(0))).await?;
            last_sent = Some((p.written, flush));
        }
    }
}
