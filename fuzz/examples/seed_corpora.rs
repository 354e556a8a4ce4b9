//! Writes the seed inputs of every fuzz target into `corpus/<target>/seed-*` (next to this
//! crate's Cargo.toml), for a fresh start: `cargo run --example seed_corpora`.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, name, bytes) in common::fuzzing::seed_corpora() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
