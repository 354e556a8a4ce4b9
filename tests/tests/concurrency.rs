//! Several copies of a command at once on one repository, as happens when an archiver is
//! restarted while its old `push` still runs, when two servers archive as one cluster, or
//! when an operator retries by hand: one segment pushed by eight processes at once, with the
//! same content (all succeed, one object) and with different contents (exactly one content
//! is stored, intact; every other push fails with 4, none overwrites).

use std::path::Path;
use std::process::Stdio;

use pitr_tests::bins::Run;
use pitr_tests::repo::TestRepo;
use pitr_tests::s3;
use pitr_tests::wal::{segment, SYSTEM_ID};

fn stored(repo: &TestRepo, name: &str) -> Vec<u8> {
    let key = common::storage::ObjectKey::new(format!("main/wal/0000000100000000/{name}.zst")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let obj = rt.block_on(common::storage::read_all(repo.storage.as_ref(), &key)).unwrap();
    let mut raw = Vec::new();
    common::codec::decompress(&obj[..], &mut raw).unwrap();
    raw
}

/// Starts one push per file at once and returns their results.
fn push_all(repo: &TestRepo, files: &[&Path]) -> Vec<Run> {
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            let mut c = repo.wal_archiver();
            c.env("PITR_RETRIES", "3").env("PITR_PUSH_AHEAD", "0").arg("push").arg(f);
            c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap().into()).collect()
}

fn parallel_pushes(repo: &TestRepo) {
    let dir = tempfile::tempdir().unwrap();
    let (name, data) = segment(SYSTEM_ID, 1, 3);
    let copies: Vec<_> = (0..8)
        .map(|i| {
            let d = dir.path().join(format!("same{i}"));
            std::fs::create_dir(&d).unwrap();
            let p = d.join(&name);
            std::fs::write(&p, &data).unwrap();
            p
        })
        .collect();
    let results = push_all(repo, &copies.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    for r in &results {
        assert_eq!(r.code, 0, "identical content: {r:#?}");
    }
    assert!(stored(repo, &name) == data);

    // Eight different contents of one segment name (split brain).
    let (name, base) = segment(SYSTEM_ID, 1, 4);
    let versions: Vec<(std::path::PathBuf, Vec<u8>)> = (0..8u8)
        .map(|i| {
            let d = dir.path().join(format!("diff{i}"));
            std::fs::create_dir(&d).unwrap();
            let mut v = base.clone();
            v[(9 << 20) + usize::from(i)] ^= 0xFF;
            let p = d.join(&name);
            std::fs::write(&p, &v).unwrap();
            (p, v)
        })
        .collect();
    let results = push_all(repo, &versions.iter().map(|(p, _)| p.as_path()).collect::<Vec<_>>());
    let won: Vec<usize> = (0..8).filter(|&i| results[i].code == 0).collect();
    assert_eq!(won.len(), 1, "exactly one content is archived: {results:#?}");
    for (i, r) in results.iter().enumerate() {
        if i != won[0] {
            assert_eq!(r.code, 4, "{r:#?}");
            assert!(r.stderr.contains("different content"), "{r:#?}");
        }
    }
    assert!(stored(repo, &name) == versions[won[0]].1, "the winner's bytes, intact");
}

#[test]
fn parallel_pushes_of_one_segment_local() {
    parallel_pushes(&TestRepo::local());
}

#[test]
fn parallel_pushes_of_one_segment_s3() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    parallel_pushes(&rt.block_on(TestRepo::s3(s3::moto())));
}
