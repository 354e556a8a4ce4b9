//! What every pitr binary's `main` does the same way: parse the command line (help and
//! version exit 0, a usage error exits with the caller's code) and build the tokio runtime a
//! command runs on.

use clap::Parser;

use crate::config::{ArgSources, RepoArgs};
use crate::exit::{Failure, FailureKind};

/// A command line that carries the shared repository flags.
pub trait WithRepoArgs {
    /// Its [`RepoArgs`].
    fn repo_args(&mut self) -> &mut RepoArgs;
}

/// Parses the command line into `C`, recording which repository settings came from a flag
/// and which from the environment; on `--help`/`--version` prints and returns `Err(0)`, on a
/// usage error prints it and returns `Err(usage_code)`.
pub fn parse<C: Parser + WithRepoArgs>(usage_code: u8) -> Result<C, u8> {
    let fail = |e: clap::Error| {
        let _ = e.print();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
            _ => usage_code,
        }
    };
    let matches = C::command().try_get_matches().map_err(fail)?;
    let mut cli = C::from_arg_matches(&matches).map_err(fail)?;
    cli.repo_args().sources = ArgSources::from_matches(&matches);
    Ok(cli)
}

/// A multi-threaded runtime with `workers` threads (for commands whose transfers overlap).
pub fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FailureKind::LocalIo, e))
}

/// Runs `fut` to completion as a task on `rt`'s worker threads. A future run by `block_on`
/// lives on the main thread, which does not drive the runtime's I/O: every time its socket
/// becomes readable, the worker waiting on epoll wakes the main thread (two context switches
/// per read). Measured on a scale-200 base backup: 2.8 s of system CPU with `block_on`, 1.0 s
/// as a task, and 30% less wall time.
pub fn run_as_task<F>(rt: &tokio::runtime::Runtime, fut: F) -> Result<(), Failure>
where
    F: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    rt.block_on(async {
        tokio::spawn(fut)
            .await
            .map_err(|e| Failure::msg(FailureKind::LocalIo, format!("the command's task failed: {e}")))?
    })
}
