//! `wal-archiver`: PostgreSQL's archive_command (`push %p`) and restore_command
//! (`get %f %p`), plus `list` and `verify`. Parses the command line, sets up logging, runs the
//! command and turns its outcome into the documented exit status; everything else is in the
//! library.

use std::process::ExitCode;

use wal_archiver::cli::{Cli, Command};

fn main() -> ExitCode {
    let is_get = std::env::args().nth(1).is_some_and(|a| a == "get");
    // A broken restore_command must abort recovery, not look like "file missing".
    let cli: Cli = match common::cmdline::parse(if is_get { 202 } else { 2 }) {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    common::telemetry::init(cli.verbose);
    if matches!(cli.command, Command::Receive { .. }) {
        if let Some(e) = wal_archiver::worker::exec_with_fixed_mmap_threshold() {
            tracing::warn!(error = %e, "cannot restart with a fixed malloc mmap threshold; memory use may grow");
        }
    }
    let is_get = matches!(cli.command, Command::Get { .. });
    let what = cli.command.name();
    match wal_archiver::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("wal-archiver {what}: error: {f}");
            ExitCode::from(if is_get { f.get_exit_code() } else { f.exit_code() })
        }
    }
}
