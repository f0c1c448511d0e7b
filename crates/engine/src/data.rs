//! CIFAR-10 (binary version): reading with validation, the seeded stratified train/validation
//! split, per-class subsets and per-channel normalisation statistics.

use crate::error::{EngineError, Result};
use crate::rng;
use std::path::{Path, PathBuf};

pub const IMAGE_BYTES: usize = 3 * 32 * 32;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
pub const RECORDS_PER_FILE: usize = 10_000;
pub const NUM_CLASSES: usize = 10;

/// Images as raw bytes (CHW per image: R plane, G plane, B plane, each row-major 32x32) and labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }
    fn push(&mut self, img: &[u8], label: u8) {
        self.pixels.extend_from_slice(img);
        self.labels.push(label);
    }
    /// The images at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> ImageSet {
        let mut out = ImageSet {
            pixels: Vec::with_capacity(idx.len() * IMAGE_BYTES),
            labels: Vec::with_capacity(idx.len()),
        };
        for &i in idx {
            out.push(self.image(i), self.labels[i]);
        }
        out
    }
    /// The first `n` images of each class, in file order (deterministic, seed-free).
    pub fn first_per_class(&self, n: usize) -> Result<ImageSet> {
        Ok(self.select(&first_per_class_positions(&self.labels, n)?))
    }
}

/// Reads one CIFAR-10 binary batch file, checking size, record count and labels.
pub fn read_batch_file(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    parse_batch(path, &bytes)
}

/// Parses the bytes of one batch file; `path` only names the file in errors.
pub fn parse_batch(path: &Path, bytes: &[u8]) -> Result<ImageSet> {
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(EngineError::TruncatedFile {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            record: bytes.len() / RECORD_BYTES,
        });
    }
    let records = bytes.len() / RECORD_BYTES;
    if records != RECORDS_PER_FILE {
        return Err(EngineError::WrongRecordCount {
            path: path.to_path_buf(),
            records,
            expected: RECORDS_PER_FILE,
        });
    }
    let mut set = ImageSet {
        pixels: Vec::with_capacity(records * IMAGE_BYTES),
        labels: Vec::with_capacity(records),
    };
    for (record, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = rec[0];
        if label as usize >= NUM_CLASSES {
            return Err(EngineError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
            });
        }
        set.push(&rec[1..], label);
    }
    Ok(set)
}

/// The variable that names a directory of the binary CIFAR-10 files.
pub const CIFAR_ENV: &str = "INCRPIPE_CIFAR10";

/// The CIFAR-10 directory `$INCRPIPE_CIFAR10` names, if set. There is no built-in default:
/// a pipeline names its data (`download-cifar`), a command takes `--data`.
pub fn cifar_dir_from_env() -> Option<PathBuf> {
    std::env::var_os(CIFAR_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The 50,000 training images (data_batch_1..5) and the 10,000 test images.
pub fn load_cifar10(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let mut train = ImageSet::default();
    for i in 1..=5 {
        let b = read_batch_file(&dir.join(format!("data_batch_{i}.bin")))?;
        train.pixels.extend_from_slice(&b.pixels);
        train.labels.extend_from_slice(&b.labels);
    }
    let test = read_batch_file(&dir.join("test_batch.bin"))?;
    Ok((train, test))
}

/// Seeded stratified split: `val_fraction` of each class goes to validation.
/// Both parts keep file order, which makes "first N per class" subsets nested across sizes.
pub fn stratified_split(set: &ImageSet, val_fraction: f64, seed: u64) -> (ImageSet, ImageSet) {
    let (train_idx, val_idx) = split_indices(set, val_fraction, seed);
    (set.select(&train_idx), set.select(&val_idx))
}

/// Indices of the training and validation parts of a seeded split, stratified by class.
pub fn split_indices(set: &ImageSet, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut train_idx = Vec::new();
    let mut val_idx = Vec::new();
    for class in 0..NUM_CLASSES {
        let mut idx: Vec<usize> = (0..set.len())
            .filter(|&i| set.labels[i] as usize == class)
            .collect();
        let n_val = (idx.len() as f64 * val_fraction).round() as usize;
        let mut r = rng::stream(seed, &[rng::TAG_SPLIT, class as u64]);
        let mut order = idx.clone();
        rng::shuffle(&mut r, &mut order);
        let val: std::collections::HashSet<usize> = order[..n_val].iter().copied().collect();
        idx.retain(|i| !val.contains(i));
        train_idx.extend(idx);
        val_idx.extend(val);
    }
    train_idx.sort_unstable();
    val_idx.sort_unstable();
    (train_idx, val_idx)
}

/// Per-channel mean and standard deviation of pixel values scaled to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// Statistics of `set` (call it on the training part only, never on validation or test).
    pub fn from_set(set: &ImageSet) -> Normalization {
        let plane = 32 * 32;
        let mut sum = [0f64; 3];
        let mut sq = [0f64; 3];
        for i in 0..set.len() {
            let img = set.image(i);
            for c in 0..3 {
                for &p in &img[c * plane..(c + 1) * plane] {
                    let v = p as f64 / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let n = (set.len() * plane).max(1) as f64;
        let mut mean = [0f32; 3];
        let mut std = [0f32; 3];
        for c in 0..3 {
            let m = sum[c] / n;
            mean[c] = m as f32;
            std[c] = ((sq[c] / n - m * m).max(1e-12)).sqrt() as f32;
        }
        Normalization { mean, std }
    }
}

/// Which part of CIFAR-10 a run uses.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataConfig {
    /// Fraction of each class held out for validation (Table 1: 10%).
    pub val_fraction: f64,
    /// Seed of the split (kept apart from the training seed so runs with different seeds
    /// can share one split).
    pub split_seed: u64,
    /// Keep only the first N training images per class (after the split).
    pub train_per_class: Option<usize>,
    /// Keep only the first N validation images per class.
    pub val_per_class: Option<usize>,
    /// Keep only the first N test images per class.
    pub test_per_class: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            val_fraction: crate::params::default("val_fraction"),
            split_seed: crate::params::default("split_seed"),
            train_per_class: None,
            val_per_class: None,
            test_per_class: None,
        }
    }
}

/// Which records a run trains, validates and tests on, and the normalisation of its
/// training part: the `augment` stage's artifact, and what every run is built from.
/// Indices are into the 50,000 training records (train, val) and the 10,000 test records.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitPlan {
    pub config: DataConfig,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub test: Vec<u32>,
    pub norm: Normalization,
}

