//! The stage graph: edges from `needs` and from files (a dep that is another
//! stage's out), topological order, and cycle, duplicate-out and missing-dep errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use toml::Spanned;

use crate::diag::{Diagnostic, did_you_mean};
use crate::paths::{WPath, classify};
use crate::spec::{Pipeline, StageSpec};

/// Why one stage comes after another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeReason {
    Needs,
    /// The downstream stage reads this path, which the upstream stage writes.
    File(String),
}

#[derive(Debug)]
pub struct Node {
    pub spec: StageSpec,
    pub deps: Vec<WPath>,
    pub outs: Vec<WPath>,
    /// For each dep, the stage that produces it (exactly, or a directory around it), if any.
    pub producers: Vec<Option<usize>>,
    /// Direct upstream stages, sorted.
    pub upstream: Vec<usize>,
}

#[derive(Debug)]
pub struct Dag {
    pub nodes: Vec<Node>,
    /// Topological order (stable: ties broken by name).
    pub order: Vec<usize>,
    pub graph: DiGraph<usize, EdgeReason>,
}

impl Dag {
    /// Builds and validates the graph. `check_deps_exist` is off for tools that
    /// only look at the structure (e.g. `dag`), on for `run` and `status`.
    pub fn build(
        p: &Pipeline,
        workspace: &Path,
        check_deps_exist: bool,
    ) -> Result<Dag, Diagnostic> {
        let mut nodes = Vec::with_capacity(p.stages.len());
        let mut out_owner: Owners = BTreeMap::new();
        for (i, s) in p.stages.iter().enumerate() {
            let mut outs = Vec::new();
            for o in &s.outs {
                let w = classify(o.get_ref(), workspace).ok_or_else(|| {
                    p.diag(
                        Some(o.span()),
                        format!(
                            "stage `{}`: out `{}` is the workspace itself",
                            s.name,
                            o.get_ref()
                        ),
                    )
                    .with_help("name a file or directory inside the workspace")
                })?;
                if matches!(w, WPath::Outside(_)) {
                    return Err(p
                        .diag(
                            Some(o.span()),
                            format!(
                                "stage `{}`: out `{}` is outside the workspace",
                                s.name,
                                o.get_ref()
                            ),
                        )
                        .with_help(format!(
                            "outs must lie inside the workspace ({}); write to a relative path",
                            workspace.display()
                        )));
                }
                if let Some((j, other)) = overlapping(&out_owner, &w).cloned() {
                    let msg = if j == i {
                        format!(
                            "stage `{}` lists out `{}` twice (or nested in another of its outs)",
                            s.name,
                            o.get_ref()
                        )
                    } else {
                        format!(
                            "stages `{}` and `{}` both write `{}`",
                            p.stages[j].name,
                            s.name,
                            o.get_ref()
                        )
                    };
                    let (line, col) = p
                        .diag(Some(other.span()), "")
                        .line_column()
                        .unwrap_or((0, 0));
                    return Err(p.diag(Some(o.span()), msg).with_help(format!(
                        "every file or directory has one producing stage; the other declaration, `{}`, is at {}:{line}:{col}",
                        other.get_ref(),
                        p.file.display()
                    )));
                }
                out_owner.insert(w.clone(), (i, o.clone()));
                outs.push(w);
            }
            nodes.push(Node {
                spec: s.clone(),
                deps: Vec::new(),
                outs,
                producers: Vec::new(),
                upstream: Vec::new(),
            });
        }

        let mut graph = DiGraph::<usize, EdgeReason>::with_capacity(nodes.len(), nodes.len() * 2);
        let idx: Vec<NodeIndex> = (0..nodes.len()).map(|i| graph.add_node(i)).collect();
        let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
        for i in 0..nodes.len() {
            let s = &p.stages[i];
            for d in &s.deps {
                let w = classify(d.get_ref(), workspace).ok_or_else(|| {
                    p.diag(
                        Some(d.span()),
                        format!(
                            "stage `{}`: dep `{}` is the whole workspace",
                            s.name,
                            d.get_ref()
                        ),
                    )
                    .with_help("name the files or directories the stage reads")
                })?;
                // The stage that writes this path, or a directory around it.
                let producer = w
                    .ancestors()
                    .find_map(|a| out_owner.get(&a))
                    .map(|(j, _)| *j);
                // Stages writing inside a dep directory also feed it.
                let inner: Vec<usize> = below(&out_owner, &w).map(|(_, (j, _))| *j).collect();
                if producer.is_none()
                    && inner.is_empty()
                    && check_deps_exist
                    && !w.resolve(workspace).exists()
                {
                    return Err(p
                        .diag(Some(d.span()), format!("stage `{}`: dep `{}` does not exist and no stage produces it", s.name, d.get_ref()))
                        .with_help("create the file, fix the path, or add the stage that writes it (its outs)"));
                }
                for j in producer.into_iter().chain(inner) {
                    if edges.insert((j, i)) {
                        graph.add_edge(idx[j], idx[i], EdgeReason::File(d.get_ref().clone()));
                    }
                }
                nodes[i].deps.push(w);
                nodes[i].producers.push(producer);
            }
            for n in &s.needs {
                let matched = select(&p.stages, n.get_ref());
                if matched.is_empty() {
                    let names = p
                        .stages
                        .iter()
                        .map(|s| s.template.as_str())
                        .collect::<BTreeSet<_>>();
                    let mut d = p.diag(
                        Some(n.span()),
                        format!(
                            "stage `{}` needs `{}`, which matches no stage",
                            s.name,
                            n.get_ref()
                        ),
                    );
                    d = match did_you_mean(n.get_ref(), names.iter().copied()) {
                        Some(m) => d.with_help(format!("did you mean `{m}`?")),
                        None => d.with_help(format!(
                            "stages: {}",
                            names.into_iter().collect::<Vec<_>>().join(", ")
                        )),
                    };
                    return Err(d);
                }
                for j in matched {
                    if edges.insert((j, i)) {
                        graph.add_edge(idx[j], idx[i], EdgeReason::Needs);
                    }
                }
            }
        }
        for &(j, i) in &edges {
            nodes[i].upstream.push(j);
        }
        for n in &mut nodes {
            n.upstream.sort_unstable();
        }
        if toposort(&graph, None).is_err() {
            return Err(cycle_error(p, &graph, &nodes));
        }
        let order = stable_order(&nodes);
        Ok(Dag {
            nodes,
            order,
            graph,
        })
    }

