//! The raw command-line layer (clap derive), turned into a [`Target`] and restore options.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::config::RepoArgs;
use common::exit::{Failure, FailureKind};

use crate::drill::DrillOptions;
use crate::target::{self, Action, Target, TargetKind};

const AFTER_HELP: &str = "\
Targets (at most one; none = the end of the archived WAL):
  --target-time '2026-12-02 03:04:05+00'   stop before the first commit/abort after that time
  --target-lsn 0/3A000028                  stop at that WAL position
  --target-xid 123456                      stop at the commit or abort of that transaction
  --target-name before-migration           stop at a restore point (pg_create_restore_point)
  --target immediate                       stop as soon as the backup is consistent
  --target latest                          the same as no target
--target-exclusive stops just before the target instead of just after it. Zones: an offset
(+00, -05:00) or UTC/GMT/Z. Target options may stand before or after `plan`.

The plan is made and checked before anything is written: pitr-restore refuses (exit 10) when
no backup ends before the target, when WAL between the backup and the target is missing, or
when the target lies beyond the archived WAL. `pitr-restore plan` prints the plan only.

Output: the plan and progress go to stderr (a progress bar on a terminal, else a line every
5 s with the phase, bytes, files and rate; --no-progress or --quiet turn it off), the summary
to stdout; --json prints the plan or the restore's summary as one JSON object instead.

Exit status: 0 success; 1 no such backup (--backup); 2 usage error; 4 a destination directory
is not empty (use --force) or a server is running on it; 5 repository unreachable; 6 the
backup is damaged (the partial restore is removed); 7 bad configuration; 8 local error;
9 (--start) the server failed, did not reach the target, or (latest) recovery ended short of
the archived WAL; 10 restore refused by the plan; 11 the repository is encrypted and the
configured key cannot open it. See docs/restore.md and docs/runbook.md.";

/// Restore a PostgreSQL cluster from a pitr repository to a point in time.
#[derive(Debug, Parser)]
#[command(name = "pitr-restore", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Log what is being done (to stderr); PITR_LOG=debug for more.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// One JSON object on stdout instead of text: the plan (`plan --json`), or the restore's
    /// summary (backup, target, files, bytes, seconds per phase, and with --start what the
    /// server did). Progress and the plan still go to stderr. See docs/restore.md.
    #[arg(long, global = true)]
    pub json: bool,
    /// Repository and cluster settings (`--pgdata` is the directory to restore into).
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Where to stop.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How to restore.
    #[command(flatten)]
    pub restore: RestoreArgs,
    /// `plan`: print the plan without restoring.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl common::cmdline::WithRepoArgs for Cli {
    fn repo_args(&mut self) -> &mut RepoArgs {
        &mut self.repo
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the restore plan (backup, timelines, WAL range, where recovery stops) and check
    /// that it can be carried out, without writing anything.
    ///
    /// The target options work before or after `plan` (`pitr-restore plan --target-time T`,
    /// `pitr-restore --repo R --target-time T plan`); restore options (--force, --start, ...)
    /// do not apply. With --json: one JSON object (backup, target, WAL range, where recovery
    /// stops).
    Plan,
}

/// The recovery target options.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Recover to this time (needs a zone: '2026-12-02 03:04:05+00', ...Z, ...+01:00).
    #[arg(long, value_name = "TIME", group = "tgt", global = true)]
    pub target_time: Option<String>,
    /// Recover to this WAL position (e.g. 0/3A000028).
    #[arg(long, value_name = "LSN", group = "tgt", global = true)]
    pub target_lsn: Option<String>,
    /// Recover to the commit or abort of this transaction id.
    #[arg(long, value_name = "XID", group = "tgt", global = true)]
    pub target_xid: Option<String>,
    /// Recover to this named restore point.
    #[arg(long, value_name = "NAME", group = "tgt", global = true)]
    pub target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent; `latest`: at the end of the
    /// archived WAL (the same as giving no target).
    #[arg(long, value_name = "immediate|latest", group = "tgt", value_parser = ["immediate", "latest"], global = true)]
    pub target: Option<String>,
    /// Stop just before the target instead of just after it (time, LSN and xid targets).
    #[arg(long, global = true)]
    pub target_exclusive: bool,
    /// Timeline to follow: latest, current (the backup's) or a number.
    #[arg(long, value_name = "TLI", default_value = "latest", global = true)]
    pub target_timeline: String,
    /// What the server does at the target.
    #[arg(long, value_enum, value_name = "ACTION", default_value = "promote", global = true)]
    pub target_action: Action,
    /// Restore this backup (an id from `basebackup list`) instead of the newest suitable one.
    #[arg(long, value_name = "ID", global = true)]
    pub backup: Option<String>,
}

