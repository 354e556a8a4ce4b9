//! Man pages and shell completions of pitr's three programs, generated from their clap
//! definitions (`wal_archiver::cli::Cli`, `basebackup::cli::Cli`, `pitr_restore::cli::Cli`),
//! so that they cannot drift from `--help`. `pitr-gen DIR` writes them; scripts/package.sh
//! puts them into the Debian package.
//!
//! The programs themselves do not depend on clap_complete or clap_mangen: only this crate does.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use roff::{bold, roman, Roff};

/// The three programs' command-line definitions.
pub fn programs() -> Vec<clap::Command> {
    vec![wal_archiver::cli::Cli::command(), basebackup::cli::Cli::command(), pitr_restore::cli::Cli::command()]
}

/// The subcommands a user sees (hidden internal workers and `help` left out).
pub fn visible_subcommands(cmd: &clap::Command) -> Vec<&clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").collect()
}

/// Where each shell looks for completions, relative to the output directory, and the file
/// name it expects for `program`: bash-completion loads `completions/<program>` on first use,
/// zsh `_<program>` from its fpath, fish `<program>.fish`.
pub fn completion_path(shell: Shell, program: &str) -> PathBuf {
    let file = match shell {
        Shell::Zsh => format!("_{program}"),
        Shell::Fish => format!("{program}.fish"),
        _ => program.to_string(),
    };
    Path::new("completions").join(shell.to_string()).join(file)
}

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes, under `out`: `man/man1/<program>.1` and `man/man1/<program>-<subcommand>.1` for
/// every visible subcommand, and `completions/{bash,zsh,fish}/…` (see [`completion_path`]).
/// Returns the files written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out.join("man/man1");
    fs::create_dir_all(&man_dir)?;
    let programs = programs();
    let names: Vec<String> = programs.iter().map(|c| c.get_name().to_string()).collect();
    for cmd in &programs {
        let others: Vec<&str> = names.iter().map(String::as_str).filter(|n| *n != cmd.get_name()).collect();
        for (file, page) in man_pages(cmd.clone(), &others)? {
            let path = man_dir.join(file);
            fs::write(&path, page)?;
            written.push(path);
        }
        for shell in SHELLS {
            let path = out.join(completion_path(shell, cmd.get_name()));
            fs::create_dir_all(path.parent().expect("completion directory"))?;
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut without_hidden_subcommands(cmd), cmd.get_name(), &mut text);
            fs::write(&path, text)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// `cmd` without its hidden subcommands (the internal workers), which clap_complete would
/// otherwise offer: a copy with the same name, texts, version, arguments and visible
/// subcommands (settings that only affect parsing are not needed for completion). The names
/// are leaked: clap without its `string` feature (which the programs do not need) takes
/// `&'static str`, and this runs once per program in a short-lived generator.
fn without_hidden_subcommands(cmd: &clap::Command) -> clap::Command {
    let leak = |s: &str| -> &'static str { s.to_string().leak() };
    let mut out = clap::Command::new(leak(cmd.get_name()))
        .args(cmd.get_arguments().filter(|a| a.get_id() != "help" && a.get_id() != "version").cloned())
        .subcommands(visible_subcommands(cmd).into_iter().map(without_hidden_subcommands));
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(leak(version));
    }
    out
}

/// The man pages of one program: its own page (file name and roff text) and one per visible
/// subcommand. `others` are the other programs, for SEE ALSO.
pub fn man_pages(cmd: clap::Command, others: &[&str]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let subs: Vec<clap::Command> = visible_subcommands(&cmd).into_iter().cloned().collect();

    let mut pages = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone()).manual("pitr").source(format!("pitr {version}"));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if !subs.is_empty() {
        man.render_subcommands_section(&mut page)?;
    }
    let mut roff = Roff::new();
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        // The programs' --help epilogues are laid out by hand (tables of targets, exit
        // codes): keep their lines as they are.
        roff.control("SH", ["NOTES"]).control("nf", []);
        for line in after.to_string().lines() {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
    roff.control("SH", ["FILES"]).control("TP", []).text([bold("/etc/pitr/pitr.toml")]).text([roman(
        "The configuration file, read when present (--config or PITR_CONFIG name another). Every key is \
         described in it and in /usr/share/doc/pitr/docs/configuration.md.",
    )]);
    let mut see_also: Vec<String> = subs.iter().map(|s| format!("{name}-{}(1)", s.get_name())).collect();
    see_also.extend(others.iter().map(|o| format!("{o}(1)")));
    roff.control("SH", ["SEE ALSO"]).text([roman(see_also.join(", "))]).control("PP", []).text([roman(
        "/usr/share/doc/pitr/README.md and /usr/share/doc/pitr/docs/ (the runbook, restore.md, exit-codes.md).",
    )]);
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    pages.push((man.get_filename(), one_preamble(page)));

    for sub in subs {
        let sub_name = sub.get_name().to_string();
        let man = clap_mangen::Man::new(sub).manual("pitr").source(format!("pitr {version}"));
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        Roff::new().control("SH", ["SEE ALSO"]).text([roman(format!("{name}(1)"))]).to_writer(&mut page)?;
        pages.push((format!("{name}-{sub_name}.1"), one_preamble(page)));
    }
    Ok(pages)
}

