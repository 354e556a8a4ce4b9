//! A restore from start to finish: plan (refusing before anything is written), check the
//! destination directories, rebuild them from the backup, write the recovery settings, sync,
//! and optionally start the server until it reached the target.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::catalog::{self, BackupEntry};
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::lease::RestoreLeaseHandle;
use common::repository::Repository;

use crate::drill::{self, DrillOptions};
use crate::extract;
use crate::plan::{make_plan, Plan};
use crate::progress::{self, Phase, Progress};
use crate::recovery_conf;
use crate::report::{self, Durations, RestoreJson};
use crate::source::RepoSource;
use crate::target::{Action, Target};

/// Everything `pitr-restore` was asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The target.
    pub target: Target,
    /// Restore this backup instead of the best one.
    pub backup: Option<String>,
    /// The data directory to create.
    pub pgdata: PathBuf,
    /// Delete what the destination directories hold first.
    pub force: bool,
    /// New locations of tablespaces, by oid.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// Chunks downloaded and decompressed at once.
    pub jobs: usize,
    /// Write large files with O_DIRECT where possible.
    pub direct_io: bool,
    /// The wal-archiver for restore_command.
    pub wal_archiver: Option<PathBuf>,
    /// What restore_command passes on to `get` (--config, --retries, --prefetch).
    pub get: recovery_conf::GetOptions,
    /// Extra settings for postgresql.auto.conf.
    pub set: Vec<(String, String)>,
    /// Start the server and wait for the target.
    pub start: Option<DrillOptions>,
    /// What to print.
    pub output: Output,
}

/// What a restore prints: the plan on stderr, progress on stderr, the summary on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// The summary as one JSON object instead of lines for people.
    pub json: bool,
    /// No plan on stderr.
    pub quiet: bool,
    /// Progress on stderr.
    pub progress: progress::Mode,
}

impl Default for Output {
    fn default() -> Output {
        Output { json: false, quiet: false, progress: progress::Mode::Auto { interval: progress::LINE_EVERY } }
    }
}

fn local(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::LocalIo, msg)
}

async fn open(config: &Config) -> Result<(Repository, Vec<BackupEntry>, common::wal::WalSegmentSize), Failure> {
    let repo = config.open_repository(false).await?;
    let Some(info) = repo.cluster_info().await? else {
        return Err(Failure::msg(
            FailureKind::Refused,
            format!(
                "cluster {:?} has nothing in repository {} (check --repo and --cluster); nothing was written",
                config.cluster, config.repo
            ),
        ));
    };
    let backups = catalog::list_entries(&repo).await?;
    Ok((repo, backups, info.segment_size))
}

/// The repository a restore reads: the main one, or, when it cannot be reached (a storage
/// failure opening or listing it after retries) and a second repository is configured, the
/// second one, said in one line on stderr. The configuration that comes back is the one
/// restore_command is written from: when the second repository stands in, it is the only one
/// there. The plan was made from the copy, which holds the WAL it needs, so its "absent" is an
/// answer that ends recovery where it should; with the unreachable original as a fallback,
/// every such answer (PostgreSQL's probe for the next timeline's history file, the segment
/// after the last) would become "not certain" (205) and abort recovery instead.
#[allow(clippy::type_complexity)]
async fn open_first_reachable(
    config: &Config,
) -> Result<(Config, Repository, Vec<BackupEntry>, common::wal::WalSegmentSize), Failure> {
    let failure = match open(config).await {
        Ok((repo, backups, size)) => return Ok((config.clone(), repo, backups, size)),
        Err(f) if f.kind == FailureKind::Storage && config.repo2_config.is_some() => f,
        Err(f) => return Err(f),
    };
    let Some(second) = config.repo2()? else { return Err(failure) };
    eprintln!(
        "pitr-restore: the main repository {} cannot be reached ({failure}); restoring from the second repository {}",
        config.repo, second.repo
    );
    let (repo, backups, size) =
        open(&second).await.map_err(|f| f.context(format!("the second repository {}", second.repo)))?;
    Ok((second, repo, backups, size))
}

