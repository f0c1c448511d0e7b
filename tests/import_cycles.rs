//! Import cycles between the library's modules (one module per file; a module's own
//! ancestors and descendants do not count). The cycles that exist today are recorded in
//! `tests/import-cycles.txt`, one strongly connected set per line; a new cycle, or a module
//! joining a recorded one, fails this test, and so does a recorded cycle that is gone (so
//! that the record only shrinks: delete its line). Reads the sources as text, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const RECORD: &str = "tests/import-cycles.txt";

/// `src/engine/kernels/mod.rs` -> `engine::kernels`; `src/lib.rs` -> `` (the root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// The paths a `crate::`/`super::` reference names, braces expanded: `crate::{a, b::{c, d}}`
/// gives `a`, `b::c`, `b::d`. `s[*at..]` starts just after the `crate::`; `at` moves past it.
fn expand(s: &str, at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let skip_ws = |at: &mut usize| {
        while s[*at..].starts_with(char::is_whitespace) {
            *at += 1;
        }
    };
    let mut path = prefix.to_vec();
    loop {
        skip_ws(at);
        if s[*at..].starts_with('{') {
            *at += 1;
            loop {
                skip_ws(at);
                if *at >= s.len() || s[*at..].starts_with('}') {
                    *at = (*at + 1).min(s.len());
                    return;
                }
                let before = *at;
                expand(s, at, &path, out);
                skip_ws(at);
                // A separator, or something no path starts with (`*`): step over it.
                if s[*at..].starts_with(',') || *at == before {
                    *at += s[*at..].chars().next().map_or(0, char::len_utf8);
                }
            }
        }
        let n = ident_len(&s[*at..]);
        if n == 0 {
            out.push(path);
            return;
        }
        path.push(s[*at..*at + n].to_string());
        *at += n;
        if s[*at..].starts_with("::") {
            *at += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// The modules `text` (of module `me`) refers to through `crate::` or `super::` paths.
fn references(me: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            if at > 0 && code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `$crate::` or an identifier ending in "crate"
            }
            expand(code, &mut (at + 7), &[], &mut paths);
        }
        for (at, _) in code.match_indices("super::") {
            if at > 0 && code[..at].ends_with("::") {
                continue; // the second `super` of `super::super::`
            }
            let mut base: Vec<String> = me.split("::").map(String::from).collect();
            let mut i = at;
            while code[i..].starts_with("super::") {
                base.pop();
                i += 7;
            }
            base.retain(|p| !p.is_empty());
            expand(code, &mut i, &base, &mut paths);
        }
    }
    paths
        .into_iter()
        .filter_map(|p| {
            // The longest prefix that is a module of the crate.
            (1..=p.len())
                .rev()
                .map(|n| p[..n].join("::"))
                .find(|m| modules.contains(m))
        })
        .filter(|m| {
            let related = |a: &str, b: &str| a == b || b.starts_with(&format!("{a}::"));
            !related(m, me) && !related(me, m)
        })
        .collect()
}

/// Strongly connected sets of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: BTreeSet<String>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut set = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                set.insert(w);
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                t.out.insert(set.into_iter().collect::<Vec<_>>().join(" "));
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: BTreeSet::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn graph_of(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    files
        .iter()
        .map(|(m, text)| (m.clone(), references(m, text, &modules)))
        .collect()
}

#[test]
fn no_import_cycles_beyond_the_record() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Each crate of the workspace is its own module graph; the engine's cycles are named
    // with its crate.
    let mut now = BTreeSet::new();
    for (dir, label) in [("src", ""), ("crates/engine/src", "incrpipe-engine/")] {
        let src = root.join(dir);
        let files: Vec<(String, String)> = walkdir::WalkDir::new(&src)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
            // The binary is its own crate: its `crate::` is not the library's.
            .filter(|e| e.path() != src.join("main.rs") && !e.path().starts_with(src.join("bin")))
            .map(|e| {
                (
                    module_of(&src, e.path()),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        assert!(files.len() > 10, "no sources under {}", src.display());
        for c in cycles(&graph_of(&files)) {
            now.insert(
                c.split(' ')
                    .map(|m| format!("{label}{m}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    let recorded: BTreeSet<String> = std::fs::read_to_string(root.join(RECORD))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let new: Vec<&String> = now.difference(&recorded).collect();
    let gone: Vec<&String> = recorded.difference(&now).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "import cycles (modules that reach each other through `use crate::`/`super::`):\n\
         new or grown, break them: {new:#?}\n\
         gone or changed, update {RECORD}: {gone:#?}\nnow: {now:#?}"
    );
}

#[test]
fn the_checker_finds_a_cycle_and_ignores_parents_and_children() {
    let f = |m: &str, t: &str| (m.to_string(), t.to_string());
    let files = [
        f("", "pub mod a; pub mod b; pub mod c;"),
        f("a", "use crate::b::Thing;\nuse crate::{c, d::e};"),
        f("a::inner", "use super::Parent; use crate::a::X;"),
        f("b", "use crate::{a::{self, inner::Y}, c::{*}, d::*};"),
        f("c", "// use crate::a;\nfn f() -> crate::c::W { todo!() }"),
        f("d", ""),
    ];
    let g = graph_of(&files);
    assert_eq!(g["a"], BTreeSet::from(["b".into(), "c".into(), "d".into()]));
    assert_eq!(
        g["b"],
        BTreeSet::from(["a".into(), "a::inner".into(), "c".into(), "d".into()])
    );
    assert!(g["a::inner"].is_empty(), "{:?}", g["a::inner"]);
    assert!(
        g["c"].is_empty(),
        "a comment and a self-reference: {:?}",
        g["c"]
    );
    assert_eq!(
        cycles(&g),
        BTreeSet::from(["a b".to_string()]),
        "a <-> b; b -> a::inner, whose references to its parent a do not count"
    );
}
