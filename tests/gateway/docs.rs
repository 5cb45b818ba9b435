//! The docs cannot go stale. Every code block of `README.md` and `docs/*.md` is followed by an
//! HTML comment naming what runs or checks it (`<!-- checked by: FILE, FILE -->`); each named
//! file exists and contains each command's words (its `yrd-gateway` subcommands and every
//! `--flag`, or the script or program it runs); every `yrd-gateway` command still parses;
//! every grpcurl method exists in the contract; every TOML excerpt uses configuration keys
//! only; every path of a file tree exists; and every configuration key is in the operator
//! guide's reference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use yrd_gateway::cli::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A code block of a document, with where it is and what checks it.
#[derive(Debug)]
struct Block {
    at: String,
    lang: String,
    lines: Vec<String>,
    checked_by: Vec<String>,
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The code blocks of a markdown text: fenced, or indented by four spaces after a blank line
/// (inside a list item too).
fn blocks(name: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let start = i;
        let (lang, body) = if let Some(fence) = line.trim_start().strip_prefix("```") {
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                body.push(lines[i].to_string());
                i += 1;
            }
            i += 1;
            (fence.trim().to_string(), body)
        } else if line.starts_with("    ")
            && !line.trim().is_empty()
            && i > 0
            && lines[i - 1].trim().is_empty()
            && !is_list_continuation(&lines, i)
        {
            let indent = line.len() - line.trim_start().len();
            let mut body = Vec::new();
            while i < lines.len()
                && (lines[i].trim().is_empty()
                    || lines[i].len() - lines[i].trim_start().len() >= indent)
            {
                body.push(lines[i][indent.min(lines[i].len())..].to_string());
                i += 1;
            }
            while body.last().is_some_and(|l| l.trim().is_empty()) {
                body.pop();
            }
            (String::new(), body)
        } else {
            i += 1;
            continue;
        };
        let checked_by = lines[i.min(lines.len())..]
            .iter()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| {
                l.trim()
                    .strip_prefix("<!-- checked by:")
                    .and_then(|r| r.strip_suffix("-->"))
            })
            .map(|names| names.split(',').map(|n| n.trim().to_string()).collect())
            .unwrap_or_default();
        out.push(Block {
            at: format!("{name}:{}", start + 1),
            lang,
            lines: body,
            checked_by,
        });
    }
    out
}

/// Whether an indented line continues a list item's text rather than opening a code block:
/// inside a list item (the nearest non-blank line above is indented), a code block is
/// indented four more than the item's text.
fn is_list_continuation(lines: &[&str], i: usize) -> bool {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let above = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
    above.is_some_and(|l| indent(l) > 0 && indent(lines[i]) < indent(l) + 4)
}