/// The page rendered section by section: each part starts with the roff crate's definition of
/// the apostrophe string; keep it once, at the top.
fn one_preamble(page: Vec<u8>) -> Vec<u8> {
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let text = String::from_utf8(page).expect("roff output is UTF-8");
    format!("{PREAMBLE}{}", text.replace(PREAMBLE, "")).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program gets a non-empty man page and completion for each shell, and each of
    /// them names every visible subcommand; each subcommand gets its own page.
    #[test]
    fn pages_and_completions_name_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path()).unwrap();
        for cmd in programs() {
            let name = cmd.get_name();
            let subs: Vec<String> = visible_subcommands(&cmd).iter().map(|s| s.get_name().to_string()).collect();
            assert!(!subs.is_empty(), "{name} has subcommands");
            let page = dir.path().join(format!("man/man1/{name}.1"));
            let mut files = vec![page.clone()];
            files.extend(SHELLS.iter().map(|&s| dir.path().join(completion_path(s, name))));
            for file in &files {
                assert!(written.contains(file), "{} was not reported as written", file.display());
                let text = fs::read_to_string(file).unwrap();
                assert!(!text.trim().is_empty(), "{} is empty", file.display());
                assert!(text.contains(name), "{} does not name {name}", file.display());
                for sub in &subs {
                    assert!(text.contains(sub.as_str()), "{} does not mention the subcommand {sub}", file.display());
                }
            }
            let text = fs::read_to_string(&page).unwrap();
            assert_eq!(text.matches("\n.TH ").count(), 1, "{}: one title", page.display());
            for section in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS", "NOTES", "FILES", "\"SEE ALSO\""] {
                assert!(text.contains(&format!(".SH {section}")), "{} lacks {section}", page.display());
            }
            assert!(text.contains("repo"), "{}: the common options are listed", page.display());
            for sub in &subs {
                let sub_page = dir.path().join(format!("man/man1/{name}-{sub}.1"));
                let text = fs::read_to_string(&sub_page).unwrap_or_else(|e| panic!("{}: {e}", sub_page.display()));
                assert!(text.contains(".SH SYNOPSIS") && text.contains(sub.as_str()), "{}", sub_page.display());
            }
        }
    }

    /// Internal workers are not offered to users, neither in completions nor as pages.
    #[test]
    fn hidden_workers_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let bash = fs::read_to_string(dir.path().join(completion_path(Shell::Bash, "wal-archiver"))).unwrap();
        let man = fs::read_to_string(dir.path().join("man/man1/wal-archiver.1")).unwrap();
        for hidden in ["prefetch-worker", "push-ahead-worker"] {
            assert!(!man.contains(hidden), "the man page lists {hidden}");
            assert!(!dir.path().join(format!("man/man1/wal-archiver-{hidden}.1")).exists());
            assert!(!bash.contains(&format!("{hidden})")), "bash completes {hidden}");
        }
    }

    /// The bash completion registers itself for the program's name (what `complete -p` finds).
    #[test]
    fn bash_completion_registers_the_program() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        for cmd in programs() {
            let name = cmd.get_name();
            let bash = fs::read_to_string(dir.path().join(completion_path(Shell::Bash, name))).unwrap();
            assert!(
                bash.lines().any(|l| l.trim_start().starts_with("complete ") && l.trim_end().ends_with(name)),
                "{bash}"
            );
        }
    }
}
