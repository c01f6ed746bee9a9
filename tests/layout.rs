//! The code's layout, checked: no function in `src/` outside tests is longer than a reader can
//! hold (80 lines, its signature and closing brace included).

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
