//! The Debian package, as an operator meets it in the first hour: `scripts/package.sh` builds
//! it (a release build, reused when the binaries are up to date; cargo-deb installed once),
//! `dpkg -i` installs it on this machine (the suite runs as root on Debian), and the test
//! checks the programs in /usr/bin, the man pages, the shell completions, the configuration
//! file and the systemd units, then removes (`dpkg -r`) and purges (`dpkg -P`) it.
//!
//! Time: about 20 s when the release binaries are up to date (mostly cargo-deb compressing
//! ~60 MB); a release build first when the sources changed (about 7 minutes on 2 cores), and
//! cargo-deb's own install the first time on a machine (about 1.5 minutes).
//!
//! The package is purged at the end, also when a check fails, so that its
//! /etc/pitr/pitr.toml never stays behind for the other tests (the programs read that file
//! by default; as shipped it sets nothing, so while the package is installed the other tests
//! see the defaults they would see without it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const CONFIG: &str = "/etc/pitr/pitr.toml";
const PROGRAMS: [&str; 3] = ["wal-archiver", "basebackup", "pitr-restore"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The target directory this test binary was built in (target/<profile>/deps/<test>), so that
/// the release build lands beside it, wherever CARGO_TARGET_DIR put it.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Runs and asserts success; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?} failed ({}):\n{}\n{}", o.status, text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(script);
    c
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "pitr"])).stdout.starts_with(b"install ok installed")
}

/// Purges the package when dropped (after a failed check too).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "pitr"]).output();
    }
}

