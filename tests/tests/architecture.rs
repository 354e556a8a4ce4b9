//! The layout rule of `docs/architecture.md`: inside every crate, no module imports a module
//! that imports it back (every dependency points one way). Reads each crate's sources as
//! text: the module of each file, and every `crate::`, `super::` and `self::` path in it
//! (outside its `#[cfg(test)]` module), resolved to the deepest module it names; then looks
//! for a cycle. And the layers of the same document: each workspace crate depends only on
//! crates of lower layers (from its `Cargo.toml`), and inside `common` no module imports one of
//! a higher layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 8] =
    ["formats", "pgwire", "storage", "common", "archive", "wal-archiver", "basebackup", "pitr-restore"];

/// The layer of each crate (directory), lowest first: a crate may depend only on crates of a
/// lower layer. `pgwire` and `storage` share a layer and so know nothing of each other.
const CRATE_LAYERS: [(&str, u8); 8] = [
    ("formats", 0),
    ("pgwire", 1),
    ("storage", 1),
    ("common", 2),
    ("archive", 3),
    ("wal-archiver", 4),
    ("basebackup", 4),
    ("pitr-restore", 4),
];

/// The layer of each of `common`'s modules: the codec; the failure vocabulary and retries; the
/// repository (layout, catalog, leases); the process edge (configuration, command line,
/// logging); the fuzz targets' bodies over all of it.
const COMMON_LAYERS: [(&str, u8); 11] = [
    ("codec", 0),
    ("exit", 1),
    ("retry", 1),
    ("repository", 2),
    ("catalog", 2),
    ("lease", 2),
    ("encryption", 2),
    ("config", 3),
    ("cmdline", 3),
    ("telemetry", 3),
    ("fuzzing", 4),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file (`a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` the root).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every path that starts with `crate`, `super` or `self` in `code`, as a list of names (a
/// `use a::{b, c::d}` gives `a::b` and `a::c`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 6)].iter().collect();
        let starts = ["crate::", "super::", "self::"].iter().find(|p| rest.starts_with(&p[..p.len().min(rest.len())]));
        let boundary = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        let Some(_) = starts.filter(|_| boundary) else {
            i += 1;
            continue;
        };
        // Read `seg::seg::...` and an optional `{...}` group.
        let mut j = i;
        let mut segs = Vec::new();
        loop {
            let start = j;
            while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
                j += 1;
            }
            if j == start {
                break;
            }
            segs.push(bytes[start..j].iter().collect::<String>());
            if j + 1 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                j += 2;
                if j < bytes.len() && bytes[j] == '{' {
                    let close = bytes[j..].iter().position(|&c| c == '}').map(|p| j + p).unwrap_or(bytes.len());
                    let inner: String = bytes[j + 1..close].iter().collect();
                    for item in inner.split(',') {
                        let first = item.trim().split("::").next().unwrap_or("").trim().to_string();
                        if !first.is_empty() && first != "self" && first != "*" {
                            let mut p = segs.clone();
                            p.push(first);
                            out.push(p);
                        }
                    }
                    segs.clear();
                    j = close;
                    break;
                }
            } else {
                break;
            }
        }
        if segs.len() > 1 {
            out.push(segs);
        }
        i = j.max(i + 1);
    }
    out
}

/// The deepest known module that `path` (seen in module `from`) names.
fn resolve(from: &[String], path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut base: Vec<String> = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") => {
            base = from.to_vec();
            rest = &path[1..];
        }
        Some("super") => {
            base = from.to_vec();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut found = base.clone();
    let mut cur = base;
    for s in rest {
        cur.push(s.clone());
        if modules.contains(&cur) {
            found = cur.clone();
        } else {
            break;
        }
    }
    Some(found)
}

