//! Keeps the layout map of `src/lib.rs` true. The map lists the modules bottom-up and ends
//! each entry with the modules it uses; the test reads it and the sources and fails when
//! - a module uses one listed after it (an upward import: the start of an import circle),
//! - the modules an entry names differ from the ones its module uses,
//! - a module declared in `lib.rs` is missing from the map, or the map names one that is not
//!   declared,
//! - a unit test module is written inline instead of in its sibling `tests.rs`.
//!
//! Since each module may use only modules listed before it, the crate's modules import each
//! other without a circle, and the ground floor (`domain`, `crypto` and `workdays`, which use
//! nothing, then `store`, which uses `domain` and `crypto` — the hashes of evidence — alone) is
//! held to what its entry says.
//!
//! "Uses" means a path through the crate root: `crate::x`, `crate::{x, …}`, or enough
//! `super::` to leave the module. Comments do not count (a doc link is not a dependency), nor
//! does `$crate::` in a macro (it names the crate where the macro is expanded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One entry of the map: a module and the modules it says it uses.
#[derive(Debug)]
struct Entry {
    module: String,
    uses: BTreeSet<String>,
}

/// One source file of a module: its depth below the crate root (`src/foo.rs` is 1,
/// `src/foo/bar.rs` is 2) and its text.
struct Source {
    path: String,
    depth: usize,
    text: String,
}

/// The entries of the `# Layout` section of `lib.rs`, in order.
fn map(lib: &str) -> Vec<Entry> {
    let docs: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .skip_while(|l| *l != "# Layout")
        .skip(1)
        .take_while(|l| !l.starts_with("# "))
        .collect();
    let mut texts: Vec<String> = Vec::new();
    let mut open = false;
    for line in docs {
        if let Some(rest) = line.strip_prefix("- ") {
            texts.push(rest.to_string());
            open = true;
        } else if line.is_empty() {
            open = false;
        } else if open {
            let last = texts.last_mut().expect("an open entry");
            last.push(' ');
            last.push_str(line);
        }
    }
    texts
        .iter()
        .filter_map(|text| {
            let module = backticked(text).into_iter().next()?;
            let uses = match text.rfind("Uses ") {
                Some(at) => backticked(&text[at..]).into_iter().collect(),
                None => BTreeSet::new(),
            };
            Some(Entry { module, uses })
        })
        .collect()
}

/// The identifiers written in backticks, in order: `` `x` `` and `` [`x`] `` alike.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_string)
        .collect()
}

/// The modules `lib.rs` declares (`mod x;` or `pub mod x;`).
fn declared(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| l.strip_prefix("pub ").unwrap_or(l).strip_prefix("mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// The crate-root names a file's code reaches: after `crate::`, inside `crate::{…}`, or after
/// as many `super::` as the file is deep.
fn reached(source: &Source) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let escape = "super::".repeat(source.depth);
    for line in source.text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            if code[..at].ends_with('$') {
                continue;
            }
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                names.extend(group_heads(group));
            } else {
                names.insert(ident(rest));
            }
        }
        if source.depth > 0 {
            for (at, _) in code.match_indices(&escape) {
                let before = &code[..at];
                if !before.ends_with("super::") {
                    names.insert(ident(&code[at + escape.len()..]));
                }
            }
        }
    }
    names.remove("");
    names
}

/// The first path segment of each item of a `{a::b, c}` group (up to its closing brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                heads.push(ident(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Everything wrong with the layout of a crate whose `lib.rs` is `lib` and whose modules'
/// files are `sources` (by module).
fn problems(lib: &str, sources: &BTreeMap<String, Vec<Source>>) -> Vec<String> {
    let entries = map(lib);
    let declared = declared(lib);
    let mut found = Vec::new();
    let listed: BTreeSet<String> = entries.iter().map(|e| e.module.clone()).collect();
    for missing in declared.difference(&listed) {
        found.push(format!(
            "module `{missing}` is missing from the layout map of lib.rs"
        ));
    }
    for extra in listed.difference(&declared) {
        found.push(format!(
            "the layout map lists `{extra}`, which lib.rs does not declare"
        ));
    }
    let order: BTreeMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.module.as_str(), i))
        .collect();
    for entry in &entries {
        let mut uses = BTreeSet::new();
        for source in sources.get(&entry.module).into_iter().flatten() {
            for name in reached(source) {
                if name == entry.module || !declared.contains(&name) {
                    continue;
                }
                if order.get(name.as_str()) > order.get(entry.module.as_str()) {
                    found.push(format!(
                        "{} uses `{name}`, which the layout map lists after `{}`",
                        source.path, entry.module
                    ));
                }
                uses.insert(name);
            }
        }
        if uses != entry.uses {
            found.push(format!(
                "the layout map says `{}` uses {:?}; its code uses {:?}",
                entry.module, entry.uses, uses
            ));
        }
    }
    for source in sources.values().flatten() {
        for (n, line) in source.text.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("mod tests {") || line.starts_with("pub mod tests {") {
                found.push(format!(
                    "{}:{}: unit tests go in the sibling tests.rs, not inline",
                    source.path,
                    n + 1
                ));
            }
        }
    }
    found
}

