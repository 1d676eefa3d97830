//! Differentiable CUDA kernels for training (src/kernels/fused.cu, "Training kernels").
//!
//! candle 0.11's fused LayerNorm, RMSNorm and softmax have no backward pass, so training
//! composed each from about ten element-wise ops, and their backward from about twenty-five
//! more, most of them broadcasts on candle's slow strided path. AdamW cost about twenty ops per
//! tensor, and the gradient norm a single-block f64 sum per tensor. A CUPTI profile of a
//! small-168 step (batch 128, H200; `scripts/gpu-kprof.sh train`) had these at over half of the
//! step's 132 ms of kernel time. Here each is one kernel forward and one backward (custom ops
//! with a backward pass), and AdamW one kernel per tensor.
//!
//! Only on CUDA, bf16, for the shapes the kernels handle; the CPU and everything else keep the
//! composed ops, which remain the reference (`vela vla check-fused` compares the two, values
//! and gradients). RoPE joined them later (its backward is the inverse rotation).
//! `VELA_TRAIN_KERNELS=0` switches them off, for measuring.

#[cfg(feature = "cuda")]
pub use imp::*;

/// Whether training may use these kernels: CUDA builds, unless `VELA_TRAIN_KERNELS=0`.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(feature = "cuda") && *ON.get_or_init(|| std::env::var("VELA_TRAIN_KERNELS").map_or(true, |v| v != "0"))
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
    use half::bf16;

    use crate::fused::{cpu_only, launch, ptr_of, Arg};

    /// Widest row the norm kernels take (32 values per lane in registers).
    const MAX_NORM_DIM: usize = 1024;
    /// Warps per CUDA block of the row kernels.
    const WARPS: usize = 8;

    fn is_bf16_cuda(ts: &[&Tensor]) -> bool {
        ts.iter().all(|t| t.device().is_cuda() && t.dtype() == DType::BF16)
    }

    /// Whether [`norm`] takes `x` (`[.., D]`) with weight (and bias) `[D]`.
    pub fn norm_applies(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
        let d = x.dim(D::Minus1).unwrap_or(0);
        super::enabled() && is_bf16_cuda(&[x, w]) && b.is_none_or(|b| is_bf16_cuda(&[b])) && d > 0 && d <= MAX_NORM_DIM && (WARPS * 2 * d * 4) <= 48 * 1024
    }

    /// Whether [`softmax_last_dim`] takes `x`.
    pub fn softmax_applies(x: &Tensor) -> bool {
        super::enabled() && is_bf16_cuda(&[x]) && x.dim(D::Minus1).is_ok_and(|n| n > 0)
    }

    /// Address of the first element of a contiguous storage region.
    fn addr<T: candle_core::cuda_backend::CudaDType>(s: &CudaStorage, l: &Layout) -> candle_core::Result<u64> {
        let (o1, _) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("training kernel: input not contiguous".into()))?;
        let sl = T::as_cuda_slice(s)?;
        let (p, _sync) = sl.device_ptr(sl.stream());
        Ok(p + (o1 * std::mem::size_of::<T>()) as u64)
    }

    fn rows_grid(rows: usize) -> LaunchConfig {
        LaunchConfig { grid_dim: (rows.div_ceil(WARPS) as u32, 1, 1), block_dim: (32 * WARPS as u32, 1, 1), shared_mem_bytes: 0 }
    }

    /// The shape of a row-wise op's input, its last axis and its number of rows.
    fn rows_of(l: &Layout) -> (Shape, usize, usize) {
        let shape = l.shape().clone();
        let d = *shape.dims().last().unwrap_or(&0);
        let rows = shape.elem_count() / d.max(1);
        (shape, d, rows)
    }

    /// Launches `kernel` with the pointer arguments `inputs`, then a fresh bf16 output of
    /// `n` elements (which the kernel must write in full), then `rest`; returns the output.
    fn launch_out(s: &CudaStorage, n: usize, kernel: &str, cfg: LaunchConfig, inputs: &[u64], rest: &[Arg]) -> candle_core::Result<CudaStorage> {
        let dev = s.device().clone();
        // SAFETY: the kernel writes all n elements (the callers' contract).
        let out = unsafe { dev.alloc::<bf16>(n)? };
        let (o, sync) = out.device_ptr(out.stream());
        let mut args: Vec<Arg> = inputs.iter().map(|&p| Arg::Ptr(p)).collect();
        args.push(Arg::Ptr(o));
        args.extend_from_slice(rest);
        launch(&dev, kernel, cfg, &args)?;
        drop(sync);
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }

    /// LayerNorm (with bias) or RMSNorm (without), forward.
    #[derive(Clone, Copy)]
    struct Norm {
        eps: f32,
    }

    impl Norm {
        fn fwd(&self, x: (&CudaStorage, &Layout), w: (&CudaStorage, &Layout), b: Option<(&CudaStorage, &Layout)>) -> candle_core::Result<(CudaStorage, Shape)> {
            let (shape, d, rows) = rows_of(x.1);
            let b_addr = match b {
                Some(b) => addr::<bf16>(b.0, b.1)?,
                None => 0,
            };
            let inputs = [addr::<bf16>(x.0, x.1)?, addr::<bf16>(w.0, w.1)?, b_addr];
            let rest = [Arg::I32(rows as i32), Arg::I32(d as i32), Arg::F32(self.eps), Arg::I32(b.is_some() as i32)];
            Ok((launch_out(x.0, rows * d, "vela_norm_fwd_bf16", rows_grid(rows), &inputs, &rest)?, shape))
        }
    }

    impl CustomOp2 for Norm {
        fn name(&self) -> &'static str {
            "vela-rmsnorm-train"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only("vela-rmsnorm-train")
        }
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            self.fwd((x, xl), (w, wl), None)
        }
        fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
            let (dx, dw, _) = norm_backward(x, w, dy, self.eps, false)?;
            Ok((Some(dx), Some(dw)))
        }
    }

    impl CustomOp3 for Norm {
        fn name(&self) -> &'static str {
            "vela-layernorm-train"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only("vela-layernorm-train")
        }
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout, b: &CudaStorage, bl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            self.fwd((x, xl), (w, wl), Some((b, bl)))
        }
        fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let (dx, dw, db) = norm_backward(x, w, dy, self.eps, true)?;
            Ok((Some(dx), Some(dw), Some(db)))
        }
    }

    /// The backward kernel: dx as its output, the per-block partial sums of dw and db written
    /// into `partial` (`[blocks, 2, D]` f32, made by the caller).
    struct NormBwd {
        w: Tensor,
        partial: Tensor,
        eps: f32,
        centered: bool,
        rows_per_block: usize,
    }

    impl CustomOp2 for NormBwd {
        fn name(&self) -> &'static str {
            "vela-norm-bwd"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, dy: &CudaStorage, dyl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (shape, d, rows) = rows_of(xl);
            let blocks = self.partial.dim(0)?;
            let (w, partial) = (ptr_of::<bf16>(&self.w)?, ptr_of::<f32>(&self.partial)?);
            let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (32 * WARPS as u32, 1, 1), shared_mem_bytes: (WARPS * 2 * d * 4) as u32 };
            let inputs = [addr::<bf16>(x, xl)?, w.addr, addr::<bf16>(dy, dyl)?];
            let rest = [
                Arg::Ptr(partial.addr),
                Arg::I32(rows as i32),
                Arg::I32(d as i32),
                Arg::F32(self.eps),
                Arg::I32(self.centered as i32),
                Arg::I32(self.rows_per_block as i32),
            ];
            let out = launch_out(x, rows * d, "vela_norm_bwd_bf16", cfg, &inputs, &rest)?;
            drop((w, partial));
            Ok((out, shape))
        }
    }

    fn norm_backward(x: &Tensor, w: &Tensor, dy: &Tensor, eps: f32, centered: bool) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let d = x.dim(D::Minus1)?;
        let rows = x.elem_count() / d.max(1);
        // About 64 rows a block: enough blocks to fill the card, few partial rows to sum.
        let rows_per_block = 64;
        let blocks = rows.div_ceil(rows_per_block).max(1);
        let partial = Tensor::zeros((blocks, 2 * d), DType::F32, x.device())?;
        let (x, dy, w) = (x.contiguous()?, dy.contiguous()?, w.contiguous()?);
        let op = NormBwd { w: w.clone(), partial: partial.clone(), eps, centered, rows_per_block };
        let dx = x.apply_op2_no_bwd(&dy, &op)?;
        let sums = partial.sum(0)?;
        let dw = sums.narrow(0, 0, d)?.to_dtype(w.dtype())?;
        let db = sums.narrow(0, d, d)?.to_dtype(w.dtype())?;
        Ok((dx, dw, db))
    }

    /// LayerNorm (`b` given) or RMSNorm over the last axis, differentiable, in one kernel each
    /// way. Callers check [`norm_applies`].
    pub fn norm(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f32) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        match b {
            Some(b) => x.apply_op3(w, b, Norm { eps }),
            None => x.apply_op2(w, Norm { eps }),
        }
    }

    struct Softmax;

    impl CustomOp1 for Softmax {
        fn name(&self) -> &'static str {
            "vela-softmax-train"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (shape, n, rows) = rows_of(l);
            let rest = [Arg::I32(rows as i32), Arg::I32(n as i32)];
            Ok((launch_out(s, rows * n, "vela_softmax_fwd_bf16", rows_grid(rows), &[addr::<bf16>(s, l)?], &rest)?, shape))
        }
        fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
            Ok(Some(y.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBwd)?))
        }
    }

    struct SoftmaxBwd;

    impl CustomOp2 for SoftmaxBwd {
        fn name(&self) -> &'static str {
            "vela-softmax-bwd"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, y: &CudaStorage, yl: &Layout, dy: &CudaStorage, dyl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (shape, n, rows) = rows_of(yl);
            let inputs = [addr::<bf16>(y, yl)?, addr::<bf16>(dy, dyl)?];
            let rest = [Arg::I32(rows as i32), Arg::I32(n as i32)];
            Ok((launch_out(y, rows * n, "vela_softmax_bwd_bf16", rows_grid(rows), &inputs, &rest)?, shape))
        }
    }

    /// Softmax over the last axis, differentiable. Callers check [`softmax_applies`].
    pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(Softmax)
    }

    /// Whether [`rope`] takes `x` (`[B, H, T, D]`) with tables `[T, D/2]`.
    pub fn rope_applies(x: &Tensor, cos: &Tensor, sin: &Tensor) -> bool {
        super::enabled()
            && is_bf16_cuda(&[x, cos, sin])
            && x.rank() == 4
            && x.dim(D::Minus1).is_ok_and(|d| d % 2 == 0)
            && cos.dims() == [x.dims()[2], x.dims()[3] / 2]
            && cos.shape() == sin.shape()
    }

    /// Rotary embedding (rotate-half layout); `sign` −1 rotates back, which is its backward.
    struct Rope {
        cos: Tensor,
        sin: Tensor,
        sign: f32,
    }

    impl CustomOp1 for Rope {
        fn name(&self) -> &'static str {
            "vela-rope-train"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only("vela-rope-train")
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (shape, d, rows) = rows_of(l);
            let t = shape.dims4()?.2;
            let (c, sn) = (ptr_of::<bf16>(&self.cos)?, ptr_of::<bf16>(&self.sin)?);
            let n = rows * d / 2;
            let cfg = LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let rest = [Arg::I32(rows as i32), Arg::I32(t as i32), Arg::I32(d as i32), Arg::F32(self.sign)];
            let out = launch_out(s, rows * d, "vela_rope_train_bf16", cfg, &[addr::<bf16>(s, l)?, c.addr, sn.addr], &rest)?;
            drop((c, sn));
            Ok((out, shape))
        }
        fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
            let back = Rope { cos: self.cos.clone(), sin: self.sin.clone(), sign: -self.sign };
            Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&back)?))
        }
    }

    /// Rotary embedding of `x` (`[B, H, T, D]`), differentiable in `x` (the tables are
    /// constants). Callers check [`rope_applies`].
    pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(Rope { cos: cos.contiguous()?, sin: sin.contiguous()?, sign: 1.0 })
    }

    fn grid_stride(n: usize) -> LaunchConfig {
        LaunchConfig { grid_dim: (n.div_ceil(256 * 4).clamp(1, 1024) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
    }

    /// Σ g² over every tensor (f32, contiguous, on one CUDA device), in f64, with one small
    /// kernel per tensor and one read-back.
    pub fn sum_of_squares(gs: &[&Tensor]) -> candle_core::Result<f64> {
        let Some(first) = gs.first() else { return Ok(0.0) };
        let cfgs: Vec<LaunchConfig> = gs.iter().map(|g| grid_stride(g.elem_count())).collect();
        let total: usize = cfgs.iter().map(|c| c.grid_dim.0 as usize).sum();
        let partial = Tensor::zeros(total, DType::F64, first.device())?;
        let dev = match first.device() {
            candle_core::Device::Cuda(d) => d.clone(),
            _ => candle_core::bail!("sum_of_squares: not a CUDA tensor"),
        };
        let base = ptr_of::<f64>(&partial)?;
        let mut offset = 0u64;
        for (g, cfg) in gs.iter().zip(&cfgs) {
            if g.dtype() != DType::F32 {
                candle_core::bail!("sum_of_squares: f32 gradients expected, got {:?}", g.dtype());
            }
            let g = g.contiguous()?;
            let gp = ptr_of::<f32>(&g)?;
            launch(&dev, "vela_sumsq_f32", *cfg, &[Arg::Ptr(gp.addr), Arg::I32(g.elem_count() as i32), Arg::Ptr(base.addr + offset * 8)])?;
            offset += cfg.grid_dim.0 as u64;
        }
        drop(base);
        partial.sum_all()?.to_scalar::<f64>()
    }

    /// The hyper-parameters of one [`adamw_step`].
    #[derive(Clone, Copy, Debug)]
    pub struct AdamWStep {
        pub lr: f32,
        pub beta1: f32,
        pub beta2: f32,
        /// Bias corrections 1 − βᵗ.
        pub c1: f32,
        pub c2: f32,
        pub eps: f32,
        pub weight_decay: f32,
        /// Gradient scale from global-norm clipping (1 without).
        pub clip: f32,
    }

    /// One AdamW update of `p` with gradient `g`, moments `m` and `v` updated in place (all f32,
    /// contiguous, same shape). In place is what the kernel is for: the composed update
    /// allocated and wrote about twenty tensors per parameter.
    pub fn adamw_step(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, h: AdamWStep) -> candle_core::Result<()> {
        for t in [p, m, v, g] {
            if t.dtype() != DType::F32 || !t.is_contiguous() || t.shape() != p.shape() || !t.device().is_cuda() {
                candle_core::bail!("adamw_step: contiguous f32 CUDA tensors of one shape expected");
            }
        }
        let dev = match p.device() {
            candle_core::Device::Cuda(d) => d.clone(),
            _ => unreachable!("checked above"),
        };
        let n = p.elem_count();
        let (pp, mp, vp, gp) = (ptr_of::<f32>(p)?, ptr_of::<f32>(m)?, ptr_of::<f32>(v)?, ptr_of::<f32>(g)?);
        let args = [
            Arg::Ptr(pp.addr),
            Arg::Ptr(mp.addr),
            Arg::Ptr(vp.addr),
            Arg::Ptr(gp.addr),
            Arg::I32(n as i32),
            Arg::F32(h.lr),
            Arg::F32(h.beta1),
            Arg::F32(h.beta2),
            Arg::F32(h.c1),
            Arg::F32(h.c2),
            Arg::F32(h.eps),
            Arg::F32(h.weight_decay),
            Arg::F32(h.clip),
        ];
        launch(&dev, "vela_adamw_f32", grid_stride(n), &args)?;
        Ok(())
    }

    /// The training kernels against candle's composed ops in f32 (values and gradients), and
    /// AdamW against its formula, at the small model's shapes (batch 16).
    pub fn self_check(dev: &candle_core::Device) -> candle_core::Result<Vec<crate::fused::Check>> {
        use crate::fused::compare;
        use candle_core::Var;
        let mut out = Vec::new();
        let rnd = |shape: &[usize], scale: f64| -> candle_core::Result<Tensor> { (Tensor::randn(0f32, 1.0, shape, dev)? * scale)?.to_dtype(DType::BF16) };
        // The gradients of Σ y·r for y = f(inputs), both ways: the kernel in bf16, and the
        // composed ops on f32 copies of the same values.
        type Grads = (Tensor, Vec<Tensor>);
        let run = |inputs: &[Tensor], r: &Tensor, f32_ref: bool, f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>| -> candle_core::Result<Grads> {
            let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(&if f32_ref { t.to_dtype(DType::F32)? } else { t.clone() })).collect::<candle_core::Result<_>>()?;
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let y = f(&ts)?;
            let grads = (y.to_dtype(DType::F32)? * r)?.sum_all()?.backward()?;
            let gs = ts.iter().map(|t| grads.get(t).cloned().ok_or_else(|| candle_core::Error::Msg("no gradient".into()))).collect::<candle_core::Result<_>>()?;
            Ok((y, gs))
        };
        for (label, rows, d, centered) in [("layernorm", 16 * 149, 192usize, true), ("rmsnorm", 16 * 189, 256, false)] {
            let x = (rnd(&[rows, d], 1.0)? + 0.5)?;
            let w = (rnd(&[d], 0.2)? + 1.0)?;
            let b = rnd(&[d], 0.1)?;
            let r = Tensor::randn(0f32, 1.0, (rows, d), dev)?;
            let inputs = if centered { vec![x, w, b] } else { vec![x, w] };
            let fused = run(&inputs, &r, false, &|t| norm(&t[0], &t[1], t.get(2), 1e-6))?;
            let reference = run(&inputs, &r, true, &|t| {
                if centered { candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-6) } else { candle_nn::ops::rms_norm_slow(&t[0], &t[1], 1e-6) }
            })?;
            let shape = format!("{rows}x{d}");
            out.push(compare(if centered { "layernorm fwd" } else { "rmsnorm fwd" }, shape.clone(), &fused.0, &reference.0)?);
            for (i, part) in ["dx", "dw", "db"].iter().enumerate().take(inputs.len()) {
                let name: &'static str = match (label, *part) {
                    ("layernorm", "dx") => "layernorm bwd dx",
                    ("layernorm", "dw") => "layernorm bwd dw",
                    ("layernorm", _) => "layernorm bwd db",
                    (_, "dx") => "rmsnorm bwd dx",
                    _ => "rmsnorm bwd dw",
                };
                out.push(compare(name, shape.clone(), &fused.1[i], &reference.1[i])?);
            }
        }
        for (rows, n) in [(16 * 3 * 149, 149usize), (16 * 4 * 189, 189)] {
            let x = rnd(&[rows, n], 3.0)?;
            let r = Tensor::randn(0f32, 1.0, (rows, n), dev)?;
            let fused = run(&[x.clone()], &r, false, &|t| softmax_last_dim(&t[0]))?;
            let reference = run(&[x], &r, true, &|t| candle_nn::ops::softmax(&t[0], D::Minus1))?;
            out.push(compare("softmax fwd", format!("{rows}x{n}"), &fused.0, &reference.0)?);
            out.push(compare("softmax bwd", format!("{rows}x{n}"), &fused.1[0], &reference.1[0])?);
        }
        // Rotary embedding at the small model's LLM shapes (4 heads of 64, 189 positions).
        {
            let (b, h, t, d) = (16usize, 4usize, 189usize, 64usize);
            let x = rnd(&[b, h, t, d], 1.0)?;
            let freqs = Tensor::arange(0f32, t as f32, dev)?.reshape((t, 1))?.broadcast_mul(&Tensor::rand(0f32, 1.0, (1, d / 2), dev)?)?;
            let (cos, sin) = (freqs.cos()?, freqs.sin()?);
            let (cos_b, sin_b) = (cos.to_dtype(DType::BF16)?, sin.to_dtype(DType::BF16)?);
            let r = Tensor::randn(0f32, 1.0, (b, h, t, d), dev)?;
            let fused = run(&[x.clone()], &r, false, &|v| rope(&v[0], &cos_b, &sin_b))?;
            let (cos_r, sin_r) = (cos_b.to_dtype(DType::F32)?, sin_b.to_dtype(DType::F32)?);
            let reference = run(&[x], &r, true, &|v| candle_nn::rotary_emb::rope_slow(&v[0], &cos_r, &sin_r))?;
            out.push(compare("rope fwd", format!("{b}x{h}x{t}x{d}"), &fused.0, &reference.0)?);
            out.push(compare("rope bwd", format!("{b}x{h}x{t}x{d}"), &fused.1[0], &reference.1[0])?);
        }
        // AdamW: a second step (non-zero moments), clipped, against the formula.
        let n = 8_200_000usize;
        let f = |scale: f64| -> candle_core::Result<Tensor> { Tensor::randn(0f32, 1.0, n, dev)? * scale };
        let (p, m, v, g) = (f(0.05)?, f(1e-3)?, f(1e-3)?.sqr()?, f(1e-2)?);
        let h = AdamWStep { lr: 3e-4, beta1: 0.9, beta2: 0.999, c1: 1.0 - 0.9f32.powi(2), c2: 1.0 - 0.999f32.powi(2), eps: 1e-8, weight_decay: 0.01, clip: 0.5 };
        let gc = (&g * h.clip as f64)?;
        let m_ref = ((&m * h.beta1 as f64)? + (&gc * (1.0 - h.beta1 as f64))?)?;
        let v_ref = ((&v * h.beta2 as f64)? + (gc.sqr()? * (1.0 - h.beta2 as f64))?)?;
        let upd = ((&m_ref / h.c1 as f64)? / ((&v_ref / h.c2 as f64)?.sqrt()? + h.eps as f64)?)?;
        let p_ref = ((&p * (1.0 - h.lr as f64 * h.weight_decay as f64))? - (upd * h.lr as f64)?)?;
        let ss_ref = g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let ss = sum_of_squares(&[&g])?;
        let (p1, m1, v1) = (p.copy()?, m.copy()?, v.copy()?);
        adamw_step(&p1, &m1, &v1, &g, h)?;
        out.push(compare("adamw (param)", format!("{n}"), &(&p1 - &p)?, &(&p_ref - &p)?)?);
        out.push(compare("adamw (m)", format!("{n}"), &m1, &m_ref)?);
        out.push(compare("adamw (v)", format!("{n}"), &v1, &v_ref)?);
        let one = |x: f64| Tensor::new(&[x as f32], dev);
        out.push(compare("sum of squares", format!("{n}"), &one(ss)?, &one(ss_ref)?)?);
        Ok(out)
    }
}