/// Every import between two modules of `krate`: module -> the modules it names.
fn module_edges(krate: &str) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = workspace().join(krate).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for p in paths(&code(&text)) {
            if let Some(to) = resolve(&from, &p, &modules) {
                // A module and the modules it contains (declared with `mod`) are one
                // unit for the rule: a parent naming its own child is a declaration.
                if to != from && !to.starts_with(&from) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut problems = Vec::new();
    for krate in CRATES {
        let edges = module_edges(krate);
        // A cycle: a path back to where it started.
        for start in edges.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((m, trail)) = stack.pop() {
                for next in edges.get(&m).into_iter().flatten() {
                    if next == start {
                        let names: Vec<String> =
                            trail.iter().chain([next]).map(|m| format!("{krate}::{}", m.join("::"))).collect();
                        problems.push(names.join(" -> "));
                    } else if seen.insert(next.clone()) {
                        let mut t = trail.clone();
                        t.push(next.clone());
                        stack.push((next.clone(), t));
                    }
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "import cycles:\n{}", problems.join("\n"));
}

/// The workspace crates (by directory) that `krate`'s `[dependencies]` name.
fn crate_dependencies(krate: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join(krate).join("Cargo.toml")).unwrap();
    let dirs: BTreeMap<&str, &str> = [
        ("formats", "formats"),
        ("pgwire", "pgwire"),
        ("storage", "storage"),
        ("common", "common"),
        ("archive", "archive"),
        ("wal-archiver", "wal-archiver"),
        ("basebackup", "basebackup"),
        ("pitr-restore", "pitr-restore"),
    ]
    .into_iter()
    .collect();
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if !in_deps || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['.', '=', ' ']).next().unwrap_or("");
        if let Some(dir) = dirs.get(name) {
            out.push(dir.to_string());
        }
    }
    out
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let layer: BTreeMap<&str, u8> = CRATE_LAYERS.into_iter().collect();
    let mut problems = Vec::new();
    for krate in CRATES {
        for dep in crate_dependencies(krate) {
            if layer[dep.as_str()] >= layer[krate] {
                problems.push(format!(
                    "{krate} (layer {}) depends on {dep} (layer {})",
                    layer[krate],
                    layer[dep.as_str()]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(crate_dependencies("pgwire"), ["formats"], "the wire client knows nothing of storage or codecs");
    assert!(crate_dependencies("storage").is_empty(), "storage knows nothing of what it stores");
}

#[test]
fn common_modules_import_only_their_own_layer_or_lower() {
    let layer: BTreeMap<&str, u8> = COMMON_LAYERS.into_iter().collect();
    let edges = module_edges("common");
    let mut problems = Vec::new();
    for (from, tos) in &edges {
        let Some(f) = from.first().and_then(|m| layer.get(m.as_str())) else {
            continue;
        };
        for to in tos {
            let Some(t) = to.first().and_then(|m| layer.get(m.as_str())) else {
                continue;
            };
            if t > f {
                problems.push(format!(
                    "common::{} (layer {f}) imports common::{} (layer {t})",
                    from.join("::"),
                    to.join("::")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let src = workspace().join("common").join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for f in files {
        let m = module_of(&src, &f);
        if let Some(top) = m.first() {
            assert!(layer.contains_key(top.as_str()), "common::{top} has no layer in COMMON_LAYERS");
        }
    }
}

#[test]
fn the_path_reader_sees_use_groups_and_relative_paths() {
    let p = paths("use super::state::{Durability, Positions};\nuse crate::store::store;\nlet x = self::http::bind();");
    assert!(p.contains(&vec!["super".into(), "state".into(), "Durability".into()]), "{p:?}");
    assert!(p.contains(&vec!["crate".into(), "store".into(), "store".into()]), "{p:?}");
    assert!(p.contains(&vec!["self".into(), "http".into(), "bind".into()]), "{p:?}");
    let modules: BTreeSet<Vec<String>> =
        [vec![], vec!["receive".to_string()], vec!["receive".to_string(), "state".to_string()]].into_iter().collect();
    let from = vec!["receive".to_string(), "upload".to_string()];
    assert_eq!(
        resolve(&from, &["super".into(), "state".into(), "X".into()], &modules),
        Some(vec!["receive".into(), "state".into()])
    );
}
