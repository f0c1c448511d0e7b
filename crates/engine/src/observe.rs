//! Progress of training as it happens, for whoever shows it (the CLI's progress
//! bar, a stage's log). The engine only reports; an observer is installed by the
//! program, so the engine stays free of any display code.

use std::sync::{Arc, RwLock};

use super::record::{EpochRecord, PhaseKind};

/// Where an epoch stands after a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchProgress {
    /// 1-based global epoch number (the one this batch belongs to).
    pub epoch: usize,
    pub phase: PhaseKind,
    pub active: usize,
    pub images_done: usize,
    pub images_total: usize,
    /// Running means over the epoch so far.
    pub loss: f64,
    pub acc: f64,
    pub images_per_sec: f64,
}

/// Where an epoch leaves its phase, for a progress line's rate and time left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseProgress {
    /// Images trained in the epoch.
    pub images: usize,
    /// Epochs of the phase done, this one included.
    pub epochs: usize,
    /// The most epochs the phase can run: its cap or fixed length, and what the epoch budget
    /// leaves.
    pub limit: usize,
    /// The phase runs exactly `limit` epochs (look-ahead; a last phase that runs to its
    /// budget). Otherwise the termination rule may end it sooner.
    pub exact: bool,
}

impl PhaseProgress {
    /// Training images per second of wall time over the epoch (its validation included).
    pub fn images_per_sec(&self, r: &EpochRecord) -> f64 {
        self.images as f64 / r.seconds.max(1e-9)
    }

    /// Seconds left in the phase at this epoch's pace: exact or an upper bound
    /// ([`PhaseProgress::exact`]).
    pub fn seconds_left(&self, r: &EpochRecord) -> f64 {
        self.limit.saturating_sub(self.epochs) as f64 * r.seconds
    }

    /// `312 img/s, phase epoch 5 of <= 24, ETA <= 9m12s` (`of 3`, `ETA 2m00s` when exact).
    pub fn describe(&self, r: &EpochRecord) -> String {
        let at_most = if self.exact { "" } else { "<= " };
        let left = self.seconds_left(r).round() as u64;
        format!(
            "{:.0} img/s, phase epoch {} of {at_most}{}, ETA {at_most}{}m{:02}s",
            self.images_per_sec(r),
            self.epochs,
            self.limit,
            left / 60,
            left % 60
        )
    }
}

pub trait Observer: Send + Sync {
    fn batch(&self, p: &BatchProgress);
    fn epoch(&self, r: &EpochRecord, p: &PhaseProgress);
}

static OBSERVER: RwLock<Option<Arc<dyn Observer>>> = RwLock::new(None);

/// Installs (or with `None` removes) the process-wide observer.
pub fn set_observer(o: Option<Arc<dyn Observer>>) {
    *OBSERVER.write().unwrap_or_else(|e| e.into_inner()) = o;
}

fn current() -> Option<Arc<dyn Observer>> {
    OBSERVER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

pub(crate) fn batch(p: &BatchProgress) {
    if let Some(o) = current() {
        o.batch(p);
    }
}

pub(crate) fn epoch(r: &EpochRecord, p: &PhaseProgress) {
    if let Some(o) = current() {
        o.epoch(r, p);
    }
}