/// Every `.rs` file of the crate's modules, by module (the file `src/x.rs` and the folder
/// `src/x/`).
fn crate_sources(src: &Path) -> BTreeMap<String, Vec<Source>> {
    fn walk(dir: &Path, depth: usize, module: &str, out: &mut BTreeMap<String, Vec<Source>>) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, depth + 1, module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a readable source file");
                out.entry(module.to_string()).or_default().push(Source {
                    path: path.display().to_string(),
                    depth: depth + 1,
                    text,
                });
            }
        }
    }
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/").flatten() {
        let path = entry.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.is_dir() {
            walk(&path, 1, stem, &mut out);
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" && stem != "main" {
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            out.entry(stem.to_string()).or_default().push(Source {
                path: path.display().to_string(),
                depth: 1,
                text,
            });
        }
    }
    out
}

#[test]
fn the_layout_map_of_lib_rs_is_true() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let entries = map(&lib);
    assert!(entries.len() >= 15, "the map was not read: {entries:?}");
    let found = problems(&lib, &crate_sources(&src));
    assert!(found.is_empty(), "{}", found.join("\n"));
    // The ground floor uses nothing above it: the map may not grow a floor beneath these.
    let uses = |module: &str| {
        let entry = entries.iter().find(|e| e.module == module).unwrap();
        entry.uses.iter().map(String::as_str).collect::<Vec<_>>()
    };
    assert_eq!(uses("domain"), Vec::<&str>::new(), "domain uses nothing");
    assert_eq!(
        uses("workdays"),
        Vec::<&str>::new(),
        "workdays uses nothing"
    );
    assert_eq!(uses("crypto"), Vec::<&str>::new(), "crypto uses nothing");
    assert_eq!(
        uses("store"),
        ["crypto", "domain"],
        "store uses only domain and crypto"
    );
}

/// A small crate of three modules, `a` below `b` below `c`, as the checker sees it.
fn toy(lib_extra: &str, b_code: &str) -> (String, BTreeMap<String, Vec<Source>>) {
    let lib = format!(
        "//! # Layout\n//!\n//! - [`a`]: bottom. Uses nothing.\n//! - [`b`]: middle.\n//!   Uses [`a`].\n\
         //! - `c`: top. Uses [`a`], [`b`].\n//!\n//! # Next\n\npub mod a;\npub mod b;\nmod c;\n{lib_extra}"
    );
    let source = |module: &str, depth: usize, text: &str| Source {
        path: format!("src/{module}.rs"),
        depth,
        text: text.to_string(),
    };
    let mut sources = BTreeMap::new();
    sources.insert("a".into(), vec![source("a", 1, "pub fn f() {}")]);
    sources.insert("b".into(), vec![source("b", 1, b_code)]);
    sources.insert(
        "c".into(),
        vec![source(
            "c",
            2,
            "use crate::{a::f, b::g};\n// crate::z in a comment\nfn h() { super::super::b::g() }",
        )],
    );
    (lib, sources)
}

#[test]
fn a_true_map_has_no_problems() {
    let (lib, sources) = toy("", "use crate::a::f;\npub fn g() { f() }");
    assert_eq!(problems(&lib, &sources), Vec::<String>::new());
}

#[test]
fn an_upward_import_is_refused() {
    let (lib, sources) = toy("", "use crate::a::f;\nuse crate::c::h;");
    let found = problems(&lib, &sources);
    assert!(
        found
            .iter()
            .any(|p| p.contains("uses `c`, which the layout map lists after `b`")),
        "{found:?}"
    );
}

#[test]
fn an_upward_import_through_super_is_refused() {
    let (lib, sources) = toy("", "use crate::a::f;\nfn k() { super::c::h() }");
    let found = problems(&lib, &sources);
    assert!(found.iter().any(|p| p.contains("uses `c`")), "{found:?}");
}

#[test]
fn a_use_the_map_does_not_name_is_refused() {
    let (lib, sources) = toy("", "pub fn g() {}");
    let found = problems(&lib, &sources);
    assert!(
        found
            .iter()
            .any(|p| p.contains("the layout map says `b` uses")),
        "{found:?}"
    );
}

#[test]
fn a_module_missing_from_the_map_is_refused() {
    let (lib, sources) = toy("pub mod d;\n", "use crate::a::f;");
    let found = problems(&lib, &sources);
    assert!(
        found
            .iter()
            .any(|p| p.contains("module `d` is missing from the layout map")),
        "{found:?}"
    );
}

#[test]
fn inline_unit_tests_are_refused() {
    let (lib, sources) = toy("", "use crate::a::f;\n#[cfg(test)]\nmod tests {\n}\n");
    let found = problems(&lib, &sources);
    assert!(
        found
            .iter()
            .any(|p| p.contains("src/b.rs:3: unit tests go")),
        "{found:?}"
    );
}
