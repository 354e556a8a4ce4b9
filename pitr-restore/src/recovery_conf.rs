//! The recovery settings of a restored data directory: `recovery.signal` and a block appended
//! to `postgresql.auto.conf` (which PostgreSQL reads last, so it wins over postgresql.conf):
//! the `restore_command` calling `wal-archiver get` with this repository, the target, the
//! timeline the plan chose, an explicit `recovery_target_action`, and any `--set` settings.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use common::config::Config;
use common::exit::{Failure, FailureKind};

use crate::target::{pg_time_text, Target, TargetKind};

/// Quotes a word for `sh -c` (PostgreSQL runs restore_command through the shell).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=,@+".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes a value for postgresql.conf.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', "''"))
}

/// What `get` is told besides the repository: the options pitr-restore itself was given
/// (flag or environment) that matter to `get`; unset ones are left to the server's
/// environment and configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// `--config`, made absolute (restore_command runs inside the data directory).
    pub config_file: Option<std::path::PathBuf>,
    /// `--retries`.
    pub retries: Option<u32>,
    /// `--prefetch`.
    pub prefetch: Option<u32>,
}

/// The restore_command for this repository: `<wal-archiver> get --repo … --cluster … %f %p`.
/// `get` comes first so that any wal-archiver, also one older than this pitr-restore that
/// does not know an option written here, knows at once that a usage error must abort
/// recovery (exit above 125) rather than read as "file absent". Credentials are not written:
/// the server's environment (or the AWS profile of its OS user) must provide them, as for
/// archive_command.
pub fn restore_command(wal_archiver: &Path, config: &Config, opts: &GetOptions) -> String {
    let mut words = vec![shell_quote(&wal_archiver.display().to_string()), "get".into()];
    if let Some(f) = &opts.config_file {
        words.push("--config".into());
        words.push(shell_quote(&f.display().to_string()));
    }
    words.push("--repo".into());
    words.push(shell_quote(&config.repo.to_string()));
    words.push("--cluster".into());
    words.push(shell_quote(&config.cluster));
    if let Some(e) = &config.s3.endpoint {
        words.push("--s3-endpoint".into());
        words.push(shell_quote(e));
    }
    if let Some(r) = &config.s3.region {
        words.push("--s3-region".into());
        words.push(shell_quote(r));
    }
    if let Some(p) = &config.s3.profile {
        words.push("--s3-profile".into());
        words.push(shell_quote(p));
    }
    if matches!(config.repo, common::config::RepoLocation::S3 { .. }) {
        words.push("--s3-path-style".into());
        words.push(config.s3.path_style.to_string());
    }
    // The key's location, never a key: a key file path or a KMS key id.
    for (name, value) in config.encryption_env() {
        let flag = name.trim_start_matches("PITR_").to_lowercase().replace('_', "-");
        words.push(format!("--{flag}"));
        words.push(shell_quote(&value));
    }
    // The second repository: `get` falls back to it (see wal-archiver's get).
    if let Some(f) = &config.repo2_config {
        words.push("--repo2-config".into());
        words.push(shell_quote(&f.display().to_string()));
    }
    if let Some(n) = opts.retries {
        words.push(format!("--retries={n}"));
    }
    if let Some(n) = opts.prefetch {
        words.push(format!("--prefetch={n}"));
    }
    words.push("%f %p".into());
    words.join(" ")
}

