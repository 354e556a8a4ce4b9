//! `wal-archiver`: PostgreSQL's archive_command (`push %p`) and restore_command
//! (`get %f %p`), plus `list` and `verify`. Parses the command line, sets up logging, runs the
//! command and turns its outcome into the documented exit status; everything else is in the
//! library.

use std::process::ExitCode;

use wal_archiver::cli::{self, Cli, Command};

fn main() -> ExitCode {
    // A broken restore_command must abort recovery, not look like "file missing": whatever
    // goes wrong in a `get` (a usage error wherever `get` stands among the arguments, a bad
    // PITR_* variable, a panic) exits above 125.
    let is_get = cli::subcommand(std::env::args_os().skip(1)).as_deref() == Some("get");
    if is_get {
        cli::abort_recovery_on_panic();
    }
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
        // PostgreSQL asks for files that do not exist as part of normal recovery (the next
        // timeline's history file, the segment after the last one): not an error.
        Err(f) if is_get && f.kind == common::exit::FailureKind::NotFound => {
            eprintln!("wal-archiver {what}: {f}");
            ExitCode::from(f.get_exit_code())
        }
        Err(f) => {
            eprintln!("wal-archiver {what}: error: {f}");
            ExitCode::from(if is_get { f.get_exit_code() } else { f.exit_code() })
        }
    }
}
