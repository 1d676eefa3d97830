//! Normalisation, softmax and RoPE that pick candle's fused kernels at inference and the
//! composed (differentiable) forms when a tensor is part of an autograd graph.
//!
//! candle 0.11's fused `softmax_last_dim`, `rms_norm`, `layer_norm` and `rope` have no backward
//! pass: gradients silently stop at them. Training builds the model from variables, so
//! `track_op()` is true there and the slow paths run; inference never tracks ops and keeps
//! the fast kernels. The two paths compute the same function. On CUDA in bf16, training takes
//! differentiable kernels of our own instead ([`crate::fused_train`]).

use candle_core::{Tensor, D};
use candle_nn::LayerNorm;

fn tracked(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if !tracked(&[x]) {
        if let Some(y) = crate::cpu_ops::softmax_last_dim(x)? {
            return Ok(y);
        }
        return candle_nn::ops::softmax_last_dim(x);
    }
    #[cfg(feature = "cuda")]
    if crate::fused_train::softmax_applies(x) {
        return crate::fused_train::softmax_last_dim(x);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if tracked(&[x, weight]) {
        #[cfg(feature = "cuda")]
        if crate::fused_train::norm_applies(x, weight, None) {
            return crate::fused_train::norm(x, weight, None, eps);
        }
        candle_nn::ops::rms_norm_slow(x, weight, eps)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps)
    }
}

/// candle's `LayerNorm` (fused kernel) plus its eps, so the differentiable path can be taken.
#[derive(Clone, Debug)]
pub struct Ln {
    inner: LayerNorm,
    eps: f64,
}

impl Ln {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { inner: LayerNorm::new(weight, bias, eps), eps }
    }
}

impl candle_core::Module for Ln {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let w = self.inner.weight();
        match self.inner.bias() {
            #[cfg(feature = "cuda")]
            Some(b) if tracked(&[x, w, b]) && crate::fused_train::norm_applies(x, w, Some(b)) => crate::fused_train::norm(x, w, Some(b), self.eps as f32),
            Some(b) if tracked(&[x, w, b]) => candle_nn::ops::layer_norm_slow(x, w, b, self.eps as f32),
            _ => self.inner.forward(x),
        }
    }
}

pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    if !tracked(&[&x]) {
        return candle_nn::rotary_emb::rope(&x, cos, sin);
    }
    #[cfg(feature = "cuda")]
    if crate::fused_train::rope_applies(&x, cos, sin) {
        return crate::fused_train::rope(&x, cos, sin);
    }
    candle_nn::rotary_emb::rope_slow(&x, cos, sin)
}
