//! `wal-archiver`: PostgreSQL's archive_command (`push %p`) and restore_command
//! (`get %f %p`), plus `list`. Parses the command line, sets up logging, runs the command and
//! turns its outcome into the documented exit status; everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use wal_archiver::cli::{Cli, Command};

fn main() -> ExitCode {
    let is_get = std::env::args().nth(1).is_some_and(|a| a == "get");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                // A broken restore_command must abort recovery, not look like "file missing".
                _ if is_get => 202,
                _ => 2,
            });
        }
    };
    common::telemetry::init(cli.verbose);
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
