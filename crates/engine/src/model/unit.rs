//! The layers ("units") a network is a flat list of, with their shapes and
//! analytic parameter and FLOP counts; independent of any backend.

/// Shape of the activations between units (per image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Feat {
    /// Feature map: channels, height, width.
    Map { c: usize, h: usize, w: usize },
    /// Flat vector (after the first dense layer).
    Vec { n: usize },
}

impl Feat {
    pub fn numel(&self) -> usize {
        match *self {
            Feat::Map { c, h, w } => c * h * w,
            Feat::Vec { n } => n,
        }
    }
    /// Channels or nodes: what the classifier's dense layer sees after global pooling.
    pub fn width(&self) -> usize {
        match *self {
            Feat::Map { c, .. } => c,
            Feat::Vec { n } => n,
        }
    }
}

/// One layer (or residual block) of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UnitKind {
    /// 3x3 convolution (padding 1) + BatchNorm + ReLU.
    Conv {
        cin: usize,
        cout: usize,
        stride: usize,
        bias: bool,
    },
    /// ResNet basic block: two 3x3 conv+BN, option-A identity shortcut, ReLU after the sum.
    Block {
        cin: usize,
        cout: usize,
        stride: usize,
    },
    /// 2x2 max pooling, stride 2.
    Pool,
    /// Dense layer + ReLU (flattens a feature map first).
    Dense { din: usize, dout: usize },
}

/// A unit with the activation shapes around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitSpec {
    pub kind: UnitKind,
    pub input: Feat,
    pub output: Feat,
}

impl UnitSpec {
    /// Whether the unit has trainable weights (a sub-network needs at least one such unit).
    pub fn has_weights(&self) -> bool {
        !matches!(self.kind, UnitKind::Pool)
    }

    /// Trainable parameters (BatchNorm gamma and beta included, running statistics not).
    pub fn params(&self) -> u64 {
        let p = match self.kind {
            UnitKind::Conv {
                cin, cout, bias, ..
            } => cin * cout * 9 + if bias { cout } else { 0 } + 2 * cout,
            UnitKind::Block { cin, cout, .. } => cin * cout * 9 + cout * cout * 9 + 4 * cout,
            UnitKind::Pool => 0,
            UnitKind::Dense { din, dout } => din * dout + dout,
        };
        p as u64
    }

    /// BatchNorm running mean + variance entries (counted by burn's `num_params`).
    pub fn running_stats(&self) -> u64 {
        (match self.kind {
            UnitKind::Conv { cout, .. } => 2 * cout,
            UnitKind::Block { cout, .. } => 4 * cout,
            _ => 0,
        }) as u64
    }

    /// Multiply-accumulates of the conv and dense layers, per image.
    pub fn macs(&self) -> u64 {
        let hw = match self.output {
            Feat::Map { h, w, .. } => h * w,
            Feat::Vec { .. } => 1,
        };
        (match self.kind {
            UnitKind::Conv { cin, cout, .. } => cin * cout * 9 * hw,
            UnitKind::Block { cin, cout, .. } => (cin * cout * 9 + cout * cout * 9) * hw,
            UnitKind::Pool => 0,
            UnitKind::Dense { din, dout } => din * dout,
        }) as u64
    }

    /// Output width (filters or nodes) used by the default partition rule.
    pub fn width(&self) -> usize {
        self.output.width()
    }

    pub fn describe(&self) -> String {
        match self.kind {
            UnitKind::Conv {
                cin,
                cout,
                stride,
                bias,
            } => format!(
                "conv3x3 {cin}->{cout}{}{} + BN + ReLU",
                if stride > 1 { " /2" } else { "" },
                if bias { " (bias)" } else { "" }
            ),
            UnitKind::Block { cin, cout, stride } => format!(
                "basic block {cin}->{cout}{} (2x conv3x3+BN, option-A shortcut)",
                if stride > 1 { " /2" } else { "" }
            ),
            UnitKind::Pool => "maxpool 2x2 /2".to_string(),
            UnitKind::Dense { din, dout } => format!("dense {din}->{dout} + ReLU"),
        }
    }
}

/// The classifier block that follows the deepest active sub-network: global average pooling
/// (identity on a flat vector) then a dense layer to the 10 classes, no activation.
pub fn classifier_params(input: Feat, classes: usize) -> u64 {
    (input.width() * classes + classes) as u64
}

pub fn classifier_macs(input: Feat, classes: usize) -> u64 {
    (input.width() * classes) as u64
}
