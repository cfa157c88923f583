//! The engine's modules form layers: a module uses only modules of lower layers, so there
//! are no import cycles and each piece can be read (and tested) on top of the ones below.
//! This test reads the sources and fails on an import that goes up or sideways.

use regex::Regex;
use std::collections::BTreeMap;
use std::path::Path;

/// Each module of `src/engine` and its layer. A new module gets a line here.
const LAYERS: &[(&str, u8)] = &[
    // Below everything: how messages quote what users wrote.
    ("quote", 0),
    // Leaves: no other engine module but `quote`.
    ("dag", 1),
    ("duration", 1),
    ("names", 1),
    ("outputs", 1),
    ("params", 1),
    ("suggest", 1),
    ("template", 1),
    // Arithmetic on the leaves.
    ("retry", 2),
    ("pool", 2),
    ("revision", 2),
    ("schedule", 2),
    ("asset", 2),
    ("notify", 2),
    ("deadline", 2),
    ("sensor", 2),
    ("approval", 2),
    // A pipeline checked as a whole.
    ("validate", 3),
    // Decisions over a valid pipeline.
    ("plan", 4),
    ("resolve", 5),
    // The run step both drivers take.
    ("step", 6),
    // What a rerun request runs again.
    ("rerun", 7),
    // Test builders, compiled only for tests: may use anything.
    ("fixture", 9),
];

/// The engine modules a source file uses (`super::x`, `super::{x, y}`, `crate::engine::x`),
/// leaving out its `mod tests`.
fn uses(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let path = Regex::new(r"(?:\bsuper|crate::engine)::(\{[^}]*\}|[a-z_]+)").unwrap();
    let mut out = Vec::new();
    for cap in path.captures_iter(code) {
        let target = &cap[1];
        let names: Vec<&str> = match target.strip_prefix('{') {
            Some(group) => group.trim_end_matches('}').split(',').collect(),
            None => vec![target],
        };
        for name in names {
            let first = name.trim().split("::").next().unwrap_or_default();
            if !first.is_empty() && first.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.push(first.to_string());
            }
        }
    }
    out
}

#[test]
fn engine_modules_use_only_lower_layers() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut problems = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "rs") || module == "mod" {
            continue;
        }
        seen += 1;
        let Some(&own) = layers.get(module) else {
            problems.push(format!("src/engine/{module}.rs has no layer in LAYERS"));
            continue;
        };
        for used in uses(&std::fs::read_to_string(&path).unwrap()) {
            match layers.get(used.as_str()) {
                Some(&layer) if layer < own => {}
                Some(&layer) => problems.push(format!(
                    "{module} (layer {own}) uses {used} (layer {layer}): only lower layers may be used"
                )),
                // `super::x` where x is an item of engine/mod.rs (a re-export): name the module.
                None => problems.push(format!(
                    "{module} uses {used}, which is not an engine module: import from the module itself"
                )),
            }
        }
    }
    assert_eq!(
        seen,
        LAYERS.len(),
        "every engine module is listed, and only those"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_every_form_of_import() {
    let text = "use super::dag::Dag;\nuse super::{duration, names::{self, MAX}};\n\
                fn f() { crate::engine::plan::x(); }\n#[cfg(test)]\nmod tests { use super::step; }";
    assert_eq!(uses(text), ["dag", "duration", "names", "plan"]);
}