/// How to rebuild the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RestoreArgs {
    /// Delete the contents of non-empty destination directories first.
    #[arg(long)]
    pub force: bool,
    /// Restore tablespace OID into DIR instead of its original location (repeatable).
    #[arg(long = "tablespace", value_name = "OID=DIR")]
    pub tablespaces: Vec<String>,
    /// Chunks downloaded and decompressed at once.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Write every file through the page cache. By default files of 1 MiB and more are
    /// written with O_DIRECT where the file system supports it (no copy into the page cache,
    /// the main cost of a restore) and the recovery settings turn recovery_prefetch off
    /// (PostgreSQL 15+; it would read uncached pages that replay overwrites anyway).
    #[arg(long)]
    pub buffered_io: bool,
    /// The wal-archiver that restore_command runs [default: the one next to pitr-restore,
    /// else from PATH].
    #[arg(long, value_name = "PATH")]
    pub wal_archiver: Option<PathBuf>,
    /// Extra setting for postgresql.auto.conf, e.g. --set port=5433 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Start the server afterwards and wait until recovery reached the target; then run a
    /// smoke query and report the restore time and the last transaction recovered.
    #[arg(long)]
    pub start: bool,
    /// With --start: directory of pg_ctl [default: /usr/lib/postgresql/<version>/bin, else PATH].
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// With --start: seconds recovery may take.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub start_timeout: u64,
    /// With --start: the query that must succeed at the end.
    #[arg(long, value_name = "SQL", default_value = "SELECT count(*) FROM pg_database")]
    pub smoke_query: String,
    /// With --start: connection string for the checks [default: the restored server's socket].
    #[arg(long, short = 'd', value_name = "CONNINFO")]
    pub dbname: Option<common::config::ConnString>,
    /// Show no progress on stderr (by default: a progress bar on a terminal, else a line
    /// every 5 seconds with the phase, bytes, files and rate).
    #[arg(long)]
    pub no_progress: bool,
    /// No progress and no plan on stderr: only the summary on stdout, and errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Milliseconds between progress lines when stderr is not a terminal (for tests).
    #[arg(long, value_name = "MS", default_value_t = 5000, hide = true)]
    pub progress_interval_ms: u64,
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::msg(FailureKind::Usage, msg)
}

impl TargetArgs {
    /// The validated target.
    pub fn target(&self) -> Result<Target, Failure> {
        let kind = if let Some(t) = &self.target_time {
            TargetKind::Time(target::parse_time(t)?)
        } else if let Some(l) = &self.target_lsn {
            TargetKind::Lsn(
                l.parse().map_err(|_| usage(format!("--target-lsn {l:?} is not an LSN (like 0/3A000028)")))?,
            )
        } else if let Some(x) = &self.target_xid {
            TargetKind::Xid(target::parse_xid(x)?)
        } else if let Some(n) = &self.target_name {
            if n.is_empty() || n.len() > 63 {
                return Err(usage("--target-name: a restore point name has 1 to 63 bytes"));
            }
            if n.chars().any(char::is_control) {
                return Err(usage("--target-name: a restore point name has no control characters"));
            }
            TargetKind::Name(n.clone())
        } else if self.target.as_deref() == Some("immediate") {
            TargetKind::Immediate
        } else {
            TargetKind::Latest
        };
        if self.target_exclusive && !matches!(kind, TargetKind::Time(_) | TargetKind::Lsn(_) | TargetKind::Xid(_)) {
            return Err(usage("--target-exclusive applies to --target-time, --target-lsn and --target-xid only"));
        }
        Ok(Target {
            kind,
            inclusive: !self.target_exclusive,
            timeline: target::parse_timeline(&self.target_timeline)?,
            action: self.target_action,
        })
    }
}

