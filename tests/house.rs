//! The house, as ARCHITECTURE.md and `src/lib.rs` draw it, read from the code: which top-level
//! module uses which (`crate::NAME` in code, not in comments or tests). A use that breaks a
//! layer, or a new circle between modules, fails here before it blurs the drawing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| {
            e.unwrap().file_name().to_str().and_then(|n| n.strip_suffix(".rs")).map(String::from)
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = vec![src.join(format!("{module}.rs"))];
        let mut folders = vec![src.join(module)];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).into_iter().flatten() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut used = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if modules.contains(&name) && &name != module {
                        used.insert(name);
                    }
                }
            }
        }
        graph.insert(module.clone(), used);
    }
    graph
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn the_layers_hold() {
    let graph = uses();
    // The base: the model and the counters use nothing; translation and protobuf only the
    // model; the store only the model and the counters.
    for (module, allowed) in [
        ("model", set(&[])),
        ("metrics", set(&[])),
        ("formats", set(&["model"])),
        ("proto", set(&["model"])),
        ("store", set(&["model", "metrics"])),
    ] {
        let used = &graph[module];
        assert!(
            used.is_subset(&allowed),
            "{module} uses {:?}, beyond {allowed:?}",
            used.difference(&allowed).collect::<Vec<_>>()
        );
    }
    // The tools stand on the gateway; no part of the gateway uses a tool.
    let tools = set(&["cli", "demo", "simulate", "loadgen", "site"]);
    for (module, used) in &graph {
        if !tools.contains(module) {
            let wrong: Vec<_> = used.intersection(&tools).collect();
            assert!(wrong.is_empty(), "{module} uses the tools {wrong:?}");
        }
    }
    // The fronts and the deliverer are used only by the process that runs them (and the tools).
    for front in ["api", "delivery", "server"] {
        for (module, used) in &graph {
            let allowed = tools.contains(module) || module == "server";
            assert!(allowed || !used.contains(front), "{module} uses {front}");
        }
    }
}

#[test]
fn no_two_modules_use_each_other() {
    let graph = uses();
    let mut circles = BTreeSet::new();
    for (a, used) in &graph {
        for b in used {
            if a < b && graph[b].contains(a) {
                circles.insert(format!("{a}<->{b}"));
            }
        }
    }
    // None: a module that uses another is not used by it.
    let known = set(&[]);
    assert_eq!(circles, known, "circles between modules");
}

#[test]
fn no_crate_comes_in_two_versions_unless_deny_toml_says_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = \"") {
            name = Some(n.trim_end_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = \""), name.take()) {
            versions.entry(n).or_default().insert(v.trim_end_matches('"').to_string());
        }
    }
    let deny = std::fs::read_to_string(root.join("deny.toml")).unwrap();
    let skipped: BTreeSet<String> = deny
        .lines()
        .filter_map(|l| l.trim().strip_prefix("{ crate = \""))
        .map(|l| l.split('"').next().unwrap().to_string())
        .collect();
    // Platform crates of other targets (Windows, Redox, UEFI) are in the lock file but never built here.
    let other_platforms = ["windows", "redox_", "r-efi"];
    for (crate_name, found) in &versions {
        if found.len() < 2 || other_platforms.iter().any(|p| crate_name.starts_with(p)) {
            continue;
        }
        // all versions but one must be listed, each with its reason
        let listed =
            found.iter().filter(|v| skipped.contains(&format!("{crate_name}@{v}"))).count();
        assert!(
            listed + 1 >= found.len(),
            "{crate_name} comes in {found:?}: list the older in deny.toml's [bans] skip with a reason, or use one version"
        );
    }
}
