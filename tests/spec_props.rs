//! Property tests over the spec parser and the DAG: hostile text never panics;
//! generated valid pipelines keep their invariants (keys stable under
//! reordering of the file, every stage after what it needs).

use std::collections::BTreeMap;
use std::path::Path;

use incrpipe::cache::{EntryMeta, OutRec};
use incrpipe::dag::Dag;
use incrpipe::hash::StatCache;
use incrpipe::registry::Registry;
use incrpipe::{keys, spec};
use proptest::prelude::*;

/// A generated pipeline: stage i may read outs of, or need, stages j < i.
#[derive(Debug, Clone)]
struct Gen {
    stages: Vec<(Vec<usize>, Vec<usize>, u8, bool)>, // (file deps, needs, param value, uses matrix)
}

fn pipelines() -> impl Strategy<Value = Gen> {
    (1usize..12)
        .prop_flat_map(|n| {
            proptest::collection::vec(
                (
                    proptest::collection::vec(0usize..64, 0..3),
                    proptest::collection::vec(0usize..64, 0..2),
                    any::<u8>(),
                    any::<bool>(),
                ),
                n,
            )
        })
        .prop_map(|raw| Gen {
            stages: raw
                .into_iter()
                .enumerate()
                .map(|(i, (d, n, p, m))| {
                    let pick = |v: Vec<usize>| -> Vec<usize> {
                        let mut v: Vec<usize> = if i == 0 {
                            vec![]
                        } else {
                            v.into_iter().map(|x| x % i).collect()
                        };
                        v.sort();
                        v.dedup();
                        v
                    };
                    (pick(d), pick(n), p, m)
                })
                .collect(),
        })
}

/// Renders the stage tables in the given order.
fn render(g: &Gen, order: &[usize]) -> String {
    let mut t = String::from("[pipeline]\nname = \"gen\"\n[params]\nglobal = 3\n");
    for &i in order {
        let (deps, needs, p, m) = &g.stages[i];
        let outs = if *m {
            format!("\"o/s{i}-${{matrix.x}}\"")
        } else {
            format!("\"o/s{i}\"")
        };
        let dep_list: Vec<String> = deps
            .iter()
            .map(|d| {
                if g.stages[*d].3 {
                    format!("\"o/s{d}-a\"")
                } else {
                    format!("\"o/s{d}\"")
                }
            })
            .collect();
        let need_list: Vec<String> = needs.iter().map(|n| format!("\"s{n}\"")).collect();
        t.push_str(&format!(
            "[stages.s{i}]\ncmd = \"gen ${{params.p}} {}\"\ndeps = [{}]\nouts = [{outs}]\nneeds = [{}]\nparams = {{ p = {p} }}\n{}",
            if *m { "${matrix.x}" } else { "" },
            dep_list.join(", "),
            need_list.join(", "),
            if *m { "matrix = { x = [\"a\", \"b\"] }\n" } else { "" }
        ));
    }
    t
}

/// Keys by stage name, computed the way a run would, with each stage's outputs
/// standing in as a hash of its key (deterministic "execution").
fn keys_by_name(text: &str) -> BTreeMap<String, String> {
    let reg = Registry::empty();
    let p = spec::parse(Path::new("gen.toml"), text.as_bytes().to_vec(), &reg).expect("valid spec");
    let dag = Dag::build(&p, Path::new("/ws"), false).expect("valid dag");
    let mut metas: BTreeMap<usize, EntryMeta> = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut stats = StatCache::default();
    for &i in &dag.order {
        for u in &dag.nodes[i].upstream {
            assert!(
                metas.contains_key(u),
                "{} runs before its upstream {}",
                dag.nodes[i].spec.name,
                dag.nodes[*u].spec.name
            );
        }
        let m = keys::manifest(
            &dag.nodes[i],
            &|u| metas.get(&u).cloned(),
            Path::new("/ws"),
            &mut stats,
        )
        .expect("deps come from upstream");
        let key = m.key().to_string();
        let outs = m
            .outs
            .iter()
            .map(|o| OutRec {
                path: o.clone(),
                hash: format!("{key}{o}"),
                files: vec![],
            })
            .collect();
        metas.insert(
            i,
            EntryMeta {
                key: key.clone(),
                stage: dag.nodes[i].spec.name.clone(),
                manifest: m,
                outs,
                seconds: 0.0,
                created_unix: 0,
                layout: 0,
            },
        );
        out.insert(dag.nodes[i].spec.name.clone(), key);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn keys_stable_under_reordering_and_order_respects_needs(g in pipelines(), seed in any::<u64>()) {
        let n = g.stages.len();
        let forward: Vec<usize> = (0..n).collect();
        let mut shuffled = forward.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..n).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let a = keys_by_name(&render(&g, &forward));
        let b = keys_by_name(&render(&g, &shuffled));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        let reg = Registry::empty();
        if let Ok(p) = spec::parse(Path::new("x.toml"), s.into_bytes(), &reg) {
            let _ = Dag::build(&p, Path::new("/ws"), false);
        }
    }

    #[test]
    fn mutated_valid_specs_never_panic(g in pipelines(), pos in any::<usize>(), junk in "[\\[\\]{}=\"$.@/a-z0-9 \\n,]{1,8}") {
        let mut text = render(&g, &(0..g.stages.len()).collect::<Vec<_>>());
        let mut at = pos % (text.len() + 1);
        while !text.is_char_boundary(at) { at -= 1; }
        text.insert_str(at, &junk);
        let reg = Registry::empty();
        match spec::parse(Path::new("x.toml"), text.into_bytes(), &reg) {
            Ok(p) => { let _ = Dag::build(&p, Path::new("/ws"), false); }
            Err(d) => prop_assert!(d.to_string().starts_with("error: ")),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let reg = Registry::empty();
        let _ = spec::parse(Path::new("x.toml"), b, &reg);
    }
}
