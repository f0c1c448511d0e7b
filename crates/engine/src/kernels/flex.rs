//! The kernels bound to burn Flex tensors: custom autodiff operations on `Autodiff<Flex>`
//! (burn-autodiff's `Backward` trait) and plain forward ops on `Flex`.

use super::batchnorm::{self, BnGeom, BnStats};
use super::conv::{self, ConvGeom};
use super::dense;
use super::profile::{Op, timed};
use crate::backend::cpu_device;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use rayon::prelude::*;

pub type Plain = crate::backend::CpuBackend;
pub type Ad = crate::backend::CpuTrainBackend;

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn tensor(v: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(t: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn conv_forward(
    g: &ConvGeom,
    x: &FlexTensor,
    w: &FlexTensor,
    b: Option<&FlexTensor>,
) -> FlexTensor {
    timed(Op::ConvForward, || {
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let b = b.map(FlexTensor::to_contiguous);
        let mut y = vec![0f32; g.n * g.out_len()];
        conv::forward(g, values(&x), values(&w), b.as_ref().map(values), &mut y);
        tensor(y, vec![g.n, g.cout, g.ho, g.wo])
    })
}

/// Inference convolution on plain Flex tensors.
pub fn conv2d(
    g: &ConvGeom,
    x: Tensor<Plain, 4>,
    w: Tensor<Plain, 4>,
    b: Option<Tensor<Plain, 1>>,
) -> Tensor<Plain, 4> {
    let b = b.map(primitive);
    wrap(conv_forward(g, &primitive(x), &primitive(w), b.as_ref()))
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Plain, 3> for ConvBackward {
    /// Input, weight, geometry.
    type State = (FlexTensor, FlexTensor, ConvGeom);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Plain>(&ops.node).to_contiguous();
        let (x, w, g) = ops.state;
        if let Some(node) = node_x {
            let dx = timed(Op::ConvBackwardInput, || {
                let w = w.to_contiguous();
                let mut dx = vec![0f32; g.n * g.in_len()];
                conv::backward_input(&g, values(&dy), values(&w), &mut dx);
                dx
            });
            grads.register::<Plain>(node.id, tensor(dx, vec![g.n, g.cin, g.h, g.w]));
        }
        if node_w.is_some() || node_b.is_some() {
            let (dw, db) = timed(Op::ConvBackwardWeight, || {
                conv::backward_weight(&g, values(&x.to_contiguous()), values(&dy))
            });
            if let Some(node) = node_w {
                grads.register::<Plain>(node.id, tensor(dw, vec![g.cout, g.cin, g.kh, g.kw]));
            }
            if let Some(node) = node_b {
                grads.register::<Plain>(node.id, tensor(db, vec![g.cout]));
            }
        }
    }
}

/// Training convolution: one autodiff node whose backward runs the two gradient kernels.
pub fn conv2d_ad(
    g: &ConvGeom,
    x: Tensor<Ad, 4>,
    w: Tensor<Ad, 4>,
    b: Option<Tensor<Ad, 1>>,
) -> Tensor<Ad, 4> {
    let has_bias = b.is_some();
    // Without a bias, an untracked zero vector stands in as the third parent (no gradient is
    // computed for it, and the forward skips it).
    let b = b.unwrap_or_else(|| Tensor::zeros([g.cout], &x.device()));
    let (x, w, b) = (primitive(x), primitive(w), primitive(b));
    let bias = has_bias.then_some(&b.primitive);
    let out = match ConvBackward
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = conv_forward(g, &x.primitive, &w.primitive, bias);
            prep.finish((x.primitive.clone(), w.primitive.clone(), *g), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(conv_forward(g, &x.primitive, &w.primitive, bias)),
    };
    wrap(out)
}

/// A dense layer's sizes: batch, inputs, outputs.
type DenseDims = (usize, usize, usize);

fn dense_forward(
    d: DenseDims,
    x: &FlexTensor,
    w: &FlexTensor,
    b: Option<&FlexTensor>,
) -> FlexTensor {
    timed(Op::DenseForward, || {
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let b = b.map(FlexTensor::to_contiguous);
        let (n, din, dout) = d;
        let y = dense::forward(n, din, dout, values(&x), values(&w), b.as_ref().map(values));
        tensor(y, vec![n, dout])
    })
}

/// Inference dense layer on plain Flex tensors.
pub fn linear(
    x: Tensor<Plain, 2>,
    w: Tensor<Plain, 2>,
    b: Option<Tensor<Plain, 1>>,
) -> Tensor<Plain, 2> {
    let d = (x.dims()[0], w.dims()[0], w.dims()[1]);
    let b = b.map(primitive);
    wrap(dense_forward(d, &primitive(x), &primitive(w), b.as_ref()))
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Plain, 3> for LinearBackward {
    /// Input, weight, sizes.
    type State = (FlexTensor, FlexTensor, DenseDims);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Plain>(&ops.node).to_contiguous();
        let (x, w, (n, din, dout)) = ops.state;
        if let Some(node) = node_x {
            let dx = timed(Op::DenseBackwardInput, || {
                dense::backward_input(n, din, dout, values(&dy), values(&w.to_contiguous()))
            });
            grads.register::<Plain>(node.id, tensor(dx, vec![n, din]));
        }
        if node_w.is_some() || node_b.is_some() {
            let (dw, db) = timed(Op::DenseBackwardWeight, || {
                dense::backward_weight(n, din, dout, values(&x.to_contiguous()), values(&dy))
            });
            if let Some(node) = node_w {
                grads.register::<Plain>(node.id, tensor(dw, vec![din, dout]));
            }
            if let Some(node) = node_b {
                grads.register::<Plain>(node.id, tensor(db, vec![dout]));
            }
        }
    }
}

/// Training dense layer: one autodiff node whose backward runs the two gradient kernels.
pub fn linear_ad(x: Tensor<Ad, 2>, w: Tensor<Ad, 2>, b: Option<Tensor<Ad, 1>>) -> Tensor<Ad, 2> {
    let d = (x.dims()[0], w.dims()[0], w.dims()[1]);
    let has_bias = b.is_some();
    // Without a bias, an untracked zero vector stands in as the third parent (as for conv2d_ad).
    let b = b.unwrap_or_else(|| Tensor::zeros([d.2], &x.device()));
    let (x, w, b) = (primitive(x), primitive(w), primitive(b));
    let bias = has_bias.then_some(&b.primitive);
    let out = match LinearBackward
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = dense_forward(d, &x.primitive, &w.primitive, bias);
            prep.finish((x.primitive.clone(), w.primitive.clone(), d), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(dense_forward(d, &x.primitive, &w.primitive, bias)),
    };
    wrap(out)
}

#[derive(Debug)]
struct BatchNormBackward;

#[derive(Debug, Clone)]
struct BnState {
    /// The input, contiguous.
    x: FlexTensor,
    /// The output, kept when ReLU was fused (its zeros are the mask).
    y_relu: Option<FlexTensor>,
    stats: BnStats,
    gamma: Vec<f32>,
    geom: BnGeom,
}

/// Parents: x, gamma, beta, residual (an untracked stand-in when there is none).
impl Backward<Plain, 4> for BatchNormBackward {
    type State = BnState;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta, node_res] = ops.parents;
        // Contiguous and, when nobody else holds it, uniquely owned: the kernel works in its
        // buffer (`storage_mut` copies it first otherwise).
        let mut dy = grads.consume::<Plain>(&ops.node).to_contiguous();
        let s = ops.state;
        let g = s.geom;
        let shape = vec![g.n, g.c, g.l];
        let mut dx = node_res.is_some().then(|| vec![0f32; g.len()]);
        let (dgamma, dbeta) = timed(Op::BatchNormBackward, || {
            // Both were stored contiguous by the forward.
            batchnorm::backward(
                &g,
                values(&s.x),
                s.y_relu.as_ref().map(values),
                dy.storage_mut::<f32>(),
                &s.stats,
                &s.gamma,
                dx.as_deref_mut(),
            )
        });
        // `dy` now holds dz, or dx when there is no residual.
        let (dx, dz) = match dx {
            Some(dx) => (tensor(dx, shape), Some(dy)),
            None => (dy, None),
        };
        if let Some(node) = node_x {
            grads.register::<Plain>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<Plain>(node.id, tensor(dgamma, vec![g.c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Plain>(node.id, tensor(dbeta, vec![g.c]));
        }
        if let (Some(node), Some(dz)) = (node_res, dz) {
            grads.register::<Plain>(node.id, dz);
        }
    }
}

/// Training-mode BatchNorm, then `+ residual` when given, then ReLU when `relu`, as one
/// autodiff node; also returns the batch statistics for the running averages.
pub fn batch_norm_train_ad(
    x: Tensor<Ad, 4>,
    gamma: Tensor<Ad, 1>,
    beta: Tensor<Ad, 1>,
    residual: Option<Tensor<Ad, 4>>,
    epsilon: f64,
    relu: bool,
) -> (Tensor<Ad, 4>, BnStats) {
    let [n, c, h, w] = x.dims();
    let geom = BnGeom { n, c, l: h * w };
    let has_residual = residual.is_some();
    // The kernels see [N, C, H*W]; the gradients of x and of the residual are registered
    // in that shape and reshaped back by the reshapes' own autodiff nodes. Without a
    // residual, an untracked scalar stands in as the fourth parent.
    let x = primitive(x.reshape([n, c, h * w]));
    let res = primitive(match residual {
        Some(r) => r.reshape([n, c, h * w]),
        None => Tensor::<Ad, 3>::zeros([1, 1, 1], &cpu_device()),
    });
    let (gamma, beta) = (primitive(gamma), primitive(beta));
    let (gv, bv) = (
        gamma.primitive.to_contiguous(),
        beta.primitive.to_contiguous(),
    );
    let (gv, bv) = (values(&gv).to_vec(), values(&bv).to_vec());
    let xc = x.primitive.to_contiguous();
    let rc = has_residual.then(|| res.primitive.to_contiguous());
    let (y, stats) = timed(Op::BatchNormForward, || {
        let stats = batchnorm::stats(&geom, values(&xc), epsilon);
        let (scale, shift) = batchnorm::scale_shift(&stats.mean, &stats.inv_std, &gv, &bv);
        let y = batchnorm::affine(
            &geom,
            values(&xc),
            &scale,
            &shift,
            rc.as_ref().map(values),
            relu,
        );
        (tensor(y, vec![n, c, h * w]), stats)
    });
    let out = match BatchNormBackward
        .prepare::<NoCheckpointing>([
            x.node.clone(),
            gamma.node.clone(),
            beta.node.clone(),
            res.node.clone(),
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = BnState {
                x: xc,
                y_relu: relu.then(|| y.clone()),
                stats: stats.clone(),
                gamma: gv,
                geom,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (wrap::<Ad, 3>(out).reshape([n, c, h, w]), stats)
}

/// Inference-mode BatchNorm (+ residual, + ReLU) with the running statistics, on plain Flex
/// tensors.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_infer(
    x: Tensor<Plain, 4>,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    residual: Option<Tensor<Plain, 4>>,
    epsilon: f64,
    relu: bool,
) -> Tensor<Plain, 4> {
    let [n, c, h, w] = x.dims();
    let geom = BnGeom { n, c, l: h * w };
    let inv_std: Vec<f32> = running_var
        .iter()
        .map(|v| (1.0 / (*v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let (scale, shift) = batchnorm::scale_shift(running_mean, &inv_std, gamma, beta);
    let x = primitive(x).to_contiguous();
    let r = residual.map(|r| primitive(r).to_contiguous());
    let y = batchnorm::affine(
        &geom,
        values(&x),
        &scale,
        &shift,
        r.as_ref().map(values),
        relu,
    );
    wrap(tensor(y, vec![n, c, h, w]))
}

#[derive(Debug)]
struct SumOfSquaresBackward;

impl Backward<Plain, 1> for SumOfSquaresBackward {
    /// The (flattened, contiguous) input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<Plain>(&ops.node).to_contiguous();
        let Some(node) = node else { return };
        let two_g = 2.0 * values(&g)[0];
        let w = ops.state;
        let dw: Vec<f32> = values(&w).par_iter().map(|w| w * two_g).collect();
        let n = dw.len();
        grads.register::<Plain>(node.id, tensor(dw, vec![n]));
    }
}

/// `sum(w^2)` as one autodiff node (see [`super::sum_of_squares`]). The sum runs over fixed
/// chunks in order, in f64: the same bits for any number of threads.
pub fn sum_of_squares_ad<const D: usize>(w: Tensor<Ad, D>) -> Tensor<Ad, 1> {
    let n = w.shape().num_elements();
    let w = primitive(w.reshape([n]));
    let wc = w.primitive.to_contiguous();
    let parts: Vec<f64> = values(&wc)
        .par_chunks(1 << 14)
        .map(|c| c.iter().map(|v| (v * v) as f64).sum())
        .collect();
    let s = tensor(vec![parts.iter().sum::<f64>() as f32], vec![1]);
    let out = match SumOfSquaresBackward
        .prepare::<NoCheckpointing>([w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(wc, s),
        OpsKind::UnTracked(prep) => prep.finish(s),
    };
    wrap(out)
}

/// RMSProp's state of one parameter as plain tensors: square average, momentum buffer.
pub type RmsState<B, const D: usize> = (Tensor<B, D>, Option<Tensor<B, D>>);

/// One fused RMSProp update on plain Flex tensors.
pub fn rmsprop_step<const D: usize>(
    c: super::rmsprop::Consts,
    param: Tensor<Plain, D>,
    grad: Tensor<Plain, D>,
    state: Option<RmsState<Plain, D>>,
) -> (Tensor<Plain, D>, RmsState<Plain, D>) {
    let dims = param.dims();
    let shape = dims.to_vec();
    // `to_contiguous` of a contiguous tensor shares its buffer; the original is dropped at
    // the end of each statement, so a tensor nobody else holds comes out unique.
    let mut p = primitive(param).to_contiguous();
    let g = primitive(grad).to_contiguous();
    let (sa, buf) = match state {
        Some((sa, buf)) => (
            Some(primitive(sa).to_contiguous()),
            buf.map(|b| primitive(b).to_contiguous()),
        ),
        None => (None, None),
    };
    let state = |sa: FlexTensor, buf: Option<FlexTensor>| (wrap(sa), buf.map(wrap));
    // After the first step, with every tensor uniquely owned: update in place.
    let in_place = p.is_unique()
        && sa.as_ref().is_some_and(FlexTensor::is_unique)
        && buf.as_ref().is_none_or(FlexTensor::is_unique)
        && buf.is_some() == (c.momentum > 0.0);
    if in_place {
        let (mut sa, mut buf) = (sa.expect("checked above"), buf);
        timed(Op::Optimizer, || {
            super::rmsprop::step_in_place(
                c,
                p.storage_mut::<f32>(),
                values(&g),
                sa.storage_mut::<f32>(),
                buf.as_mut().map(|b| b.storage_mut::<f32>()),
            )
        });
        return (wrap(p), state(sa, buf));
    }
    let (np, nsa, nbuf) = timed(Op::Optimizer, || {
        super::rmsprop::step(
            c,
            values(&p),
            values(&g),
            sa.as_ref().map(values),
            buf.as_ref().map(values),
        )
    });
    (
        wrap(tensor(np, shape.clone())),
        state(tensor(nsa, shape.clone()), nbuf.map(|b| tensor(b, shape))),
    )
}
