//! `receive`: a long-running streaming receiver (physical replication), so the repository
//! lags the primary by seconds (or, as a synchronous standby, the local spool by nothing)
//! instead of by whole segments.
//!
//! Tasks:
//! - the **reader** ([`session`]) reads the COPY BOTH stream and writes WAL into the
//!   [`spool`]; after each batch of messages it fsyncs and publishes the positions;
//! - the **status** task ([`status`]) owns the connection's writer: it sends a standby status
//!   update when the flush position advances, when a keepalive asks for one, and every
//!   `--status-interval`; it never waits for uploads;
//! - the **uploader** ([`upload`]) stores completed segments through `archive::store` (the
//!   same object `push` makes) and uploads the growing `.partial` every `--partial-interval`
//!   under a receiver-only key.
//!
//! Positions reported: `write` = received and written to the spool, `flush` = fsynced in the
//! spool (`--synchronous-durability spool`) or stored in the repository (`repository`),
//! `apply` = 0. Streaming always (re)starts at a segment start ([`start`] says where). At the
//! end of a timeline ([`timeline`]) the old timeline's last segment is stored as `.partial`,
//! the next timeline's history file is fetched and stored, and the next timeline is streamed.
//!
//! With `--metrics-listen`, [`http`] serves the positions and the counters of [`metrics`]
//! that these tasks update.
//!
//! Dependencies point down, and no part imports one that imports it back: this module (the
//! reconnect loop) uses [`session`], which uses [`start`], [`status`], [`timeline`],
//! [`upload`], [`spool`] and [`metrics`]; [`http`] uses [`metrics`]; all of them use the
//! leaves [`state`] (positions, options, stop reason) and [`errors`].

use std::sync::{Arc, Mutex};

use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::pgwire::{ConnParams, Replication};
use tokio::sync::watch;

pub mod errors;
pub mod http;
pub mod metrics;
pub mod session;
pub mod spool;
pub mod start;
pub mod state;
pub mod status;
pub mod timeline;
pub mod upload;

use self::errors::{reconnect_backoff, SessionEnd, SessionError};
use self::session::Receiver;
pub use self::start::start_position;
pub use self::state::{default_spool, Durability, Positions, ReceiveOptions, StopReason};

use self::metrics::{ErrorKind, ReceiveMetrics};

/// Runs the receiver until SIGTERM/SIGINT (exit 0 after a clean stop) or a fatal error.
pub async fn receive(config: &Config, opts: ReceiveOptions) -> Result<(), Failure> {
    if opts.partial_interval.is_zero() || opts.status_interval.is_zero() {
        return Err(Failure::msg(FailureKind::Usage, "--partial-interval and --status-interval must be positive"));
    }
    let params = ConnParams::parse(&opts.conninfo)
        .map_err(|e| Failure::msg(FailureKind::Config, format!("--dbname: {e}")))?
        .with_replication(Replication::Physical)
        .with_fallback_application_name("pitr");
    std::fs::create_dir_all(&opts.spool).map_err(|e| {
        Failure::msg(FailureKind::LocalIo, format!("cannot create spool directory {}: {e}", opts.spool.display()))
            .transient()
    })?;
    let Some(_lock) = crate::worker::acquire(&opts.spool)? else {
        return Err(Failure::msg(
            FailureKind::Conflict,
            format!("another wal-archiver receive uses spool directory {}", opts.spool.display()),
        ));
    };
    let listener = match opts.metrics_listen {
        Some(addr) => Some(crate::receive::http::bind(addr).await?),
        None => None,
    };
    let repo = config.open_repository(true).await?;
    let (stop_tx, _) = watch::channel(StopReason::Running);
    let stop = Arc::new(stop_tx);
    spawn_signal_handler(stop.clone())?;
    let positions = Arc::new(watch::channel(Positions::default()).0);
    let metrics = Arc::new(ReceiveMetrics::default());
    let _server =
        listener.map(|l| crate::receive::http::serve(l, metrics.clone(), positions.subscribe(), stop.subscribe()));
    let mut r = Receiver {
        config: config.clone(),
        opts,
        params,
        repo,
        positions,
        stop,
        fatal: Arc::new(Mutex::new(None)),
        metrics,
        spool: None,
        uploader: None,
        slot_checked: false,
    };
    let result = r.run().await;
    // Whatever happened: store what can be stored (complete segments, the last partial).
    if let Some(up) = r.uploader.take() {
        up.finish().await;
    }
    let fatal = r.fatal.lock().unwrap().take();
    match (result, fatal) {
        (_, Some(f)) => Err(f),
        (r, None) => r,
    }
}

fn spawn_signal_handler(stop: Arc<watch::Sender<StopReason>>) -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |e: std::io::Error| Failure::msg(FailureKind::LocalIo, format!("cannot handle signals: {e}")).transient();
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        stop.send_if_modified(|s| {
            if *s == StopReason::Running {
                *s = StopReason::Signal;
                true
            } else {
                false
            }
        });
    });
    Ok(())
}

impl Receiver {
    fn stopping(&self) -> bool {
        *self.stop.borrow() != StopReason::Running
    }

    async fn run(&mut self) -> Result<(), Failure> {
        let mut backoff = reconnect_backoff();
        loop {
            if self.stopping() {
                return Ok(());
            }
            let before = self.positions.borrow().written;
            let session = self.session().await;
            self.metrics.disconnected();
            match session {
                Ok(SessionEnd::Stopped) => return Ok(()),
                Ok(SessionEnd::TimelineSwitched) => backoff.reset(),
                Err(SessionError::Fatal(f)) => {
                    self.metrics.error(ErrorKind::Fatal, &f.to_string());
                    return Err(f);
                }
                Err(SessionError::Retry(f)) => {
                    if self.stopping() {
                        return Ok(());
                    }
                    self.metrics.error(ErrorKind::Connection, &f.to_string());
                    if self.positions.borrow().written > before {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(retry_in_s = delay.as_secs(), "{f}");
                    eprintln!("wal-archiver receive: {f}; reconnecting in {} s", delay.as_secs());
                    let mut stop = self.stop.subscribe();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s != StopReason::Running) => return Ok(()),
                    }
                }
            }
        }
    }
}