/// Splits a shell line into words (single and double quotes, no expansion), dropping a
/// trailing comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') if !started => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// The commands of a block: continuation lines joined, `for ...; do X; done` reduced to X,
/// variable assignments and comments dropped.
fn commands(block: &Block) -> Vec<Vec<String>> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in &block.lines {
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    joined
        .into_iter()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once("; do ") {
            Some((_, body)) => body.split(';').next().unwrap_or_default().to_string(),
            None => l,
        })
        .map(|l| {
            words(&l)
                .into_iter()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The arguments of a `yrd-gateway` command (`yrd-gateway`, `cargo run [-q] [--release] --`,
/// `$C` = `cargo run -q -- client`), or `None` for another program.
fn gateway_args(words: &[String]) -> Option<Vec<String>> {
    match words.first()?.as_str() {
        "yrd-gateway" => Some(words[1..].to_vec()),
        "$C" => Some(
            std::iter::once("client".to_string())
                .chain(words[1..].iter().cloned())
                .collect(),
        ),
        "cargo" if words.get(1).is_some_and(|w| w == "run") => {
            let dashes = words.iter().position(|w| w == "--")?;
            Some(words[dashes + 1..].to_vec())
        }
        _ => None,
    }
}

/// A concrete stand-in for a placeholder such as `<id>` or `$p`.
fn concrete(word: &str) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        match rest[open..].find('>') {
            Some(close) => {
                out.push_str("01939f2c-0000-7000-8000-000000000000");
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.replace("$p", "zone")
}

/// The words that must appear in a file that runs the command: its subcommand path and
/// flags for `yrd-gateway`; otherwise the program (or the script it runs) and long flags.
fn key_words(words: &[String]) -> Vec<String> {
    if let Some(args) = gateway_args(words) {
        let mut command = Cli::command();
        let mut keys = Vec::new();
        for arg in &args {
            if arg.starts_with("--") {
                keys.push(arg.split('=').next().unwrap().to_string());
            } else if let Some(sub) = command.find_subcommand(arg).cloned() {
                keys.push(arg.clone());
                command = sub;
            }
        }
        return keys;
    }
    let program = match words[0].as_str() {
        "bash" | "sh" | "python" | "python3" => words.get(1).cloned().unwrap_or_default(),
        p => p.to_string(),
    };
    std::iter::once(program)
        .chain(
            words
                .iter()
                .filter(|w| w.starts_with("--"))
                .map(|w| w.split('=').next().unwrap().to_string()),
        )
        .collect()
}

/// `service/method` names of the contract, e.g. `yrd.exchange.v1.ProjectService/GetProject`.
fn contract_methods() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("proto/yrd/exchange/v1")).unwrap() {
        let text = read(&entry.unwrap().path());
        let mut service = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().map(str::to_string);
            } else if let (Some(s), Some(rest)) = (&service, line.strip_prefix("rpc ")) {
                let method = rest.split('(').next().unwrap().trim();
                out.insert(format!("yrd.exchange.v1.{s}/{method}"));
            }
        }
    }
    out
}

/// Every configuration key as `section.key` (top-level keys bare), read from the raw config
/// structs, which refuse unknown keys (`[tls]` and `[crypto]` in `config/crypto.rs`).
fn config_keys() -> BTreeSet<String> {
    let text =
        read(&root().join("src/config/raw.rs")) + &read(&root().join("src/config/crypto.rs"));
    let fields = |name: &str| -> Vec<(String, String)> {
        let start = text
            .find(&format!("pub struct {name} {{"))
            .unwrap_or_else(|| panic!("no struct {name} in raw.rs"));
        let body = &text[start..start + text[start..].find("\n}").unwrap()];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(": "))
            .map(|(f, ty)| (f.to_string(), ty.trim_end_matches(',').to_string()))
            .collect()
    };
    let mut keys = BTreeSet::new();
    for (field, ty) in fields("RawConfig") {
        let section = ty
            .trim_start_matches("Option<")
            .trim_start_matches("Vec<")
            .trim_end_matches('>')
            .to_string();
        if section.starts_with("Raw") {
            for (key, _) in fields(&section) {
                keys.insert(format!("{field}.{key}"));
            }
        } else if field != "share" {
            // `share` is the retired `[[share]]`, refused with a migration message.
            keys.insert(field);
        }
    }
    keys
}

/// The `section.key` paths of a TOML excerpt.
fn toml_keys(text: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut out = Vec::new();
    for (key, v) in &table {
        let tables: Vec<&toml::Table> = match v {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(a) if a.iter().all(|x| x.is_table()) && !a.is_empty() => {
                a.iter().filter_map(|x| x.as_table()).collect()
            }
            _ => {
                out.push(key.clone());
                continue;
            }
        };
        for t in tables {
            out.extend(t.keys().map(|k| format!("{key}.{k}")));
        }
    }
    out
}

