//! Architecture descriptions, independent of any backend: the flat list of layers ("units")
//! of a network, which the partition groups into sub-networks and from which parameter and
//! FLOP counts are derived analytically.

use crate::error::{EngineError, Result};
use crate::partition::Partition;

pub use super::unit::{Feat, UnitKind, UnitSpec, classifier_macs, classifier_params};

/// Which network family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    /// He et al. 2016 CIFAR ResNet with 6n+2 layers; `base` filters in stage 1 (16 standard).
    ResNet { n: usize, base: usize },
    /// VGG-16 with BatchNorm after each conv; `base` filters in block 1 (64 standard);
    /// dense layers have 64*base nodes (4096 standard).
    Vgg16 { base: usize },
}

/// A network: its units and its partition into sub-networks S1..SK.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetSpec {
    pub name: String,
    pub arch: Arch,
    pub units: Vec<UnitSpec>,
    pub partition: Partition,
    pub classes: usize,
}

impl NetSpec {
    /// Parses `resnet<6n+2>[-w<base>]` (e.g. resnet20, resnet8-w4) or `vgg16[-w<base>]`,
    /// with the default partition.
    pub fn parse(name: &str) -> Result<NetSpec> {
        let bad = || EngineError::BadNetName(name.to_string());
        let lower = name.trim().to_ascii_lowercase();
        let (stem, base) = match lower.split_once("-w") {
            Some((s, b)) => (s.to_string(), Some(b.parse::<usize>().map_err(|_| bad())?)),
            None => (lower.clone(), None),
        };
        if base == Some(0) {
            return Err(bad());
        }
        let arch = if let Some(d) = stem.strip_prefix("resnet") {
            let depth: usize = d.parse().map_err(|_| bad())?;
            if depth < 8 || !(depth - 2).is_multiple_of(6) {
                return Err(bad());
            }
            Arch::ResNet {
                n: (depth - 2) / 6,
                base: base.unwrap_or(16),
            }
        } else if stem == "vgg16" {
            Arch::Vgg16 {
                base: base.unwrap_or(64),
            }
        } else {
            return Err(bad());
        };
        Ok(NetSpec::new(&lower, arch))
    }

    /// The network of `arch` with the default partition.
    pub fn new(name: &str, arch: Arch) -> NetSpec {
        let units = build_units(arch);
        let partition = Partition::default_rule(&units);
        NetSpec {
            name: name.to_string(),
            arch,
            units,
            partition,
            classes: 10,
        }
    }

    /// Replaces the partition by one starting a sub-network at each unit index of `starts`.
    pub fn with_partition_starts(mut self, starts: &[usize]) -> Result<NetSpec> {
        self.partition = Partition::from_starts(&self.units, starts)?;
        Ok(self)
    }

    /// Number of sub-networks K.
    pub fn k(&self) -> usize {
        self.partition.groups.len()
    }

    /// Units of sub-network `s` (0-based).
    pub fn group_units(&self, s: usize) -> &[UnitSpec] {
        &self.units[self.partition.groups[s].clone()]
    }

    /// Activation shape after the first `k` sub-networks (input to the classifier).
    pub fn output_after(&self, k: usize) -> Feat {
        let end = self.partition.groups[k - 1].end;
        self.units[end - 1].output
    }

    /// Batch size of Table 1: 128 for ResNets, 32 for VGG.
    pub fn paper_batch_size(&self) -> usize {
        match self.arch {
            Arch::ResNet { .. } => 128,
            Arch::Vgg16 { .. } => 32,
        }
    }
}

fn conv_out(input: Feat, cout: usize, stride: usize) -> Feat {
    match input {
        Feat::Map { h, w, .. } => Feat::Map {
            c: cout,
            h: h.div_ceil(stride),
            w: w.div_ceil(stride),
        },
        Feat::Vec { .. } => unreachable!("conv after dense"),
    }
}

fn build_units(arch: Arch) -> Vec<UnitSpec> {
    let mut units = Vec::new();
    let mut cur = Feat::Map { c: 3, h: 32, w: 32 };
    let mut push = |kind: UnitKind, cur: &mut Feat| {
        let output = match kind {
            UnitKind::Conv { cout, stride, .. } | UnitKind::Block { cout, stride, .. } => {
                conv_out(*cur, cout, stride)
            }
            UnitKind::Pool => match *cur {
                Feat::Map { c, h, w } => Feat::Map {
                    c,
                    h: h / 2,
                    w: w / 2,
                },
                Feat::Vec { .. } => unreachable!("pool after dense"),
            },
            UnitKind::Dense { dout, .. } => Feat::Vec { n: dout },
        };
        units.push(UnitSpec {
            kind,
            input: *cur,
            output,
        });
        *cur = output;
    };
    match arch {
        Arch::ResNet { n, base } => {
            push(
                UnitKind::Conv {
                    cin: 3,
                    cout: base,
                    stride: 1,
                    bias: false,
                },
                &mut cur,
            );
            let mut cin = base;
            for stage in 0..3 {
                let cout = base << stage;
                for b in 0..n {
                    let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                    push(UnitKind::Block { cin, cout, stride }, &mut cur);
                    cin = cout;
                }
            }
        }
        Arch::Vgg16 { base } => {
            let blocks = [(1, 2), (2, 2), (4, 3), (8, 3), (8, 3)];
            let mut cin = 3;
            for (mult, convs) in blocks {
                for _ in 0..convs {
                    let cout = base * mult;
                    push(
                        UnitKind::Conv {
                            cin,
                            cout,
                            stride: 1,
                            bias: true,
                        },
                        &mut cur,
                    );
                    cin = cout;
                }
                push(UnitKind::Pool, &mut cur);
            }
            let hidden = 64 * base;
            let din = cur.numel();
            push(UnitKind::Dense { din, dout: hidden }, &mut cur);
            push(
                UnitKind::Dense {
                    din: hidden,
                    dout: hidden,
                },
                &mut cur,
            );
        }
    }
    units
}
