//! `basebackup`: physical base backups of PostgreSQL into a pitr repository (`create`), and
//! `list` / `verify` / `expire` of what is stored. Parses the command line, sets up logging, runs the
//! command and turns its outcome into the documented exit status; everything else is in the
//! library.

use std::process::ExitCode;

use basebackup::cli::Cli;

fn main() -> ExitCode {
    let cli: Cli = match common::cmdline::parse(2) {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
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
