//! The raw command-line layer (clap derive); validated into `common::config::Config` plus the
//! connection string.

use clap::{Parser, Subcommand};
use common::config::RepoArgs;

const AFTER_HELP: &str = "\
Connection: --dbname takes a libpq connection string or URI (host=/var/run/postgresql
user=replicator, postgresql://replicator@db1/); what it leaves out comes from PGHOST, PGPORT,
PGUSER, PGPASSWORD, PGSSLMODE, ... and ~/.pgpass, as for pg_basebackup. The role needs the
REPLICATION attribute and a `replication` line in pg_hba.conf.

The WAL that makes a backup consistent is not copied into it: archive_command
(`wal-archiver push %p`) must be archiving into the same repository and cluster. `create`
waits (--wal-timeout) until every segment from the backup's start to its stop is there, and
only then records the backup.

Exit status: 0 success; 1 (create) the WAL the backup needs did not reach the repository in
time, (verify) no such backup; 2 usage error; 3 the server runs a PostgreSQL major version
pitr does not support; 4 the server is another database system (or major version) than the
repository's cluster; 5 repository unreachable or failing after
retries; 6 a backup is damaged or does not match its manifest (create: the server's stream
did not match its own manifest); 7 bad configuration; 8 local error; 9 PostgreSQL could not
be reached, refused the connection or failed the backup; 11 the repository is encrypted and
the configured key cannot open it. See docs/basebackup.md.";

/// Take physical base backups of PostgreSQL into a pitr repository, list and verify them.
#[derive(Debug, Parser)]
#[command(name = "basebackup", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Log what is being done (to stderr); PITR_LOG=debug for more.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// How to reach the server: a libpq connection string or URI [default: from PG*
    /// variables, as libpq; file key `dbname`].
    #[arg(long, short = 'd', env = "PITR_DBNAME", value_name = "CONNINFO", global = true)]
    pub dbname: Option<common::config::ConnString>,
    /// Repository and cluster settings.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl common::cmdline::WithRepoArgs for Cli {
    fn repo_args(&mut self) -> &mut RepoArgs {
        &mut self.repo
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a base backup over the replication protocol, streamed into the repository.
    ///
    /// Connects in physical replication mode, checks the server's system identifier against
    /// the repository's cluster (registering the cluster on first use), runs BASE_BACKUP with
    /// the server's backup manifest, and streams every archive (the data directory and each
    /// tablespace) into compressed chunks, uploaded in parallel, without staging the backup on
    /// local disk. Each file's size and CRC-32C are checked against the manifest while it
    /// streams. The backup is recorded (its catalog entry written last) only once the WAL it
    /// needs is in the repository. Prints the backup id on stdout.
    Create {
        /// Backup label (shown in backup_label and pg_stat_progress_basebackup) [default:
        /// "pitr <backup id>"].
        #[arg(long, short = 'l', value_name = "LABEL")]
        label: Option<String>,
        /// Start with an immediate checkpoint (the default).
        #[arg(long, conflicts_with = "spread")]
        fast: bool,
        /// Start after a spread checkpoint (less I/O on the server, may take up to
        /// checkpoint_timeout * checkpoint_completion_target to start).
        #[arg(long)]
        spread: bool,
        /// Seconds to wait, after the data is stored, for archive_command to bring the WAL
        /// the backup needs into the repository.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        wal_timeout: u64,
    },
    /// List the finished backups of the cluster, oldest first.
    List {
        /// One JSON object (the catalog entry) per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check backups end to end: every chunk's digest, the tar streams, every file's size and
    /// CRC-32C against the stored manifest, the manifest's own checksum, and the WAL range.
    Verify {
        /// The backup to check [default: the newest].
        #[arg(value_name = "ID", conflicts_with = "all")]
        id: Option<String>,
        /// Check every backup of the cluster.
        #[arg(long)]
        all: bool,
        /// One JSON object per backup checked (id, ok, files, chunks, bytes, WAL range,
        /// problems) instead of text; the exit status is the same.
        #[arg(long)]
        json: bool,
    },
    /// Retention: delete the backups the policy no longer keeps, and the WAL only they need.
    ///
    /// Keeps the newest --keep-backups backups and/or every backup needed to restore to any
    /// time within --keep-within (from the newest one that ended before the window on); with
    /// both, what either keeps. The policy applies to all backups and again to those on the
    /// newest timeline's path (after a restore forked a timeline), keeping what either keeps;
    /// the newest backup is never expired. Prints the plan, then deletes each expired
    /// backup's catalog entry first, then its chunks and manifest, then the WAL before the
    /// first segment of the kept backups (history files stay). Objects of backups that never
    /// got a catalog entry are deleted once they are older than the oldest kept backup and 7
    /// days old.
    Expire {
        /// Keep the newest N backups (at least 1) [file key `keep-backups`].
        #[arg(long, env = "PITR_KEEP_BACKUPS", value_name = "N")]
        keep_backups: Option<u32>,
        /// Keep what restores to any time within this long before now, e.g. 7d, 36h, 2weeks
        /// [file key `keep-within`].
        #[arg(long, env = "PITR_KEEP_WITHIN", value_name = "DURATION")]
        keep_within: Option<String>,
        /// Print what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON document instead of the report.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// The subcommand's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::List { .. } => "list",
            Command::Verify { .. } => "verify",
            Command::Expire { .. } => "expire",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    const UNIT: &str = include_str!("../../docs/systemd/pitr-basebackup.service");
    const ENV_FILE: &str = include_str!("../../docs/systemd/pitr-basebackup.env");

    /// Each ExecStart of the example unit is a valid command line: a backup, then retention
    /// (the unit uses no quoting or variables, so splitting on whitespace is what systemd
    /// does too).
    #[test]
    fn systemd_unit_command_lines_parse() {
        let execs: Vec<Vec<&str>> =
            UNIT.lines().filter_map(|l| l.strip_prefix("ExecStart=")).map(|l| l.split_whitespace().collect()).collect();
        let parsed: Vec<Cli> = execs
            .iter()
            .map(|exec| {
                assert!(exec[0].ends_with("/basebackup"), "{exec:?}");
                assert!(!exec.iter().any(|a| a.contains(['$', '"', '\''])), "no quoting or variables: {exec:?}");
                Cli::try_parse_from(exec.iter().copied()).unwrap_or_else(|e| panic!("{exec:?}: {e}"))
            })
            .collect();
        assert!(
            matches!(
                parsed[..],
                [Cli { command: Command::Create { .. }, .. }, Cli { command: Command::Expire { .. }, .. }]
            ),
            "{parsed:?}"
        );
    }

    /// Every `PITR_*` variable in the example environment file (also commented-out ones) is
    /// one the program reads, and it sets a retention policy.
    #[test]
    fn systemd_environment_file_names_real_variables() {
        let cmd = Cli::command();
        let mut known: Vec<String> =
            cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into()).collect();
        for sub in cmd.get_subcommands() {
            known.extend(sub.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()));
        }
        known.push("PITR_LOG".to_string());
        let mut seen = vec![];
        for line in ENV_FILE.lines().map(|l| l.trim_start_matches('#')) {
            let Some((key, _)) = line.split_once('=') else { continue };
            if key.starts_with("PITR_") {
                assert!(known.iter().any(|k| k == key), "{key} in pitr-basebackup.env is not a setting of basebackup");
                seen.push(key);
            }
        }
        for needed in ["PITR_REPO", "PITR_DBNAME", "PITR_KEEP_WITHIN"] {
            assert!(seen.contains(&needed), "{needed} missing from the example");
        }
    }
}
