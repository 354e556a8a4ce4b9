//! What `pitr-restore` and `basebackup verify` print, for people and for programs, on real
//! PostgreSQL 15 with a local repository: progress lines on stderr when stderr is not a
//! terminal (phase, bytes, files, rate; recovery with the replayed LSN), never on stdout;
//! `--quiet` and `--no-progress`; and `--json` output that parses, with the fields
//! docs/restore.md and docs/basebackup.md document: `pitr-restore plan --json`, the restore's
//! summary (with and without `--start`), `basebackup verify --json` (also for a damaged
//! backup).

use std::path::PathBuf;
use std::time::Duration;

use pitr_tests::bins::{self, Run};
use pitr_tests::pg::{as_server_user, pg_bin, scratch_dir, TestCluster};
use pitr_tests::repo::TestRepo;
use serde_json::Value;

fn run(repo: &TestRepo, program: std::process::Command, args: &[&str]) -> Run {
    let mut c = repo.as_server_user(program);
    c.args(args);
    bins::run(c)
}

/// Every stdout line as JSON; fails on a line that is not.
fn json_lines(r: &Run) -> Vec<Value> {
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON ({e}): {r:#?}")))
        .collect()
}

/// Progress lines on stderr.
fn progress_lines(r: &Run) -> Vec<&str> {
    r.stderr.lines().filter(|l| l.starts_with("pitr-restore: ") && l.contains(" elapsed")).collect()
}

/// Stops the server `--start` left running in `data`.
struct Server(PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_server_user(pg_bin().join("pg_ctl"))
            .args(["-D", self.0.to_str().unwrap(), "-m", "fast", "-w", "-t", "60", "stop"])
            .output();
    }
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

#[test]
fn progress_on_stderr_and_json_on_stdout() {
    let repo = TestRepo::local();
    let mut c = TestCluster::init("output", &["archive_mode = on".into(), repo.archive_command()]);
    for (k, v) in &repo.env {
        c.env(k, v);
    }
    c.start();
    c.pgbench(&["-i", "-s", "10", "-q"]);
    let dbname = format!("host={} port={} user=postgres", c.socket_dir.display(), c.port);
    let backup = || {
        let mut b = repo.as_server_user(bins::basebackup());
        b.env("PITR_DBNAME", &dbname).args(["create", "--wal-timeout", "60"]);
        bins::run(b).ok().trim().to_string()
    };
    let id = backup();
    c.sql("CREATE TABLE marks (name text)");
    c.sql("INSERT INTO marks VALUES ('A')");
    let lsn = c.sql("SELECT pg_current_wal_lsn()");
    c.sql("INSERT INTO marks VALUES ('B')");
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));

    // basebackup verify --json: one object per backup.
    let r = run(&repo, bins::basebackup(), &["verify", "--json"]);
    let v = json_lines(&r);
    assert_eq!((r.code, v.len()), (0, 1), "{r:#?}");
    assert_eq!((v[0]["id"].as_str(), v[0]["ok"].as_bool()), (Some(id.as_str()), Some(true)), "{r:#?}");
    assert!(number(&v[0]["files"], "files") > 900.0 && number(&v[0]["bytes"], "bytes") > 100e6, "{r:#?}");
    assert!(number(&v[0]["chunks"], "chunks") >= 1.0, "{r:#?}");
    assert_eq!(v[0]["problems"], serde_json::json!([]), "{r:#?}");
    assert!(v[0]["wal_start_segment"].is_string() && v[0]["wal_stop_segment"].is_string(), "{r:#?}");
    let wal_start = v[0]["wal_start_segment"].as_str().unwrap().to_string();

    // plan --json: the target in fields, the WAL range, where recovery stops.
    let r = run(&repo, bins::pitr_restore(), &["plan", "--target-lsn", &lsn, "--target-exclusive", "--json"]);
    let v = json_lines(&r);
    assert_eq!((r.code, v.len()), (0, 1), "{r:#?}");
    let p = &v[0];
    assert_eq!((p["backup_id"].as_str(), p["backup"]["id"].as_str()), (Some(id.as_str()), Some(id.as_str())));
    let t = &p["target"];
    assert_eq!((t["kind"].as_str(), t["value"].as_str()), (Some("lsn"), Some(lsn.as_str())), "{p}");
    assert_eq!((t["inclusive"].as_bool(), t["timeline"].as_u64()), (Some(false), Some(1)), "{p}");
    assert_eq!((t["timeline_requested"].as_str(), t["action"].as_str()), (Some("latest"), Some("promote")), "{p}");
    assert_eq!(p["wal"]["first_segment"].as_str(), Some(wal_start.as_str()), "{p}");
    assert!(number(&p["wal"]["segments"], "segments") >= 1.0 && p["wal"]["last_segment"].is_string(), "{p}");
    assert_eq!(p["wal"]["last_from_receiver"], false, "{p}");
    assert_eq!(p["stop"]["lsn"].as_str(), Some(lsn.as_str()), "{p}");
    assert_eq!(p["stop"]["segment"], p["wal"]["last_segment"], "{p}");
    assert!(p["stop"]["description"].as_str().unwrap().contains(&lsn), "{p}");
    // --json before the subcommand is the same option.
    let r = run(&repo, bins::pitr_restore(), &["--json", "--target", "latest", "plan"]);
    assert_eq!(json_lines(&r)[0]["target"]["kind"], "latest", "{r:#?}");
    // Progress options belong to a restore.
    let r = run(&repo, bins::pitr_restore(), &["--quiet", "plan"]);
    r.fails_with(2, "--quiet applies to a restore");

    // A restore with --start, stderr a pipe: progress lines there (a short interval, so a
    // small restore shows them), one JSON object on stdout.
    let dir = scratch_dir("output-start");
    let data = dir.path().join("data");
    let mut args = bins::start_args(&data, 120);
    args.extend(
        ["--target-lsn", &lsn, "--target-exclusive", "--json", "--progress-interval-ms", "20"].map(String::from),
    );
    let r = run(&repo, bins::pitr_restore(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let _server = Server(data.clone());
    assert_eq!(r.code, 0, "{r:#?}");
    let v = json_lines(&r);
    assert_eq!(v.len(), 1, "stdout is one JSON object and nothing else: {r:#?}");
    let s = &v[0];
    assert_eq!(s["backup_id"].as_str(), Some(id.as_str()), "{s}");
    assert_eq!(s["pgdata"].as_str(), Some(data.to_str().unwrap()), "{s}");
    assert_eq!((s["target"]["kind"].as_str(), s["target"]["value"].as_str()), (Some("lsn"), Some(lsn.as_str())));
    assert!(number(&s["files"], "files") > 900.0 && number(&s["bytes"], "bytes") > 100e6, "{s}");
    assert!(number(&s["direct_bytes"], "direct_bytes") <= number(&s["bytes"], "bytes"), "{s}");
    let d = &s["durations"];
    for phase in ["planning", "files", "settings", "recovery", "total"] {
        assert!(number(&d[phase], phase) >= 0.0, "{s}");
    }
    assert!(number(&d["total"], "total") >= number(&d["files"], "files") + number(&d["recovery"], "recovery"));
    let drill = &s["drill"];
    assert_eq!(drill["state"], "promoted", "{s}");
    assert_eq!(drill["smoke_query"], "SELECT count(*) FROM pg_database", "{s}");
    assert!(drill["smoke_result"].is_string() && drill["log"].is_string(), "{s}");
    assert!(drill["last_transaction"].is_string() && number(&drill["recovery_seconds"], "recovery") > 0.0, "{s}");
    let lines = progress_lines(&r);
    assert!(lines.iter().any(|l| l.starts_with("pitr-restore: restoring files: ")), "{r:#?}");
    let files = lines.iter().rfind(|l| l.starts_with("pitr-restore: restoring files: ")).unwrap();
    assert!(files.contains(" files, ") && files.contains("/s, ") && files.contains("%)"), "{files}");
    assert!(lines.iter().any(|l| l.starts_with("pitr-restore: recovery: ")), "{r:#?}");
    assert!(r.stderr.contains("backup:        "), "the plan is still on stderr: {r:#?}");
    assert!(!r.stderr.contains("error"), "{r:#?}");
    drop(_server);

    // Without --start: human lines on stdout as before; --quiet leaves stderr empty.
    let out = scratch_dir("output-quiet");
    let data = out.path().join("data");
    let r = run(&repo, bins::pitr_restore(), &["--pgdata", data.to_str().unwrap(), "--quiet"]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stderr.trim().is_empty(), "--quiet: nothing on stderr: {r:#?}");
    assert!(r.stdout.starts_with("restored backup ") && r.stdout.contains("\nnext: start the server"), "{r:#?}");
    // --json without --start: no drill; --no-progress: the plan but no progress on stderr.
    let data = out.path().join("data2");
    let r = run(
        &repo,
        bins::pitr_restore(),
        &["--pgdata", data.to_str().unwrap(), "--json", "--no-progress", "--progress-interval-ms", "1"],
    );
    assert_eq!(r.code, 0, "{r:#?}");
    let v = json_lines(&r);
    assert_eq!(v.len(), 1, "{r:#?}");
    assert!(v[0]["drill"].is_null() && v[0]["durations"]["recovery"].is_null(), "{}", v[0]);
    assert_eq!(v[0]["target"]["kind"], "latest");
    assert!(v[0]["stop"]["lsn"].is_string(), "latest: the end of the valid WAL: {}", v[0]);
    assert!(progress_lines(&r).is_empty() && r.stderr.contains("backup:        "), "{r:#?}");
    // A refused restore prints no JSON, only its error line.
    let r = run(
        &repo,
        bins::pitr_restore(),
        &["--pgdata", out.path().join("data3").to_str().unwrap(), "--json", "--target-time", "2999-01-01 00:00:00+00"],
    );
    assert_eq!((r.code, r.stdout.as_str()), (10, ""), "{r:#?}");

    // basebackup verify --all --json: one object per backup, a damaged one too (exit 6).
    let second = backup();
    let chunk = repo.dir.as_ref().unwrap().join("main/backups").join(&second).join("base.tar/000000.zst");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&chunk, bytes).unwrap();
    let r = run(&repo, bins::basebackup(), &["verify", "--all", "--json"]);
    assert_eq!(r.code, 6, "{r:#?}");
    let v = json_lines(&r);
    assert_eq!(v.len(), 2, "{r:#?}");
    assert_eq!((v[0]["id"].as_str(), v[0]["ok"].as_bool()), (Some(id.as_str()), Some(true)), "{r:#?}");
    assert_eq!((v[1]["id"].as_str(), v[1]["ok"].as_bool()), (Some(second.as_str()), Some(false)), "{r:#?}");
    let problems = v[1]["problems"].as_array().unwrap();
    assert!(problems.len() == 1 && problems[0].as_str().unwrap().contains("base.tar chunk 000000"), "{r:#?}");
    assert!(v[1]["files"].is_null() && v[1]["bytes"].is_null(), "{r:#?}");
    // One backup asked for: its object, and its problem is the error line too.
    let r = run(&repo, bins::basebackup(), &["verify", &second, "--json"]);
    assert_eq!((r.code, json_lines(&r).len()), (6, 1), "{r:#?}");
    assert!(r.stderr.contains("error:") && r.stderr.contains(&second), "{r:#?}");
    drop(c);
}
