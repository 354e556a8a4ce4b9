//! The library behind `basebackup`: each subcommand in its own module, callable without a
//! process.
//!
//! - [`create`]: BASE_BACKUP over the replication protocol, streamed through [`chunks`]
//!   (tar parsing, CRC-32C per file, zstd, parallel uploads) into the repository, checked
//!   against the server's manifest, recorded only once its WAL is archived;
//! - [`list`]: the catalog entries;
//! - [`verify`]: every chunk, every file and the WAL of stored backups;
//! - [`expire`]: retention: the backups a policy no longer keeps and the WAL only they need,
//!   around what S3 Object Lock still holds ([`locks`]).
//!
//! What is stored is described in `common::catalog` and docs/basebackup.md.

pub mod chunks;
pub mod cli;
pub mod create;
pub mod expire;
pub mod list;
pub mod locks;
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
            Command::Verify { id, all, json } => verify_each(&config, id, all, json).await,
            Command::Expire { keep_backups, keep_within, dry_run, json } => {
                // Each value with where it came from: a flag (or its variable) beats the file.
                let flags = &cli.repo.sources;
                let keep_backups = match keep_backups {
                    Some(n) => Some((n, flags.get("keep-backups"))),
                    None => config.keep_backups.map(|n| (n, config.source("keep-backups"))),
                };
                let keep_within = match &keep_within {
                    Some(w) => Some((w.as_str(), flags.get("keep-within"))),
                    None => config.keep_within.as_deref().map(|w| (w, config.source("keep-within"))),
                };
                let window_source = keep_within.as_ref().map(|(_, s)| s.clone());
                let policy = expire::Policy::resolve_from(keep_backups, keep_within)?;
                let window_origin =
                    window_source.as_ref().map(|source| common::config::Origin { key: "keep-within", source });
                locks::check_period(&config, policy.keep_within, window_origin)?;
                expire::expire(&config, policy, dry_run, json).await
            }
        }
    })
}

/// `verify` of the main repository, then of the second one when one is configured, each under
/// a line that names it; fails with the first problem found, naming its repository, after
/// checking both.
async fn verify_each(config: &Config, id: Option<String>, all: bool, json: bool) -> Result<(), Failure> {
    let Some(second) = config.repo2()? else {
        return verify::verify(config, id, all, json).await;
    };
    let mut first_failure: Option<Failure> = None;
    for (which, c) in [("main", config), ("repo2", &second)] {
        if !json {
            println!("== {which} repository {} ==", c.repo);
        }
        if let Err(f) = verify::verify(c, id.clone(), all, json).await {
            let f = f.context(format!("{which} repository {}", c.repo));
            match &first_failure {
                None => first_failure = Some(f),
                Some(_) => eprintln!("basebackup verify: error: {f}"),
            }
        }
    }
    first_failure.map_or(Ok(()), Err)
}
