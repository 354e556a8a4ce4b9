//! Look-ahead for `push`: PostgreSQL's archiver runs one archive_command at a time, so a
//! backlog of finished segments (`pg_wal/archive_status/*.ready`) is pushed one process after
//! another while other cores idle. When `push` sees such a backlog it starts a detached worker
//! (`wal-archiver push-ahead-worker`, one at a time, guarded by a file lock) that pushes the
//! waiting segments, `push-ahead` of them in parallel, through exactly the same validation and
//! storage path. When PostgreSQL then asks for one of them, `push` finds it stored and checks
//! that the stored digest matches the local file before exiting 0: the archive_command
//! contract is unchanged, only the work moved earlier.
//!
//! Who works on which file is decided by claim files in `pg_wal/.pitr-push/` created with
//! `O_EXCL` and holding the claimer's pid: the foreground claims its own file first; when the
//! worker holds the claim, the foreground waits for it (and takes over if the worker died).
//! A failure in the worker is only logged (`.pitr-push/worker.log`): the foreground then
//! pushes the file itself and reports the error to PostgreSQL.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::codec::CompressOptions;
use common::config::Config;
use common::exit::Failure;
use common::wal::WalFileName;

use crate::worker;

/// Longest a foreground push waits for the worker to finish its file.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(300);
/// Most segments one worker run takes on.
const MAX_BATCH: usize = 256;

fn spool(pg_wal: &Path) -> PathBuf {
    pg_wal.join(".pitr-push")
}

fn claim_path(spool: &Path, name: &str) -> PathBuf {
    spool.join(format!("{name}.claim"))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Claims `name` for this process; false if someone else holds a live claim.
fn claim(spool: &Path, name: &str) -> bool {
    let p = claim_path(spool, name);
    for _ in 0..2 {
        match File::options().write(true).create_new(true).open(&p) {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(&p).ok().and_then(|s| s.trim().parse::<u32>().ok());
                match owner {
                    Some(pid) if pid_alive(pid) => return false,
                    // Just created (empty) by a live claimer, or stale: look again / take over.
                    None => std::thread::sleep(Duration::from_millis(1)),
                    Some(_) => {
                        let _ = fs::remove_file(&p);
                    }
                }
            }
            Err(_) => return true, // no spool: nobody else can be working
        }
    }
    false
}

/// Names of the files waiting in the archiver's queue, oldest first, history files first
/// (the order PostgreSQL's archiver uses).
fn ready_files(pg_wal: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(pg_wal.join("archive_status"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .filter(|n| WalFileName::parse(n).is_ok())
        .collect();
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names
}

/// The foreground's side: holds this process's claim on its file while it pushes it.
#[derive(Debug)]
pub struct Ahead {
    claim: PathBuf,
}

impl Ahead {
    /// Prepares the foreground push of `path`: starts the worker if other segments wait, and
    /// waits while the worker pushes this very file. `None` when look-ahead does not apply.
    pub fn begin(config: &Config, path: &Path) -> Option<Ahead> {
        if config.push_ahead == 0 {
            return None;
        }
        let pg_wal = path.parent().filter(|d| d.join("archive_status").is_dir())?;
        let name = path.file_name()?.to_str()?.to_string();
        let spool = spool(pg_wal);
        let deadline = Instant::now() + WAIT_FOR_WORKER;
        while !claim(&spool, &name) {
            if Instant::now() > deadline {
                tracing::warn!(file = %name, "look-ahead worker holds this file too long; pushing it here");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let others = ready_files(pg_wal).into_iter().any(|n| n != name && !claim_path(&spool, &n).exists());
        if others && !worker::running(&spool) {
            start_worker(config, pg_wal, &spool);
        }
        Some(Ahead { claim: claim_path(&spool, &name) })
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.claim);
    }
}

fn start_worker(config: &Config, pg_wal: &Path, spool: &Path) {
    worker::spawn(config, spool, &["push-ahead-worker".as_ref(), "--pg-wal".as_ref(), pg_wal.as_os_str()]);
}

/// The worker: pushes queued files `config.push_ahead` at a time until none is left.
pub async fn worker(config: &Config, pg_wal: &Path) -> Result<(), Failure> {
    let spool = spool(pg_wal);
    let Some(lock) = worker::acquire(&spool)? else {
        return Ok(());
    };
    // Each job compresses on one thread: the parallelism is across files.
    let mut config = config.clone();
    config.compress = CompressOptions { workers: 0, ..config.compress };
    let done: Mutex<Vec<String>> = Mutex::new(Vec::new());
    loop {
        let todo: Vec<String> = {
            let done = done.lock().unwrap_or_else(|e| e.into_inner());
            ready_files(pg_wal).into_iter().filter(|n| !done.contains(n)).take(MAX_BATCH).collect()
        };
        if todo.is_empty() || done.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_BATCH {
            break;
        }
        let queue = Mutex::new(todo.into_iter());
        std::thread::scope(|s| {
            for _ in 0..config.push_ahead.max(1) {
                s.spawn(|| {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let Some(name) = next else { return };
                        done.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
                        if !claim(&spool, &name) {
                            continue;
                        }
                        let path = pg_wal.join(&name);
                        if path.exists() && pg_wal.join("archive_status").join(format!("{name}.ready")).exists() {
                            if let Err(f) = rt.block_on(crate::store::store_everywhere(&config, &path)) {
                                eprintln!(
                                    "look-ahead push of {name} failed (the archiver's own push will report it): {f}"
                                );
                            }
                        }
                        let _ = fs::remove_file(claim_path(&spool, &name));
                    }
                });
            }
        });
    }
    drop(lock);
    Ok(())
}
