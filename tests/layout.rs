//! The code's shape, as the README's layout section describes it (issue #15): the AWS SDK is called only
//! in `src/aws/` and the stream reader (`src/runtime/stream*`); no function under `src/controller/` is
//! longer than 80 lines; no `clippy::too_many_arguments` allowance anywhere. Reads the sources as rustfmt
//! leaves them (a function ends at the `}` at its own indentation); no build of the operator needed. No
//! module cycle in `src/controller/`: neither among its modules nor among the files of a folder of it.

use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
/// The longest a function under `src/controller/` may be, signature and closing brace included.
const MAX_CONTROLLER_FN_LINES: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    files.sort();
    assert!(files.len() > 50, "found only {} files under {SRC}", files.len());
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(SRC).unwrap().to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Test modules (`tests.rs`, `*_tests.rs`, and what follows `#[cfg(test)]` in a file) are not the
/// operator's code.
fn non_test_part<'a>(file: &str, text: &'a str) -> &'a str {
    if file.ends_with("tests.rs") {
        return "";
    }
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Each function of `text`: its name, first line (1-based) and length in lines.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        // `pub(crate)`, `pub(super)`, `pub(in path)`: one word.
        let mut head = line.trim_start();
        if let Some(rest) = head.strip_prefix("pub(") {
            head = rest.split_once(')').map_or("", |(_, after)| after);
        }
        let words: Vec<&str> = head
            .split(|c: char| c.is_whitespace() || c == '(' || c == '<')
            .filter(|w| !w.is_empty())
            .collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            i += 1;
            continue;
        };
        let prefix_ok = words[..at]
            .iter()
            .all(|w| *w == "async" || *w == "const" || *w == "unsafe" || w.starts_with("pub"));
        if !prefix_ok || at + 1 >= words.len() {
            i += 1;
            continue;
        }
        let name = words[at + 1].to_string();
        // The body opens on the line that ends the signature; a declaration without one ends with `;`.
        let opens = |l: &str| {
            let l = l.trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with("{}")
        };
        let mut open = i;
        while open < lines.len() && !opens(lines[open]) {
            open += 1;
        }
        if open >= lines.len() || lines[open].trim_end().ends_with(';') {
            i = open + 1;
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let mut end = open;
        if !lines[open].trim_end().ends_with('}') {
            end = open + 1;
            while end < lines.len() && lines[end].trim_end() != close {
                end += 1;
            }
        }
        found.push((name, i + 1, end - i + 1));
        i = open + 1;
    }
    found
}

