//! The module imports form no cycle: no two files of `src/` import each other, directly or
//! around a loop (issue 9). A file imports another when it names a path that resolves to it
//! (`crate::a::b`, `super::x`, `self::x`, or a child module `child::x` from its parent,
//! braces and globs included). A folder's `mod.rs` is a façade: it declares and re-exports its
//! children, so the children take what they share from a sibling file, never from `mod.rs`.
//!
//! Comments and the `#[cfg(test)] mod tests` blocks are left out: tests may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A file's module path (`src/fs/ext/mod.rs` → `fs::ext`), and which crate it belongs to.
fn module_of(rel: &str) -> (bool, Vec<String>) {
    let bin = rel == "main.rs" || rel.starts_with("cli/");
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    (bin, parts)
}

/// The code of a file without comment lines and without its inline test module.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if !t.starts_with("//") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path the code names, each as its segments, with `a::{b, c::d}` expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = is_ident(chars[i])
            && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':'))
            && !chars[i].is_ascii_digit();
        if !starts {
            i += 1;
            continue;
        }
        let (p, next) = path_at(&chars, i, Vec::new(), &mut out);
        if p.len() > 1 {
            out.push(p);
        }
        i = next.max(i + 1);
    }
    out
}

/// Reads the path starting at `i` after `prefix`; groups `{...}` are expanded into `out`.
fn path_at(
    chars: &[char],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> (Vec<String>, usize) {
    loop {
        let s = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if i == s {
            return (prefix, i);
        }
        prefix.push(chars[s..i].iter().collect());
        if !(chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':')) {
            return (prefix, i);
        }
        i += 2;
        match chars.get(i) {
            Some('{') => {
                i += 1;
                loop {
                    while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                        i += 1;
                    }
                    match chars.get(i) {
                        None => return (Vec::new(), i),
                        Some('}') => return (Vec::new(), i + 1),
                        Some(c) if is_ident(*c) => {
                            let (p, n) = path_at(chars, i, prefix.clone(), out);
                            if p.len() > 1 {
                                out.push(p);
                            }
                            i = n;
                            // Skip `as name` and anything else up to the next item.
                            while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                                i += 1;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            Some('*') => return (prefix, i + 1),
            _ => {}
        }
    }
}

#[test]
fn no_two_files_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let modules: BTreeMap<(bool, Vec<String>), String> = files
        .iter()
        .map(|(rel, _)| (module_of(rel), rel.clone()))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in &files {
        let (bin, cur) = module_of(rel);
        let targets = edges.entry(rel.clone()).or_default();
        for p in paths(&code_of(text)) {
            let (mut base, rest) = match p[0].as_str() {
                "crate" => (Vec::new(), &p[1..]),
                "self" => (cur.clone(), &p[1..]),
                "super" => {
                    let ups = p.iter().take_while(|s| *s == "super").count();
                    let keep = cur.len().saturating_sub(ups);
                    (cur[..keep].to_vec(), &p[ups..])
                }
                _ => (cur.clone(), &p[..]),
            };
            if !matches!(p[0].as_str(), "crate" | "self" | "super") {
                let mut child = cur.clone();
                child.push(p[0].clone());
                if !modules.contains_key(&(bin, child)) {
                    continue;
                }
            }
            // The deepest module the path names.
            let mut found = modules.get(&(bin, base.clone())).cloned();
            for seg in rest {
                base.push(seg.clone());
                match modules.get(&(bin, base.clone())) {
                    Some(f) => found = Some(f.clone()),
                    None => break,
                }
            }
            if let Some(f) = found.filter(|f| f != rel) {
                targets.insert(f);
            }
        }
    }
    // A cycle is a path back to where it started.
    let mut cycles = Vec::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(trail.join(" -> ") + " -> " + start);
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "the import graph looks empty: the parser is broken"
    );
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_parser_sees_groups_globs_and_parents() {
    let p = paths("use super::{a, b::C as D};\nuse crate::x::*;\nlet v = child::f();");
    let got: Vec<String> = p.iter().map(|s| s.join("::")).collect();
    for want in ["super::a", "super::b::C", "crate::x", "child::f"] {
        assert!(got.iter().any(|g| g == want), "{want} not in {got:?}");
    }
    assert_eq!(code_of("a\n// b\n#[cfg(test)]\nmod tests {\nc\n}\n"), "a\n");
}
