//! Partition of a network's units into sub-networks S1..SK.
//!
//! Default rule (paper, Section 4): consecutive layers with the same number of filters (conv)
//! or output nodes (dense) form one sub-network; a pooling layer ends the sub-network it
//! follows. A sub-network must contain at least one layer with weights. For the CIFAR ResNets
//! the first conv has the width of stage 1 and joins it (K = 3); for VGG-16 the rule gives
//! 64x2 | 128x2 | 256x3 | 512x3 | 512x3 | dense 4096x2 (K = 6).

use crate::error::{EngineError, Result};
use crate::model::unit::{UnitKind, UnitSpec};
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    /// Unit index ranges of S1..SK, contiguous and covering all units.
    pub groups: Vec<Range<usize>>,
}

impl Partition {
    pub fn default_rule(units: &[UnitSpec]) -> Partition {
        let mut starts = vec![0];
        let mut width = None;
        let mut after_pool = false;
        for (i, u) in units.iter().enumerate() {
            if matches!(u.kind, UnitKind::Pool) {
                after_pool = true;
                continue;
            }
            let w = u.width();
            if i > 0 && (after_pool || width != Some(w)) {
                starts.push(i);
            }
            width = Some(w);
            after_pool = false;
        }
        Partition::from_starts(units, &starts).expect("default rule yields a valid partition")
    }

    /// A partition whose sub-networks start at the unit indices `starts` (the first must be 0).
    pub fn from_starts(units: &[UnitSpec], starts: &[usize]) -> Result<Partition> {
        let bad = |m: String| Err(EngineError::BadPartition(m));
        if starts.first() != Some(&0) {
            return bad(format!(
                "the first sub-network must start at unit 0, got {starts:?}"
            ));
        }
        if starts.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!("starts must increase strictly: {starts:?}"));
        }
        if *starts.last().unwrap() >= units.len() {
            return bad(format!(
                "start {} is past the last unit ({})",
                starts.last().unwrap(),
                units.len() - 1
            ));
        }
        let mut groups = Vec::new();
        for (j, &s) in starts.iter().enumerate() {
            let e = starts.get(j + 1).copied().unwrap_or(units.len());
            if !units[s..e].iter().any(|u| u.has_weights()) {
                return bad(format!(
                    "sub-network S{} (units {s}..{e}) has no layer with weights",
                    j + 1
                ));
            }
            groups.push(s..e);
        }
        Ok(Partition { groups })
    }

    pub fn starts(&self) -> Vec<usize> {
        self.groups.iter().map(|g| g.start).collect()
    }
}

/// Parses a comma-separated list of unit indices, e.g. `0,7,13`.
pub fn parse_starts(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| EngineError::BadPartition(format!("not a unit index: {t:?}")))
        })
        .collect()
}
