//! The record of a finished run: test accuracy (overall, per class, confusion
//! matrix), training cost, and the per-epoch metrics. Written identically by
//! `incrpipe train` and by the pipeline's `evaluate` stage, so their numbers can
//! be compared byte for byte and the report reads one format.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use super::EngineError;
use super::data::{ImageSet, NUM_CLASSES, Normalization, to_tensor_data};
use super::flops;
use super::model::{Net, NetSpec};
use super::settings::RunSettings;
use super::train::{EpochRecord, PhaseSummary, Progress};

/// `result.json` of a run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub net: String,
    /// The paper's network this run stands in for (a narrow ResNet-8 for ResNet-20, ...).
    pub paper_net: String,
    pub method: String,
    pub seed: u64,
    /// Fraction in [0, 1] of the test set, by the final network.
    pub test_accuracy: f64,
    /// Test accuracy of the last phase's epoch with the best validation accuracy (the first
    /// such epoch): the checkpoint a practitioner would keep. None without test figures.
    pub test_accuracy_best_val: Option<f64>,
    /// The global epoch of that checkpoint.
    pub best_val_epoch: Option<usize>,
    pub per_class_accuracy: Vec<f64>,
    /// confusion[true][predicted].
    pub confusion: Vec<Vec<u64>>,
    pub test_images: u64,
    pub epochs: usize,
    pub train_flops: u64,
    pub eval_flops: u64,
    pub params: u64,
    pub flops_per_inference: u64,
    pub active_subnetworks: usize,
    /// Every phase: kind, sub-networks, length and why it ended.
    pub phases: Vec<PhaseSummary>,
    pub settings: RunSettings,
    /// Filled by the caller (backend, device, git commit, stage key, data checksum...).
    pub provenance: BTreeMap<String, serde_json::Value>,
}

/// Confusion matrix of `net` on `set` (inference mode).
pub fn confusion<B: Backend>(
    net: &Net<B>,
    set: &ImageSet,
    norm: &Normalization,
    batch: usize,
) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; NUM_CLASSES]; NUM_CLASSES];
    let device = net.classifier.fc.weight.val().device();
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(to_tensor_data(set, chunk, norm), [chunk.len(), 3, 32, 32]),
            &device,
        );
        let logits = net
            .forward(x)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 logits");
        for (row, &i) in logits.chunks(NUM_CLASSES).zip(chunk) {
            // First maximum wins, as in `train::evaluate`.
            let mut best = 0;
            for j in 1..NUM_CLASSES {
                if row[j] > row[best] {
                    best = j;
                }
            }
            m[set.labels[i] as usize][best] += 1;
        }
    }
    m
}

/// The paper network a (possibly narrowed) network stands in for.
pub fn paper_net(net: &str) -> String {
    let base = net.split('-').next().unwrap_or(net);
    match base {
        "resnet20" | "resnet32" | "resnet44" | "resnet56" | "vgg16" => base.to_string(),
        b if b.starts_with("vgg") => "vgg16".into(),
        _ => "resnet20".into(),
    }
}

/// The epoch of the last phase (the epochs with a test figure) with the highest validation
/// accuracy; the first of equals, so that a longer run cannot win a tie.
pub fn best_val_epoch(records: &[EpochRecord]) -> Option<&EpochRecord> {
    records
        .iter()
        .filter(|r| r.test_acc.is_some())
        .fold(None, |best: Option<&EpochRecord>, r| match best {
            Some(b) if b.val_acc >= r.val_acc => Some(b),
            _ => Some(r),
        })
}

impl RunOutcome {
    pub fn new(
        settings: &RunSettings,
        spec: &NetSpec,
        active: usize,
        progress: &Progress,
        confusion: Vec<Vec<u64>>,
    ) -> RunOutcome {
        let total: u64 = confusion.iter().flatten().sum();
        let correct: u64 = (0..NUM_CLASSES).map(|c| confusion[c][c]).sum();
        let per_class = confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: u64 = row.iter().sum();
                if n == 0 {
                    0.0
                } else {
                    row[c] as f64 / n as f64
                }
            })
            .collect();
        let best = best_val_epoch(&progress.records);
        RunOutcome {
            run_id: settings.run_id(),
            net: settings.net.clone(),
            paper_net: paper_net(&settings.net),
            method: settings.method.clone(),
            seed: settings.seed,
            test_accuracy: if total == 0 {
                0.0
            } else {
                correct as f64 / total as f64
            },
            test_accuracy_best_val: best.and_then(|r| r.test_acc),
            best_val_epoch: best.map(|r| r.epoch),
            per_class_accuracy: per_class,
            confusion,
            test_images: total,
            epochs: progress.epochs_done,
            train_flops: progress.cum_train_flops,
            eval_flops: progress.cum_eval_flops,
            params: flops::net_params(spec, active),
            flops_per_inference: flops::flops_per_inference(spec, active),
            active_subnetworks: active,
            phases: progress.phases.clone(),
            settings: settings.clone(),
            provenance: BTreeMap::new(),
        }
    }

    /// Writes `result.json` and `metrics.csv` into `dir`.
    pub fn write(&self, dir: &Path, progress: &Progress) -> Result<(), EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let csv_path = dir.join("metrics.csv");
        let mut w = csv::Writer::from_path(&csv_path)
            .map_err(|e| EngineError::io(&csv_path, std::io::Error::other(e)))?;
        for r in &progress.records {
            let mut r = r.clone();
            r.run_id = self.run_id.clone();
            w.serialize(&r)
                .map_err(|e| EngineError::io(&csv_path, std::io::Error::other(e)))?;
        }
        w.flush().map_err(|e| EngineError::io(&csv_path, e))?;
        let p = dir.join("result.json");
        std::fs::write(&p, serde_json::to_vec_pretty(self).expect("serialisable"))
            .map_err(|e| EngineError::io(&p, e))
    }
}
