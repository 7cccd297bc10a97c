//! The layering invariant of `docs/ARCHITECTURE.md`, checked on the source tree:
//!
//! 1. **An actor module never imports another actor module.** Outside an actor's own files, no
//!    module of `actors/src` names `crate::<actor>` for another actor; what crosses actors lives
//!    in `protocol`, `model` and `client`. Only the assembly (`tree.rs`, `lib.rs`) and the test
//!    scaffolding (`testkit.rs`, `hooks.rs`, `*tests.rs`, inline `mod tests`) may reach into the
//!    actors.
//! 2. **Children are found typed.** `Names::lookup` (name and message type given separately, not
//!    checked by the compiler) is used only in `names.rs` and test code; everything else calls
//!    `Names::get::<C: Child>()` or the `client`.
//!
//! A plain text scan: a `use` or a path is what an import is in Rust, and the scan strips
//! comments and test modules first.

use std::fs;
use std::path::{Path, PathBuf};

/// The actor modules: the six children and the supervisor.
const ACTORS: [&str; 7] = [
    "alert",
    "persister",
    "failsafe",
    "heartbeat",
    "broker",
    "strategy",
    "supervisor",
];

/// Files that assemble the tree or stand in for it in tests.
const ASSEMBLY: [&str; 4] = ["tree.rs", "lib.rs", "testkit.rs", "hooks.rs"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(rel: &str) -> bool {
    rel.ends_with("tests.rs") || rel.ends_with("_test.rs")
}

/// The source without line comments and without an inline `#[cfg(test)] mod tests { .. }`
/// (by convention the last item of a file).
fn production_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(k) => &text[..k],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(k) => &line[..k],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The actor modules `code` names through `crate::`, other than `own`.
fn foreign_actors(code: &str, own: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(k) = rest.find("crate::") {
        let after = &rest[k + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `use crate::{alert, broker::X}`: every top-level name in the group.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let head: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                if let Some(a) = ACTORS.iter().find(|a| **a == head) {
                    found.push(*a);
                }
            }
        } else {
            let head: String = after.chars().take_while(|c| is_ident(*c)).collect();
            if let Some(a) = ACTORS.iter().find(|a| **a == head) {
                found.push(*a);
            }
        }
        rest = after;
    }
    found.retain(|a| *a != own);
    found.sort_unstable();
    found.dedup();
    found
}

fn untyped_lookups(code: &str) -> bool {
    code.contains(".lookup(") || code.contains(".lookup::<") || code.contains("lookup::<")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn no_actor_module_imports_another() {
    let src = root().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if is_test_file(&rel) || ASSEMBLY.contains(&rel.as_str()) {
            continue;
        }
        let own = rel
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs");
        let code = production_code(&fs::read_to_string(path).expect("read source"));
        let foreign = foreign_actors(&code, own);
        if !foreign.is_empty() {
            violations.push(format!("actors/src/{rel} imports {}", foreign.join(", ")));
        }
    }
    assert!(
        files.len() > 50,
        "the scan found only {} files: wrong directory?",
        files.len()
    );
    assert!(
        violations.is_empty(),
        "an actor module never imports another actor module (docs/ARCHITECTURE.md); use \
         crate::protocol, crate::model or crate::client instead:\n  {}",
        violations.join("\n  ")
    );
}

/// The leaves: what every layer above may use, and which use nothing of the crate above them.
const LEAVES: [&str; 9] = [
    "names",
    "mode",
    "store",
    "backoff",
    "clock",
    "metrics",
    "secret",
    "notify",
    "memory_net",
];

/// The layers above the leaves: vocabulary, services, actors and the assembly.
const ABOVE_LEAVES: [&str; 18] = [
    "protocol",
    "model",
    "client",
    "health",
    "checks",
    "recovery",
    "orders",
    "task",
    "alert",
    "persister",
    "failsafe",
    "heartbeat",
    "broker",
    "strategy",
    "supervisor",
    "tree",
    "testkit",
    "hooks",
];

/// The modules of [`ABOVE_LEAVES`] that `code` names through `crate::`.
fn names_above_leaves(code: &str) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = code
        .split("crate::")
        .skip(1)
        .filter_map(|after| {
            let head: String = after.chars().take_while(|c| is_ident(*c)).collect();
            ABOVE_LEAVES.iter().find(|m| **m == head).copied()
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// **A leaf imports nothing above it** (`docs/ARCHITECTURE.md`): the store, the clock, the
/// metrics and the rest are usable from every layer because they know none of them.
#[test]
fn leaves_import_no_layer_above_them() {
    let src = root().join("src");
    let mut violations = Vec::new();
    for leaf in LEAVES {
        let mut files = vec![src.join(format!("{leaf}.rs"))];
        if src.join(leaf).is_dir() {
            sources(&src.join(leaf), &mut files);
        }
        for path in files.iter().filter(|p| p.exists()) {
            let name = path.to_string_lossy().replace('\\', "/");
            if is_test_file(&name) {
                continue;
            }
            let code = production_code(&fs::read_to_string(path).expect("read source"));
            let above = names_above_leaves(&code);
            if !above.is_empty() {
                violations.push(format!("{name} imports {}", above.join(", ")));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "a leaf imports nothing above it (docs/ARCHITECTURE.md):\n  {}",
        violations.join("\n  ")
    );
    assert_eq!(
        names_above_leaves("use crate::protocol::alert::Alert;\nfn f() { crate::clock::now(); }"),
        ["protocol"],
        "the scan sees a leaf naming a layer above it"
    );
}

#[test]
fn children_are_found_by_their_typed_name() {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    sources(&root().join("../src"), &mut files);
    let mut violations = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "names.rs" || is_test_file(name) {
            continue;
        }
        let code = production_code(&fs::read_to_string(path).expect("read source"));
        if untyped_lookups(&code) {
            violations.push(path.display().to_string());
        }
    }
    assert!(
        violations.is_empty(),
        "Names::lookup outside names.rs and tests: use Names::get::<XMsg>() or crate::client:\n  {}",
        violations.join("\n  ")
    );
}

/// The scanner itself: it must see what it is meant to forbid, and not what it allows.
#[test]
fn the_scan_sees_violations() {
    let code = production_code(
        "use crate::protocol::alert::Alert;\n\
         use crate::broker::BrokerMsg; // a real import\n\
         // use crate::heartbeat::X; (a comment)\n\
         use crate::{mode, persister::PersisterMsg};\n\
         fn f() { crate::alert::raise(); }\n\
         #[cfg(test)]\nmod tests {\n    use crate::strategy::StrategyMsg;\n}\n",
    );
    assert_eq!(
        foreign_actors(&code, "alert"),
        ["broker", "persister"],
        "own module, comments and tests are not violations"
    );
    assert_eq!(
        foreign_actors(&code, "failsafe"),
        ["alert", "broker", "persister"]
    );
    assert!(untyped_lookups(
        "let a = names.lookup::<AlertMsg>(ChildName::Alert);"
    ));
    assert!(!untyped_lookups("let a = names.get::<AlertMsg>();"));
}
