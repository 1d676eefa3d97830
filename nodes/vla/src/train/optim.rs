//! AdamW (torch's defaults: betas 0.9/0.999, eps 1e-8, decoupled weight decay 0.01) with
//! global-norm gradient clipping. Written here rather than using `candle_nn::AdamW` because
//! its moment estimates are private and a resumed run needs them.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::{Result, VlaError};

#[derive(Clone, Debug)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (None: no clipping, like finetune.py).
    pub max_grad_norm: Option<f64>,
    /// Learning-rate factors for tensors whose names start with a prefix (the first match
    /// wins); 0 freezes them. Why: a language model restarted on top of a trained vision
    /// tower sends large, random gradients into the tower at first, and a smaller rate there
    /// keeps what it learned.
    pub lr_scale: Vec<(String, f64)>,
}

impl AdamWConfig {
    /// The factor [`AdamWConfig::lr_scale`] gives the tensor `name` (1 without a match).
    pub fn scale(&self, name: &str) -> f64 {
        self.lr_scale.iter().find(|(p, _)| name.starts_with(p.as_str())).map_or(1.0, |(_, f)| *f)
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, max_grad_norm: Some(1.0), lr_scale: Vec::new() }
    }
}

pub struct AdamW {
    cfg: AdamWConfig,
    /// Update count so far (bias correction uses it).
    pub step: u64,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig) -> Self {
        Self { cfg, step: 0, m: HashMap::new(), v: HashMap::new() }
    }

    /// Counts a new step; returns the clipping factor for a gradient norm of `norm` and the
    /// step's bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ.
    fn next_step(&mut self, norm: f64) -> (f64, f64, f64) {
        let clip = match self.cfg.max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let t = self.step as i32;
        (clip, 1.0 - self.cfg.beta1.powi(t), 1.0 - self.cfg.beta2.powi(t))
    }

    /// One update of every variable that got a gradient; returns the gradient norm before
    /// clipping.
    pub fn step(&mut self, vars: &[(String, Var)], grads: &GradStore, lr: f64) -> Result<f64> {
        let present: Vec<(&String, &Var, &Tensor)> =
            vars.iter().filter_map(|(n, v)| grads.get(v.as_tensor()).map(|g| (n, v, g))).collect();
        #[cfg(feature = "cuda")]
        if crate::fused_train::enabled()
            && !present.is_empty()
            && present.iter().all(|(_, v, g)| v.device().is_cuda() && v.dtype() == DType::F32 && v.is_contiguous() && g.dtype() == DType::F32)
        {
            return self.step_fused(&present, lr);
        }
        // One read-back for the whole norm: a read per tensor would stall the GPU queue once
        // per tensor (118 times a step for the small model).
        let parts = present.iter().map(|(_, _, g)| g.to_dtype(DType::F64)?.sqr()?.sum_all()).collect::<candle_core::Result<Vec<_>>>()?;
        let norm = if parts.is_empty() { 0.0 } else { Tensor::stack(&parts, 0)?.sum_all()?.to_scalar::<f64>()?.sqrt() };
        let (clip, c1, c2) = self.next_step(norm);
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        for (name, var, g) in present {
            let lr = lr * self.cfg.scale(name);
            if lr == 0.0 {
                continue;
            }
            let g = if clip < 1.0 { (g * clip)? } else { g.clone() };
            let m = match self.m.get(name) {
                Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                None => (&g * (1.0 - b1))?,
            };
            let v = match self.v.get(name) {
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                None => (g.sqr()? * (1.0 - b2))?,
            };
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.cfg.eps)?)?;
            let p = var.as_tensor();
            let decayed = (p * (1.0 - lr * self.cfg.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?.detach())?;
            self.m.insert(name.clone(), m.detach());
            self.v.insert(name.clone(), v.detach());
        }
        Ok(norm)
    }

    /// [`AdamW::step`] on CUDA: the gradient norm from one small kernel per tensor, then one
    /// in-place kernel per tensor for the update (the composed update made about twenty
    /// kernels and tensors per parameter). Same arithmetic, in f32.
    #[cfg(feature = "cuda")]
    fn step_fused(&mut self, present: &[(&String, &Var, &Tensor)], lr: f64) -> Result<f64> {
        let gs: Vec<Tensor> = present.iter().map(|(_, _, g)| g.contiguous()).collect::<candle_core::Result<_>>()?;
        let norm = crate::fused_train::sum_of_squares(&gs.iter().collect::<Vec<_>>())?.sqrt();
        let (clip, c1, c2) = self.next_step(norm);
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        for ((name, var, _), g) in present.iter().zip(&gs) {
            let lr = lr * self.cfg.scale(name);
            if lr == 0.0 {
                continue;
            }
            let p = var.as_tensor();
            let m = match self.m.get(name.as_str()) {
                Some(m) => m.clone(),
                None => p.zeros_like()?,
            };
            let v = match self.v.get(name.as_str()) {
                Some(v) => v.clone(),
                None => p.zeros_like()?,
            };
            let h = crate::fused_train::AdamWStep {
                lr: lr as f32,
                beta1: b1 as f32,
                beta2: b2 as f32,
                c1: c1 as f32,
                c2: c2 as f32,
                eps: self.cfg.eps as f32,
                weight_decay: self.cfg.weight_decay as f32,
                clip: clip as f32,
            };
            crate::fused_train::adamw_step(p, &m, &v, g, h)?;
            self.m.insert((*name).clone(), m);
            self.v.insert((*name).clone(), v);
        }
        Ok(norm)
    }

    /// Moment tensors as `m.<name>` / `v.<name>` (saved next to the weights for `--resume`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (k, t) in &self.m {
            out.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            out.insert(format!("v.{k}"), t.clone());
        }
        out
    }

    pub fn restore(&mut self, state: &HashMap<String, Tensor>, step: u64, dev: &candle_core::Device) -> Result<()> {
        self.step = step;
        self.m.clear();
        self.v.clear();
        for (k, t) in state {
            let t = t.to_device(dev)?;
            match k.split_once('.') {
                Some(("m", n)) => self.m.insert(n.to_string(), t),
                Some(("v", n)) => self.v.insert(n.to_string(), t),
                _ => return Err(VlaError::Train(format!("unexpected optimizer tensor `{k}`"))),
            };
        }
        Ok(())
    }
}

