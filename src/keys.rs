//! A stage's key: blake3 over its manifest (action, used params, matrix,
//! content hashes of its deps, outs, env). Deps produced by upstream stages are
//! hashed from the upstream entry's records, not re-read, which also gives early
//! cut-off: identical upstream outputs give the same downstream key.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cache::{EntryMeta, Manifest};
use crate::dag::Node;
use crate::hash::{StatCache, subtree, tree_hash};
use crate::paths::WPath;
use crate::spec::Action;

pub fn action_string(a: &Action) -> String {
    match a {
        Action::Cmd(c) => format!("cmd:{c}"),
        Action::Builtin { kind, version } => format!("kind:{kind}@{version}"),
    }
}

/// Builds the manifest of `node`, given the entries of its finished upstream stages.
/// `Err` names a dep that cannot be hashed.
pub fn manifest(
    node: &Node,
    upstream: &dyn Fn(usize) -> Option<EntryMeta>,
    workspace: &Path,
    stats: &mut StatCache,
) -> Result<Manifest, String> {
    let mut deps = BTreeMap::new();
    for (dep, producer) in node.deps.iter().zip(&node.producers) {
        let hash = match producer.and_then(upstream) {
            Some(meta) => from_entry(&meta, dep).ok_or_else(|| {
                format!(
                    "dep `{}` is not among the outs of `{}`",
                    dep.key_form(),
                    meta.stage
                )
            })?,
            None => stats
                .path_hash(&dep.resolve(workspace))
                .map_err(|e| format!("cannot read dep `{}`: {e}", dep.key_form()))?,
        };
        deps.insert(dep.key_form(), hash);
    }
    Ok(with_deps(node, deps))
}

/// `old` (a stage's last manifest) and the current one, restricted to what is known before
/// the upstream stages have run: everything but the deps that a stage makes. `None` when a
/// dep cannot be read.
pub fn own_parts(
    node: &Node,
    old: &Manifest,
    workspace: &Path,
    stats: &mut StatCache,
) -> Option<(Manifest, Manifest)> {
    let mut old = old.clone();
    let mut deps = BTreeMap::new();
    for (dep, producer) in node.deps.iter().zip(&node.producers) {
        if producer.is_some() {
            old.deps.remove(&dep.key_form());
        } else {
            let hash = stats.path_hash(&dep.resolve(workspace)).ok()?;
            deps.insert(dep.key_form(), hash);
        }
    }
    Some((old, with_deps(node, deps)))
}

/// The manifest of `node` with these dep hashes.
fn with_deps(node: &Node, deps: BTreeMap<String, String>) -> Manifest {
    Manifest {
        action: action_string(&node.spec.action),
        params: node.spec.params.clone(),
        matrix: node.spec.matrix.clone(),
        deps,
        outs: node.outs.iter().map(WPath::key_form).collect(),
        env: node.spec.env.clone(),
    }
}

fn from_entry(meta: &EntryMeta, dep: &WPath) -> Option<String> {
    let dep = dep.inside()?.to_string_lossy().into_owned();
    meta.outs.iter().find_map(|o| {
        if o.path == dep {
            Some(o.hash.clone())
        } else {
            let rel = dep.strip_prefix(&o.path)?.strip_prefix('/')?;
            let sub = subtree(&o.files, rel);
            (!sub.is_empty()).then(|| tree_hash(&sub))
        }
    })
}

/// Which outs of an entry differ from (or are missing in) the workspace.
pub fn stale_outs(meta: &EntryMeta, workspace: &Path, stats: &mut StatCache) -> Vec<usize> {
    meta.outs
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            stats
                .path_hash(&workspace.join(&o.path))
                .map_or(true, |h| h != o.hash)
        })
        .map(|(i, _)| i)
        .collect()
}