#[test]
fn debian_package_installs_works_and_goes() {
    let started = Instant::now();
    assert!(is_root(), "the package test installs with dpkg: run the suite as root (scripts/test.sh does)");
    // A leftover of an interrupted run is purged; anyone else's configuration file is not
    // overwritten.
    let _ = Command::new("dpkg").args(["-P", "pitr"]).output();
    assert!(
        !Path::new(CONFIG).exists(),
        "{CONFIG} exists and belongs to no pitr package: move it away to run this test (the package installs its own)"
    );

    let out = ok(Command::new(repo_root().join("scripts/package.sh")).env("CARGO_TARGET_DIR", target_dir()));
    let deb = PathBuf::from(out.lines().last().expect("package.sh prints the .deb's path").trim());
    assert!(deb.exists(), "{} does not exist", deb.display());
    let built = started.elapsed();

    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/wal-archiver",
        "./usr/bin/basebackup",
        "./usr/bin/pitr-restore",
        "./etc/pitr/pitr.toml",
        "./usr/share/man/man1/pitr-restore.1.gz",
        "./usr/share/man/man1/wal-archiver-receive.1.gz",
        "./usr/share/bash-completion/completions/wal-archiver",
        "./usr/share/zsh/vendor-completions/_basebackup",
        "./usr/share/fish/vendor_completions.d/pitr-restore.fish",
        "./lib/systemd/system/pitr-receive.service",
        "./lib/systemd/system/pitr-basebackup.service",
        "./lib/systemd/system/pitr-basebackup.timer",
        "./usr/share/doc/pitr/docs/configuration.md",
        "./usr/share/doc/pitr/examples/pitr-receive.env",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(path)), "the package lacks {path}:\n{contents}");
    }
    let info = ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package").arg("Depends"));
    assert!(info.contains("Package: pitr") && info.contains("libc6"), "{info}");

    let guard = Installed;
    ok(Command::new("dpkg").arg("-i").arg(&deb).env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(installed(), "dpkg -i did not leave pitr installed");
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "pitr"]));
    assert!(conffiles.contains(CONFIG), "{CONFIG} is not a conffile: {conffiles:?}");

    // The programs, stripped of debug info.
    for p in PROGRAMS {
        let bin = format!("/usr/bin/{p}");
        let help = ok(Command::new(&bin).arg("--help"));
        assert!(help.contains("Usage:"), "{bin} --help: {help}");
        // `.debug_gdb_scripts` is loaded with the program (rustc's pretty-printer hint), not
        // debug info.
        let sections = ok(Command::new("readelf").args(["-S", "-W", &bin]));
        let debug: Vec<&str> = sections
            .split_whitespace()
            .filter(|w| (w.starts_with(".debug_") && *w != ".debug_gdb_scripts") || *w == ".symtab")
            .collect();
        assert!(debug.is_empty(), "{bin} still carries {debug:?}");
    }
    assert!(ok(Command::new("/usr/bin/wal-archiver").arg("--help")).contains("receive"));

    // Man pages: found by man -w, rendered by man.
    if run(&mut sh("command -v man")).stdout.is_empty() {
        ok(&mut sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq man-db"));
    }
    for page in ["pitr-restore", "wal-archiver", "basebackup", "wal-archiver-receive", "pitr-restore-plan"] {
        let path = ok(Command::new("man").args(["-w", page]));
        assert!(path.trim() == format!("/usr/share/man/man1/{page}.1.gz"), "man -w {page}: {path}");
    }
    let page = ok(Command::new("man").args(["-P", "cat", "pitr-restore"]).env("MANWIDTH", "100"));
    for needle in ["NAME", "SYNOPSIS", "--target-time", "pitr-restore-plan(1)", "/etc/pitr/pitr.toml", "Exit status"] {
        assert!(page.contains(needle), "man pitr-restore does not show {needle:?}:\n{page}");
    }

    // Completions: bash registers each program; zsh and fish files are there.
    for p in PROGRAMS {
        let file = format!("/usr/share/bash-completion/completions/{p}");
        let registered = ok(&mut sh(&format!("source {file} && complete -p {p}")));
        assert!(registered.contains(p), "complete -p {p}: {registered}");
        assert!(Path::new(&format!("/usr/share/zsh/vendor-completions/_{p}")).exists());
        assert!(Path::new(&format!("/usr/share/fish/vendor_completions.d/{p}.fish")).exists());
    }
    let words = ok(&mut sh("source /usr/share/bash-completion/completions/wal-archiver && \
         COMP_WORDS=(wal-archiver re) COMP_CWORD=1 COMP_LINE='wal-archiver re' COMP_POINT=15 && \
         _wal__archiver wal-archiver re wal-archiver && printf '%s\\n' \"${COMPREPLY[@]}\""));
    assert!(words.lines().any(|w| w == "receive"), "bash completes `wal-archiver re` to: {words:?}");

    // The configuration file: as shipped it parses and sets nothing (so every command asks
    // for a repository, and no parse error); with every documented key uncommented it
    // parses and every program accepts its values.
    let shipped = run(Command::new("/usr/bin/wal-archiver").args(["--config", CONFIG, "list"]).env_remove("PITR_REPO"));
    let err = text(&shipped.stderr);
    assert_eq!(shipped.status.code(), Some(7), "{err}");
    assert!(err.contains("no repository configured") && !err.contains("configuration file"), "{err}");
    let example = std::fs::read_to_string(CONFIG).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let mut keys = Vec::new();
    let mut full = String::new();
    // Client-side encryption keys go into files of their own: a key for a repository that
    // is not encrypted is refused by readers, and a key file and a KMS key exclude each other.
    let key_file = dir.path().join("repository.key");
    let mut made = Command::new("/usr/bin/wal-archiver");
    ok(made.args(["keys", "new-key-file", key_file.to_str().unwrap()]));
    let (mut with_key_file, mut with_kms) = (String::new(), String::new());
    for line in example.lines() {
        let Some(setting) = line.strip_prefix("# ") else { continue };
        let Some((key, _)) = setting.split_once(" = ") else { continue };
        if !key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            continue;
        }
        keys.push(key.to_string());
        if key == "repo" {
            full.push_str(&format!("repo = {:?}\n", repo.display().to_string()));
        } else if key == "repo2-config" {
            // A second repository's file of its own (a local directory beside the first).
            let second = dir.path().join("repo2.toml");
            std::fs::write(&second, format!("repo = {:?}\n", dir.path().join("repo2").display().to_string())).unwrap();
            full.push_str(&format!("repo2-config = {:?}\n", second.display().to_string()));
        } else if key == "encryption-key-file" {
            with_key_file.push_str(&format!("{key} = {:?}\n", key_file.display().to_string()));
        } else if key.starts_with("encryption-") {
            with_kms.push_str(setting);
            with_kms.push('\n');
        } else {
            full.push_str(setting);
            full.push('\n');
        }
    }
    let documented: Vec<String> = std::fs::read_to_string(repo_root().join("docs/configuration.md"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once('`').map(|(k, _)| k.to_string()))
        .collect();
    assert!(documented.len() >= 16, "keys of docs/configuration.md: {documented:?}");
    for key in &documented {
        assert!(keys.contains(key), "{CONFIG} does not document the key {key}");
    }
    let full_path = dir.path().join("pitr.toml");
    std::fs::write(&full_path, &full).unwrap();
    let cfg = full_path.to_str().unwrap();
    ok(Command::new("/usr/bin/wal-archiver").args(["--config", cfg, "list"]));
    ok(Command::new("/usr/bin/basebackup").args(["--config", cfg, "expire", "--dry-run"]));
    let plan = run(Command::new("/usr/bin/pitr-restore").args(["--config", cfg, "plan"]));
    assert_eq!(plan.status.code(), Some(10), "an empty repository is refused by the plan: {}", text(&plan.stderr));
    for (name, extra) in [("key-file.toml", &with_key_file), ("kms.toml", &with_kms)] {
        assert!(!extra.is_empty(), "{CONFIG} has no encryption keys for {name}");
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{full}{extra}")).unwrap();
        let listed =
            ok(Command::new("/usr/bin/wal-archiver").args(["--config", path.to_str().unwrap(), "keys", "list"]));
        assert!(listed.contains("is not encrypted"), "{listed}");
    }

    // The systemd units, with the programs in /usr/bin.
    let units = ["pitr-receive.service", "pitr-basebackup.service", "pitr-basebackup.timer"];
    for unit in units {
        let path = format!("/lib/systemd/system/{unit}");
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!body.contains("/usr/local"), "{path} names /usr/local");
    }
    let has_analyze = !run(&mut sh("command -v systemd-analyze")).stdout.is_empty();
    if has_analyze {
        let mut verify = Command::new("systemd-analyze");
        verify.arg("verify");
        for unit in units {
            verify.arg(format!("/lib/systemd/system/{unit}"));
        }
        let v = run(&mut verify);
        let out = format!("{}{}", text(&v.stdout), text(&v.stderr));
        // Only problems in pitr's own units count (a container's systemd may warn about others).
        let ours: Vec<&str> = out.lines().filter(|l| l.contains("pitr-")).collect();
        assert!(v.status.success() && ours.is_empty(), "systemd-analyze verify ({}):\n{out}", v.status);
    }

    // Removal keeps the conffile; purge removes it.
    ok(Command::new("dpkg").args(["-r", "pitr"]));
    for p in PROGRAMS {
        assert!(!Path::new(&format!("/usr/bin/{p}")).exists(), "dpkg -r left /usr/bin/{p}");
    }
    assert!(!Path::new("/lib/systemd/system/pitr-receive.service").exists());
    assert!(Path::new(CONFIG).exists(), "dpkg -r keeps the conffile");
    ok(Command::new("dpkg").args(["-P", "pitr"]));
    assert!(!Path::new(CONFIG).exists(), "dpkg -P removes {CONFIG}");
    drop(guard);
    eprintln!(
        "package test: {:.0?} in all, {:.0?} of it scripts/package.sh; systemd-analyze verify {}",
        started.elapsed(),
        built,
        if has_analyze { "ran" } else { "not available: unit files checked for presence" }
    );
}

fn is_root() -> bool {
    text(&run(Command::new("id").arg("-u")).stdout).trim() == "0"
}
