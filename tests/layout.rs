//! The code's layout, checked: no function in `src/` outside tests is longer than a reader can
//! hold (80 lines, its signature and closing brace included), and no file of the library
//! imports, through others, from itself (nor, so, does a module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `text` with the contents of comments, strings and character literals blanked out (newlines
/// kept), so that braces in them are not counted.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        let next = b.get(i + 1).map(|&n| n as char);
        let skip_to = |end: usize, out: &mut String| {
            for &x in &b[i..end] {
                out.push(if x == b'\n' { '\n' } else { ' ' });
            }
            end
        };
        if c == '/' && next == Some('/') {
            let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
            i = skip_to(end, &mut out);
        } else if c == '/' && next == Some('*') {
            let end = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            i = skip_to(end, &mut out);
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && raw_start(b, i) {
            let hashes = b[i + 1..].iter().take_while(|&&x| x == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let open_end = i + 1 + hashes + 1;
            let end = text[open_end..]
                .find(&close)
                .map_or(b.len(), |n| open_end + n + close.len());
            i = skip_to(end, &mut out);
        } else if c == '"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = skip_to((j + 1).min(b.len()), &mut out);
        } else if c == '\'' && char_literal_end(b, i).is_some() {
            let end = char_literal_end(b, i).unwrap_or(i + 1);
            i = skip_to(end, &mut out);
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether `r` at `i` starts a raw string (not the end of an identifier such as `for`).
fn raw_start(b: &[u8], i: usize) -> bool {
    let after = b[i + 1..].iter().find(|&&x| x != b'#');
    after == Some(&b'"') && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
}

/// The end of a character literal starting at `i` (`'a'`, `'\n'`, `'{'`), not a lifetime.
fn char_literal_end(b: &[u8], i: usize) -> Option<usize> {
    match (b.get(i + 1), b.get(i + 2), b.get(i + 3)) {
        (Some(b'\\'), _, _) => b[i + 3..]
            .iter()
            .position(|&x| x == b'\'')
            .map(|n| i + 3 + n + 1),
        (Some(_), Some(b'\''), _) => Some(i + 3),
        _ => None,
    }
}

/// Each function of `code` (outside its `#[cfg(test)]` part): (name, first line, lines).
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let code = match code.find("#[cfg(test)]") {
        Some(cut) => &code[..cut],
        None => code,
    };
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ").map(|n| from + n) {
        from = at + 3;
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body: the first `{` outside parentheses and brackets, unless a `;` ends it first.
        let (mut j, mut depth) = (at, 0i32);
        let open = loop {
            match b.get(j) {
                None => break None,
                Some(b'(' | b'[') => depth += 1,
                Some(b')' | b']') => depth -= 1,
                Some(b';') if depth <= 0 => break None,
                Some(b'{') if depth <= 0 => break Some(j),
                _ => {}
            }
            j += 1;
        };
        let Some(open) = open else { continue };
        let (mut k, mut braces) = (open + 1, 1);
        while k < b.len() && braces > 0 {
            match b[k] {
                b'{' => braces += 1,
                b'}' => braces -= 1,
                _ => {}
            }
            k += 1;
        }
        let first = code[..at].matches('\n').count() + 1;
        let last = code[..k].matches('\n').count() + 1;
        out.push((name, first, last - first + 1));
    }
    out
}

#[test]
fn no_function_in_src_is_longer_than_a_reader_can_hold() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut long = Vec::new();
    let mut counted = 0;
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if matches!(name, "tests.rs" | "testkit.rs") {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        for (func, line, lines) in functions(&code) {
            counted += 1;
            if lines > MAX_LINES {
                long.push(format!("{}:{line} {func}: {lines} lines", f.display()));
            }
        }
    }
    assert!(
        counted > 500,
        "only {counted} functions found: the scan is broken"
    );
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_scan_counts_what_it_should() {
    let code = code_only(
        "fn a() {\n    let s = \"}}}\";\n    let c = '{';\n    // }\n}\nfn b<'x>(v: &'x str) -> &'x str {\n    v\n}\n",
    );
    let found = functions(&code);
    assert_eq!(
        found,
        vec![("a".to_owned(), 1, 5), ("b".to_owned(), 6, 3)],
        "{code}"
    );
}

/// The library's files by module path (`policy::connection`; `""` is `lib.rs`), test-only
/// files left out.
fn library_modules() -> BTreeMap<String, PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let parts = match parts.last().map(String::as_str) {
            Some("mod") | Some("lib") => parts[..parts.len() - 1].to_vec(),
            Some("main") | Some("tests") | Some("testkit") => continue,
            _ => parts,
        };
        if parts.first().is_some_and(|p| p == "cli") {
            continue; // the binary's own modules
        }
        out.insert(parts.join("::"), f);
    }
    out
}

