//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the same functions as the fuzz
//! targets (`common::fuzzing`), on stable and in CI: every input that once crashed, or that
//! the fuzzer kept for its coverage, must still return without panicking. See docs/fuzzing.md.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

/// The files of `fuzz/corpus/<target>/`, sorted; panics when the directory is missing or empty.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())).path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

#[test]
fn every_corpus_input_returns() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (target, body) in common::fuzzing::TARGETS {
        for file in corpus(target) {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            total += 1;
            if let Err(panic) = std::panic::catch_unwind(|| body(&data)) {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{target}: {}: {msg}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {total} corpus inputs panicked:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_target_has_a_fuzz_target_and_a_corpus_and_nothing_else_does() {
    let names: Vec<&str> = common::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    let listed = |sub: &str, strip: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(fuzz_dir().join(sub))
            .unwrap_or_else(|e| panic!("fuzz/{sub}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(strip).to_string())
            .collect();
        v.sort();
        v
    };
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(listed("corpus", ""), expected, "fuzz/corpus/ directories");
    assert_eq!(listed("fuzz_targets", ".rs"), expected, "fuzz/fuzz_targets/ files");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for n in names {
        assert!(manifest.contains(&format!("name = \"{n}\"")), "fuzz/Cargo.toml has no [[bin]] {n}");
    }
}
