//! The engine's modules import one way only: files and I/O at the bottom, the log's state and
//! recovery above them, the engine's core (state lock, writer) above that, its API on top.
//! This test reads `src/` and fails on any `crate::` path that points up or sideways, so a
//! circle (as `engine.rs`, `append.rs`, `ids.rs`, `recovery.rs` and `summary.rs` once formed
//! through `Inner`) cannot come back unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

/// Each module's layer; a module may use only modules of a lower layer (layer 0, the
/// vocabulary, may use itself).
const LAYERS: &[(&str, u32)] = &[
    // The vocabulary: names, events, errors.
    ("error", 0),
    ("types", 0),
    // Bytes and the file system.
    ("format", 1),
    ("storage", 1),
    ("bloom", 1),
    ("table", 1),
    ("io", 2),
    ("failmark", 2),
    ("segment", 2),
    ("idtable", 2),
    ("streamtable", 2),
    ("config", 3),
    ("idindex", 3),
    // The log's state, built from files.
    ("state", 4),
    ("summary", 5),
    ("append", 5),
    ("ids", 6),
    ("recovery", 7),
    // The core: the state lock, the writer's queue and thread.
    ("inner", 8),
    ("background", 9),
    // The API.
    ("engine", 10),
    ("read", 11),
    ("log", 11),
    ("scavenge", 11),
];

/// Re-exports from lib.rs, by the module that defines them.
fn owner_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "OpenError" | "Corruption" | "Failed" | "AppendError" | "DecodeError" | "NameError"
        | "LogError" | "ReadError" | "ScavengeError" => "error",
        "ExpectedVersion" | "EventData" | "DeleteKind" | "StreamMetadata" | "StreamWrite"
        | "RecordedEvent" | "AppendResult" | "ContentType" => "types",
        "OpenStats" => "state",
        "IdIndexStats" => "idindex",
        "IoMode" => "io",
        "EngineConfig" => "config",
        "Engine" | "EngineCounters" => "engine",
        _ => return None,
    })
}

/// The modules a source file names through `crate::` (code only, not comments).
fn uses(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let first = item.trim().split("::").next().unwrap_or("");
                    if !first.is_empty() {
                        out.push(first.to_string());
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn modules_import_one_way() {
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            files.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    let sim = std::fs::read_to_string(src.join("storage/sim.rs")).unwrap();
    files.push(("storage".to_string(), sim));
    let mut wrong = Vec::new();
    for (module, source) in &files {
        if module == "lib" || module == "fault_tests" || module == "open_tests" {
            continue;
        }
        let own = *layer
            .get(module.as_str())
            .unwrap_or_else(|| panic!("module {module} has no layer in LAYERS"));
        for used in uses(source) {
            let target = match used.chars().next() {
                Some(c) if c.is_uppercase() => match owner_of(&used) {
                    Some(m) => m.to_string(),
                    None => panic!("{module}: crate::{used}: add it to owner_of"),
                },
                _ => used.clone(),
            };
            if target == *module {
                continue;
            }
            let theirs = *layer
                .get(target.as_str())
                .unwrap_or_else(|| panic!("{module} uses unknown module {target}"));
            if !(theirs < own || (own == 0 && theirs == 0)) {
                wrong.push(format!(
                    "{module} (layer {own}) uses {target} (layer {theirs})"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}