/// The paths a file's code names (`crate::a::b`, `super::c`, `self::d`, a child module's
/// `e::f`, and others that lead outside the library), with `use` groups spread out;
/// re-exports (`pub use`) are not imports.
fn named_paths(code: &str) -> Vec<String> {
    let code = match code.find("#[cfg(test)]") {
        Some(cut) => &code[..cut],
        None => code,
    };
    let mut out = Vec::new();
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let starts = (i == 0 || !ident(b[i - 1]) && b[i - 1] != b':') && ident(b[i]);
        if !starts {
            i += 1;
            continue;
        }
        let word_end = (i..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
        let word = &code[i..word_end];
        if word == "use" {
            let end = code[i..].find(';').map_or(b.len(), |n| i + n);
            let before = code[..i].trim_end();
            if !before.ends_with("pub") && !before.ends_with(')') {
                spread("", code[word_end..end].trim(), &mut out);
            }
            i = end;
        } else if code[word_end..].starts_with("::") && !code[..i].ends_with('.') {
            let end = (word_end..b.len())
                .find(|&j| !(ident(b[j]) || b[j] == b':'))
                .unwrap_or(b.len());
            out.push(code[i..end].trim_end_matches(':').to_owned());
            i = end;
        } else {
            i = word_end;
        }
    }
    out
}

/// `prefix` joined with each path of a `use` tree (`a::{b, c::{d}}`).
fn spread(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let join = |p: &str, q: &str| {
        if p.is_empty() {
            q.to_owned()
        } else {
            format!("{p}::{q}")
        }
    };
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or_default().trim();
        out.push(join(prefix, path));
        return;
    };
    let head = join(prefix, tree[..open].trim().trim_end_matches("::"));
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut from) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                spread(&head, inner[from..k].trim(), out);
                from = k + 1;
            }
            _ => {}
        }
    }
    if !inner[from..].trim().is_empty() {
        spread(&head, inner[from..].trim(), out);
    }
}

/// The library file a path from module `at` leads to: the deepest module along it that is a
/// file (`None`: outside the library, or the file itself).
fn file_of(path: &str, at: &str, modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if at.is_empty() {
        vec![]
    } else {
        at.split("::").collect()
    };
    match segs.first().copied() {
        Some("crate") => {
            base.clear();
            segs.remove(0);
        }
        Some("self") => {
            segs.remove(0);
        }
        Some("super") => {
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
        }
        Some(first)
            if modules.contains_key(&[at, first].join("::").trim_start_matches(':').to_owned()) => {
        }
        _ => return None,
    }
    let mut found = modules
        .contains_key(&base.join("::"))
        .then(|| base.join("::"));
    for s in segs {
        base.push(s);
        let key = base.join("::");
        if modules.contains_key(&key) {
            found = Some(key);
        } else {
            break;
        }
    }
    found.filter(|f| f != at)
}

/// Each file's imports of other files of the library.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = library_modules();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let edges: BTreeSet<String> = named_paths(&code)
            .iter()
            .filter_map(|p| file_of(p, module, &modules))
            .collect();
        graph.insert(module.clone(), edges);
    }
    graph
}

/// The files that import, through others, from themselves (each cycle once, as a path).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first from `start`, through files after it only: each cycle is found once.
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(at).into_iter().flatten() {
                if next == start {
                    found.push(format!("{} -> {start}", path.join(" -> ")));
                } else if next.as_str() > start.as_str()
                    && !done.contains(next.as_str())
                    && seen.insert(next)
                {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
        done.insert(start);
    }
    found
}

#[test]
fn no_file_of_the_library_imports_from_itself_through_others() {
    let graph = import_graph();
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(
        graph.len() > 80 && edges > 250,
        "{} files, {edges} imports found: the scan is broken",
        graph.len()
    );
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_import_scan_reads_paths_groups_and_cycles() {
    let code = code_only(
        "use super::{a::B, c::{d, e as f}};\npub use g::H;\nfn x() { crate::m::n::f(); self::k(); }\nuse child::Z;\n",
    );
    assert_eq!(
        named_paths(&code),
        [
            "super::a::B",
            "super::c::d",
            "super::c::e",
            "crate::m::n::f",
            "self::k",
            "child::Z"
        ]
    );
    let modules: BTreeMap<String, PathBuf> = ["", "m", "m::n", "p", "p::child"]
        .iter()
        .map(|m| (m.to_string(), PathBuf::new()))
        .collect();
    assert_eq!(
        file_of("crate::m::n::f", "p", &modules).as_deref(),
        Some("m::n")
    );
    assert_eq!(file_of("super::m::X", "p", &modules).as_deref(), Some("m"));
    assert_eq!(
        file_of("child::Z", "p", &modules).as_deref(),
        Some("p::child")
    );
    assert_eq!(file_of("std::io", "p", &modules), None);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycles(&graph), ["a -> b -> c -> a"]);
}
