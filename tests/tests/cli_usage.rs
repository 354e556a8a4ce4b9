//! Command lines as operators and PostgreSQL write them: options before or after the
//! subcommand, forms the error messages themselves suggest, values that cannot be written
//! into postgresql.auto.conf, secrets that must not be echoed, and PostgreSQL's normal
//! "is there a next timeline?" probe that must not read as an error.

use pitr_tests::bins::{self, run};
use pitr_tests::repo::TestRepo;
use pitr_tests::wal::{segment, SYSTEM_ID};

/// A local repository holding one segment (so it has a cluster record).
fn seeded() -> (TestRepo, tempfile::TempDir) {
    let repo = TestRepo::local();
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let p = dir.path().join(&name);
    std::fs::write(&p, data).unwrap();
    let mut c = repo.wal_archiver();
    c.arg("push").arg(&p);
    run(c).ok();
    (repo, dir)
}

/// `pitr-restore` takes its options on either side of `plan`, and `--target latest`, which
/// its own refusals suggest. The repository has no backup, so every accepted line ends in the
/// plan's refusal (10), never in a usage error (2).
#[test]
fn pitr_restore_options_go_before_or_after_plan() {
    let (repo, _dir) = seeded();
    let r = &repo.url;
    for args in [
        vec!["--repo", r, "plan"],
        vec!["-v", "--repo", r, "plan"],
        vec!["plan", "--repo", r],
        vec!["--repo", r, "--target-time", "2026-12-02 03:04:05 utc", "plan"],
        vec!["plan", "--repo", r, "--target-time", "2026-12-02 03:04:05GMT"],
        vec!["--repo", r, "--target", "latest", "plan", "--json"],
        vec!["--cluster", "main", "plan", "--repo", r, "--target-name", "x"],
    ] {
        let mut c = bins::pitr_restore();
        c.args(&args);
        run(c).fails_with(10, "no backup");
    }
    let mut c = bins::pitr_restore();
    c.args(["--repo", r, "--force", "plan"]);
    run(c).fails_with(2, "--force applies to a restore");
    let mut c = bins::pitr_restore();
    c.args(["--repo", r, "plan", "--start"]);
    assert_eq!(run(c).code, 2);
    let mut c = bins::pitr_restore();
    c.args(["--repo", r, "--target-time", "2026-12-02 03:04:05 CET", "plan"]);
    run(c).fails_with(2, "only numeric zones");
}

/// A value postgresql.auto.conf cannot hold (a newline would end the line and leave the rest
/// as a syntax error, so the restored server would not start) is refused before anything is
/// written; so is a repository path with one.
#[test]
fn unwritable_settings_are_refused_before_anything_is_written() {
    let (repo, dir) = seeded();
    let data = dir.path().join("restore");
    for args in
        [vec!["--set", "port=5433\nshared_buffers=1"], vec!["--set", "bad name=1"], vec!["--target-name", "a\nb"]]
    {
        let mut c = bins::pitr_restore();
        c.args(["--repo", &repo.url, "--pgdata", data.to_str().unwrap()]).args(&args);
        let r = run(c);
        assert_eq!(r.code, 2, "{args:?}: {r:#?}");
        assert!(!data.exists(), "{args:?}: nothing written");
    }
    let mut c = bins::pitr_restore();
    c.args(["--repo", &format!("{}\nx", repo.url), "--pgdata", data.to_str().unwrap()]);
    run(c).fails_with(7, "control character");
    assert!(!data.exists());
}

/// User information in an S3 endpoint is refused by every program, and never printed.
#[test]
fn credentials_in_an_s3_endpoint_are_never_echoed() {
    let endpoint = "http://admin:TopSecret1@127.0.0.1:9/";
    for (mut c, args) in [
        (bins::wal_archiver(), vec!["list"]),
        (bins::wal_archiver(), vec!["get", "000000010000000000000001", "/tmp/x"]),
        (bins::basebackup(), vec!["list"]),
        (bins::pitr_restore(), vec!["plan"]),
    ] {
        c.args(["--repo", "s3://bucket/x", "--s3-endpoint", endpoint]).args(&args);
        let r = run(c);
        assert!(r.code == 7 || r.code == 207, "{args:?}: {r:#?}");
        assert!(!r.stderr.contains("TopSecret1") && !r.stdout.contains("TopSecret1"), "{args:?}: {r:#?}");
    }
}

/// PostgreSQL asks for the next timeline's history file at the end of every archive
/// recovery; "not there" is the normal answer (exit 1), not an error in the server log.
#[test]
fn a_missing_file_is_not_logged_as_an_error() {
    let (repo, dir) = seeded();
    for name in ["00000002.history", "000000010000000000000009"] {
        let mut c = repo.wal_archiver();
        c.args(["get", name]).arg(dir.path().join("RECOVERYHISTORY"));
        let r = run(c);
        assert_eq!(r.code, 1, "{r:#?}");
        assert!(!r.stderr.contains("error"), "{name}: {r:#?}");
        assert!(r.stderr.contains("is not in the repository"), "{name}: {r:#?}");
    }
}

/// A bad value names where it came from, and its exit code follows from that, not from a
/// guess: `expire`'s retention from a flag or its variable is a usage error (2), from
/// pitr.toml a configuration error (7); a repository setting is a configuration error (7)
/// from any of them.
#[test]
fn a_bad_value_names_its_source() {
    let (repo, dir) = seeded();
    let conf = dir.path().join("pitr.toml");
    std::fs::write(&conf, format!("repo = \"{}\"\nkeep-within = \"soon\"\n", repo.url)).unwrap();
    let conf_s = conf.to_str().unwrap();
    let mut c = bins::basebackup();
    c.args(["--config", conf_s, "expire", "--dry-run"]);
    run(c).fails_with(7, &format!("keep-within in {conf_s}"));
    let mut c = bins::basebackup();
    c.args(["--config", conf_s, "expire", "--dry-run", "--keep-within", "later"]);
    run(c).fails_with(2, "from --keep-within");
    let mut c = bins::basebackup();
    c.env("PITR_KEEP_BACKUPS", "0").args(["--repo", &repo.url, "expire", "--dry-run"]);
    run(c).fails_with(2, "from PITR_KEEP_BACKUPS");
    let mut c = bins::wal_archiver();
    c.env("PITR_COMPRESS_LEVEL", "99").args(["--repo", &repo.url, "list"]);
    run(c).fails_with(7, "from PITR_COMPRESS_LEVEL");
    let mut c = bins::wal_archiver();
    c.args(["--repo", &repo.url, "list", "--compress-level", "99"]);
    run(c).fails_with(7, "from --compress-level");
}