fn key_value(s: &str, flag: &str) -> Result<(String, String), Failure> {
    let (k, v) = s.split_once('=').ok_or_else(|| usage(format!("{flag} {s:?}: expected KEY=VALUE")))?;
    if k.is_empty() {
        return Err(usage(format!("{flag} {s:?}: empty key")));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

impl RestoreArgs {
    /// The `--tablespace` map.
    pub fn tablespace_map(&self) -> Result<BTreeMap<u32, PathBuf>, Failure> {
        let mut out = BTreeMap::new();
        for t in &self.tablespaces {
            let (k, v) = key_value(t, "--tablespace")?;
            let oid = k.parse::<u32>().map_err(|_| usage(format!("--tablespace {t:?}: {k:?} is not an oid")))?;
            let dir = PathBuf::from(v);
            if !dir.is_absolute() {
                return Err(usage(format!("--tablespace {t:?}: the directory must be an absolute path")));
            }
            out.insert(oid, dir);
        }
        Ok(out)
    }

    /// The `--set` settings: names as PostgreSQL spells parameters, values without control
    /// characters (a newline would end the setting in postgresql.auto.conf and leave the rest
    /// as an unparsable line, so the server would not start).
    pub fn settings(&self) -> Result<Vec<(String, String)>, Failure> {
        self.set
            .iter()
            .map(|s| {
                let (k, v) = key_value(s, "--set")?;
                let name_ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !name_ok {
                    return Err(usage(format!("--set {s:?}: {k:?} is not a parameter name")));
                }
                if let Some(c) = v.chars().find(|c| c.is_control()) {
                    return Err(usage(format!(
                        "--set {k}: the value contains the control character {c:?}, which postgresql.auto.conf \
                         cannot hold; nothing was written"
                    )));
                }
                Ok((k, v))
            })
            .collect()
    }

    /// The first restore option given on the command line (none for `plan`, which writes
    /// nothing): compared with what an empty command line parses to.
    pub fn given_option(&self) -> Option<&'static str> {
        let none = Cli::try_parse_from(["pitr-restore"]).map(|c| c.restore).ok()?;
        let checks: [(&str, bool); 15] = [
            ("--force", self.force != none.force),
            ("--tablespace", self.tablespaces != none.tablespaces),
            ("--jobs", self.jobs != none.jobs),
            ("--buffered-io", self.buffered_io != none.buffered_io),
            ("--wal-archiver", self.wal_archiver != none.wal_archiver),
            ("--set", self.set != none.set),
            ("--start", self.start != none.start),
            ("--pg-bin", self.pg_bin != none.pg_bin),
            ("--start-timeout", self.start_timeout != none.start_timeout),
            ("--smoke-query", self.smoke_query != none.smoke_query),
            ("--dbname", self.dbname != none.dbname),
            ("--no-progress", self.no_progress != none.no_progress),
            ("--quiet", self.quiet != none.quiet),
            ("--progress-interval-ms", self.progress_interval_ms != none.progress_interval_ms),
            ("(any)", *self != none),
        ];
        checks.iter().find(|(_, differs)| *differs).map(|(name, _)| *name)
    }

    /// How to show progress.
    pub fn progress(&self) -> crate::progress::Mode {
        if self.no_progress || self.quiet {
            crate::progress::Mode::Off
        } else {
            crate::progress::Mode::Auto { interval: Duration::from_millis(self.progress_interval_ms.max(1)) }
        }
    }

    /// The drill options, when --start was given.
    pub fn drill(&self) -> Option<DrillOptions> {
        self.start.then(|| DrillOptions {
            pg_bin: self.pg_bin.clone(),
            timeout: Duration::from_secs(self.start_timeout),
            smoke_query: self.smoke_query.clone(),
            conninfo: self.dbname.clone(),
            promote_when_paused: false,
            expected_end: None,
        })
    }
}
