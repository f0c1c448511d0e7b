//! burn modules of the networks and their seeded He initialisation.

use super::spec::{Feat, NetSpec, UnitKind, UnitSpec};
use crate::kernels;
use crate::rng;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand_chacha::ChaCha8Rng;

/// Activations between units: a feature map or, after the first dense layer, a flat vector.
#[derive(Debug, Clone)]
pub enum Act<B: Backend> {
    Map(Tensor<B, 4>),
    Flat(Tensor<B, 2>),
}

impl<B: Backend> Act<B> {
    fn flat(self) -> Tensor<B, 2> {
        match self {
            Act::Flat(t) => t,
            Act::Map(t) => t.flatten(1, 3),
        }
    }
    fn map(self) -> Tensor<B, 4> {
        match self {
            Act::Map(t) => t,
            Act::Flat(_) => panic!("a convolution cannot follow a dense layer"),
        }
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> Act<B> {
    /// Lifts an activation computed on the inner backend into the autodiff graph as a leaf
    /// (no gradient flows back into whatever produced it).
    pub fn from_inner(a: Act<B::InnerBackend>) -> Act<B> {
        match a {
            Act::Map(t) => Act::Map(Tensor::from_inner(t)),
            Act::Flat(t) => Act::Flat(Tensor::from_inner(t)),
        }
    }
}

/// He normal with fan_in (Keras `he_normal` without truncation): std = sqrt(2 / fan_in).
fn he_normal(r: &mut ChaCha8Rng, n: usize, fan_in: usize) -> Vec<f32> {
    let std = (2.0 / fan_in as f64).sqrt();
    (0..n).map(|_| (rng::normal(r) * std) as f32).collect()
}

fn conv3x3<B: Backend>(
    r: &mut ChaCha8Rng,
    cin: usize,
    cout: usize,
    stride: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    let mut conv = Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(bias)
        .with_initializer(Initializer::Zeros)
        .init(device);
    let w = he_normal(r, cout * cin * 9, cin * 9);
    conv.weight = Param::from_data(TensorData::new(w, [cout, cin, 3, 3]), device);
    if bias {
        conv.bias = Some(Param::from_data(
            TensorData::new(vec![0f32; cout], [cout]),
            device,
        ));
    }
    conv
}

fn batch_norm<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
    // burn defaults (momentum 0.1, epsilon 1e-5), see docs/deviations.md.
    BatchNormConfig::new(c).init(device)
}

fn dense<B: Backend>(r: &mut ChaCha8Rng, din: usize, dout: usize, device: &B::Device) -> Linear<B> {
    let mut lin = LinearConfig::new(din, dout)
        .with_initializer(Initializer::Zeros)
        .init(device);
    // Row layout: weight is [d_input, d_output].
    lin.weight = Param::from_data(
        TensorData::new(he_normal(r, din * dout, din), [din, dout]),
        device,
    );
    lin.bias = Some(Param::from_data(
        TensorData::new(vec![0f32; dout], [dout]),
        device,
    ));
    lin
}

/// BatchNorm of a feature map, then ReLU when `relu`: one fused kernel on the CPU backend
/// (crate::kernels), burn-nn's `BatchNorm` elsewhere.
fn bn_forward<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>, relu: bool) -> Tensor<B, 4> {
    match kernels::batch_norm(bn, x, relu) {
        Ok(y) => y,
        Err(x) if relu => burn::tensor::activation::relu(bn.forward(x)),
        Err(x) => bn.forward(x),
    }
}

/// 3x3 conv + BatchNorm + ReLU.
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    pub conv: Conv2d<B>,
    pub bn: BatchNorm<B>,
}

impl<B: Backend> ConvBn<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        bn_forward(&self.bn, kernels::conv2d(&self.conv, x), true)
    }
}

/// ResNet basic block with the option-A shortcut of He et al. 2016: identity, or for a
/// stride-2 block a stride-2 subsampling followed by zero channels appended (no parameters).
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    pub conv1: Conv2d<B>,
    pub bn1: BatchNorm<B>,
    pub conv2: Conv2d<B>,
    pub bn2: BatchNorm<B>,
    pub stride: usize,
    pub pad_channels: usize,
}