#[test]
fn every_command_in_the_docs_is_checked_and_still_right() {
    let methods = contract_methods();
    let keys = config_keys();
    let mut problems = Vec::new();
    let mut counted = 0;
    for doc in documents() {
        let name = doc.strip_prefix(root()).unwrap().display().to_string();
        for block in blocks(&name, &read(&doc)) {
            counted += 1;
            let at = &block.at;
            if block.checked_by.is_empty() {
                problems.push(format!(
                    "{at}: no `<!-- checked by: FILE -->` after the block"
                ));
                continue;
            }
            let files: Vec<String> = block
                .checked_by
                .iter()
                .filter_map(|f| match std::fs::read_to_string(root().join(f)) {
                    Ok(text) => Some(text),
                    Err(_) => {
                        problems.push(format!("{at}: checked by `{f}`, which does not exist"));
                        None
                    }
                })
                .collect();
            let text = block.lines.join("\n");
            let is_toml = block.lang == "toml"
                || (block.lang.is_empty()
                    && block.lines.iter().all(|l| {
                        let l = l.trim();
                        l.is_empty()
                            || l.starts_with('[')
                            || l.starts_with('#')
                            || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
                    }));
            if is_toml {
                for key in toml_keys(&text) {
                    let calendar = ["holidays", "working_days"].contains(&key.as_str());
                    if !keys.contains(&key) && !calendar {
                        problems.push(format!("{at}: `{key}` is not a configuration key"));
                    }
                }
                continue;
            }
            if block.lang == "text" {
                // A file tree: each line starts with a path of the checkout.
                for line in &block.lines {
                    let path = line.split_whitespace().next().unwrap_or_default();
                    if !root().join(path).exists() {
                        problems.push(format!("{at}: `{path}` does not exist"));
                    }
                }
                continue;
            }
            if !block.lang.is_empty() {
                // Python and other file excerpts: the named files run them.
                continue;
            }
            for command in commands(&block) {
                if let Some(args) = gateway_args(&command) {
                    let argv: Vec<String> = std::iter::once("yrd-gateway".to_string())
                        .chain(args.iter().map(|a| concrete(a)))
                        .collect();
                    if let Err(e) = Cli::try_parse_from(&argv) {
                        problems.push(format!("{at}: `{}` does not parse: {e}", argv.join(" ")));
                    }
                }
                if command[0] == "grpcurl" {
                    for w in command.iter().filter(|w| w.starts_with("yrd.exchange.v1.")) {
                        if !methods.contains(w) {
                            problems.push(format!("{at}: {w} is not a method of the contract"));
                        }
                    }
                }
                for key in key_words(&command) {
                    if !files.iter().any(|f| f.contains(&key)) {
                        problems.push(format!(
                            "{at}: `{key}` of `{}` appears in none of {:?}",
                            command.join(" "),
                            block.checked_by
                        ));
                    }
                }
            }
        }
    }
    let reference = read(&root().join("docs/operator.md"));
    for key in &keys {
        if !reference.contains(&format!("`{key}`")) {
            problems.push(format!(
                "docs/operator.md: the configuration key `{key}` is not in the reference"
            ));
        }
    }
    assert!(
        counted > 20,
        "only {counted} code blocks found: is the parser right?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_block_parser_finds_indented_and_fenced_blocks() {
    let text = "Intro:\n\n    yrd-gateway dev\n    $C --party zone whoami   # note\n\n<!-- checked by: a.rs, b.sh -->\n\n- item\n  wrapped line\n\n```toml\n[sharing]\ndefault_catalog = true\n```\n\n- item\n  its text:\n\n      yrd-gateway dev\n\n  <!-- checked by: c.rs -->\n";
    let found = blocks("t.md", text);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[2].checked_by, ["c.rs"]);
    assert_eq!(found[0].checked_by, ["a.rs", "b.sh"]);
    assert_eq!(
        commands(&found[0]),
        [
            vec!["yrd-gateway", "dev"],
            vec!["$C", "--party", "zone", "whoami"]
        ]
    );
    assert_eq!(found[1].lang, "toml");
    assert!(found[1].checked_by.is_empty());
    assert_eq!(
        toml_keys(&found[1].lines.join("\n")),
        ["sharing.default_catalog"]
    );
    assert_eq!(
        key_words(&words(
            "$C --party zone allocation decide x --round 1 counter --quantity 150"
        )),
        [
            "client",
            "--party",
            "allocation",
            "decide",
            "--round",
            "--quantity"
        ]
    );
    assert!(config_keys().contains("limits.call_timeout_ms"));
    assert!(contract_methods().contains("yrd.exchange.v1.DirectoryService/WhoAmI"));
}

