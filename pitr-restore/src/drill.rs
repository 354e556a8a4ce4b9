//! `--start`: runs the restored server until recovery reached the target, then checks it
//! answers a query. Used during incidents (the server is left running) and in restore
//! drills, which report how long the restore took and the time of the last transaction
//! recovered.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::exit::{Failure, FailureKind};
use common::lsn::Lsn;
use common::pgwire::{ConnParams, Connection};

use crate::progress::{Counters, Phase};
use crate::target::{Action, Target, TargetKind};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Directory of pg_ctl [default: from PG_VERSION, /usr/lib/postgresql/<v>/bin, else PATH].
    pub pg_bin: Option<PathBuf>,
    /// How long recovery may take.
    pub timeout: Duration,
    /// The query that must succeed at the end.
    pub smoke_query: String,
    /// Connection string for the checks [default: the server's socket and port from
    /// postmaster.pid, database postgres].
    pub conninfo: Option<common::config::ConnString>,
    /// The settings make recovery pause at the target although the target's action is
    /// `promote`: promote the paused server with `pg_ctl promote` (see [`fast_promotion`]).
    pub promote_when_paused: bool,
    /// Where the plan found the archived WAL to end (a restore to the latest WAL): recovery
    /// that ended before it is a failure, and the server is stopped.
    pub expected_end: Option<Lsn>,
}

/// Whether `--start` promotes the server itself once it paused at the target, instead of
/// letting recovery promote it: then the settings say `recovery_target_action = 'pause'`
/// (and `hot_standby = on`, without which a pause is a shutdown). PostgreSQL ends recovery
/// that reached a target with an immediate checkpoint that the server waits for (and behind
/// any restartpoint in progress), but a promotion requested while paused is a fast promotion:
/// an end-of-recovery record, writable at once, the checkpoint in the background, as when a
/// standby is promoted. Measured on a scale-200 PITR: 0.9 s from "redo done" to ready with
/// the target action, the checkpoint 0.14 s of it and the rest waiting for a restartpoint.
/// Not with an explicit `--set hot_standby=...` (the operator's setting is kept).
pub fn fast_promotion(target: &Target, start: bool, set: &[(String, String)]) -> bool {
    start
        && target.kind != TargetKind::Latest
        && target.action == Action::Promote
        && !set.iter().any(|(k, _)| k.eq_ignore_ascii_case("hot_standby"))
}

/// What the drill saw.
#[derive(Debug, Clone)]
pub struct DrillReport {
    /// How the server ended up: "promoted", "paused at the target", "shut down at the target".
    pub state: String,
    /// `pg_last_xact_replay_timestamp()` (none after a shutdown).
    pub last_transaction: Option<String>,
    /// The smoke query's first value.
    pub smoke: Option<String>,
    /// Recovery time (server start to target).
    pub recovery: Duration,
    /// The server log.
    pub log: PathBuf,
}

fn server(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Server, msg)
}

/// The pg_ctl to run for the cluster in `data`.
pub fn pg_ctl(data: &Path, pg_bin: Option<&Path>) -> PathBuf {
    if let Some(b) = pg_bin {
        return b.join("pg_ctl");
    }
    if let Ok(v) = std::fs::read_to_string(data.join("PG_VERSION")) {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pg_ctl", v.trim()));
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("pg_ctl")
}

/// Last lines of the log that explain a failure.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let important: Vec<&str> = text.lines().filter(|l| l.contains("FATAL") || l.contains("PANIC")).collect();
    let pick: Vec<&str> = if important.is_empty() {
        text.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect()
    } else {
        important.into_iter().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect()
    };
    pick.join(" | ")
}

/// postmaster.pid: (port, socket directory).
fn postmaster_address(data: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let port = lines.get(3)?.trim().to_string();
    let socket = lines.get(4).map(|s| s.trim().to_string()).unwrap_or_default();
    Some((port, if socket.is_empty() { "localhost".into() } else { socket }))
}

async fn query(params: &ConnParams, sql: &str) -> Result<Vec<Option<String>>, common::pgwire::PgWireError> {
    let mut c = Connection::connect(params).await?;
    let rs = c.simple_query(sql).await?;
    let _ = c.terminate().await;
    Ok(first_row(&rs))
}