impl SplitPlan {
    /// The seeded stratified split, then the "first N per class" subsets, then the
    /// normalisation statistics of the training part.
    pub fn new(all_train: &ImageSet, test: &ImageSet, cfg: &DataConfig) -> Result<SplitPlan> {
        let (train, val) = split_indices(all_train, cfg.val_fraction, cfg.split_seed);
        let first = |set: &ImageSet, idx: Vec<usize>, n: Option<usize>| -> Result<Vec<usize>> {
            match n {
                None => Ok(idx),
                Some(n) => {
                    let labels: Vec<u8> = idx.iter().map(|&i| set.labels[i]).collect();
                    Ok(first_per_class_positions(&labels, n)?
                        .into_iter()
                        .map(|p| idx[p])
                        .collect())
                }
            }
        };
        let train = first(all_train, train, cfg.train_per_class)?;
        let val = first(all_train, val, cfg.val_per_class)?;
        let test = first(test, (0..test.len()).collect(), cfg.test_per_class)?;
        let norm = Normalization::from_set(&all_train.select(&train));
        let to32 = |v: Vec<usize>| v.into_iter().map(|i| i as u32).collect();
        Ok(SplitPlan {
            config: cfg.clone(),
            train: to32(train),
            val: to32(val),
            test: to32(test),
            norm,
        })
    }
}

/// Positions of the first `n` items of each class, in order; an error when a class has fewer.
fn first_per_class_positions(labels: &[u8], n: usize) -> Result<Vec<usize>> {
    let mut count = [0usize; NUM_CLASSES];
    let mut out = Vec::with_capacity(n * NUM_CLASSES);
    for (i, &l) in labels.iter().enumerate() {
        if count[l as usize] < n {
            count[l as usize] += 1;
            out.push(i);
        }
    }
    match count.iter().position(|&c| c < n) {
        Some(class) => Err(EngineError::SubsetTooLarge {
            class,
            asked: n,
            available: count[class],
        }),
        None => Ok(out),
    }
}

/// Train, validation and test sets plus the normalisation computed on the training part.
#[derive(Debug, Clone)]
pub struct Cifar10 {
    pub train: ImageSet,
    pub val: ImageSet,
    pub test: ImageSet,
    pub norm: Normalization,
}

impl Cifar10 {
    pub fn load(dir: &Path, cfg: &DataConfig) -> Result<Cifar10> {
        let (all_train, test) = load_cifar10(dir)?;
        Self::from_sets(&all_train, test, cfg)
    }

    pub fn from_sets(all_train: &ImageSet, test: ImageSet, cfg: &DataConfig) -> Result<Cifar10> {
        let plan = SplitPlan::new(all_train, &test, cfg)?;
        Ok(Cifar10::from_plan(all_train, &test, &plan))
    }

    /// The sets a [`SplitPlan`] describes.
    pub fn from_plan(all_train: &ImageSet, test: &ImageSet, plan: &SplitPlan) -> Cifar10 {
        let pick = |set: &ImageSet, idx: &[u32]| {
            set.select(&idx.iter().map(|&i| i as usize).collect::<Vec<_>>())
        };
        Cifar10 {
            train: pick(all_train, &plan.train),
            val: pick(all_train, &plan.val),
            test: pick(test, &plan.test),
            norm: plan.norm,
        }
    }
}

/// Normalised f32 NCHW of the images at `idx` without augmentation (evaluation).
pub fn to_tensor_data(set: &ImageSet, idx: &[usize], norm: &Normalization) -> Vec<f32> {
    let plane = 32 * 32;
    let mut out = vec![0f32; idx.len() * IMAGE_BYTES];
    for (o, &i) in idx.iter().enumerate() {
        let img = set.image(i);
        let dst = &mut out[o * IMAGE_BYTES..(o + 1) * IMAGE_BYTES];
        for c in 0..3 {
            let (m, s) = (norm.mean[c], norm.std[c]);
            for k in 0..plane {
                dst[c * plane + k] = (img[c * plane + k] as f32 / 255.0 - m) / s;
            }
        }
    }
    out
}
