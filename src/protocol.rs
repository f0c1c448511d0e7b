//! The stage protocol: how the runner hands a stage its identity and inputs (environment
//! variables and a params file) and how a built-in stage's process reads them back. Both
//! sides go through this module, so a missing or malformed part is an error that names it,
//! never a default (a built-in stage given empty params would train on defaults).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::registry::StageContext;

pub const STAGE: &str = "INCRPIPE_STAGE";
pub const KEY: &str = "INCRPIPE_KEY";
pub const PARAMS: &str = "INCRPIPE_PARAMS";
pub const SCRATCH: &str = "INCRPIPE_SCRATCH";
pub const ATTEMPT: &str = "INCRPIPE_ATTEMPT";
pub const CPUS: &str = "INCRPIPE_CPUS";

/// What starts a progress line in a stage's output: the runner shows the latest beside the
/// running stage and, in plain output, prints each one. Training stages write one per epoch
/// (`epoch  12 train k=2 loss ...`); a shell stage may write its own.
pub const PROGRESS_PREFIX: &str = "epoch ";

pub fn is_progress_line(line: &str) -> bool {
    line.starts_with(PROGRESS_PREFIX)
}

/// The params file (`$INCRPIPE_PARAMS`): what the stage computes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsFile {
    pub stage: String,
    pub params: BTreeMap<String, Value>,
    pub matrix: BTreeMap<String, Value>,
    /// Workspace-relative deps and outs, as the runner resolved them.
    pub deps: Vec<String>,
    pub outs: Vec<String>,
}

/// Who the stage is and where its files are: the environment the runner sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub stage: String,
    pub key: String,
    pub params_path: PathBuf,
    pub scratch: PathBuf,
    pub attempt: u32,
}

impl Handoff {
    /// The variables the stage's process gets (the runner adds CPUs and devices).
    pub fn env(&self) -> Vec<(String, String)> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            (STAGE.into(), self.stage.clone()),
            (KEY.into(), self.key.clone()),
            (PARAMS.into(), path(&self.params_path)),
            (SCRATCH.into(), path(&self.scratch)),
            (ATTEMPT.into(), self.attempt.to_string()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "${0} is not set: built-in stages are started by `incrpipe run`, which sets it (run the pipeline, not `incrpipe __stage`)"
    )]
    Missing(&'static str),
    #[error("${name} = {value:?} is not valid: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "cannot read the params file {path} ($INCRPIPE_PARAMS): {source}; rerun the stage with `incrpipe run --force`"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the params file {path} ($INCRPIPE_PARAMS) is malformed: {why}; rerun the stage with `incrpipe run --force`"
    )]
    Malformed { path: PathBuf, why: String },
}

/// The child's side: the stage's context from its environment and params file.
pub fn read_context(var: impl Fn(&str) -> Option<String>) -> Result<StageContext, ProtocolError> {
    let need = |name: &'static str| var(name).ok_or(ProtocolError::Missing(name));
    let handoff = Handoff {
        stage: need(STAGE)?,
        key: need(KEY)?,
        params_path: PathBuf::from(need(PARAMS)?),
        scratch: PathBuf::from(need(SCRATCH)?),
        attempt: parse(ATTEMPT, &need(ATTEMPT)?)?,
    };
    let cpus: usize = parse(CPUS, &need(CPUS)?)?;
    if cpus == 0 {
        return Err(ProtocolError::Invalid {
            name: CPUS,
            value: "0".into(),
            why: "a stage needs at least one CPU".into(),
        });
    }
    let file = read_params(&handoff.params_path)?;
    if file.stage != handoff.stage {
        return Err(ProtocolError::Malformed {
            path: handoff.params_path,
            why: format!(
                "it is stage `{}`'s, but ${STAGE} is `{}`",
                file.stage, handoff.stage
            ),
        });
    }
    Ok(StageContext {
        stage: handoff.stage,
        key: handoff.key,
        params: file.params,
        scratch: handoff.scratch,
        cpus,
        deps: file.deps,
        outs: file.outs,
    })
}

/// Reads and checks a params file.
pub fn read_params(path: &Path) -> Result<ParamsFile, ProtocolError> {
    let bytes = std::fs::read(path).map_err(|source| ProtocolError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ProtocolError::Malformed {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// The params file's bytes (pretty JSON, so that a user can read it).
pub fn params_bytes(file: &ParamsFile) -> Vec<u8> {
    serde_json::to_vec_pretty(file).expect("params serialise")
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ProtocolError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ProtocolError::Invalid {
        name,
        value: value.into(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> (Handoff, ParamsFile) {
        let file = ParamsFile {
            stage: "run@seed=1/train".into(),
            params: BTreeMap::from([("lr".into(), serde_json::json!(0.001))]),
            matrix: BTreeMap::from([("seed".into(), serde_json::json!(1))]),
            deps: vec!["data/cifar10".into()],
            outs: vec!["runs/seed1".into()],
        };
        let h = Handoff {
            stage: file.stage.clone(),
            key: "ab12".into(),
            params_path: dir.join("params.json"),
            scratch: dir.join("scratch"),
            attempt: 2,
        };
        std::fs::write(&h.params_path, params_bytes(&file)).unwrap();
        (h, file)
    }

    fn env_of(h: &Handoff) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = h.env().into_iter().collect();
        m.insert(CPUS.into(), "2".into());
        m
    }

    #[test]
    fn what_the_parent_writes_the_child_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (h, file) = sample(dir.path());
        let env = env_of(&h);
        let ctx = read_context(|k| env.get(k).cloned()).unwrap();
        assert_eq!(
            (ctx.stage, ctx.key, ctx.scratch, ctx.cpus),
            (h.stage, h.key, h.scratch, 2)
        );
        assert_eq!(
            (ctx.params, ctx.deps, ctx.outs),
            (file.params, file.deps, file.outs)
        );
    }

    #[test]
    fn anything_missing_or_malformed_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = sample(dir.path());
        let err = |env: &BTreeMap<String, String>| {
            read_context(|k| env.get(k).cloned())
                .unwrap_err()
                .to_string()
        };
        for var in [STAGE, KEY, PARAMS, SCRATCH, ATTEMPT, CPUS] {
            let mut env = env_of(&h);
            env.remove(var);
            assert!(err(&env).contains(var), "{var}: {}", err(&env));
        }
        let mut env = env_of(&h);
        env.insert(CPUS.into(), "two".into());
        assert!(
            err(&env).contains("INCRPIPE_CPUS = \"two\""),
            "{}",
            err(&env)
        );

        let env = env_of(&h);
        std::fs::write(&h.params_path, b"{\"stage\": \"run@seed=1/train\"}").unwrap();
        assert!(err(&env).contains("malformed"), "{}", err(&env));
        std::fs::write(&h.params_path, b"not json").unwrap();
        assert!(err(&env).contains("malformed"), "{}", err(&env));
        std::fs::remove_file(&h.params_path).unwrap();
        let e = err(&env);
        assert!(
            e.contains("cannot read the params file") && e.contains("params.json"),
            "{e}"
        );
    }

    #[test]
    fn a_params_file_of_another_stage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut h, _) = sample(dir.path());
        h.stage = "other".into();
        let env = env_of(&h);
        let e = read_context(|k| env.get(k).cloned())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`other`"), "{e}");
    }
}
