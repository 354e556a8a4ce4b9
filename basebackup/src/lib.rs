//! The library behind `basebackup`: each subcommand in its own module, callable without a
//! process.
//!
//! - [`create`]: BASE_BACKUP over the replication protocol, streamed through [`chunks`]
//!   (tar parsing, CRC-32C per file, zstd, parallel uploads) into the repository, checked
//!   against the server's manifest, recorded only once its WAL is archived;
//! - [`list`]: the catalog entries;
//! - [`verify`]: every chunk, every file and the WAL of stored backups;
//! - [`expire`]: retention: the backups a policy no longer keeps and the WAL only they need.
//!
//! What is stored is described in `common::catalog` and docs/basebackup.md.

pub mod chunks;
pub mod cli;
pub mod create;
pub mod expire;
pub mod list;
pub mod progress;
pub mod verify;
pub mod wal;

use std::time::Duration;

use common::config::Config;
use common::exit::Failure;

use crate::cli::{Cli, Command};

/// Runs one command to completion on a small multi-threaded runtime (uploads and downloads
/// overlap with the socket reader; compression has its own threads), as a task on the
/// runtime's workers (see [`common::cmdline::run_as_task`]).
pub fn run(cli: Cli) -> Result<(), Failure> {
    let config = Config::resolve(&cli.repo)?;
    let rt = common::cmdline::runtime(2)?;
    common::cmdline::run_as_task(&rt, async move {
        match cli.command {
            Command::Create { label, fast: _, spread, wal_timeout } => {
                let conninfo = cli.dbname.clone().or_else(|| config.dbname.clone()).unwrap_or_default();
                let opts = create::CreateOptions {
                    label,
                    fast: !spread,
                    wal_timeout: Duration::from_secs(wal_timeout),
                    progress: true,
                    chunks: None,
                };
                let entry = create::create(&config, &conninfo, opts).await?;
                println!("{}", entry.id);
                Ok(())
            }
            Command::List { json } => list::list(&config, json).await,
            Command::Verify { id, all } => verify::verify(&config, id, all).await,
            Command::Expire { keep_backups, keep_within, dry_run, json } => {
                // A bad value that came from pitr.toml is a configuration error (exit 7).
                let from_file = keep_backups.is_none() && keep_within.is_none();
                let policy = expire::Policy::resolve(
                    keep_backups.or(config.keep_backups),
                    keep_within.as_deref().or(config.keep_within.as_deref()),
                )
                .map_err(|f| {
                    if from_file && (config.keep_backups.is_some() || config.keep_within.is_some()) {
                        common::exit::Failure::msg(
                            common::exit::FailureKind::Config,
                            format!("configuration file: {f}"),
                        )
                    } else {
                        f
                    }
                })?;
                expire::expire(&config, policy, dry_run, json).await
            }
        }
    })
}
