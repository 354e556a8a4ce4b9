//! The library behind `wal-archiver`: each subcommand in its own module, callable without a
//! process (tests drive them directly as well as through the binary).

pub mod cli;
pub mod get;
pub mod list;
pub mod prefetch;
pub mod push;
pub mod push_ahead;
pub mod worker;

use common::config::Config;
use common::exit::{Failure, FailureKind};

use crate::cli::{Cli, Command};

/// Runs one command to completion on a single-threaded runtime (one process per WAL file:
/// start-up cost matters more than parallelism here).
pub fn run(cli: Cli) -> Result<(), Failure> {
    let config = Config::resolve(&cli.repo)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FailureKind::LocalIo, e))?;
    rt.block_on(async {
        match cli.command {
            Command::Push { path } => push::push(&config, &path).await.map(|outcome| {
                tracing::info!(file = %path.display(), ?outcome, "pushed");
            }),
            Command::Get { name, path } => get::get(&config, &name, &path).await,
            Command::List { json } => list::list(&config, json).await,
            Command::PrefetchWorker { after, spool } => prefetch::worker(&config, &spool, &after).await,
            Command::PushAheadWorker { pg_wal } => push_ahead::worker(&config, &pg_wal).await,
        }
    })
}
