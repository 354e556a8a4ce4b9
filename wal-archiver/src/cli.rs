//! The raw command-line layer (clap derive); validated into `common::config::Config`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use common::config::RepoArgs;

const AFTER_HELP: &str = "\
PostgreSQL settings:
  archive_command = '/usr/local/bin/wal-archiver push %p'
  restore_command = '/usr/local/bin/wal-archiver get %f %p'
(with the repository set in /etc/pitr/pitr.toml, PITR_REPO in the server's environment, or
--repo in the command itself).

Exit status: 0 success; 1 (get) the file is not in the repository; 2 usage error; 3 invalid
WAL file, or (receive) a PostgreSQL major version pitr does not support; 4 conflict: different
content already archived, another cluster's WAL or server; 5 repository unreachable or failing
after retries; 6 damaged object in the repository; 7 bad configuration; 8 local file error;
9 (receive) PostgreSQL unreachable, refusing the connection or failing a command; 11 the
repository is encrypted and the configured key cannot open it. verify
exits 6 when it finds any gap, missing history
file or damaged object. get reports every failure except 1 as 200 + code (e.g. 205; 202 for a
usage error wherever get stands on the line, 250 for an internal error), so that PostgreSQL
aborts recovery instead of ending it early. See docs/exit-codes.md.";

