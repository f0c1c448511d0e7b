//! What a run would do, and why: `incrpipe status` and `run --dry-run`.
//! Keys are computed as the run would compute them; stages below one that must
//! run cannot know their key yet (early cut-off may still spare them).

use std::collections::BTreeMap;
use std::path::Path;

use crate::cache::{Cache, EntryMeta, Manifest};
use crate::dag::Dag;
use crate::hash::StatCache;
use crate::keys;
use crate::spec::value::display;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    UpToDate,
    /// Cached, but some outs in the workspace are missing or edited.
    Restore(Vec<String>),
    /// Must run, with the reasons.
    Run(Vec<String>),
    /// Runs only if an upstream stage's outputs change.
    AfterUpstream(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct StageStatus {
    pub stage: String,
    pub key: Option<String>,
    pub verdict: Verdict,
}

pub fn status(dag: &Dag, cache: &Cache, workspace: &Path) -> Vec<StageStatus> {
    let mut stats = StatCache::load(&cache.stat_cache_path());
    let mut metas: BTreeMap<usize, EntryMeta> = BTreeMap::new();
    let mut out: Vec<Option<StageStatus>> = vec![None; dag.nodes.len()];
    for &i in &dag.order {
        let node = &dag.nodes[i];
        let name = node.spec.name.clone();
        let pending: Vec<String> = node
            .upstream
            .iter()
            .filter(|u| !metas.contains_key(u))
            .map(|u| dag.nodes[*u].spec.name.clone())
            .collect();
        let st = if !pending.is_empty() {
            // What changed in the stage's own inputs is known now, whatever its upstream does.
            let own = cache.last_manifest(&name).and_then(|(_, old)| {
                let (old, new) = keys::own_parts(node, &old, workspace, &mut stats)?;
                (old != new).then(|| changes(&old, &new))
            });
            let verdict = match own {
                Some(mut why) => {
                    why.push(format!(
                        "after {} (it runs unless an entry for its new inputs is cached)",
                        pending.join(", ")
                    ));
                    Verdict::Run(why)
                }
                None => Verdict::AfterUpstream(pending),
            };
            StageStatus {
                stage: name,
                key: None,
                verdict,
            }
        } else {
            match keys::manifest(node, &|u| metas.get(&u).cloned(), workspace, &mut stats) {
                Err(e) => StageStatus {
                    stage: name,
                    key: None,
                    verdict: Verdict::Run(vec![e]),
                },
                Ok(m) => {
                    let key = m.key().to_string();
                    match cache.lookup(&key) {
                        Some(meta) => {
                            let stale = keys::stale_outs(&meta, workspace, &mut stats);
                            let verdict = if stale.is_empty() {
                                Verdict::UpToDate
                            } else {
                                Verdict::Restore(
                                    stale.iter().map(|s| meta.outs[*s].path.clone()).collect(),
                                )
                            };
                            metas.insert(i, meta);
                            StageStatus {
                                stage: name,
                                key: Some(key),
                                verdict,
                            }
                        }
                        None => {
                            let why = match cache.last_manifest(&name) {
                                Some((k, _)) if k == key => vec![
                                    "its cache entry is gone (removed by gc or found corrupt)"
                                        .into(),
                                ],
                                Some((_, old)) => changes(&old, &m),
                                None => vec!["never run".into()],
                            };
                            StageStatus {
                                stage: name,
                                key: Some(key),
                                verdict: Verdict::Run(why),
                            }
                        }
                    }
                }
            }
        };
        out[i] = Some(st);
    }
    dag.order.iter().filter_map(|i| out[*i].take()).collect()
}

/// What differs between the manifest of the last run and the current one.
pub fn changes(old: &Manifest, new: &Manifest) -> Vec<String> {
    let mut why = Vec::new();
    if old.action != new.action {
        let ver = |a: &str| a.strip_prefix("kind:").map(str::to_string);
        why.push(match (ver(&old.action), ver(&new.action)) {
            (Some(o), Some(n)) => format!("implementation changed ({o} -> {n})"),
            _ => "command changed".to_string(),
        });
    }
    diff_map("param", &old.params, &new.params, &mut why, display);
    diff_map("matrix value", &old.matrix, &new.matrix, &mut why, |v| {
        display(v)
    });
    for (k, v) in &new.deps {
        match old.deps.get(k) {
            None => why.push(format!("new dep `{k}`")),
            Some(o) if o != v => why.push(format!("dep `{k}` changed")),
            _ => {}
        }
    }
    for k in old.deps.keys().filter(|k| !new.deps.contains_key(*k)) {
        why.push(format!("dep `{k}` removed"));
    }
    if old.outs != new.outs {
        why.push("outs changed".into());
    }
    diff_map("env", &old.env, &new.env, &mut why, |v| v.clone());
    if why.is_empty() {
        why.push("key changed".into());
    }
    why
}

fn diff_map<V: PartialEq>(
    what: &str,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    why: &mut Vec<String>,
    show: impl Fn(&V) -> String,
) {
    for (k, v) in new {
        match old.get(k) {
            None => why.push(format!("{what} `{k}` added ({})", show(v))),
            Some(o) if o != v => {
                why.push(format!("{what} `{k}` changed ({} -> {})", show(o), show(v)))
            }
            _ => {}
        }
    }
    for (k, o) in old {
        if !new.contains_key(k) {
            why.push(format!("{what} `{k}` removed (was {})", show(o)));
        }
    }
}

/// Human-readable status lines.
pub fn render(list: &[StageStatus]) -> String {
    let mut t = String::new();
    let (mut up, mut run, mut restore, mut after) = (0, 0, 0, 0);
    for s in list {
        match &s.verdict {
            Verdict::UpToDate => up += 1,
            Verdict::Restore(outs) => {
                restore += 1;
                t.push_str(&format!(
                    "restore  {}: out(s) missing or modified in the workspace: {}\n",
                    s.stage,
                    outs.join(", ")
                ));
            }
            Verdict::Run(why) => {
                run += 1;
                t.push_str(&format!("run      {}: {}\n", s.stage, why.join("; ")));
            }
            Verdict::AfterUpstream(up) => {
                after += 1;
                t.push_str(&format!(
                    "pending  {}: after {} (unless early cut-off spares it)\n",
                    s.stage,
                    up.join(", ")
                ));
            }
        }
    }
    t.push_str(&format!("{} stages: {up} up to date, {restore} to restore, {run} to run, {after} waiting on upstream\n", list.len()));
    t
}