/// The first row of a query's last result set (empty when there is none).
fn first_row(rs: &[common::pgwire::ResultSet]) -> Vec<Option<String>> {
    rs.last().and_then(|r| r.rows.first().cloned()).unwrap_or_default()
}

/// `pg_ctl promote` without waiting (the caller polls).
async fn promote(data: &Path, ctl: &Path) -> Result<(), Failure> {
    let out = tokio::process::Command::new(ctl)
        .arg("-D")
        .arg(data)
        .args(["-W", "promote"])
        .output()
        .await
        .map_err(|e| server(format!("cannot run {}: {e}", ctl.display())))?;
    if !out.status.success() {
        return Err(server(format!(
            "recovery paused at the target, but {} promote failed: {} (the server is still running, paused)",
            ctl.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    tracing::info!("recovery paused at the target: promoting");
    Ok(())
}

/// After a recovery to the latest WAL: where replay ended must not be before `expected`, the
/// end of the WAL the plan found archived. PostgreSQL ends such a recovery at the first file
/// that restore_command reports absent, so a segment reported absent by mistake (an old
/// wal-archiver, a wrapper script, a repository switched under it) would otherwise end it
/// early, silently. A short recovery stops the server (it has already promoted: nothing must
/// write to it) and fails.
async fn check_recovery_end(data: &Path, ctl: &Path, params: &ConnParams, expected: Lsn) -> Result<(), Failure> {
    let row = query(params, "SELECT pg_last_wal_replay_lsn()::text")
        .await
        .map_err(|e| server(format!("after recovery: {e}")))?;
    let replayed: Option<Lsn> = row.first().cloned().flatten().and_then(|t| t.parse().ok());
    match replayed {
        Some(r) if r >= expected => Ok(()),
        r => {
            let stopped = tokio::process::Command::new(ctl)
                .arg("-D")
                .arg(data)
                .args(["-m", "fast", "-w", "stop"])
                .output()
                .await
                .is_ok_and(|o| o.status.success());
            Err(server(format!(
                "recovery ended at {}, short of the end of the archived WAL at {expected} that the plan found: WAL in \
                 between was not replayed (see restore_command failures in the server log, {}); {}",
                r.map_or_else(|| "an unknown position".to_string(), |r| r.to_string()),
                data.join("pitr-restore-server.log").display(),
                if stopped {
                    "the server was stopped so that nothing writes to it; restore again"
                } else {
                    "the server could not be stopped: stop it before anything writes to it"
                }
            )))
        }
    }
}

/// Starts the server on `data` and waits until it reached `target`. What the poll sees (the
/// replayed LSN, the last transaction's time) goes to `progress`.
pub async fn run(
    data: &Path,
    target: &Target,
    opts: &DrillOptions,
    progress: &Counters,
) -> Result<DrillReport, Failure> {
    if rustix::process::geteuid().is_root() {
        return Err(Failure::msg(
            FailureKind::Usage,
            "--start: PostgreSQL does not run as root; run pitr-restore as the database's OS user (e.g. postgres)",
        ));
    }
    let log = data.join("pitr-restore-server.log");
    let ctl = pg_ctl(data, opts.pg_bin.as_deref());
    let started = Instant::now();
    let out = tokio::process::Command::new(&ctl)
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(&log)
        .args(["-W", "start"])
        .output()
        .await
        .map_err(|e| server(format!("cannot run {}: {e} (set --pg-bin)", ctl.display())))?;
    if !out.status.success() {
        return Err(server(format!("{} start failed: {}", ctl.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    progress.set_phase(Phase::Recovery);
    // Without a target, recovery ends at the end of the WAL and the server promotes.
    let action = if target.kind == TargetKind::Latest { Action::Promote } else { target.action };
    let deadline = started + opts.timeout;
    let mut seen_pid = false;
    let mut promote_sent = false;
    let mut poll: Option<Connection> = None;
    loop {
        // Every 0.1 s: the time to a promoted server is what an operator waits for during an
        // incident.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pid_file = data.join("postmaster.pid").exists();
        seen_pid |= pid_file;
        if !pid_file && (seen_pid || started.elapsed() > Duration::from_secs(5)) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if action == Action::Shutdown && text.contains("recovery stopping") && !text.contains("FATAL") {
                return Ok(DrillReport {
                    state: "shut down at the target".into(),
                    last_transaction: text
                        .lines()
                        .rev()
                        .find(|l| l.contains("last completed transaction was at log time"))
                        .and_then(|l| l.split("log time ").nth(1))
                        .map(|s| s.trim().to_string()),
                    smoke: None,
                    recovery: started.elapsed(),
                    log,
                });
            }
            return Err(server(format!(
                "the restored server stopped before reaching the target: {} (log: {})",
                log_tail(&log),
                log.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(server(format!(
                "recovery did not reach the target within {:?}; the server is still running (log: {})",
                opts.timeout,
                log.display()
            )));
        }
        let conninfo = match &opts.conninfo {
            Some(c) => c.to_string(),
            None => match postmaster_address(data) {
                Some((port, host)) => format!("host={host} port={port} dbname=postgres connect_timeout=5"),
                None => continue,
            },
        };
        let params = ConnParams::parse(&conninfo)
            .map_err(|e| Failure::msg(FailureKind::Config, format!("--dbname: {e}")))?
            .with_fallback_application_name("pitr-restore");
        // One connection for all polls (a new one every 0.1 s is a backend fork each time,
        // on the two cores that the replay needs); reconnect after any error.
        if poll.is_none() {
            match Connection::connect(&params).await {
                Ok(c) => poll = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "server not ready yet");
                    continue;
                }
            }
        }
        let Some(conn) = poll.as_mut() else { continue };
        let sql = pause_state_query(conn.parameter("server_version"));
        let state = match conn.simple_query(sql).await {
            Ok(rs) => first_row(&rs),
            Err(e) => {
                tracing::debug!(error = %e, "server not ready yet");
                poll = None;
                continue;
            }
        };
        let in_recovery = state.first().cloned().flatten().as_deref() == Some("true");
        let paused = state.get(1).cloned().flatten().as_deref() == Some("paused");
        progress.set_replayed(
            state.get(2).cloned().flatten().and_then(|l| l.parse().ok()),
            state.get(3).cloned().flatten(),
        );
        if action == Action::Promote && opts.promote_when_paused && in_recovery && paused && !promote_sent {
            promote(data, &ctl).await?;
            promote_sent = true;
            continue;
        }
        let reached = match action {
            Action::Promote => !in_recovery,
            Action::Pause => in_recovery && paused,
            Action::Shutdown => false,
        };
        if !reached {
            continue;
        }
        let recovery = started.elapsed();
        if let Some(c) = poll.take() {
            let _ = c.terminate().await;
        }
        if let (Some(expected), TargetKind::Latest) = (opts.expected_end, &target.kind) {
            check_recovery_end(data, &ctl, &params, expected).await?;
        }
        let last = query(&params, "SELECT pg_last_xact_replay_timestamp()::text")
            .await
            .map_err(|e| server(format!("after recovery: {e}")))?;
        let smoke = query(&params, &opts.smoke_query).await.map_err(|e| server(format!("smoke query failed: {e}")))?;
        return Ok(DrillReport {
            state: if action == Action::Promote { "promoted".into() } else { "paused at the target".into() },
            last_transaction: last.first().cloned().flatten(),
            smoke: smoke.first().cloned().flatten(),
            recovery,
            log,
        });
    }
}

/// The poll of the drill: whether the server is in recovery, whether replay is paused
/// (`paused` then), and for the progress report the last replayed LSN and the time of the
/// last transaction replayed. `pg_get_wal_replay_pause_state()` exists from PostgreSQL 14 on;
/// 13 has only `pg_is_wal_replay_paused()`, which says the same once recovery pauses at its
/// target.
fn pause_state_query(server_version: Option<&str>) -> &'static str {
    let major: u32 = server_version
        .map(|v| v.chars().take_while(char::is_ascii_digit).collect::<String>())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    if major == 13 {
        "SELECT pg_is_in_recovery()::text, CASE WHEN pg_is_in_recovery() THEN \
         CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END END, \
         pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text"
    } else {
        "SELECT pg_is_in_recovery()::text, CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END, \
         pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_poll_speaks_each_major() {
        assert!(pause_state_query(Some("13.23")).contains("pg_is_wal_replay_paused()"));
        for v in ["14.23", "15.18 (Debian 15.18-0+deb12u1)", "18.4"] {
            assert!(pause_state_query(Some(v)).contains("pg_get_wal_replay_pause_state()"), "{v}");
        }
    }
}