/// Archive PostgreSQL WAL into a pitr repository and fetch it back.
#[derive(Debug, Parser)]
#[command(name = "wal-archiver", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Log what is being done (to stderr); PITR_LOG=debug for more.
    #[arg(long, short, global = true)]
    pub verbose: bool,
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
    /// Archive one WAL file (archive_command = 'wal-archiver push %p').
    ///
    /// Validates the file (name, page header magic, system identifier against the
    /// repository's cluster, segment size, first page address), stores it compressed with
    /// its size and BLAKE3 digest, and exits 0 only once it is durable. Pushing a file that
    /// is already archived with identical content succeeds; different content fails and
    /// overwrites nothing. With a second repository (repo2-config) it then stores the file
    /// there too, and exits 0 when the main repository has it and the second one has it or it
    /// was recorded as pending (pg_wal/.pitr-repo2-pending; later pushes store it): a second
    /// repository that is down never stalls archiving.
    Push {
        /// Path of the WAL file (%p; relative paths are relative to the current directory,
        /// which is the data directory when PostgreSQL runs the command).
        path: PathBuf,
    },
    /// Fetch one WAL file (restore_command = 'wal-archiver get %f %p').
    ///
    /// Writes the original bytes to PATH (through a temporary file and a rename), after
    /// verifying size and digest. Exit 1 only when the file is certainly not in the
    /// repository; any other failure is retried, then exits 200 + code. With a second
    /// repository, a file the main one lacks or cannot give comes from the second; exit 1
    /// then needs both to answer that they do not have it.
    Get {
        /// WAL file name (%f), e.g. 000000010000000000000003 or 00000002.history.
        name: String,
        /// Where to write it (%p).
        path: PathBuf,
    },
    /// Internal: the background worker that `get` starts to prefetch segments.
    #[command(hide = true)]
    PrefetchWorker {
        /// Fetch the segments after this one.
        #[arg(long)]
        after: String,
        /// Spool directory.
        #[arg(long)]
        spool: PathBuf,
    },
    /// Internal: the background worker that `push` starts to push queued segments ahead.
    #[command(hide = true)]
    PushAheadWorker {
        /// The pg_wal directory whose archive_status/*.ready files to work through.
        #[arg(long)]
        pg_wal: PathBuf,
    },
    /// Stream WAL from the server into the repository (a long-running process).
    ///
    /// Connects for physical replication, checks the system identifier against the
    /// repository's cluster, starts after the newest complete segment archived for the
    /// server's timeline (else the slot's restart_lsn, else the server's position), writes
    /// the stream into `<segment>.partial` in the spool directory and fsyncs it before
    /// reporting it flushed, stores every completed segment exactly as `push` does, and
    /// uploads the growing segment every --partial-interval. Reconnects with backoff; stops
    /// cleanly on SIGTERM/SIGINT. See docs/receive.md.
    Receive {
        /// How to reach the server: a libpq connection string or URI (replication=true is
        /// added; application_name defaults to `pitr`) [default: from PG* variables; file key
        /// `dbname`].
        #[arg(long, short = 'd', env = "PITR_DBNAME", value_name = "CONNINFO")]
        dbname: Option<common::config::ConnString>,
        /// Physical replication slot to stream from (the server keeps WAL until it is
        /// reported flushed).
        #[arg(long, value_name = "NAME")]
        slot: Option<String>,
        /// Create the slot (PHYSICAL RESERVE_WAL) if it does not exist.
        #[arg(long, requires = "slot")]
        create_slot: bool,
        /// Spool directory for the segment being received and completed segments not yet
        /// stored [default: /var/spool/pitr/<cluster>].
        #[arg(long, env = "PITR_SPOOL", value_name = "DIR")]
        spool: Option<PathBuf>,
        /// Seconds between uploads of the growing segment (the RPO of a restore from the
        /// repository alone).
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        partial_interval: f64,
        /// What the flush position reported to the server means: fsynced in the spool, or
        /// stored in the repository. This is what a synchronous commit waits for.
        #[arg(long, value_enum, value_name = "WHERE", default_value = "spool")]
        synchronous_durability: crate::receive::Durability,
        /// Longest time in seconds between two status updates to the server.
        #[arg(long, value_name = "SECS", default_value_t = 10.0)]
        status_interval: f64,
        /// Serve GET /metrics (Prometheus text format) and GET /health (200 while streaming,
        /// else 503 and the reason) on this address, e.g. 127.0.0.1:9857 (port 0: any free
        /// port, logged) [default: off; file key `metrics-listen`].
        #[arg(long, env = "PITR_METRICS_LISTEN", value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// List the archived WAL files of the cluster.
    List {
        /// One JSON object per file instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check that the archived WAL can carry a restore: no gaps, every object intact, a
    /// history file for every timeline.
    ///
    /// Checks the range from the first segment of the oldest backup in the catalog (or, with
    /// --all or without backups, from the first archived segment) to the last archived
    /// segment. Along every timeline, from where it begins (its history file's switch point)
    /// to its end (the last archived segment, or for a timeline a later one forked from, the
    /// switch point), every segment must be archived; each missing stretch is a gap. A
    /// timeline above 1 needs its history file. Every object in the range is read as `get`
    /// reads it (zstd checksum, size, BLAKE3 digest); a segment's first page must match its
    /// name and the cluster (system identifier, page address, timeline). Reports every
    /// problem found, then exits 6 if there was any (0 if none; 5 storage, 7 configuration).
    Verify {
        /// Check from the first archived segment, not from the oldest backup's.
        #[arg(long)]
        all: bool,
        /// Read only the object headers (and the history files): finds gaps, missing history
        /// files and unreadable headers, not damaged content. Cheap enough for a daily cron.
        #[arg(long)]
        headers_only: bool,
        /// One JSON document instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Bring the second repository (repo2-config) up to date from the main one, or with
    /// `--from repo2` the main one from the second: every object of the cluster the target
    /// lacks (cluster record, history files, WAL, then each backup's chunks and manifest before
    /// its catalog entry) is read, verified (size and BLAKE3 digest, or JSON) and written
    /// create-if-absent through the target's own settings (encryption, Object Lock, storage
    /// classes). An object both hold is compared, never overwritten. Exits 4 on a conflict, 6
    /// when a damaged source object was not copied (the rest is copied). See
    /// docs/security.md#second-repository.
    Copy {
        /// Which repository to copy from: main or repo2 (the other one is the target).
        #[arg(long, value_name = "main|repo2", default_value = "main", value_parser = ["main", "repo2"])]
        from: String,
        /// Only say what would be copied.
        #[arg(long)]
        dry_run: bool,
        /// One JSON document instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Client-side encryption keys: make a key file, show the repository's keys, rotate the
    /// key-encryption key. See docs/security.md.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysCommand,
    },
}

/// `wal-archiver keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new random key-encryption key to FILE (64 hexadecimal characters, mode 600;
    /// never replaces a file). Keep a copy outside the repository's reach: without it the
    /// repository cannot be read.
    NewKeyFile {
        /// The file to create.
        file: PathBuf,
    },
    /// Show whether the repository is encrypted, its data keys and which key-encryption keys
    /// wrap each (fingerprints of key files, ARNs of KMS keys). Needs no key.
    List {
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Rotation, step 1: with the current key configured, wrap every data key with a new
    /// key-encryption key as well, and start a new data key (wrapped by both) for new
    /// objects. No object is rewritten; programs with either key keep working. Then switch
    /// every configuration to the new key and run `keys retire`.
    Rotate {
        /// The new key-encryption key: a key file.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "new_kms_key_id",
            conflicts_with = "new_kms_key_id"
        )]
        new_key_file: Option<PathBuf>,
        /// The new key-encryption key: an AWS KMS key (id, ARN or alias).
        #[arg(long, value_name = "KEY")]
        new_kms_key_id: Option<String>,
        /// KMS endpoint of the new key [default: encryption-kms-endpoint, else AWS's].
        #[arg(long, value_name = "URL", requires = "new_kms_key_id")]
        new_kms_endpoint: Option<String>,
        /// KMS region of the new key [default: encryption-kms-region, else s3-region].
        #[arg(long, value_name = "REGION", requires = "new_kms_key_id")]
        new_kms_region: Option<String>,
    },
    /// Rotation, step 2: with the new key configured, remove every other key-encryption
    /// key's wraps from the repository's record, so the old key opens nothing (and may be
    /// destroyed). Refused unless the configured key opens every data key.
    Retire,
}