/// The settings lines for `target` on `timeline`.
pub fn settings(restore_command: &str, target: &Target, timeline: u32, extra: &[(String, String)]) -> Vec<String> {
    let mut lines = vec![format!("restore_command = {}", conf_quote(restore_command))];
    let inclusive = match &target.kind {
        TargetKind::Latest => None,
        TargetKind::Immediate => {
            lines.push("recovery_target = 'immediate'".into());
            None
        }
        TargetKind::Time(t) => {
            lines.push(format!("recovery_target_time = {}", conf_quote(&pg_time_text(*t))));
            Some(target.inclusive)
        }
        TargetKind::Lsn(l) => {
            lines.push(format!("recovery_target_lsn = '{l}'"));
            Some(target.inclusive)
        }
        TargetKind::Xid(x) => {
            lines.push(format!("recovery_target_xid = '{x}'"));
            Some(target.inclusive)
        }
        TargetKind::Name(n) => {
            lines.push(format!("recovery_target_name = {}", conf_quote(n)));
            None
        }
    };
    if let Some(i) = inclusive {
        lines.push(format!("recovery_target_inclusive = {}", if i { "on" } else { "off" }));
    }
    lines.push(format!("recovery_target_timeline = '{timeline}'"));
    if target.kind != TargetKind::Latest {
        lines.push(format!("recovery_target_action = '{}'", target.action.as_str()));
    }
    for (k, v) in extra {
        lines.push(format!("{k} = {}", conf_quote(v)));
    }
    lines
}

/// Appends `lines` to `postgresql.auto.conf` under a header and creates `recovery.signal`
/// (removing a `standby.signal` the backup may hold).
pub fn write(data: &Path, header: &str, lines: &[String]) -> Result<(), Failure> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Failure::msg(FailureKind::LocalIo, format!("cannot {what} {}: {e}", p.display()))
    };
    let auto = data.join("postgresql.auto.conf");
    let mut f =
        OpenOptions::new().append(true).create(true).mode(0o600).open(&auto).map_err(|e| io("open", &auto, e))?;
    let mut text = format!("\n# {header}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes()).map_err(|e| io("write", &auto, e))?;
    let standby = data.join("standby.signal");
    if standby.exists() {
        fs::remove_file(&standby).map_err(|e| io("remove", &standby, e))?;
    }
    let signal = data.join("recovery.signal");
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&signal)
        .map_err(|e| io("create", &signal, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Action, TimelineChoice};
    use common::wal::record::PgTimestamp;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/wal-archiver"), "/usr/bin/wal-archiver");
        assert_eq!(shell_quote("/my dir/x"), "'/my dir/x'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(conf_quote(r"a'b\c"), r"'a''b\\c'");
    }

    /// `get` comes right after the program (an older wal-archiver then still treats a usage
    /// error as "abort recovery"), relative paths are absolute, and --retries / --prefetch
    /// given to pitr-restore reach the command.
    #[test]
    fn restore_command_words() {
        let args = common::config::RepoArgs { repo: Some("rel/repo".into()), ..Default::default() };
        let config = Config::resolve(&args).unwrap();
        let opts = GetOptions { config_file: Some("/etc/p.toml".into()), retries: Some(9), prefetch: Some(0) };
        let c = restore_command(Path::new("/usr/bin/wal-archiver"), &config, &opts);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            c,
            format!(
                "/usr/bin/wal-archiver get --config /etc/p.toml --repo {} --cluster main --retries=9 --prefetch=0 %f %p",
                shell_quote(&cwd.join("rel/repo").display().to_string())
            )
        );
        let c = restore_command(Path::new("/w"), &config, &GetOptions::default());
        assert!(!c.contains("--retries") && !c.contains("--prefetch") && !c.contains("--config"), "{c}");
    }

    #[test]
    fn settings_for_targets() {
        let t = Target {
            kind: TargetKind::Time(PgTimestamp::from_unix_micros(1_764_644_645_000_000)),
            inclusive: false,
            timeline: TimelineChoice::Latest,
            action: Action::Pause,
        };
        let s = settings("wal-archiver get %f %p", &t, 2, &[("port".into(), "5499".into())]);
        assert_eq!(
            s,
            vec![
                "restore_command = 'wal-archiver get %f %p'",
                "recovery_target_time = '2025-12-02 03:04:05.000000+00'",
                "recovery_target_inclusive = off",
                "recovery_target_timeline = '2'",
                "recovery_target_action = 'pause'",
                "port = '5499'",
            ]
        );
        let latest = Target { kind: TargetKind::Latest, ..t };
        let s = settings("x", &latest, 1, &[]);
        assert_eq!(s, vec!["restore_command = 'x'", "recovery_target_timeline = '1'"]);
    }
}
