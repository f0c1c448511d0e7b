//! Built-in stage kinds, found by name. The runner knows built-in stages only
//! through this registry; each kind declares its params, its implementation
//! version (part of every key it produces) and, optionally, how it expands at
//! plan time into a chain of stages (the growth phases of an incremental run).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// A parameter a kind accepts. `default` is a JSON literal; `None` means required.
#[derive(Debug, Clone, Copy)]
pub struct ParamDecl {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// What a kind sees of a stage instance at plan time.
#[derive(Debug, Clone)]
pub struct ExpandInput {
    pub name: String,
    /// The `[stages.NAME]` table and the instance's matrix values.
    pub template: String,
    pub matrix: BTreeMap<String, Value>,
    pub params: BTreeMap<String, Value>,
    pub deps: Vec<String>,
    pub outs: Vec<String>,
}

/// One stage produced by an expansion. An empty `suffix` keeps the instance's
/// name; otherwise the stage is named `INSTANCE/SUFFIX`. Edges inside a chain
/// come from deps naming earlier stages' outs, like everywhere else.
///
/// In `deps` and `outs`, `{stage:SUFFIX}` stands for the final name of the chain
/// stage with that suffix, usable as a workspace path.
#[derive(Debug, Clone)]
pub struct Expanded {
    pub suffix: String,
    /// Matrix axes this stage does not depend on: it is named without them, so
    /// instances differing only there share it (one DAG node, one cache entry).
    /// The expander checks that the shared definitions are identical.
    pub shared_without: Vec<&'static str>,
    pub kind: &'static str,
    pub params: BTreeMap<String, Value>,
    pub deps: Vec<String>,
    pub outs: Vec<String>,
}

/// What a built-in stage's process receives (read from its environment).
#[derive(Debug, Clone)]
pub struct StageContext {
    pub stage: String,
    pub key: String,
    pub params: BTreeMap<String, Value>,
    pub scratch: PathBuf,
    pub cpus: usize,
    /// The stage's deps and outs, workspace-relative, as the runner resolved them.
    pub deps: Vec<String>,
    pub outs: Vec<String>,
}

/// What identifies a kind, declared once per kind ([`StageKind::meta`]).
#[derive(Debug, Clone, Copy)]
pub struct KindMeta {
    pub name: &'static str,
    /// Part of every key the kind produces: bump it when what the kind computes changes,
    /// and only then (`tests/kind_fingerprints.rs` compares result bits and says when).
    pub version: u32,
    pub params: &'static [ParamDecl],
}

pub trait StageKind: Send + Sync {
    fn meta(&self) -> KindMeta;
    fn name(&self) -> &'static str {
        self.meta().name
    }
    fn version(&self) -> u32 {
        self.meta().version
    }
    fn params(&self) -> &'static [ParamDecl] {
        self.meta().params
    }
    /// Plan-time expansion; the default is the stage itself.
    fn expand(&self, input: &ExpandInput) -> Result<Vec<Expanded>, String> {
        Ok(vec![Expanded {
            suffix: String::new(),
            shared_without: Vec::new(),
            kind: self.name(),
            params: input.params.clone(),
            deps: input.deps.clone(),
            outs: input.outs.clone(),
        }])
    }
    /// Runs in the stage's own child process, in the workspace.
    fn run(&self, ctx: &StageContext) -> anyhow::Result<()>;
}

#[derive(Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Box<dyn StageKind>>,
}

impl Registry {
    pub fn empty() -> Self {
        Registry::default()
    }

    pub fn register(&mut self, kind: Box<dyn StageKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    pub fn get(&self, name: &str) -> Option<&dyn StageKind> {
        self.kinds.get(name).map(|b| b.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}

/// Parses a declared default.
pub fn default_value(decl: &ParamDecl) -> Option<Value> {
    decl.default
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string())))
}