impl Command {
    /// The subcommand's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Push { .. } => "push",
            Command::Get { .. } => "get",
            Command::List { .. } => "list",
            Command::Verify { .. } => "verify",
            Command::Receive { .. } => "receive",
            Command::PrefetchWorker { .. } => "prefetch-worker",
            Command::PushAheadWorker { .. } => "push-ahead-worker",
            Command::Keys { .. } => "keys",
            Command::Copy { .. } => "copy",
        }
    }
}

/// The subcommand a command line asks for, decided before (and whether or not) the whole line
/// parses: the first argument that is neither an option nor an option's value, or `get` when
/// the line ends in `get NAME PATH` (as every restore_command does) even if options before it
/// are unknown to this version (written by a newer `pitr-restore`). `main` gives a `get`
/// whose line does not parse an exit status above 125, so that PostgreSQL aborts recovery
/// instead of reading "file absent" and promoting early.
pub fn subcommand(args: impl IntoIterator<Item = OsString>) -> Option<String> {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let cmd = Cli::command();
    let found = first_positional(&cmd, &args);
    if found.as_deref().is_some_and(|f| cmd.find_subcommand(f).is_some()) {
        return found;
    }
    if args.len() >= 3 && args[args.len() - 3] == "get" {
        return Some("get".into());
    }
    found
}

/// The first argument of `args` that is neither an option of `cmd` nor an option's value.
fn first_positional(cmd: &clap::Command, args: &[String]) -> Option<String> {
    let takes_value = |long: Option<&str>, short: Option<char>| {
        cmd.get_arguments().any(|a| {
            let named =
                long.is_some_and(|l| a.get_long() == Some(l)) || short.is_some_and(|c| a.get_short() == Some(c));
            named && a.get_action().takes_values()
        })
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            return it.next().cloned();
        }
        if let Some(long) = a.strip_prefix("--") {
            if !long.contains('=') && takes_value(Some(long), None) {
                it.next();
            }
        } else if let Some(short) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            // `-D DIR`; `-DDIR` and flag clusters such as `-v` carry no separate value.
            if short.chars().count() == 1 && takes_value(None, short.chars().next()) {
                it.next();
            }
        } else {
            return Some(a.clone());
        }
    }
    None
}

