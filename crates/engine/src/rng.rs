//! Deterministic random streams.
//!
//! Every random decision (initialisation of a sub-network, the shuffle and the augmentation of
//! an epoch, the data split) draws from its own ChaCha8 stream whose key is derived from the
//! run seed and a tag. Nothing carries RNG state from one epoch to the next, so a run resumed
//! from a checkpoint (or split into separately executed phases) draws exactly the same numbers
//! as an uninterrupted run: the only "RNG state" to persist is the epoch counter.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A ChaCha8 stream keyed by `seed` and a list of tags (e.g. `[TAG_EPOCH, epoch]`).
pub fn stream(seed: u64, tags: &[u64]) -> ChaCha8Rng {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"incrpipe-engine-rng");
    hasher.update(&seed.to_le_bytes());
    for t in tags {
        hasher.update(&t.to_le_bytes());
    }
    ChaCha8Rng::from_seed(*hasher.finalize().as_bytes())
}

pub const TAG_SPLIT: u64 = 1;
pub const TAG_INIT: u64 = 2;
pub const TAG_SHUFFLE: u64 = 3;
pub const TAG_AUGMENT: u64 = 4;

/// Standard normal sample (Box-Muller); the distribution of He initialisation.
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - u keeps the argument of ln in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// In-place Fisher-Yates shuffle (own implementation so the order never depends on the
/// version of `rand`'s slice helpers).
pub fn shuffle<T>(rng: &mut ChaCha8Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}
