//! `basebackup`: physical base backups of PostgreSQL into a pitr repository (`create`), and
//! `list` / `verify` of what is stored. Parses the command line, sets up logging, runs the
//! command and turns its outcome into the documented exit status; everything else is in the
//! library.

use std::process::ExitCode;

use basebackup::cli::Cli;
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            });
        }
    };
    common::telemetry::init(cli.verbose);
    let what = cli.command.name();
    match basebackup::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("basebackup {what}: error: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}
