//! The exit codes are one table (`common::exit::FailureKind`); every list of them that an
//! operator reads (each program's `--help`, the README, `docs/exit-codes.md`) is checked
//! against it here, so that a code added or moved cannot be left out of one of them.

use common::exit::FailureKind;
use pitr_tests::bins::{self, run};

fn doc(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// The "Exit status:" paragraph of a program's `--help`.
fn exit_status_help(mut c: std::process::Command) -> String {
    c.arg("--help");
    let out = run(c).ok().to_string();
    let i = out.find("Exit status:").expect("an Exit status paragraph in --help");
    out[i..].split("\n\n").next().unwrap().replace('\n', " ")
}

#[test]
fn every_list_of_exit_codes_matches_the_table() {
    let table = doc("docs/exit-codes.md");
    for k in FailureKind::ALL {
        let row = format!("| {} | {} |", k.code(), k.name());
        assert!(table.contains(&row), "docs/exit-codes.md has no row {row:?}");
    }
    // get: every failure except absence is 200 + code; the ones get can return are listed.
    for k in [
        FailureKind::Usage,
        FailureKind::Invalid,
        FailureKind::Storage,
        FailureKind::Corrupt,
        FailureKind::Config,
        FailureKind::LocalIo,
        FailureKind::Key,
    ] {
        let row = format!("| {} |", 200 + u32::from(k.code()));
        assert!(table.contains(&row), "docs/exit-codes.md: get's table has no row {row:?}");
    }

    let readme = doc("README.md");
    let i = readme.find("Exit codes: 0 ok").expect("the README's exit-code paragraph");
    let para = readme[i..].split("\n\n").next().unwrap().replace('\n', " ");
    for k in FailureKind::ALL {
        assert!(para.contains(&format!(" {} ", k.code())), "README's exit codes leave out {} ({})", k.code(), k.name());
    }

    // What each program can return.
    use FailureKind::*;
    let programs: [(&str, std::process::Command, Vec<FailureKind>); 3] = [
        (
            "wal-archiver",
            bins::wal_archiver(),
            vec![NotFound, Usage, Invalid, Conflict, Storage, Corrupt, Config, LocalIo, Server, Key],
        ),
        (
            "basebackup",
            bins::basebackup(),
            vec![NotFound, Usage, Invalid, Conflict, Storage, Corrupt, Config, LocalIo, Server, Key],
        ),
        (
            "pitr-restore",
            bins::pitr_restore(),
            vec![NotFound, Usage, Conflict, Storage, Corrupt, Config, LocalIo, Server, Refused, Key],
        ),
    ];
    for (name, cmd, kinds) in programs {
        let help = exit_status_help(cmd);
        for k in kinds {
            let code = k.code();
            let mentioned = help.contains(&format!(" {code} ")) || help.contains(&format!(";{code} "));
            assert!(mentioned, "{name} --help leaves out exit status {code} ({}): {help}", k.name());
        }
    }
}
