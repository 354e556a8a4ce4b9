//! The library behind `pitr-restore`: point-in-time restore of PostgreSQL from a pitr
//! repository.
//!
//! - [`target`]: what to recover to, parsed strictly;
//! - [`timeline`]: the timeline path recovery follows;
//! - [`source`]: what the planner reads about archived WAL (the summaries stored with each
//!   segment);
//! - [`plan`]: backup choice, WAL continuity and target reachability, decided before anything
//!   is written;
//! - [`extract`]: the data directory rebuilt from a backup's chunks, verified;
//! - [`recovery_conf`]: recovery.signal and the recovery settings;
//! - [`drill`]: `--start`, running the server to the target;
//! - [`progress`]: what the restore shows while it runs (a bar, or a line every few seconds);
//! - [`report`]: the JSON shapes of `--json` (the plan, the restore's summary);
//! - [`restore`]: all of it in order.

pub mod cli;
pub mod drill;
pub mod extract;
pub mod plan;
pub mod progress;
pub mod recovery_conf;
pub mod report;
pub mod restore;
pub mod source;
pub mod target;
pub use common::wal::timeline_path as timeline;

use common::config::Config;
use common::exit::{Failure, FailureKind};

use crate::cli::{Cli, Command};

/// Runs the command line to completion, as a task on the runtime's workers (see
/// [`common::cmdline::run_as_task`]).
pub fn run(cli: Cli) -> Result<(), Failure> {
    let config = Config::resolve(&cli.repo)?;
    let rt = common::cmdline::runtime(2)?;
    common::cmdline::run_as_task(&rt, async move {
        match cli.command {
            Some(Command::Plan) => {
                if let Some(option) = cli.restore.given_option() {
                    return Err(Failure::msg(
                        FailureKind::Usage,
                        format!("{option} applies to a restore; plan writes nothing (drop it, or drop plan)"),
                    ));
                }
                let t = cli.target.target()?;
                let p = restore::plan(&config, &t, cli.target.backup.as_deref()).await?;
                if cli.json {
                    println!("{}", report::to_line(&report::PlanJson::new(&p, &t)));
                } else {
                    print!("{}", p.render());
                }
                Ok(())
            }
            None => {
                let pgdata = config.pgdata.clone().ok_or_else(|| {
                    Failure::msg(FailureKind::Usage, "pass --pgdata DIR (-D): the data directory to restore into")
                })?;
                let opts = restore::RestoreOptions {
                    target: cli.target.target()?,
                    backup: cli.target.backup.clone(),
                    pgdata,
                    force: cli.restore.force,
                    tablespace_map: cli.restore.tablespace_map()?,
                    jobs: cli.restore.jobs.max(1),
                    direct_io: !cli.restore.buffered_io,
                    wal_archiver: cli.restore.wal_archiver.clone(),
                    get: recovery_conf::GetOptions {
                        config_file: match &cli.repo.config {
                            Some(f) => Some(std::path::absolute(f).map_err(|e| {
                                Failure::msg(FailureKind::Config, format!("--config {}: {e}", f.display()))
                            })?),
                            None => None,
                        },
                        retries: cli.repo.retries,
                        prefetch: cli.repo.prefetch,
                    },
                    set: cli.restore.settings()?,
                    start: cli.restore.drill(),
                    output: restore::Output {
                        json: cli.json,
                        quiet: cli.restore.quiet,
                        progress: cli.restore.progress(),
                    },
                };
                restore::restore(&config, &opts).await
            }
        }
    })
}