/// Exit status of a `get` that panicked (a bug): above 125, so recovery aborts.
pub const GET_PANIC_EXIT: i32 = 250;

/// Makes a panic anywhere in this process exit with [`GET_PANIC_EXIT`] after printing it (a
/// Rust panic otherwise exits 101, which PostgreSQL reads as "file absent" and then ends
/// recovery early).
pub fn abort_recovery_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("wal-archiver get: error: internal error (a bug, please report it): {info}");
        std::process::exit(GET_PANIC_EXIT);
    }));
}

#[cfg(test)]
mod tests {

    use super::*;

    const UNIT: &str = include_str!("../../docs/systemd/pitr-receive.service");
    const ENV_FILE: &str = include_str!("../../docs/systemd/pitr-receive.env");

    /// The systemd unit's ExecStart is a valid `receive` command line (the unit uses no
    /// quoting or variables, so splitting on whitespace is what systemd does too).
    #[test]
    fn systemd_unit_command_line_parses() {
        let exec: Vec<&str> = UNIT
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart in the unit")
            .split_whitespace()
            .collect();
        assert!(exec[0].ends_with("/wal-archiver"), "{exec:?}");
        assert!(!exec.iter().any(|a| a.contains(['$', '"', '\''])), "no quoting or variables: {exec:?}");
        let cli = Cli::try_parse_from(exec.iter().copied()).unwrap_or_else(|e| panic!("{exec:?}: {e}"));
        assert!(matches!(cli.command, Command::Receive { create_slot: true, .. }), "{cli:?}");
    }

    /// Every `PITR_*` variable in the example environment file (also commented-out ones) is
    /// one the program reads.
    #[test]
    fn systemd_environment_file_names_real_variables() {
        let cmd = Cli::command();
        let mut known: Vec<String> =
            cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into()).collect();
        let receive = cmd.find_subcommand("receive").expect("receive subcommand");
        known.extend(receive.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()));
        known.extend(["PITR_LOG".to_string(), "PITR_LOG_FORMAT".to_string()]);
        let mut seen = 0;
        for line in ENV_FILE.lines().map(|l| l.trim_start_matches('#')) {
            let Some((key, _)) = line.split_once('=') else { continue };
            if key.starts_with("PITR_") {
                assert!(known.iter().any(|k| k == key), "{key} in pitr-receive.env is not a setting of wal-archiver");
                seen += 1;
            }
        }
        assert!(seen >= 5, "the example sets the repository, server, spool, metrics and logs");
    }

    fn sub(line: &str) -> Option<String> {
        subcommand(line.split_whitespace().map(OsString::from))
    }

    /// `get` is recognised wherever it stands, with any options before it, so that a usage
    /// error in a restore_command still aborts recovery.
    #[test]
    fn the_subcommand_is_found_behind_options() {
        assert_eq!(sub("get 000000010000000000000001 pg_wal/RECOVERYXLOG").as_deref(), Some("get"));
        assert_eq!(sub("--repo /r --cluster main get a b").as_deref(), Some("get"));
        assert_eq!(sub("--repo=/r -v -D /data --s3-path-style true get a b").as_deref(), Some("get"));
        assert_eq!(sub("--retries abc get a b").as_deref(), Some("get"));
        // Options this version does not know (a newer pitr-restore wrote them).
        assert_eq!(sub("--repo /r --future-flag 3 get a b").as_deref(), Some("get"));
        assert_eq!(sub("--cluster get push /x").as_deref(), Some("push"), "get is --cluster's value here");
        assert_eq!(sub("--repo /r push pg_wal/000000010000000000000001").as_deref(), Some("push"));
        assert_eq!(sub("-v list").as_deref(), Some("list"));
        assert_eq!(sub("--verbose"), None);
    }
}
