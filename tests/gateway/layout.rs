//! The crate's layout keeps its dependencies pointing one way: no top-level module imports,
//! directly or through others, a module that imports it back (the import graph has no
//! circle). Read from the source, the way `grep -rn "use crate::" src` shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its files name with `crate::`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let targets = graph.entry(module.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    if line[..i].ends_with('$') {
                        continue; // `$crate::` in a macro names the crate, not a module
                    }
                    let name: String = line[i + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        targets.insert(name);
                    }
                }
            }
        }
    }
    // Only modules count (not macros or items exported at the crate root).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|t| modules.contains(t));
    }
    graph
}

/// A circle through `start`, if the graph has one.
fn circle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in graph.get(path.last().unwrap()).into_iter().flatten() {
        if next == start {
            let mut circle = path.clone();
            circle.push(next.clone());
            return Some(circle);
        }
        if path.contains(next) || !graph.contains_key(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(c) = circle_from(graph, start, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

#[test]
fn the_top_level_modules_import_each_other_without_a_circle() {
    let graph = import_graph();
    assert!(
        graph.contains_key("store") && graph.contains_key("api"),
        "{graph:?}"
    );
    for module in graph.keys() {
        let circle = circle_from(&graph, module, &mut vec![module.clone()]);
        assert!(
            circle.is_none(),
            "import circle: {}",
            circle.unwrap_or_default().join(" -> ")
        );
    }
    // The ground floor uses nothing above it.
    assert!(
        graph["domain"].is_empty(),
        "domain imports {:?}",
        graph["domain"]
    );
    assert!(
        graph["workdays"].is_empty(),
        "workdays imports {:?}",
        graph["workdays"]
    );
    assert_eq!(
        graph["store"]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["domain"],
        "store imports only domain"
    );
}