impl<B: Backend> BasicBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = bn_forward(&self.bn1, kernels::conv2d(&self.conv1, x.clone()), true);
        let y = kernels::conv2d(&self.conv2, y);
        let mut sc = if self.stride > 1 {
            // A 1x1 average pool with stride 2 picks every other pixel: subsampling.
            burn::tensor::module::avg_pool2d(
                x,
                [1, 1],
                [self.stride, self.stride],
                [0, 0],
                true,
                false,
            )
        } else {
            x
        };
        if self.pad_channels > 0 {
            let [n, _, h, w] = sc.dims();
            let zeros = Tensor::zeros([n, self.pad_channels, h, w], &sc.device());
            sc = Tensor::cat(vec![sc, zeros], 1);
        }
        // relu(bn2(y) + shortcut): one fused kernel on the CPU backend.
        match kernels::batch_norm_add_relu(&self.bn2, y, sc) {
            Ok(out) => out,
            Err((y, sc)) => burn::tensor::activation::relu(self.bn2.forward(y) + sc),
        }
    }
}

/// Dense layer + ReLU.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    pub linear: Linear<B>,
}

/// One layer or block.
// Units are built once per network and moved rarely; the size gap between variants is
// irrelevant, and burn's Module derive does not support boxed fields.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Unit<B: Backend> {
    Conv(ConvBn<B>),
    Block(BasicBlock<B>),
    Pool(MaxPool2d),
    Dense(Dense<B>),
}

impl<B: Backend> Unit<B> {
    pub fn init(spec: &UnitSpec, r: &mut ChaCha8Rng, device: &B::Device) -> Unit<B> {
        match spec.kind {
            UnitKind::Conv {
                cin,
                cout,
                stride,
                bias,
            } => Unit::Conv(ConvBn {
                conv: conv3x3(r, cin, cout, stride, bias, device),
                bn: batch_norm(cout, device),
            }),
            UnitKind::Block { cin, cout, stride } => Unit::Block(BasicBlock {
                conv1: conv3x3(r, cin, cout, stride, false, device),
                bn1: batch_norm(cout, device),
                conv2: conv3x3(r, cout, cout, 1, false, device),
                bn2: batch_norm(cout, device),
                stride,
                pad_channels: cout - cin,
            }),
            UnitKind::Pool => Unit::Pool(MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init()),
            UnitKind::Dense { din, dout } => Unit::Dense(Dense {
                linear: dense(r, din, dout, device),
            }),
        }
    }

    pub fn forward(&self, x: Act<B>) -> Act<B> {
        match self {
            Unit::Conv(c) => Act::Map(c.forward(x.map())),
            Unit::Block(b) => Act::Map(b.forward(x.map())),
            Unit::Pool(p) => Act::Map(p.forward(x.map())),
            Unit::Dense(d) => Act::Flat(burn::tensor::activation::relu(kernels::linear(
                &d.linear,
                x.flat(),
            ))),
        }
    }

    /// Sum of squares of the conv and dense kernels (the L2 term; not BatchNorm, not biases).
    fn kernel_sq_sum(&self) -> Option<Tensor<B, 1>> {
        let sq4 = |w: &Param<Tensor<B, 4>>| kernels::sum_of_squares(w.val());
        match self {
            Unit::Conv(c) => Some(sq4(&c.conv.weight)),
            Unit::Block(b) => Some(sq4(&b.conv1.weight) + sq4(&b.conv2.weight)),
            Unit::Pool(_) => None,
            Unit::Dense(d) => Some(kernels::sum_of_squares(d.linear.weight.val())),
        }
    }
}

/// A sub-network S_k: consecutive units.
#[derive(Module, Debug)]
pub struct SubNet<B: Backend> {
    pub units: Vec<Unit<B>>,
}

