//! The pipeline file as written, with spans kept for error messages.
//! Unknown keys and wrong types are rejected by serde (`deny_unknown_fields`),
//! and toml reports them with their location.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub pipeline: Spanned<RawMeta>,
    #[serde(default)]
    pub params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub stages: BTreeMap<Spanned<String>, Spanned<RawStage>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeta {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub cmd: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    #[serde(default)]
    pub outs: Vec<Spanned<String>>,
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    #[serde(default)]
    pub params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub matrix: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<toml::Value>>>>,
    pub resources: Option<Spanned<RawResources>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Seconds, or a duration such as "90s", "30m", "2h".
    pub timeout: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub retries: u32,
    /// `local` or `slurm`; where this stage runs when the run's executor differs.
    pub executor: Option<Spanned<String>>,
    /// Slurm wall time (e.g. "2:00:00") and memory (e.g. "8G").
    pub time: Option<Spanned<String>>,
    pub mem: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub cpus: Option<u32>,
    pub gpus: Option<u32>,
}
