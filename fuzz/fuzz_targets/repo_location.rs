#![no_main]

// The body is common::fuzzing::repo_location, shared with the corpus replay in tests/tests/fuzz_corpora.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| common::fuzzing::repo_location(data));