/// Learning rate at `step` (0-based): linear warmup over `warmup` steps, then constant
/// (finetune.py uses a constant rate), or with `cosine_total` a cosine decay to a tenth of
/// `base` at that step: training from scratch settles far better with a decaying rate.
pub fn lr_at(base: f64, warmup: u64, step: u64, cosine_total: Option<u64>) -> f64 {
    if warmup > 0 && step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    match cosine_total {
        Some(total) if total > warmup => {
            let t = ((step - warmup) as f64 / (total - warmup) as f64).min(1.0);
            let floor = 0.1 * base;
            floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::{lr_at, AdamW, AdamWConfig};
    use candle_core::{Device, Tensor, Var};

    #[test]
    fn lr_scale_slows_or_freezes_tensors_by_prefix() {
        let dev = Device::Cpu;
        let vars: Vec<(String, Var)> = ["vision.w", "proj.w", "llm.w"]
            .iter()
            .map(|n| (n.to_string(), Var::from_tensor(&Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap()).unwrap()))
            .collect();
        let loss = vars.iter().map(|(_, v)| v.as_tensor().sum_all().unwrap()).reduce(|a, b| (a + b).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let cfg = AdamWConfig { weight_decay: 0.0, max_grad_norm: None, lr_scale: vec![("vision".into(), 0.0), ("proj".into(), 0.5)], ..Default::default() };
        let mut opt = AdamW::new(cfg);
        opt.step(&vars, &grads, 0.1).unwrap();
        let moved = |i: usize| vars[i].1.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert_eq!(moved(0), 0.0, "a factor of 0 freezes the tensor");
        // Adam's first step moves each weight by about the rate, against the gradient.
        assert!((moved(2) + 0.1).abs() < 1e-4, "{}", moved(2));
        assert!((moved(1) - moved(2) / 2.0).abs() < 1e-5, "{} vs {}", moved(1), moved(2));
    }

    #[test]
    fn warmup_then_constant_or_cosine() {
        assert_eq!(lr_at(1.0, 4, 0, None), 0.25);
        assert_eq!(lr_at(1.0, 4, 3, None), 1.0);
        assert_eq!(lr_at(1.0, 4, 1000, None), 1.0);
        // Cosine: full rate right after warmup, half-way between base and floor mid-run,
        // a tenth at (and past) the end.
        assert!((lr_at(1.0, 4, 4, Some(104)) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 4, 54, Some(104)) - 0.55).abs() < 1e-12);
        assert!((lr_at(1.0, 4, 104, Some(104)) - 0.1).abs() < 1e-12);
        assert!((lr_at(1.0, 4, 500, Some(104)) - 0.1).abs() < 1e-12);
        assert_eq!(lr_at(1.0, 0, 0, Some(0)), 1.0);
    }
}
