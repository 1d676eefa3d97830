//! Inference kernels for the CPU: GELU (erf), softmax and SiLU·up in f32 with vectorised `erf`
//! and `exp`.
//!
//! candle's CPU backend computes these element by element through scalar libm calls (`erff`,
//! `expf`), which took a fifth of the shipped small model's time per action on the 2-core box.
//! The approximations here are branch-free so that the compiler vectorises them (AVX2/FMA or
//! AVX-512 where the CPU has it, chosen at run time): `erf` is a rational function fitted for
//! this file (max error 3e-7 in f32), `exp` a range reduction to [-ln2/2, ln2/2] and a degree-7
//! polynomial (relative error about 2e-7). Training tracks gradients and never takes this path.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

/// Whether the fast CPU kernels apply to `ts`: f32 on the CPU, outside autograd, and not
/// switched off with `VELA_CPU_OPS=0` (candle's own kernels then run, for measuring).
fn applies(ts: &[&Tensor]) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VELA_CPU_OPS").map_or(true, |v| v != "0"))
        && ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

// erf(x) ≈ x·P(x²)/Q(x²) on |x| ≤ 4 (erf(4) = 1 − 1.5e-8), fitted by least squares on
// [0, 4] and refined on the maximum error.
const ERF_P: [f32; 6] = [1.128_379, 0.192_498_19, 0.053_006_195, 0.003_852_631_9, 0.000_286_329_28, 2.025_371_7e-6];
const ERF_Q: [f32; 6] = [1.0, 0.503_928_96, 0.114_957_45, 0.015_140_362, 0.001_182_907_8, 3.791_602_6e-5];

#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let s = x * x;
    let p = ((((ERF_P[5] * s + ERF_P[4]) * s + ERF_P[3]) * s + ERF_P[2]) * s + ERF_P[1]) * s + ERF_P[0];
    let q = ((((ERF_Q[5] * s + ERF_Q[4]) * s + ERF_Q[3]) * s + ERF_Q[2]) * s + ERF_Q[1]) * s + ERF_Q[0];
    (x * p / q).clamp(-1.0, 1.0)
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// e^x for x ≤ 88.7; 0 below -87.3 (so masked scores of -inf give exactly 0).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer in the low bits
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.clamp(-87.3, 88.7);
    let t = xc * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Taylor to r^7: the truncation is below f32's rounding for |r| ≤ ln2/2.
    let p = ((((((r * (1.0 / 5040.0) + 1.0 / 720.0) * r + 1.0 / 120.0) * r + 1.0 / 24.0) * r + 1.0 / 6.0) * r + 0.5) * r + 1.0) * r + 1.0;
    let e = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let scale = f32::from_bits(((e + 127) << 23) as u32);
    if x < -87.3 { 0.0 } else { p * scale }
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[inline(always)]
fn gelu_slice(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = gelu(v);
    }
}

#[inline(always)]
fn silu_mul_slice(g: &[f32], u: &[f32], y: &mut [f32]) {
    for ((o, &a), &b) in y.iter_mut().zip(g).zip(u) {
        *o = silu(a) * b;
    }
}

/// One row: max, exp of the differences, normalise. Eight lanes of partial max and sum so the
/// reductions vectorise too.
#[inline(always)]
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let mut m8 = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            m8[i] = if c[i] > m8[i] { c[i] } else { m8[i] };
        }
    }
    let mut m = m8.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for &v in tail {
        m = if v > m { v } else { m };
    }
    if m == f32::NEG_INFINITY {
        // A fully masked row (candle gives NaN there): nothing to attend to, so zeros.
        y.fill(0.0);
        return;
    }
    for (o, &v) in y.iter_mut().zip(x) {
        *o = exp(v - m);
    }
    let mut s8 = [0f32; 8];
    let chunks = y.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            s8[i] += c[i];
        }
    }
    let s = s8.iter().sum::<f32>() + tail.iter().sum::<f32>();
    let inv = 1.0 / s;
    for o in y.iter_mut() {
        *o *= inv;
    }
}

/// Runs `$body` compiled for AVX-512, AVX2+FMA, or the baseline, whichever the CPU has.
macro_rules! dispatch {
    ($name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features v4 was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatch!(gelu_any(x: &[f32], y: &mut [f32]) => gelu_slice);
dispatch!(silu_mul_any(g: &[f32], u: &[f32], y: &mut [f32]) => silu_mul_slice);
dispatch!(softmax_row_any(x: &[f32], y: &mut [f32]) => softmax_row);

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "vela-cpu-gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        gelu_any(x, &mut y);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "vela-cpu-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let n = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            softmax_row_any(xr, yr);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "vela-cpu-silu-mul"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("{}: {:?} against {:?}", self.name(), l1.shape(), l2.shape());
        }
        let (g, u) = (contiguous(s1, l1, self.name())?, contiguous(s2, l2, self.name())?);
        let mut y = vec![0f32; g.len()];
        silu_mul_any(g, u, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// `gelu_erf(x)`, on the vectorised kernel where it applies.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if !applies(&[x]) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1_no_bwd(&GeluErf)
}

/// Softmax over the last dimension on the vectorised kernel, or `None` where it does not apply.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !applies(&[x]) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&Softmax)?))
}

/// `silu(g) * u`, on the vectorised kernel where it applies.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    if !applies(&[g, u]) || g.shape() != u.shape() {
        return candle_nn::ops::silu(g)? * u;
    }
    g.contiguous()?.apply_op2_no_bwd(&u.contiguous()?, &SiluMul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn erf64(x: f64) -> f64 {
        // Abramowitz–Stegun 7.1.28 is too coarse for a reference; integrate instead.
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_exp_are_accurate() {
        let mut worst = 0f64;
        for i in -600..=600 {
            let x = i as f64 / 100.0;
            worst = worst.max((erf(x as f32) as f64 - erf64(x)).abs());
        }
        assert!(worst < 5e-7, "erf max error {worst}");
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 5e-7, "exp max relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
    }

    #[test]
    fn kernels_match_candle() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // Odd sizes: the vector loops' tails are covered too.
        let x = (Tensor::randn(0f32, 3.0, (5, 37), &dev)? * 1.0)?;
        let max_diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> { (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>() };
        assert!(max_diff(&gelu_erf(&x)?, &x.gelu_erf()?)? < 3e-6);
        let want = candle_nn::ops::softmax_last_dim(&x)?;
        assert!(max_diff(&softmax_last_dim(&x)?.unwrap(), &want)? < 1e-6);
        // With a causal mask's -inf.
        let mask = Tensor::from_vec((0..5 * 37).map(|i| if i % 37 > i / 37 + 30 { f32::NEG_INFINITY } else { 0.0 }).collect(), (5, 37), &dev)?;
        let xm = x.broadcast_add(&mask)?;
        assert!(max_diff(&softmax_last_dim(&xm)?.unwrap(), &candle_nn::ops::softmax_last_dim(&xm)?)? < 1e-6);
        let u = Tensor::randn(0f32, 1.0, (5, 37), &dev)?;
        assert!(max_diff(&silu_mul(&x, &u)?, &(candle_nn::ops::silu(&x)? * &u)?)? < 3e-6);
        // Non-contiguous inputs are made contiguous first.
        let xt = x.t()?;
        assert!(max_diff(&gelu_erf(&xt)?, &xt.gelu_erf()?)? < 3e-6);
        Ok(())
    }
}
