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
    fs::create_dir_all(spool)
        .map_err(|e| Failure::msg(FailureKind::LocalIo, format!("{}: {e}", spool.display())).transient())?;
    let f = lock_file(spool)
        .map_err(|e| Failure::msg(FailureKind::LocalIo, format!("{}: {e}", spool.display())).transient())?;
    Ok(f.try_lock().is_ok().then_some(f))
}

/// The worker's command line and environment: this configuration, and a fixed malloc mmap
/// threshold. A worker runs several pushes or downloads on threads of their own; glibc raises
/// its mmap threshold after the first 16 MiB buffer is freed, so later buffers come from the
/// per-thread arenas, which keep them (touched) after use, and a look-ahead worker peaked at
/// 74-80 MiB (benches/RESULTS.md). With the threshold fixed at 4 MiB, segment-sized buffers
/// are mapped fresh and returned whole: about 50 MiB for two pushes in parallel.
fn command(exe: &Path, config: &Config, args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args).envs(config.to_env());
    if std::env::var_os(MMAP_THRESHOLD_VAR).is_none() {
        cmd.env(MMAP_THRESHOLD_VAR, MMAP_THRESHOLD.to_string());
    }
    cmd
}

/// glibc's variable for a fixed mmap threshold (read once, when the process starts).
const MMAP_THRESHOLD_VAR: &str = "MALLOC_MMAP_THRESHOLD_";
/// Allocations from this size on are mapped and unmapped on their own (see [`command`]).
const MMAP_THRESHOLD: usize = 4 << 20;

/// For the long-running `receive`: unless the environment already fixes the mmap threshold,
/// runs this program again (same process id, arguments and environment) with it fixed, as
/// [`command`] does for workers. The receiver stores 16 MiB segments and compresses its
/// partial segment every second on blocking threads, each with a glibc arena of its own:
/// without it the receiver peaked at 350 MiB RSS in benches/compare-receive.sh, with it at
/// 82 MiB. Returns only when the exec failed (the receiver then runs as it is).
pub fn exec_with_fixed_mmap_threshold() -> Option<std::io::Error> {
    if std::env::var_os(MMAP_THRESHOLD_VAR).is_some() {
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Some(e),
    };
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(MMAP_THRESHOLD_VAR, MMAP_THRESHOLD.to_string());
    Some(std::os::unix::process::CommandExt::exec(&mut cmd))
}

/// Starts `wal-archiver <args>` detached, with this configuration in its environment.
pub fn spawn(config: &Config, spool: &Path, args: &[&std::ffi::OsStr]) {
    if fs::create_dir_all(spool).is_err() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let log = File::create(spool.join("worker.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let mut cmd = command(&exe, config, args);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        tracing::info!(error = %e, "cannot start a background worker");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_run_with_a_fixed_mmap_threshold_and_the_configuration() {
        let args = common::config::RepoArgs { repo: Some("/r".into()), ..Default::default() };
        let config = Config::resolve(&args).unwrap();
        let cmd = command(Path::new("/bin/true"), &config, &["push-ahead-worker".as_ref()]);
        let env: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            assert!(env.contains(&("MALLOC_MMAP_THRESHOLD_".into(), Some("4194304".into()))), "{env:?}");
        }
        assert!(env.iter().any(|(k, v)| k == "PITR_REPO" && v.as_deref() == Some("/r".as_ref())), "{env:?}");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["push-ahead-worker"]);
    }
}
