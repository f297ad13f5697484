//! The module graph of `src/`: no import cycles between top-level modules, and `unsafe` in one
//! module only (issue 25). Read from the source text, so a new `use crate::…` that closes a
//! cycle fails here, naming the modules and the files that import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/store/ops.rs` → `store`), or `None` for the
/// crate roots.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Code without comments: line comments (doc comments included: an intra-doc link is not an
/// import) are dropped. Good enough for this crate's code, which has no `//` in strings that
/// precede a `crate::` path on the same line.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::` (`crate::x`, `crate::{x, y::z}`).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let at = from + i;
        let start = at + "crate::".len();
        from = start;
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue; // `retentiond_crate::` or similar: not this crate's root
        }
        if b.get(start) == Some(&b'{') {
            // The first path segment of each item of the group, at depth 1.
            let mut depth = 0;
            let mut segment_start = true;
            let mut j = start;
            while j < b.len() {
                match b[j] {
                    b'{' => {
                        depth += 1;
                        segment_start = depth == 1;
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' if depth == 1 => segment_start = true,
                    c if segment_start && (c.is_ascii_alphabetic() || c == b'_') => {
                        let end = code[j..]
                            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                            .map_or(code.len(), |e| j + e);
                        out.insert(code[j..end].to_string());
                        segment_start = false;
                        j = end;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            let end = code[start..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .map_or(code.len(), |e| start + e);
            out.insert(code[start..end].to_string());
        }
    }
    out
}

struct Graph {
    /// module → (module it imports → the files that import it)
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files {
        let Some(module) = top_module(&src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let entry = edges.entry(module.clone()).or_default();
        for dep in crate_refs(&code(&text)) {
            if dep != module {
                let shown = f.strip_prefix(&src).unwrap().display().to_string();
                entry.entry(dep).or_default().insert(shown);
            }
        }
    }
    Graph { edges }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(deps) = s.g.edges.get(v) {
            for w in deps.keys() {
                let w = w.as_str();
                if !s.g.edges.contains_key(w) {
                    continue; // not a module of src/ (e.g. a macro path)
                }
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let g = graph();
    assert!(g.edges.len() > 20, "found {} modules", g.edges.len());
    // The reader sees the finder work: the store imports the audit chain.
    assert!(g.edges["store"].contains_key("audit"));
    let found = cycles(&g);
    let mut report = String::new();
    for comp in &found {
        report.push_str(&format!("cycle among {comp:?}:\n"));
        for a in comp {
            for (b, files) in &g.edges[a] {
                if comp.contains(b) {
                    report.push_str(&format!("  {a} -> {b} (in {files:?})\n"));
                }
            }
        }
    }
    assert!(found.is_empty(), "{report}");
}

#[test]
fn the_finder_sees_a_cycle_and_a_grouped_import() {
    let refs = crate_refs(&code(
        "use crate::{a::B, c, d::{e, f}};\n// crate::g in a comment\nlet x = crate::h::i();",
    ));
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a", "c", "d", "h"]);
    let mut edges = BTreeMap::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        edges
            .entry(a.to_string())
            .or_insert_with(BTreeMap::new)
            .insert(b.to_string(), BTreeSet::new());
    }
    edges.insert("w".to_string(), BTreeMap::new());
    assert_eq!(cycles(&Graph { edges }), vec![vec!["x", "y", "z"]]);
}

#[test]
fn unsafe_code_lives_in_sqlite_handle_alone() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = code(&text);
        let uses = code
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == "unsafe");
        if uses {
            found.push(f.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    assert_eq!(found, ["sqlite_handle.rs"]);
}