/// Every `(field, limit)` the record rules enforce: each `check_text` call (field name, maximum
/// characters) and each `const MAX_...` of `src/records/`.
fn code_limits() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut files = vec![root().join("src/records.rs")];
    let mut dirs = vec![root().join("src/records")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    for file in files {
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        let text = read(&file);
        // check_text(v, &f("display_name"), &self.display_name, 200, true)
        for call in text.split("check_text(").skip(1) {
            let statement = call.split(';').next().unwrap_or_default();
            let args: Vec<&str> = statement.split(',').map(str::trim).collect();
            if args.len() < 4 || args[0].starts_with("v:") {
                continue;
            }
            let field = args[1].rsplit('"').nth(1).unwrap_or_default().to_string();
            let max = args[3].to_string();
            if !field.is_empty() && max.chars().all(|c| c.is_ascii_digit()) {
                out.push((name.clone(), field, max));
            }
        }
        for line in text.lines() {
            if let Some(rest) = line
                .trim()
                .strip_prefix("pub const MAX_")
                .or(line.trim().strip_prefix("const MAX_"))
            {
                let (constant, value) = rest.split_once(':').unwrap();
                let value = value
                    .rsplit('=')
                    .next()
                    .unwrap()
                    .trim()
                    .trim_end_matches(';');
                if value.chars().all(|c| c.is_ascii_digit()) {
                    out.push((name.clone(), format!("MAX_{constant}"), value.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn every_validation_limit_is_published_in_the_developer_guide() {
    let guide = read(&root().join("docs/developer.md"));
    let start = guide
        .find("## Limits on what a request may carry")
        .expect("the limits section");
    let section = &guide[start..start + guide[start + 3..].find("\n## ").unwrap() + 3];
    let limits = code_limits();
    assert!(
        limits.len() >= 25,
        "only {} limits found: {limits:?}",
        limits.len()
    );
    let mut missing = Vec::new();
    for (file, field, max) in &limits {
        let published = if field.starts_with("MAX_") {
            section.contains(&format!(" {max} ")) || section.contains(&format!(" {max},"))
        } else {
            section.lines().any(|row| {
                row.contains(&format!(" {max} "))
                    && (row.contains(&format!(".{field}`")) || row.contains(&format!("`{field}`")))
            })
        };
        if !published {
            missing.push(format!("{file}: {field} = {max}"));
        }
    }
    assert!(
        missing.is_empty(),
        "limits not in docs/developer.md:\n{}",
        missing.join("\n")
    );
}

/// Every test `THREAT_MODEL.md` names (`` `path.rs::name` ``) exists in that file.
#[test]
fn every_test_the_threat_model_names_exists() {
    let model = read(&root().join("THREAT_MODEL.md"));
    let mut named = 0;
    let mut missing = Vec::new();
    for reference in model.split('`').skip(1).step_by(2) {
        let Some((file, name)) = reference.split_once(".rs::") else {
            continue;
        };
        named += 1;
        let path = root().join(format!("{file}.rs"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.contains(&format!("fn {name}(")) {
            missing.push(reference.to_string());
        }
    }
    assert!(
        named >= 30,
        "only {named} tests named: is the parser right?"
    );
    assert!(
        missing.is_empty(),
        "THREAT_MODEL.md names tests that do not exist:\n{}",
        missing.join("\n")
    );
}
