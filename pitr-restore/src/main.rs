//! `pitr-restore`: restores a PostgreSQL cluster from a pitr repository to a point in time.
//! Parses the command line, sets up logging, runs the command and turns its outcome into the
//! documented exit status; everything else is in the library.

use std::process::ExitCode;

use pitr_restore::cli::Cli;

fn main() -> ExitCode {
    let cli: Cli = match common::cmdline::parse(2) {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    common::telemetry::init(cli.verbose);
    let what = if cli.command.is_some() { "plan" } else { "restore" };
    match pitr_restore::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("pitr-restore {what}: error: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}