#[test]
fn the_aws_sdk_is_called_only_in_aws_and_the_stream_reader() {
    let mut outside = Vec::new();
    for (file, text) in sources() {
        if file.starts_with("aws/") || file.starts_with("runtime/stream") {
            continue;
        }
        for (n, line) in non_test_part(&file, &text).lines().enumerate() {
            if line.contains(".send()") {
                outside.push(format!("src/{file}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "SDK calls outside src/aws/ (move them behind an adapter there):\n{}",
        outside.join("\n")
    );
}

#[test]
fn no_controller_function_is_longer_than_80_lines() {
    let mut long = Vec::new();
    let mut counted = 0;
    for (file, text) in sources() {
        if !file.starts_with("controller/") {
            continue;
        }
        for (name, line, len) in functions(non_test_part(&file, &text)) {
            counted += 1;
            if len > MAX_CONTROLLER_FN_LINES {
                long.push(format!("src/{file}:{line}: {name} is {len} lines"));
            }
        }
    }
    assert!(
        counted > 100,
        "the scanner found only {counted} functions under src/controller/"
    );
    assert!(
        long.is_empty(),
        "functions over {MAX_CONTROLLER_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn nothing_allows_too_many_arguments() {
    let allowed: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.contains("too_many_arguments"))
        .map(|(file, _)| format!("src/{file}"))
        .collect();
    assert!(
        allowed.is_empty(),
        "clippy::too_many_arguments allowed in {allowed:?}: group the arguments in a struct"
    );
}

#[test]
fn the_function_scanner_measures_what_it_should() {
    let text = "fn a() {\n    one();\n}\n\npub(super) async fn b(\n    x: u8,\n) -> u8 {\n    x\n}\nfn c();\nfn d() {}\n";
    assert_eq!(
        functions(text),
        vec![
            ("a".to_string(), 1, 3),
            ("b".to_string(), 5, 5),
            ("d".to_string(), 11, 1)
        ]
    );
}

/// The modules `text` names under `prefix` (`super::`, `crate::controller::`): `prefix name` and the names
/// of a `prefix{a, b}` group on one line.
fn named_under(text: &str, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (i, _) in line.match_indices(prefix) {
            // `super::super::x` is not a sibling under `super::`.
            if prefix == "super::"
                && (line[..i].ends_with("super::") || line[i..].starts_with("super::super::"))
            {
                continue;
            }
            let rest = &line[i + prefix.len()..];
            let group = match rest.strip_prefix('{') {
                Some(g) => g.split('}').next().unwrap_or(""),
                None => rest,
            };
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() {
                    names.push(name);
                }
                if rest.starts_with('{') {
                    continue;
                }
                break;
            }
        }
    }
    names
}

/// A cycle among `edges` (module → modules it names), if any, as the path around it.
fn cycle(
    edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| p == node) {
            let mut c = path[start..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_cycle_in_the_controller() {
    use std::collections::{BTreeMap, BTreeSet};
    let sources = sources();
    let module_of = |file: &str| -> Option<(String, String)> {
        let rest = file.strip_prefix("controller/")?.strip_suffix(".rs")?;
        Some(match rest.split_once('/') {
            Some((dir, child)) => (dir.to_string(), child.to_string()),
            None => (String::new(), rest.to_string()),
        })
    };
    // The controller's own modules (a folder counts as one), and each folder's files among themselves.
    let mut levels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (file, _) in &sources {
        if let Some((dir, child)) = module_of(file) {
            let top = if dir.is_empty() {
                child.clone()
            } else {
                dir.clone()
            };
            levels.entry(String::new()).or_default().entry(top).or_default();
            if !dir.is_empty() {
                levels.entry(dir).or_default().entry(child).or_default();
            }
        }
    }
    for (file, text) in &sources {
        let Some((dir, child)) = module_of(file) else {
            continue;
        };
        if child == "mod" && dir.is_empty() {
            continue;
        }
        let text = non_test_part(file, text);
        let top = if dir.is_empty() {
            child.clone()
        } else {
            dir.clone()
        };
        // Names of the controller's own modules: `crate::controller::x`, and `super::x` from a file
        // directly under controller/ (or a folder's mod.rs), `super::super::x` from a file in a folder.
        let mut upward = named_under(text, "crate::controller::");
        match (dir.is_empty(), child == "mod") {
            (true, _) | (false, true) => upward.extend(named_under(text, "super::")),
            (false, false) => upward.extend(named_under(text, "super::super::")),
        }
        let top_level = levels.get_mut("").unwrap();
        let known: BTreeSet<String> = top_level.keys().cloned().collect();
        let targets: Vec<String> = upward
            .into_iter()
            .filter(|n| known.contains(n) && *n != top)
            .collect();
        top_level.get_mut(&top).unwrap().extend(targets);
        if !dir.is_empty() && child != "mod" {
            let level = levels.get_mut(&dir).unwrap();
            let known: BTreeSet<String> = level.keys().cloned().collect();
            let siblings: Vec<String> = named_under(text, "super::")
                .into_iter()
                .filter(|n| known.contains(n) && *n != child && n != "mod")
                .collect();
            level.get_mut(&child).unwrap().extend(siblings);
        }
    }
    let mv = &levels["materialized_view"];
    assert!(
        mv["versions"].contains("in_cluster") && mv["lambda"].contains("lambda_live"),
        "the import scanner finds no edges: {mv:?}"
    );
    for (level, edges) in &levels {
        let level = if level.is_empty() {
            "controller"
        } else {
            level.as_str()
        };
        if let Some(c) = cycle(edges) {
            panic!(
                "a module cycle in src/{level}: {} (move what both need below them)",
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn the_import_scanner_and_cycle_finder_see_what_they_should() {
    let text = "use super::version::{A, B};\nuse super::{backfill, lambda::x};\n// super::commented\n\
                let y = super::super::status::publish();\nuse crate::controller::events::X;\n";
    assert_eq!(named_under(text, "super::"), ["version", "backfill", "lambda"]);
    assert_eq!(named_under(text, "super::super::"), ["status"]);
    assert_eq!(named_under(text, "crate::controller::"), ["events"]);
    let graph = |pairs: &[(&str, &str)]| {
        let mut edges = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
        for (a, b) in pairs {
            edges.entry(a.to_string()).or_default().insert(b.to_string());
            edges.entry(b.to_string()).or_default();
        }
        edges
    };
    assert_eq!(cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