impl<B: Backend> SubNet<B> {
    /// Sub-network `s` (0-based) of `spec`, He-initialised from the stream (seed, INIT, s).
    pub fn init(spec: &NetSpec, s: usize, seed: u64, device: &B::Device) -> SubNet<B> {
        let mut r = rng::stream(seed, &[rng::TAG_INIT, s as u64]);
        SubNet {
            units: spec
                .group_units(s)
                .iter()
                .map(|u| Unit::init(u, &mut r, device))
                .collect(),
        }
    }

    pub fn forward(&self, x: Act<B>) -> Act<B> {
        self.units.iter().fold(x, |a, u| u.forward(a))
    }

    fn kernel_sq_sum(&self) -> Option<Tensor<B, 1>> {
        self.units
            .iter()
            .filter_map(|u| u.kernel_sq_sum())
            .reduce(|a, b| a + b)
    }
}

/// Global average pooling (identity on a flat vector) + dense layer to the classes.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    pub fc: Linear<B>,
}

impl<B: Backend> Classifier<B> {
    /// The classifier for a network with `k` active sub-networks, from the stream
    /// (seed, INIT, 1000 + k): a fresh one each time the network grows.
    pub fn init(spec: &NetSpec, k: usize, seed: u64, device: &B::Device) -> Classifier<B> {
        let mut r = rng::stream(seed, &[rng::TAG_INIT, 1000 + k as u64]);
        let width = spec.output_after(k).width();
        Classifier {
            fc: dense(&mut r, width, spec.classes, device),
        }
    }

    pub fn forward(&self, x: Act<B>) -> Tensor<B, 2> {
        let pooled = match x {
            Act::Map(t) => t.mean_dim(3).mean_dim(2).flatten(1, 3),
            Act::Flat(t) => t,
        };
        kernels::linear(&self.fc, pooled)
    }
}

/// A network with k active sub-networks S1..Sk followed by the classifier.
#[derive(Module, Debug)]
pub struct Net<B: Backend> {
    pub subnets: Vec<SubNet<B>>,
    pub classifier: Classifier<B>,
}

impl<B: Backend> Net<B> {
    /// The network with the first `k` sub-networks of `spec` and its classifier.
    pub fn init(spec: &NetSpec, k: usize, seed: u64, device: &B::Device) -> Net<B> {
        assert!(k >= 1 && k <= spec.k(), "k = {k} out of 1..={}", spec.k());
        Net {
            subnets: (0..k)
                .map(|s| SubNet::init(spec, s, seed, device))
                .collect(),
            classifier: Classifier::init(spec, k, seed, device),
        }
    }

    /// Number of active sub-networks.
    pub fn k(&self) -> usize {
        self.subnets.len()
    }

    /// Inserts S_{k+1} (He-initialised) and replaces the classifier by a fresh one sized for it.
    pub fn grow(mut self, spec: &NetSpec, seed: u64, device: &B::Device) -> Net<B> {
        let k = self.k();
        assert!(
            k < spec.k(),
            "all {} sub-networks are already active",
            spec.k()
        );
        self.subnets.push(SubNet::init(spec, k, seed, device));
        self.classifier = Classifier::init(spec, k + 1, seed, device);
        self
    }

    pub fn forward_act(&self, x: Act<B>) -> Tensor<B, 2> {
        let a = self.subnets.iter().fold(x, |a, s| s.forward(a));
        self.classifier.forward(a)
    }

    /// Logits for a batch of NCHW images.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_act(Act::Map(x))
    }

    /// Sum of squares of every conv and dense kernel, classifier included.
    pub fn kernel_sq_sum(&self) -> Tensor<B, 1> {
        let c = self.classifier.fc.weight.val().square().sum();
        self.subnets
            .iter()
            .filter_map(|s| s.kernel_sq_sum())
            .fold(c, |a, b| a + b)
    }
}

/// Shape check helper for tests and `describe`: the activation after k sub-networks.
pub fn feat_after(spec: &NetSpec, k: usize) -> Feat {
    spec.output_after(k)
}
