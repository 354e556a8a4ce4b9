//! The library behind `wal-archiver`: each subcommand in its own module, callable without a
//! process (tests drive them directly as well as through the binary).

pub mod cli;
pub mod copy;
pub mod copy_object;
pub mod get;
pub mod keys;
pub mod list;
pub mod pending;
pub mod prefetch;
pub mod push;
pub mod push_ahead;
pub mod receive;
pub mod store;
pub mod verify;
pub mod verify_chain;
pub mod worker;

use common::config::Config;
use common::exit::{Failure, FailureKind};

use crate::cli::{Cli, Command};

/// Runs one command to completion on a single-threaded runtime (one process per WAL file:
/// start-up cost matters more than parallelism here).
pub fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Keys { action: crate::cli::KeysCommand::NewKeyFile { file } } = &cli.command {
        // Needs no repository.
        return keys::new_key_file(file);
    }
    let config = Config::resolve(&cli.repo)?;
    match &cli.command {
        Command::Push { .. } | Command::PushAheadWorker { .. } => config.require_absolute_repo("archive_command")?,
        Command::Get { .. } | Command::PrefetchWorker { .. } => config.require_absolute_repo("restore_command")?,
        _ => {}
    }
    if let Command::Receive { .. } = cli.command {
        return run_receive(&config, cli.command);
    }
    if let Command::Verify { all, headers_only, json } = cli.command {
        // Several objects are read and decompressed at once.
        let rt = common::cmdline::runtime(2)?;
        let opts = verify::Options { all, headers_only };
        return common::cmdline::run_as_task(&rt, async move { verify_each(&config, opts, json).await });
    }
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
            Command::Keys { action } => keys::run(&config, action).await,
            Command::Copy { from, dry_run, json } => {
                let direction = if from == "repo2" { copy::Direction::FromRepo2 } else { copy::Direction::ToRepo2 };
                copy::copy(&config, direction, dry_run, json).await
            }
            Command::Receive { .. } => unreachable!("run_receive"),
            Command::Verify { .. } => unreachable!("a runtime of its own"),
        }
    })
}

/// `verify` of the main repository, then of the second one when one is configured, each
/// under a line that names it (with `--json`, one document each); fails with the first
/// problem found, naming its repository, after checking both.
async fn verify_each(config: &Config, opts: verify::Options, json: bool) -> Result<(), Failure> {
    let Some(second) = config.repo2()? else {
        return verify::verify(config, opts, json).await;
    };
    let mut first_failure = None;
    for (which, c) in [("main", config), ("repo2", &second)] {
        if !json {
            println!("== {which} repository {} ==", c.repo);
        }
        if let Err(f) = verify::verify(c, opts, json).await {
            let f = f.context(format!("{which} repository {}", c.repo));
            match &first_failure {
                None => first_failure = Some(f),
                Some(_) => eprintln!("wal-archiver verify: error: {f}"),
            }
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// `receive` runs for days with a reader, a status sender and an uploader overlapping: a
/// multi-threaded runtime (the reader's fsyncs block only its own worker thread).
fn run_receive(config: &Config, command: Command) -> Result<(), Failure> {
    let Command::Receive {
        dbname,
        slot,
        create_slot,
        spool,
        partial_interval,
        synchronous_durability,
        status_interval,
        metrics_listen,
    } = command
    else {
        unreachable!("called for receive only")
    };
    let secs = |what: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v <= 86_400.0 {
            Ok(std::time::Duration::from_secs_f64(v))
        } else {
            Err(Failure::msg(FailureKind::Usage, format!("--{what} must be between 0 and 86400 seconds, not {v}")))
        }
    };
    let opts = receive::ReceiveOptions {
        conninfo: dbname.or_else(|| config.dbname.clone()).unwrap_or_default(),
        slot,
        create_slot,
        spool: spool.unwrap_or_else(|| receive::default_spool(&config.cluster)),
        partial_interval: secs("partial-interval", partial_interval)?,
        durability: synchronous_durability,
        status_interval: secs("status-interval", status_interval)?,
        metrics_listen: metrics_listen.or(config.metrics_listen),
    };
    let rt = common::cmdline::runtime(3)?;
    let config = config.clone();
    common::cmdline::run_as_task(&rt, async move { receive::receive(&config, opts).await })
}