/// Makes the plan (no side effects).
pub async fn plan(config: &Config, target: &Target, backup: Option<&str>) -> Result<Plan, Failure> {
    let (_, repo, backups, size) = open_first_reachable(config).await?;
    checked_plan(&repo, backups, target, size, backup).await
}

/// The plan, with a backup whose objects are all in the repository: a chosen backup with a
/// missing or misplaced chunk or manifest is skipped (and named in the plan) and the plan made
/// again without it, so an older backup that reaches the target is used instead. A backup
/// asked for with `--backup` is never replaced: its damage is the error (exit 6).
async fn checked_plan(
    repo: &Repository,
    mut backups: Vec<BackupEntry>,
    target: &Target,
    size: common::wal::WalSegmentSize,
    backup: Option<&str>,
) -> Result<Plan, Failure> {
    let mut skipped: Vec<String> = Vec::new();
    loop {
        let mut plan = match make_plan(RepoSource::new(repo.clone()), backups.clone(), target, size, backup).await {
            Ok(p) => p,
            Err(f) if !skipped.is_empty() => {
                return Err(Failure::msg(f.kind, format!("{f} (skipped as damaged: {})", skipped.join("; "))));
            }
            Err(f) => return Err(f),
        };
        let problems = catalog::missing_objects(repo, &plan.backup.id, &plan.backup.archives).await?;
        if problems.is_empty() {
            plan.skipped_backups = skipped;
            return Ok(plan);
        }
        let what = format!(
            "backup {} ({} object(s) missing or misplaced: {})",
            plan.backup.id,
            problems.len(),
            problems.iter().take(2).cloned().collect::<Vec<_>>().join("; ")
        );
        if backup.is_some() {
            return Err(Failure::msg(FailureKind::Corrupt, format!("{what}; nothing was written")));
        }
        tracing::warn!("skipping damaged {what}");
        skipped.push(what);
        backups.retain(|b| b.id != plan.backup.id);
    }
}

/// The wal-archiver that restore_command will run.
pub fn find_wal_archiver(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    let usage = |m: String| Failure::msg(FailureKind::Usage, m);
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
        } else {
            Err(usage(format!("--wal-archiver {}: no such file", p.display())))
        };
    }
    if let Some(sibling) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("wal-archiver"))) {
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("wal-archiver");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(usage(
        "cannot find wal-archiver for restore_command: install it next to pitr-restore or pass --wal-archiver PATH"
            .into(),
    ))
}

/// What a destination directory looks like before the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    Absent,
    Empty,
    Cleared,
}

/// Checks a destination: absent or empty, or non-empty with `force` (then it is cleared
/// later). A data directory with a live server is never touched.
fn check_destination(dir: &Path, force: bool, what: &str) -> Result<Before, Failure> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Before::Absent),
        Err(e) => Err(local(format!("cannot read {what} {}: {e}", dir.display()))),
        Ok(entries) => {
            let n = entries.count();
            if n == 0 {
                return Ok(Before::Empty);
            }
            let pid = dir.join("postmaster.pid");
            if pid.exists() {
                return Err(Failure::msg(
                    FailureKind::Conflict,
                    format!(
                        "{what} {} holds postmaster.pid: a server may be running on it; stop it (pg_ctl stop) \
                         and remove the file if it is stale; nothing was written",
                        dir.display()
                    ),
                ));
            }
            if force {
                Ok(Before::Cleared)
            } else {
                Err(Failure::msg(
                    FailureKind::Conflict,
                    format!(
                        "{what} {} is not empty ({n} entries): restore into a new or empty directory, or pass --force \
                         to delete its contents first; nothing was written",
                        dir.display()
                    ),
                ))
            }
        }
    }
}

