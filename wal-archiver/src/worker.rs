//! Detached background workers (prefetch for `get`, look-ahead for `push`): one at a time per
//! spool directory, guarded by an advisory lock on `<spool>/lock`, started in their own
//! process group so they outlive the short command that started them, logging to
//! `<spool>/worker.log`.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};

use common::config::Config;
use common::exit::{Failure, FailureKind};

fn lock_file(spool: &Path) -> std::io::Result<File> {
    File::options().read(true).write(true).create(true).truncate(false).open(spool.join("lock"))
}

/// Whether a worker holds the spool's lock.
pub fn running(spool: &Path) -> bool {
    lock_file(spool).map(|f| f.try_lock().is_err()).unwrap_or(false)
}

/// Takes the spool's lock for this worker's lifetime; `None` when another worker has it.
pub fn acquire(spool: &Path) -> Result<Option<File>, Failure> {
    fs::create_dir_all(spool).map_err(|e| Failure::msg(FailureKind::LocalIo, format!("{}: {e}", spool.display())))?;
    let f = lock_file(spool).map_err(|e| Failure::msg(FailureKind::LocalIo, format!("{}: {e}", spool.display())))?;
    Ok(f.try_lock().is_ok().then_some(f))
}

/// Starts `wal-archiver <args>` detached, with this configuration in its environment.
pub fn spawn(config: &Config, spool: &Path, args: &[&std::ffi::OsStr]) {
    if fs::create_dir_all(spool).is_err() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let log = File::create(spool.join("worker.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new(exe);
    cmd.args(args).envs(config.to_env()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        tracing::info!(error = %e, "cannot start a background worker");
    }
}
