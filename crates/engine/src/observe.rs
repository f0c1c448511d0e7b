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

pub trait Observer: Send + Sync {
    fn batch(&self, p: &BatchProgress);
    fn epoch(&self, r: &EpochRecord);
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

pub(crate) fn epoch(r: &EpochRecord) {
    if let Some(o) = current() {
        o.epoch(r);
    }
}