/// Removes everything inside `dir`.
fn clear(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Creates or empties `dir` with mode 0700.
fn prepare(dir: &Path, before: Before) -> Result<(), Failure> {
    let io = |e: std::io::Error| local(format!("cannot prepare {}: {e}", dir.display()));
    match before {
        Before::Absent => fs::create_dir_all(dir).map_err(io)?,
        Before::Cleared => clear(dir).map_err(io)?,
        Before::Empty => {}
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Undoes a failed restore: leaves each destination as absent or empty.
fn undo(dirs: &[(PathBuf, Before)]) {
    for (d, before) in dirs {
        let r = match before {
            Before::Absent => fs::remove_dir_all(d),
            _ => clear(d),
        };
        if let Err(e) = r {
            tracing::warn!(dir = %d.display(), error = %e, "could not remove a partial restore");
        }
    }
}

/// A tablespace location as `tablespace_map` holds it for a server of `version_num`: newline
/// and carriage return escaped with a backslash, and from PostgreSQL 14 on the backslash
/// itself (13's reader keeps a backslash that precedes anything else).
fn tablespace_map_path(path: &str, version_num: u32) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '\\' if version_num >= 140000 => out.push_str("\\\\"),
            '\n' | '\r' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Rewrites `tablespace_map` lines of remapped tablespaces.
fn remap_tablespaces(data: &Path, map: &BTreeMap<u32, PathBuf>, version_num: u32) -> Result<(), Failure> {
    if map.is_empty() {
        return Ok(());
    }
    let p = data.join("tablespace_map");
    let text = fs::read_to_string(&p).map_err(|e| local(format!("cannot read {}: {e}", p.display())))?;
    let mut out = String::new();
    for line in text.lines() {
        let oid = line.split(' ').next().and_then(|o| o.parse::<u32>().ok());
        match oid.and_then(|o| map.get(&o).map(|d| (o, d))) {
            Some((o, d)) => {
                let escaped = tablespace_map_path(&d.display().to_string(), version_num);
                out.push_str(&format!("{o} {escaped}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    fs::write(&p, out).map_err(|e| local(format!("cannot write {}: {e}", p.display())))
}

/// Restores according to `opts`; prints what it did.
///
/// A restore lease (see `common::lease`) is recorded before the plan is made, and holds the
/// chosen backup and its WAL from then on, so that a `basebackup expire` running meanwhile
/// leaves them alone. It is removed when the restore fails before recovery could start, and
/// when `--start` has run recovery to its end; otherwise (the server is started later) it ends
/// by itself after [`LEASE_AFTER_RESTORE`].
pub async fn restore(config: &Config, opts: &RestoreOptions) -> Result<(), Failure> {
    let t0 = Instant::now();
    let progress = Progress::start(opts.output.progress);
    let (effective, repo, backups, size) = open_first_reachable(config).await?;
    let mut opts = opts.clone();
    if effective.repo != config.repo {
        // The second repository stands in: restore_command reads its file.
        opts.get.config_file = effective.file.clone();
    }
    let (config, opts) = (&effective, &opts);
    let mut lease = RestoreLeaseHandle::begin(&repo, LEASE_WHILE_PLANNING).await;
    let mut recovery_may_run = false;
    let result =
        restore_with(config, opts, &repo, backups, size, &mut lease, &mut recovery_may_run, &progress, t0).await;
    if let Some(l) = lease {
        if (result.is_err() && !recovery_may_run) || (result.is_ok() && opts.start.is_some()) {
            l.release().await;
        }
    }
    progress.finish();
    let summary = result?;
    if opts.output.json {
        println!("{}", report::to_line(&summary));
    }
    Ok(())
}

/// How long a restore lease holds while the restore is planned and the files are written.
const LEASE_WHILE_PLANNING: Duration = Duration::from_secs(6 * 3600);
/// How long it holds once the recovery settings are written (recovery may be started by
/// hand, later).
pub const LEASE_AFTER_RESTORE: Duration = Duration::from_secs(24 * 3600);

/// The restore after the repository is open; prints the lines for people as it goes and
/// returns the summary for `--json`.
#[allow(clippy::too_many_arguments)]
async fn restore_with(
    config: &Config,
    opts: &RestoreOptions,
    repo: &Repository,
    backups: Vec<BackupEntry>,
    size: common::wal::WalSegmentSize,
    lease: &mut Option<RestoreLeaseHandle>,
    recovery_may_run: &mut bool,
    progress: &Progress,
    t0: Instant,
) -> Result<RestoreJson, Failure> {
    let counters = progress.counters();
    let human = !opts.output.json;
    let plan = checked_plan(repo, backups, &opts.target, size, opts.backup.as_deref()).await?;
    let backup = plan.backup.clone();
    if let Some(l) = lease.as_mut() {
        l.hold(&backup.id, &plan.first_segment, LEASE_WHILE_PLANNING).await;
    }
    if !opts.output.quiet {
        progress.suspend(|| eprint!("{}", plan.render()));
    }

    // Destinations, checked before anything is written.
    let mut tablespaces = BTreeMap::new();
    for a in &backup.archives {
        if let Some(oid) = a.tablespace_oid {
            let dir = match opts.tablespace_map.get(&oid) {
                Some(d) => d.clone(),
                None => PathBuf::from(a.tablespace_path.clone().ok_or_else(|| {
                    Failure::msg(
                        FailureKind::Corrupt,
                        format!("backup {}: tablespace {oid} has no location", backup.id),
                    )
                })?),
            };
            tablespaces.insert(oid, dir);
        }
    }
    for oid in opts.tablespace_map.keys() {
        if !tablespaces.contains_key(oid) {
            return Err(Failure::msg(
                FailureKind::Usage,
                format!("--tablespace {oid}=...: backup {} has no tablespace {oid}", backup.id),
            ));
        }
    }
    let mut dirs = vec![(opts.pgdata.clone(), check_destination(&opts.pgdata, opts.force, "data directory")?)];
    for (oid, d) in &tablespaces {
        dirs.push((d.clone(), check_destination(d, opts.force, &format!("tablespace {oid} directory"))?));
    }
    let wal_archiver = find_wal_archiver(opts.wal_archiver.as_deref())?;
    let command = recovery_conf::restore_command(&wal_archiver, config, &opts.get);
    if let Some(c) = command.chars().find(|c| c.is_control()) {
        return Err(Failure::msg(
            FailureKind::Usage,
            format!(
                "restore_command would contain the control character {c:?} (in the path of wal-archiver or the \
                 configuration file), which postgresql.auto.conf cannot hold; nothing was written"
            ),
        ));
    }
    let manifest = extract::manifest(repo, &backup).await?;
    counters.set_totals(manifest.files.iter().map(|f| f.size).sum(), manifest.files.len() as u64);

    for (d, before) in &dirs {
        if let Err(f) = prepare(d, *before) {
            undo(&dirs);
            return Err(f);
        }
    }
    let fast = drill::fast_promotion(&opts.target, opts.start.is_some(), &opts.set);
    let t_files = Instant::now();
    let mut t_settings = t_files;
    counters.set_phase(Phase::Files);
    let written = async {
        let stats =
            extract::extract(repo, &backup, &manifest, &opts.pgdata, &tablespaces, opts.jobs, opts.direct_io, counters)
                .await?;
        counters.set_phase(Phase::Settings);
        t_settings = Instant::now();
        remap_tablespaces(&opts.pgdata, &opts.tablespace_map, backup.server_version_num)?;
        let user_sets = |key: &str| opts.set.iter().any(|(k, _)| k.eq_ignore_ascii_case(key));
        let mut set = Vec::new();
        let mut notes = Vec::new();
        if fast {
            set.push(("hot_standby".to_string(), "on".to_string()));
            notes.push(
                "action promote: recovery pauses at the target and pitr-restore --start promotes the server, a fast \
                 promotion; if it was interrupted, run pg_ctl promote",
            );
        }
        // recovery_prefetch exists from PostgreSQL 15 on.
        let no_prefetch =
            stats.direct_bytes > 0 && backup.server_version_num >= 150000 && !user_sets("recovery_prefetch");
        if no_prefetch {
            set.push(("recovery_prefetch".to_string(), "off".to_string()));
            notes.push(
                "recovery_prefetch off: the data files were written with O_DIRECT and are not cached; prefetching \
                 would read pages that WAL replay overwrites with full-page images",
            );
        }
        set.extend(opts.set.iter().cloned());
        let target = if fast { Target { action: Action::Pause, ..opts.target.clone() } } else { opts.target.clone() };
        let lines = recovery_conf::settings(&command, &target, plan.timeline, &set);
        let mut header = format!(
            "Recovery settings written by pitr-restore {}: backup {}, target {}",
            env!("CARGO_PKG_VERSION"),
            backup.id,
            plan.target
        );
        for n in notes {
            header.push_str(&format!("\n# ({n})"));
        }
        if let Some(l) = lease.as_mut() {
            l.hold(&backup.id, &plan.first_segment, LEASE_AFTER_RESTORE).await;
        }
        *recovery_may_run = true;
        recovery_conf::write(&opts.pgdata, &header, &lines)?;
        for (d, _) in &dirs {
            extract::sync_filesystem(d)?;
        }
        Ok::<_, Failure>(stats)
    }
    .await;
    let stats = match written {
        Ok(s) => s,
        Err(f) => {
            undo(&dirs);
            *recovery_may_run = false;
            return Err(Failure::msg(f.kind, format!("{f}; the partial restore was removed")));
        }
    };
    let t_written = Instant::now();
    let mut durations = Durations {
        planning: report::secs(t_files - t0),
        files: report::secs(t_settings - t_files),
        settings: report::secs(t_written - t_settings),
        recovery: None,
        total: report::secs(t_written - t0),
    };
    let secs = t0.elapsed().as_secs_f64();
    if human {
        progress.suspend(|| {
            println!(
                "restored backup {} into {}: {} files, {:.1} MB in {:.1} s ({:.0} MB/s, {:.1} MB of it with O_DIRECT); \
                 recovery settings written for {}",
                backup.id,
                opts.pgdata.display(),
                stats.files,
                stats.bytes as f64 / 1e6,
                secs,
                stats.bytes as f64 / 1e6 / secs.max(1e-3),
                stats.direct_bytes as f64 / 1e6,
                plan.target
            )
        });
    }
    let Some(drill_opts) = &opts.start else {
        if human {
            progress.suspend(|| {
                println!(
                    "next: start the server (pg_ctl -D {} start); it replays WAL through restore_command and stops {}",
                    opts.pgdata.display(),
                    plan.stop
                )
            });
        }
        return Ok(RestoreJson::new(&plan, &opts.target, &opts.pgdata, &stats, durations, None));
    };
    let drill_opts = DrillOptions { promote_when_paused: fast, expected_end: plan.recovery_end, ..drill_opts.clone() };
    let (goal, exact) = plan.replay_end(&opts.target);
    counters.set_replay_goal(backup.start_lsn, goal, exact);
    counters.set_phase(Phase::Starting);
    let report = drill::run(&opts.pgdata, &opts.target, &drill_opts, counters).await?;
    durations.recovery = Some(report::secs(report.recovery));
    durations.total = report::secs(t0.elapsed());
    if human {
        progress.suspend(|| {
            println!(
                "server {} after {:.1} s of recovery; total time {:.1} s; last transaction recovered: {}; smoke query: \
                 {}; log: {}",
                report.state,
                report.recovery.as_secs_f64(),
                t0.elapsed().as_secs_f64(),
                report.last_transaction.as_deref().unwrap_or("none"),
                report.smoke.as_deref().unwrap_or("-"),
                report.log.display()
            )
        });
    }
    Ok(RestoreJson::new(
        &plan,
        &opts.target,
        &opts.pgdata,
        &stats,
        durations,
        Some((&report, drill_opts.smoke_query.as_str())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_map_paths_are_escaped_as_each_major_reads_them() {
        assert_eq!(tablespace_map_path("/srv/ts", 180004), "/srv/ts");
        assert_eq!(tablespace_map_path("/a\\b\nc\rd", 150000), "/a\\\\b\\\nc\\\rd");
        assert_eq!(tablespace_map_path("/a\\b\nc", 130023), "/a\\b\\\nc", "13 keeps other backslashes");
    }
}