    /// The given stages and everything that (transitively) depends on them.
    pub fn descendants(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut seen: BTreeSet<usize> = roots.iter().copied().collect();
        for &i in &self.order {
            if self.nodes[i].upstream.iter().any(|u| seen.contains(u)) {
                seen.insert(i);
            }
        }
        seen
    }

    /// The given stages and everything they (transitively) need.
    pub fn closure(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = roots.to_vec();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(&self.nodes[i].upstream);
            }
        }
        seen
    }
}

type Owners = BTreeMap<WPath, (usize, Spanned<String>)>;

/// Entries strictly below `w`. Paths compare component by component, so a
/// directory's descendants follow it contiguously: a range scan finds them
/// without looking at unrelated outs (this keeps planning O(n log n)).
fn below<'a>(
    owners: &'a Owners,
    w: &'a WPath,
) -> impl Iterator<Item = (&'a WPath, &'a (usize, Spanned<String>))> + 'a {
    use std::ops::Bound::{Excluded, Unbounded};
    owners
        .range((Excluded(w.clone()), Unbounded))
        .take_while(move |(k, _)| k.within(w))
}

/// An existing out that equals, contains, or lies inside `w`.
fn overlapping<'a>(owners: &'a Owners, w: &'a WPath) -> Option<&'a (usize, Spanned<String>)> {
    w.ancestors()
        .find_map(|a| owners.get(&a))
        .or_else(|| below(owners, w).next().map(|(_, v)| v))
}

/// Kahn's algorithm taking the lowest ready index first, so the order (and the
/// order stages start in) follows the file's sorted stage names, not hash order.
fn stable_order(nodes: &[Node]) -> Vec<usize> {
    let mut indegree: Vec<usize> = nodes.iter().map(|n| n.upstream.len()).collect();
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &u in &n.upstream {
            down[u].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|i| indegree[*i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &down[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

/// Stages matched by a selector: a stage table name (every instance), an exact
/// instance name, or `name@axis=value,...` (instances with those matrix values).
pub fn select(stages: &[StageSpec], sel: &str) -> Vec<usize> {
    let exact: Vec<usize> = stages
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == sel)
        .map(|(i, _)| i)
        .collect();
    if !exact.is_empty() {
        // A chain's instance name selects the whole chain (its stages are `NAME/...`).
        let chain: Vec<usize> = stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name.starts_with(&format!("{sel}/")))
            .map(|(i, _)| i)
            .collect();
        return exact.into_iter().chain(chain).collect();
    }
    let (base, axes) = match sel.split_once('@') {
        Some((b, a)) => (
            b,
            a.split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect::<Vec<_>>(),
        ),
        None => (sel, Vec::new()),
    };
    stages
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            (s.template == base || s.name.starts_with(&format!("{sel}/")))
                && axes.iter().all(|(k, v)| {
                    s.matrix
                        .get(*k)
                        .is_some_and(|m| crate::spec::value::display(m) == *v)
                })
        })
        .map(|(i, _)| i)
        .collect()
}

fn cycle_error(p: &Pipeline, graph: &DiGraph<usize, EdgeReason>, nodes: &[Node]) -> Diagnostic {
    // Find a strongly connected component with a cycle and walk it.
    let scc = tarjan_scc(graph)
        .into_iter()
        .find(|c| c.len() > 1 || graph.find_edge(c[0], c[0]).is_some())
        .expect("toposort failed, so a cycle exists");
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let start = *members
        .iter()
        .min_by_key(|n| &nodes[graph[**n]].spec.name)
        .unwrap();
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    let mut cur = start;
    loop {
        let next = graph
            .edges(cur)
            .map(|e| petgraph::visit::EdgeRef::target(&e))
            .filter(|t| members.contains(t))
            .min_by_key(|t| {
                (
                    !seen.contains(t) && *t != start,
                    &nodes[graph[*t]].spec.name,
                )
            })
            .unwrap();
        if next == start || seen.contains(&next) {
            let from = path.iter().position(|n| *n == next).unwrap_or(0);
            path = path[from..].to_vec();
            path.push(next);
            break;
        }
        seen.insert(next);
        path.push(next);
        cur = next;
    }
    let mut steps = Vec::new();
    for w in path.windows(2) {
        let e = graph.find_edge(w[0], w[1]).unwrap();
        let why = match &graph[e] {
            EdgeReason::Needs => "needs".to_string(),
            EdgeReason::File(f) => format!("reads `{f}` from"),
        };
        steps.push(format!(
            "`{}` {why} `{}`",
            nodes[graph[w[1]]].spec.name, nodes[graph[w[0]]].spec.name
        ));
    }
    let names: Vec<&str> = path
        .iter()
        .map(|n| nodes[graph[*n]].spec.name.as_str())
        .collect();
    let first = &nodes[graph[path[0]]].spec;
    p.diag(
        Some(first.span.clone()),
        format!("dependency cycle: {}", names.join(" -> ")),
    )
    .with_help(format!(
        "{}; remove one of these dependencies",
        steps.join(", ")
    ))
}
