//! Checkpoints: written at every epoch end, resumed bit-identically.
//!
//! Layout of a checkpoint directory:
//! ```text
//! DIR/LATEST                 name of the newest complete checkpoint (written last, atomically)
//! DIR/epoch-000012/model.mpk the network (burn NamedMpkFileRecorder, full precision; includes
//!                            BatchNorm running statistics)
//! DIR/epoch-000012/optim.mpk RMSProp state, only while a phase is under way
//! DIR/epoch-000012/state.json network name, partition, seed, active sub-networks, progress
//! ```
//! A checkpoint is written into `epoch-N.tmp/`, renamed to `epoch-N/`, and only then is
//! `LATEST` replaced (write to a temp file + rename), so a kill at any moment leaves the
//! previous checkpoint intact. The "RNG state" is the epoch counter in the progress: every
//! random stream is keyed by (seed, epoch) (see rng.rs).
//!
//! [`save_state`] / [`load_state`] use the same format to hand a state from one pipeline stage
//! to the next.

use crate::config::Optim;
use crate::error::{EngineError, Result};
use crate::model::Net;
use crate::record::{Ctx, Progress, RunState};
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use std::path::{Path, PathBuf};

/// A loaded state and, when the checkpoint was taken inside a phase, its optimiser.
pub type Loaded<B> = (RunState<B>, Option<Optim<B>>);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Meta {
    net: String,
    partition_starts: Vec<usize>,
    seed: u64,
    active: usize,
    progress: Progress,
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

fn err(path: &Path, msg: impl std::fmt::Display) -> EngineError {
    EngineError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Writes a complete state (network, progress, optionally the optimiser) into `dir` itself.
pub fn save_state<B: AutodiffBackend>(
    dir: &Path,
    ctx: Ctx,
    state: &RunState<B>,
    optim: Option<&Optim<B>>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    state
        .net
        .clone()
        .save_file(dir.join("model"), &recorder())
        .map_err(|e| err(dir, e))?;
    if let Some(o) = optim {
        Recorder::<B>::record(&recorder(), o.to_record(), dir.join("optim"))
            .map_err(|e| err(dir, e))?;
    }
    let meta = Meta {
        net: ctx.spec.name.clone(),
        partition_starts: ctx.spec.partition.starts(),
        seed: ctx.cfg.seed,
        active: state.net.k(),
        progress: state.progress.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| err(dir, e))?;
    write_atomic(&dir.join("state.json"), &json)
}

/// Reads a state written by [`save_state`]; the optimiser when one was saved.
pub fn load_state<B: AutodiffBackend>(
    dir: &Path,
    ctx: Ctx,
    device: &B::Device,
) -> Result<Loaded<B>> {
    let p = dir.join("state.json");
    let bytes = std::fs::read(&p).map_err(|e| EngineError::io(&p, e))?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| err(&p, e))?;
    if meta.net != ctx.spec.name || meta.partition_starts != ctx.spec.partition.starts() {
        return Err(err(
            dir,
            format!(
                "holds {} with partition {:?}, expected {} with {:?}",
                meta.net,
                meta.partition_starts,
                ctx.spec.name,
                ctx.spec.partition.starts()
            ),
        ));
    }
    if meta.active == 0 || meta.active > ctx.spec.k() {
        return Err(err(
            dir,
            format!("bad number of sub-networks {}", meta.active),
        ));
    }
    // The structure is rebuilt from the spec, then every tensor (and parameter id, which the
    // optimiser state refers to) is replaced by the record's.
    let net = Net::<B>::init(ctx.spec, meta.active, meta.seed, device)
        .load_file(dir.join("model"), &recorder(), device)
        .map_err(|e| err(dir, e))?;
    let optim_path = dir.join("optim.mpk");
    let optim = if optim_path.exists() {
        let rec =
            Recorder::<B>::load(&recorder(), dir.join("optim"), device).map_err(|e| err(dir, e))?;
        Some(ctx.cfg.optim_build::<B>().load_record(rec))
    } else {
        None
    };
    Ok((
        RunState {
            net,
            progress: meta.progress,
        },
        optim,
    ))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

/// Saves an epoch-end checkpoint into `root` and points `LATEST` at it; older ones are removed.
pub fn save<B: AutodiffBackend>(
    root: &Path,
    ctx: Ctx,
    state: &RunState<B>,
    optim: Option<&Optim<B>>,
) -> Result<()> {
    std::fs::create_dir_all(root).map_err(|e| EngineError::io(root, e))?;
    let name = format!(
        "epoch-{:06}-{}",
        state.progress.epochs_done,
        state.progress.phases.len()
    );
    let tmp = root.join(format!("{name}.tmp"));
    let fin = root.join(&name);
    for d in [&tmp, &fin] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| EngineError::io(d, e))?;
        }
    }
    save_state(&tmp, ctx, state, optim)?;
    std::fs::rename(&tmp, &fin).map_err(|e| EngineError::io(&fin, e))?;
    write_atomic(&root.join("LATEST"), name.as_bytes())?;
    // Drop older checkpoints (best effort: a leftover directory is harmless).
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("epoch-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// The directory of the newest complete checkpoint under `root`, if any.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    let p = root.join("LATEST");
    match std::fs::read_to_string(&p) {
        Ok(name) => Ok(Some(root.join(name.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io(&p, e)),
    }
}

/// Loads the newest checkpoint under `root`, if any.
pub fn load<B: AutodiffBackend>(
    root: &Path,
    ctx: Ctx,
    device: &B::Device,
) -> Result<Option<Loaded<B>>> {
    match latest(root)? {
        Some(dir) => load_state(&dir, ctx, device).map(Some),
        None => Ok(None),
    }
}
