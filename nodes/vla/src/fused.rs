//! Fused CUDA kernels for the Llama decoder (src/kernels/fused.cu).
//!
//! Replayed as CUDA graphs, a decode step costs the HBM traffic of its weights plus about
//! 2–3 µs of GPU time per kernel, however small the kernel. candle's generic ops spend about
//! twenty kernels per layer; four fused ones bring that to nine:
//! - rotary embedding of q and k read straight out of the fused qkv projection, with k and v
//!   written into the preallocated KV cache (was: three copies, two rotations, two cache writes);
//! - attention of one new position over the cache (was: two matmuls and a softmax);
//! - `silu(gate) * up` out of the fused gate/up projection (was: two strided element-wise ops);
//! - residual add + RMSNorm (was: two ops).
//!
//! A fifth, a bf16 matrix-vector product, replaces cuBLAS for the one-row matmuls of decoding:
//! cuBLAS streamed the 7B weights at about 2.2 TB/s of the H100's 3.0.
//!
//! The prompt (prefill) has a causal softmax that applies the mask itself, over keys padded to
//! a multiple of 8 so that cuBLAS keeps its aligned kernels, and Linear biases get one
//! contiguous kernel instead of candle's strided broadcast add.
//!
//! They run only on CUDA in bf16 with batch 1 and a preallocated cache (the replayed plan);
//! everything else, the CPU and training included, keeps candle's ops.

#[cfg(feature = "cuda")]
pub use imp::*;

/// Per-op GPU times of the fused decoder, for finding where a decode step's time goes: while
/// switched on (on this thread), every op of [`crate::llama::Llama`]'s fused path waits for the
/// device before and after it runs. Never on during CUDA graph capture (waiting is illegal
/// there); `OpenVla::profile_decode` runs a plan eagerly for it.
pub mod profile {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::time::Instant;

    thread_local! {
        static TABLE: RefCell<Option<BTreeMap<&'static str, (f64, usize)>>> = const { RefCell::new(None) };
    }

    pub fn start() {
        TABLE.with(|t| *t.borrow_mut() = Some(BTreeMap::new()));
    }

    /// Stops recording and returns `(op, total ms, calls)`.
    pub fn finish() -> Vec<(&'static str, f64, usize)> {
        TABLE.with(|t| t.borrow_mut().take()).unwrap_or_default().into_iter().map(|(k, (ms, n))| (k, ms, n)).collect()
    }

    pub fn timed<T, E: From<candle_core::Error>>(dev: &candle_core::Device, op: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        if !TABLE.with(|t| t.borrow().is_some()) {
            return f();
        }
        dev.synchronize()?;
        let t0 = Instant::now();
        let out = f()?;
        dev.synchronize()?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        TABLE.with(|t| {
            if let Some(m) = t.borrow_mut().as_mut() {
                let e = m.entry(op).or_insert((0.0, 0));
                e.0 += ms;
                e.1 += 1;
            }
        });
        Ok(out)
    }
}

/// Whether the decoder may use the fused kernels: CUDA builds, unless `VELA_FUSED_KERNELS=0`
/// (for measuring what they save).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(feature = "cuda") && *ON.get_or_init(|| std::env::var("VELA_FUSED_KERNELS").map_or(true, |v| v != "0"))
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorage, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CustomOp1, DType, Layout, Shape, Storage, Tensor};
    use half::bf16;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
    const MODULE: &str = "vela_fused";

    /// Device address (bytes) of a contiguous bf16 tensor's first element, and the guard that
    /// must outlive the launch.
    pub(crate) struct Ptr<'a> {
        pub(crate) addr: u64,
        _storage: candle_core::StorageRef<'a>,
    }

    fn ptr(t: &Tensor) -> candle_core::Result<Ptr<'_>> {
        ptr_of::<bf16>(t)
    }

    /// [`ptr`] for any element type.
    pub(crate) fn ptr_of<T: candle_core::cuda_backend::CudaDType>(t: &Tensor) -> candle_core::Result<Ptr<'_>> {
        let (storage, layout) = t.storage_and_layout();
        let (o1, _) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("fused kernel: input not contiguous".into()))?;
        let addr = match &*storage {
            Storage::Cuda(cs) => {
                let s = T::as_cuda_slice(cs)?;
                let (p, _sync) = s.device_ptr(s.stream());
                p + (o1 * std::mem::size_of::<T>()) as u64
            }
            _ => candle_core::bail!("fused kernel: tensor not on CUDA"),
        };
        Ok(Ptr { addr, _storage: storage })
    }

    fn check_bf16(ts: &[&Tensor]) -> candle_core::Result<()> {
        for t in ts {
            if t.dtype() != DType::BF16 || !t.is_contiguous() {
                candle_core::bail!("fused kernel: needs contiguous bf16, got {:?} {:?}", t.dtype(), t.shape());
            }
        }
        Ok(())
    }

    fn src_addr(s: &CudaStorage, l: &Layout) -> candle_core::Result<u64> {
        let (o1, _) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("fused kernel: input not contiguous".into()))?;
        let sl = s.as_cuda_slice::<bf16>()?;
        let (p, _sync) = sl.device_ptr(sl.stream());
        Ok(p + (o1 * 2) as u64)
    }

    /// A kernel argument, owned here so the launch builder can borrow it.
    #[derive(Clone, Copy)]
    pub(crate) enum Arg {
        Ptr(u64),
        I32(i32),
        F32(f32),
    }

    pub(crate) fn launch(dev: &CudaDevice, name: &str, cfg: LaunchConfig, args: &[Arg]) -> candle_core::Result<()> {
        let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let mut b = f.builder();
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(i) => b.arg(i),
                Arg::F32(x) => b.arg(x),
            };
        }
        // SAFETY: every pointer argument addresses a live bf16 buffer of the size the kernel
        // indexes (checked by the callers), and the guards keeping them alive outlive the launch.
        unsafe { b.launch(cfg) }.w()?;
        Ok(())
    }

    pub(crate) fn cpu_only(name: &str) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{name} is a CUDA kernel")
    }

    struct RopeKv<'a> {
        tables: [&'a Tensor; 4],
        k_cache: &'a Tensor,
        v_cache: &'a Tensor,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        start: usize,
    }

    impl CustomOp1 for RopeKv<'_> {
        fn name(&self) -> &'static str {
            "vela-rope-kv"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (b, t, width) = l.shape().dims3()?;
            let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
            if b != 1 || width != (h + 2 * kvh) * d {
                candle_core::bail!("vela-rope-kv: qkv {:?} for {h}+2x{kvh} heads of {d}", l.shape());
            }
            let cap = self.k_cache.dim(2)?;
            if self.start + t > cap || self.tables[0].dim(0)? < self.start + t {
                candle_core::bail!("vela-rope-kv: positions {}..{} beyond the cache ({cap}) or tables", self.start, self.start + t);
            }
            let dev = s.device().clone();
            let qkv = src_addr(s, l)?;
            let [cq, sq, ck, sk] = self.tables;
            let (cq, sq, ck, sk) = (ptr(cq)?, ptr(sq)?, ptr(ck)?, ptr(sk)?);
            let (kc, vc) = (ptr(self.k_cache)?, ptr(self.v_cache)?);
            // SAFETY: written in full by the kernel before anything reads it.
            let out = unsafe { dev.alloc::<bf16>(h * t * d)? };
            let (q, _sync) = out.device_ptr(out.stream());
            let cfg = LaunchConfig { grid_dim: (t as u32, (h + kvh) as u32, 1), block_dim: ((d / 2) as u32, 1, 1), shared_mem_bytes: 0 };
            let mut args: Vec<Arg> = [qkv, cq.addr, sq.addr, ck.addr, sk.addr, q, kc.addr, vc.addr].map(Arg::Ptr).into();
            args.extend([t, h, kvh, d, cap, self.start].map(|i| Arg::I32(i as i32)));
            launch(&dev, "vela_rope_kv_bf16", cfg, &args)?;
            drop(_sync);
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((1, h, t, d))))
        }
    }

    /// Rotates q and k of `qkv` (`[1, T, (H + 2·KVH)·D]`) at positions `start..start+T`, writes
    /// k and v into the caches (`[1, KVH, cap, D]`) and returns q as `[1, H, T, D]`. `tables`:
    /// cos, sin for q (scaled by 1/√D), then for k, each `[max_pos, D/2]`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv(
        qkv: &Tensor,
        tables: [&Tensor; 4],
        k_cache: &Tensor,
        v_cache: &Tensor,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        start: usize,
    ) -> candle_core::Result<Tensor> {
        check_bf16(&[qkv, tables[0], tables[1], tables[2], tables[3], k_cache, v_cache])?;
        qkv.apply_op1_no_bwd(&RopeKv { tables, k_cache, v_cache, heads, kv_heads, head_dim, start })
    }

    struct SiluMul;

    impl CustomOp1 for SiluMul {
        fn name(&self) -> &'static str {
            "vela-silu-mul"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dims = l.shape().dims();
            let two_i = *dims.last().unwrap_or(&0);
            if two_i % 2 != 0 {
                candle_core::bail!("vela-silu-mul: odd last dimension {two_i}");
            }
            let i = two_i / 2;
            let rows = l.shape().elem_count() / two_i.max(1);
            let dev = s.device().clone();
            let src = src_addr(s, l)?;
            // SAFETY: written in full by the kernel.
            let out = unsafe { dev.alloc::<bf16>(rows * i)? };
            let (o, _sync) = out.device_ptr(out.stream());
            let n = rows * i;
            let blocks = n.div_ceil(256).min(65_535) as u32;
            let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            launch(&dev, "vela_silu_mul_bf16", cfg, &[Arg::Ptr(src), Arg::Ptr(o), Arg::I32(rows as i32), Arg::I32(i as i32)])?;
            drop(_sync);
            let mut shape = dims.to_vec();
            *shape.last_mut().expect("rank ≥ 1") = i;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(shape)))
        }
    }

    /// `silu(gu[.., :I]) * gu[.., I:]` for the fused gate/up output `gu` (`[.., 2I]`).
    pub fn silu_mul(gu: &Tensor) -> candle_core::Result<Tensor> {
        check_bf16(&[gu])?;
        gu.apply_op1_no_bwd(&SiluMul)
    }

    struct AddRmsNorm<'a> {
        residual: &'a Tensor,
        weight: &'a Tensor,
        eps: f32,
    }

    impl CustomOp1 for AddRmsNorm<'_> {
        fn name(&self) -> &'static str {
            "vela-add-rmsnorm"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let n = *l.shape().dims().last().unwrap_or(&0);
            if l.shape() != self.residual.shape() || self.weight.dims() != [n] {
                candle_core::bail!("vela-add-rmsnorm: {:?} + {:?} with weight {:?}", l.shape(), self.residual.shape(), self.weight.shape());
            }
            let rows = l.shape().elem_count() / n.max(1);
            let dev = s.device().clone();
            let x = src_addr(s, l)?;
            let (r, w) = (ptr(self.residual)?, ptr(self.weight)?);
            // SAFETY: both halves written in full by the kernel.
            let out = unsafe { dev.alloc::<bf16>(2 * rows * n)? };
            let (o, _sync) = out.device_ptr(out.stream());
            let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (1024.min(n.next_multiple_of(32)) as u32, 1, 1), shared_mem_bytes: 0 };
            let args = [Arg::Ptr(x), Arg::Ptr(r.addr), Arg::Ptr(w.addr), Arg::Ptr(o), Arg::I32(rows as i32), Arg::I32(n as i32), Arg::F32(self.eps)];
            launch(&dev, "vela_add_rmsnorm_bf16", cfg, &args)?;
            drop(_sync);
            let mut shape = vec![2];
            shape.extend_from_slice(l.shape().dims());
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(shape)))
        }
    }

    /// `(x + residual, rmsnorm(x + residual) · weight)`, both shaped like `x`, from one kernel.
    pub fn add_rms_norm(x: &Tensor, residual: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<(Tensor, Tensor)> {
        check_bf16(&[x, residual, weight])?;
        let both = x.apply_op1_no_bwd(&AddRmsNorm { residual, weight, eps })?;
        Ok((both.get(0)?, both.get(1)?))
    }

    /// What follows a Linear's matmul in [`BiasEpilogue`]'s kernel.
    #[derive(Clone, Copy)]
    enum Epilogue<'a> {
        /// `y + b`.
        Bias,
        /// `gelu_erf(y + b)`.
        Gelu,
        /// `x + ls · (y + b)` (`ls` None = 1).
        Residual(&'a Tensor, Option<&'a Tensor>),
    }

    struct BiasEpilogue<'a> {
        bias: &'a Tensor,
        then: Epilogue<'a>,
    }

    impl CustomOp1 for BiasEpilogue<'_> {
        fn name(&self) -> &'static str {
            "vela-bias-epilogue"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let n = *l.shape().dims().last().unwrap_or(&0);
            let (residual, scale) = match self.then {
                Epilogue::Residual(x, ls) => (Some(x), ls),
                _ => (None, None),
            };
            let bad_residual = residual.is_some_and(|x| x.shape() != l.shape()) || scale.is_some_and(|g| g.dims() != [n]);
            if self.bias.dims() != [n] || bad_residual {
                candle_core::bail!("vela-bias-epilogue: y {:?} with bias {:?}", l.shape(), self.bias.shape());
            }
            let total = l.shape().elem_count();
            let dev = s.device().clone();
            let y = src_addr(s, l)?;
            let b = ptr(self.bias)?;
            let x = residual.map(ptr).transpose()?;
            let g = scale.map(ptr).transpose()?;
            // SAFETY: written in full by the kernel.
            let out = unsafe { dev.alloc::<bf16>(total)? };
            let (o, _sync) = out.device_ptr(out.stream());
            let blocks = total.div_ceil(256).min(65_535) as u32;
            let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let addr = |p: &Option<Ptr>| p.as_ref().map_or(0, |p| p.addr);
            let args = [
                Arg::Ptr(y),
                Arg::Ptr(b.addr),
                Arg::Ptr(addr(&x)),
                Arg::Ptr(addr(&g)),
                Arg::Ptr(o),
                Arg::I32((total / n.max(1)) as i32),
                Arg::I32(n as i32),
                Arg::I32(matches!(self.then, Epilogue::Gelu) as i32),
            ];
            launch(&dev, "vela_bias_epilogue_bf16", cfg, &args)?;
            drop(_sync);
            Ok((CudaStorage::wrap_cuda_slice(out, dev), l.shape().clone()))
        }
    }

    /// `gelu_erf(y + bias)` in one kernel (the vision MLP's first layer).
    pub fn bias_gelu(y: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        check_bf16(&[y, bias])?;
        y.apply_op1_no_bwd(&BiasEpilogue { bias, then: Epilogue::Gelu })
    }

    /// `x + scale · (y + bias)` in one kernel (`scale` None = 1): a vision block's projection
    /// back into the residual stream, with DINOv2's LayerScale.
    pub fn bias_scale_residual(y: &Tensor, bias: &Tensor, scale: Option<&Tensor>, x: &Tensor) -> candle_core::Result<Tensor> {
        check_bf16(&[y, bias, x])?;
        if let Some(g) = scale {
            check_bf16(&[g])?;
        }
        y.apply_op1_no_bwd(&BiasEpilogue { bias, then: Epilogue::Residual(x, scale) })
    }

    /// Whether the epilogue kernels can follow `x`'s Linear layers: CUDA, bf16, inference.
    pub fn epilogue_applies(x: &Tensor) -> bool {
        super::enabled() && x.device().is_cuda() && x.dtype() == DType::BF16 && !x.track_op()
    }

    struct DecodeAttn<'a> {
        k_cache: &'a Tensor,
        v_cache: &'a Tensor,
        n: usize,
    }

    const ATTN_THREADS: usize = 256;
    /// Threads of the one-kernel decode attention: sixteen warps per head (at most, see the kernel).
    const ATTN_ONE_THREADS: usize = 512;
    /// Positions per block of the split attention.
    const ATTN_CHUNK: usize = 64;

    /// Whether decode attention reads each cached row with a warp (default), or with the
    /// previous kernel's one thread per position (`VELA_ATTN_ROWS=0`, for measuring).
    fn attn_rows() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var("VELA_ATTN_ROWS").map_or(true, |v| v != "0"))
    }

    /// Whether decode attention runs as one kernel with a block per head (default) or as the
    /// split kernel and its merge (`VELA_ATTN_ONE=0`, for measuring).
    fn attn_one() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var("VELA_ATTN_ONE").map_or(true, |v| v != "0"))
    }

    impl CustomOp1 for DecodeAttn<'_> {
        fn name(&self) -> &'static str {
            "vela-decode-attn"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (b, h, t, d) = l.shape().dims4()?;
            let (_, kvh, cap, kd) = self.k_cache.dims4()?;
            if b != 1 || t != 1 || kd != d || h % kvh != 0 || self.n == 0 || self.n > cap {
                candle_core::bail!("vela-decode-attn: q {:?} over cache {:?} at {}", l.shape(), self.k_cache.shape(), self.n);
            }
            if d % 64 != 0 || d > 256 {
                candle_core::bail!("vela-decode-attn: head dim {d} unsupported");
            }
            let dev = s.device().clone();
            let q = src_addr(s, l)?;
            let (kc, vc) = (ptr(self.k_cache)?, ptr(self.v_cache)?);
            if attn_one() {
                // SAFETY: every output element is written by the kernel.
                let out = unsafe { dev.alloc::<bf16>(h * d)? };
                let (o, _s) = out.device_ptr(out.stream());
                let cfg = LaunchConfig { grid_dim: (h as u32, 1, 1), block_dim: (ATTN_ONE_THREADS as u32, 1, 1), shared_mem_bytes: 0 };
                let mut args: Vec<Arg> = [q, kc.addr, vc.addr, o].map(Arg::Ptr).into();
                args.extend([h, kvh, d, cap, self.n].map(|i| Arg::I32(i as i32)));
                launch(&dev, "vela_decode_attn_one_bf16", cfg, &args)?;
                drop(_s);
                return Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((1, 1, h * d))));
            }
            let splits = self.n.div_ceil(ATTN_CHUNK);
            // SAFETY: every part and every output element is written before it is read.
            let part = unsafe { dev.alloc::<f32>(h * splits * (d + 2))? };
            let out = unsafe { dev.alloc::<bf16>(h * d)? };
            let (pp, _s1) = part.device_ptr(part.stream());
            let (o, _s2) = out.device_ptr(out.stream());
            let cfg = LaunchConfig { grid_dim: (h as u32, splits as u32, 1), block_dim: (ATTN_THREADS as u32, 1, 1), shared_mem_bytes: 0 };
            let mut args: Vec<Arg> = [q, kc.addr, vc.addr, pp].map(Arg::Ptr).into();
            args.extend([h, kvh, d, cap, self.n, ATTN_CHUNK].map(|i| Arg::I32(i as i32)));
            launch(&dev, if attn_rows() { "vela_decode_attn_part_bf16" } else { "vela_decode_attn_part_thread_bf16" }, cfg, &args)?;
            let cfg = LaunchConfig { grid_dim: (h as u32, 1, 1), block_dim: (d as u32, 1, 1), shared_mem_bytes: 0 };
            launch(&dev, "vela_decode_attn_merge_bf16", cfg, &[Arg::Ptr(pp), Arg::Ptr(o), Arg::I32(splits as i32), Arg::I32(d as i32)])?;
            drop((_s1, _s2));
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((1, 1, h * d))))
        }
    }

    struct Gemv<'a> {
        weight: &'a Tensor,
        /// x is `[2K]` gate/up, multiplied as `silu(gate) * up` on load.
        silu: bool,
    }

    const GEMV_THREADS: usize = 256;

    impl CustomOp1 for Gemv<'_> {
        fn name(&self) -> &'static str {
            "vela-gemv"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (n, k) = self.weight.dims2()?;
            let dims = l.shape().dims();
            let xk = if self.silu { 2 * k } else { k };
            if dims.last() != Some(&xk) || l.shape().elem_count() != xk || !gemv_shapes_ok(l.start_offset(), k) {
                candle_core::bail!("vela-gemv: x {:?} for weight {:?}", l.shape(), self.weight.shape());
            }
            let dev = s.device().clone();
            let x = src_addr(s, l)?;
            let w = ptr(self.weight)?;
            // SAFETY: written in full by the kernel.
            let out = unsafe { dev.alloc::<bf16>(n)? };
            let (y, _sync) = out.device_ptr(out.stream());
            let r = gemv_rows_per_warp();
            let rows_per_block = r * GEMV_THREADS / 32;
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(rows_per_block) as u32, 1, 1),
                block_dim: (GEMV_THREADS as u32, 1, 1),
                shared_mem_bytes: (k * 2) as u32,
            };
            let name = format!("vela_gemv{}{r}_bf16", if self.silu { "_silu" } else { "" });
            launch(&dev, &name, cfg, &[Arg::Ptr(w.addr), Arg::Ptr(x), Arg::Ptr(y), Arg::I32(n as i32), Arg::I32(k as i32)])?;
            drop(_sync);
            let mut shape = dims.to_vec();
            *shape.last_mut().expect("rank ≥ 1") = n;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(shape)))
        }
    }

    /// Rows each warp of the GEMV streams: 1 (on an H100, in one call: 6.17 ms per decoded
    /// token against 6.30 with 2 rows and 6.79 with 4), or 2 or 4 from `VELA_GEMV_ROWS`.
    fn gemv_rows_per_warp() -> usize {
        static R: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *R.get_or_init(|| match std::env::var("VELA_GEMV_ROWS").as_deref() {
            Ok("2") => 2,
            Ok("4") => 4,
            _ => 1,
        })
    }

    /// Rows of 16-byte loads (K % 8), x in the kernel's shared memory (K ≤ 16384), and an x
    /// that starts on a 16-byte boundary.
    fn gemv_shapes_ok(x_offset: usize, k: usize) -> bool {
        k % 8 == 0 && k <= 16_384 && x_offset % 8 == 0
    }

    /// Whether [`gemv`] can compute `x · weightᵀ`: CUDA, bf16, one row, inference.
    pub fn gemv_applies(x: &Tensor, weight: &Tensor) -> bool {
        super::enabled()
            && x.device().is_cuda()
            && x.dtype() == DType::BF16
            && weight.dtype() == DType::BF16
            && weight.rank() == 2
            && weight.is_contiguous()
            && weight.layout().start_offset() % 8 == 0
            && x.is_contiguous()
            && !x.track_op()
            && !weight.track_op()
            && x.dims().last().is_some_and(|&k| k == x.elem_count() && weight.dim(1).is_ok_and(|wk| wk == k))
            && gemv_shapes_ok(x.layout().start_offset(), x.elem_count())
    }

    /// `x · weightᵀ` for a one-row `x` (`[.., K]`) and a Linear weight `[N, K]`.
    pub fn gemv(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op1_no_bwd(&Gemv { weight, silu: false })
    }

    /// `(silu(gu[..K]) * gu[K..]) · weightᵀ` for one row of the fused gate/up output `gu`
    /// (`[.., 2K]`): the MLP's down projection without the intermediate tensor.
    pub fn gemv_silu(gu: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
        check_bf16(&[gu, weight])?;
        gu.apply_op1_no_bwd(&Gemv { weight, silu: true })
    }

    /// Whether [`gemv_silu`] applies to `gu` and `weight` (as [`gemv_applies`], for the
    /// halved input).
    pub fn gemv_silu_applies(gu: &Tensor, weight: &Tensor) -> bool {
        let k = gu.elem_count() / 2;
        super::enabled()
            && gu.device().is_cuda()
            && gu.dtype() == DType::BF16
            && weight.dtype() == DType::BF16
            && weight.dims() == [weight.dim(0).unwrap_or(0), k]
            && weight.is_contiguous()
            && weight.layout().start_offset() % 8 == 0
            && gu.is_contiguous()
            && gu.dims().last() == Some(&(2 * k))
            && gemv_shapes_ok(gu.layout().start_offset(), k)
    }

    /// A Q4_K weight [`dequantize_q4k`] can expand: on CUDA, 2-D, rows of whole blocks.
    pub fn q4k_applies(w: &candle_core::quantized::QTensor) -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // VELA_Q4K_KERNELS=0: candle's kernels instead, to measure what these save.
        super::enabled()
            && *ON.get_or_init(|| std::env::var("VELA_Q4K_KERNELS").map_or(true, |v| v != "0"))
            && w.dtype() == candle_core::quantized::GgmlDType::Q4K
            && w.device().is_cuda()
            && w.shape().dims().len() == 2
            && w.shape().dims()[1] % 256 == 0
    }

    /// A Q4_K weight `[N, K]` expanded to f16 for a prompt's GEMM (candle's
    /// `dequantize_f16`, at a higher share of the card's bandwidth).
    pub fn dequantize_q4k(w: &candle_core::quantized::QTensor) -> candle_core::Result<Tensor> {
        dequantize_q4k_as(w, DType::F16)
    }

    /// [`dequantize_q4k`] to `F16` or `BF16` (bf16 activations multiply it without casts).
    pub fn dequantize_q4k_as(w: &candle_core::quantized::QTensor, dtype: DType) -> candle_core::Result<Tensor> {
        let (n, k) = w.shape().dims2()?;
        if !q4k_applies(w) {
            candle_core::bail!("vela-dequant-q4k: not a CUDA Q4_K matrix of whole blocks ({:?} {:?})", w.dtype(), w.shape());
        }
        let candle_core::Device::Cuda(dev) = w.device() else { candle_core::bail!("vela-dequant-q4k: not on CUDA") };
        let blocks = n * k / 256;
        let stream = dev.cuda_stream();
        let (src, _wsync) = w.device_ptr_with_guard(&stream)?;
        let warps = 8;
        let cfg = LaunchConfig { grid_dim: (blocks.div_ceil(warps) as u32, 1, 1), block_dim: (32 * warps as u32, 1, 1), shared_mem_bytes: 0 };
        // SAFETY (both arms): every element is written by the kernel (one warp per 256-weight block).
        let storage = match dtype {
            DType::F16 => {
                let out = unsafe { dev.alloc::<half::f16>(n * k)? };
                let (dst, _sync) = out.device_ptr(out.stream());
                launch(&dev, "vela_dequant_q4k_f16", cfg, &[Arg::Ptr(src as u64), Arg::Ptr(dst), Arg::I32(blocks as i32)])?;
                drop(_sync);
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }
            DType::BF16 => {
                let out = unsafe { dev.alloc::<bf16>(n * k)? };
                let (dst, _sync) = out.device_ptr(out.stream());
                launch(&dev, "vela_dequant_q4k_bf16", cfg, &[Arg::Ptr(src as u64), Arg::Ptr(dst), Arg::I32(blocks as i32)])?;
                drop(_sync);
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }
            other => candle_core::bail!("vela-dequant-q4k: no {other:?} expansion"),
        };
        drop(_wsync);
        Ok(Tensor::from_storage(Storage::Cuda(storage), (n, k), candle_core::op::BackpropOp::none(), false))
    }

    /// Whether a prompt's attention uses [`causal_softmax`] over padded keys (default) or a
    /// mask add and candle's softmax (`VELA_CAUSAL_SOFTMAX=0`, to measure what it saves).
    pub fn causal_softmax_on() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var("VELA_CAUSAL_SOFTMAX").map_or(true, |v| v != "0"))
    }

    struct CausalSoftmax {
        t: usize,
        start: usize,
    }

    impl CustomOp1 for CausalSoftmax {
        fn name(&self) -> &'static str {
            "vela-causal-softmax"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let dims = l.shape().dims();
            let n = *dims.last().unwrap_or(&0);
            let total = l.shape().elem_count();
            let rows = total / n.max(1);
            if dims.len() < 2 || dims[dims.len() - 2] != self.t || n < self.start + self.t {
                candle_core::bail!("vela-causal-softmax: scores {:?} for {} queries at {}", l.shape(), self.t, self.start);
            }
            let dev = s.device().clone();
            let x = src_addr(s, l)?;
            // SAFETY: written in full by the kernel (a warp per row, every column).
            let out = unsafe { dev.alloc::<bf16>(total)? };
            let (y, _sync) = out.device_ptr(out.stream());
            let cfg = LaunchConfig { grid_dim: ((rows * 32).div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let args = [Arg::Ptr(x), Arg::Ptr(y), Arg::I32(rows as i32), Arg::I32(n as i32), Arg::I32(self.t as i32), Arg::I32(self.start as i32)];
            launch(&dev, "vela_causal_softmax_bf16", cfg, &args)?;
            drop(_sync);
            Ok((CudaStorage::wrap_cuda_slice(out, dev), l.shape().clone()))
        }
    }

    /// Softmax of prompt scores `[.., T, n]` (bf16, contiguous) under the causal mask: query
    /// `i` sees keys `0..=start+i`; later keys, padding included, get 0.
    pub fn causal_softmax(scores: &Tensor, t: usize, start: usize) -> candle_core::Result<Tensor> {
        check_bf16(&[scores])?;
        scores.apply_op1_no_bwd(&CausalSoftmax { t, start })
    }

    /// Whether a Linear's bias on CUDA goes through [`bias_add`] (default) or candle's
    /// broadcast add (`VELA_BIAS_KERNEL=0`, for measuring).
    pub fn bias_kernel_on() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var("VELA_BIAS_KERNEL").map_or(true, |v| v != "0"))
    }

    /// `y + bias` over the last axis in one contiguous kernel (a Linear's bias on CUDA).
    pub fn bias_add(y: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        check_bf16(&[y, bias])?;
        y.apply_op1_no_bwd(&BiasEpilogue { bias, then: Epilogue::Bias })
    }

    /// [`crate::preprocess::ResizeAxis`] on the device (`left`, `count`, `offset` u32,
    /// `weights` f32).
    pub struct AxisTensors {
        pub left: Tensor,
        pub count: Tensor,
        pub offset: Tensor,
        pub weights: Tensor,
        pub len: usize,
    }

    impl AxisTensors {
        pub fn new(a: &crate::preprocess::ResizeAxis, dev: &candle_core::Device) -> candle_core::Result<Self> {
            Ok(Self {
                left: Tensor::new(a.left.as_slice(), dev)?,
                count: Tensor::new(a.count.as_slice(), dev)?,
                offset: Tensor::new(a.offset.as_slice(), dev)?,
                weights: Tensor::new(a.weights.as_slice(), dev)?,
                len: a.left.len(),
            })
        }
    }

    struct Resize<'a> {
        rows: &'a AxisTensors,
        cols: &'a AxisTensors,
    }

    impl CustomOp1 for Resize<'_> {
        fn name(&self) -> &'static str {
            "vela-resize"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (_, w, c) = l.shape().dims3()?;
            if c != 3 || s.dtype() != DType::U8 {
                candle_core::bail!("vela-resize: needs an [H, W, 3] u8 frame, got {:?} {:?}", l.shape(), s.dtype());
            }
            let (oh, ow) = (self.rows.len, self.cols.len);
            let dev = s.device().clone();
            let (o1, _) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("vela-resize: frame not contiguous".into()))?;
            let src = s.as_cuda_slice::<u8>()?;
            let (src_p, _s1) = src.device_ptr(src.stream());
            let src_p = src_p + o1 as u64;
            let (r, cl) = (axis_ptrs(self.rows)?, axis_ptrs(self.cols)?);
            // SAFETY: both written in full by the kernels before being read.
            let tmp = unsafe { dev.alloc::<f32>(oh * w * 3)? };
            let out = unsafe { dev.alloc::<u8>(oh * ow * 3)? };
            let (tmp_p, _s2) = tmp.device_ptr(tmp.stream());
            let (out_p, _s3) = out.device_ptr(out.stream());
            let grid = |n: usize| LaunchConfig { grid_dim: (n.div_ceil(256).min(65_535) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let mut args: Vec<Arg> = [src_p, tmp_p].map(Arg::Ptr).into();
            args.extend(r.iter().map(|p| Arg::Ptr(p.addr)));
            args.extend([Arg::I32((w * 3) as i32), Arg::I32(oh as i32)]);
            launch(&dev, "vela_resize_rows_u8", grid(oh * w * 3), &args)?;
            let mut args: Vec<Arg> = [tmp_p, out_p].map(Arg::Ptr).into();
            args.extend(cl.iter().map(|p| Arg::Ptr(p.addr)));
            args.extend([Arg::I32(w as i32), Arg::I32(ow as i32), Arg::I32(oh as i32)]);
            launch(&dev, "vela_resize_cols_u8", grid(oh * ow * 3), &args)?;
            drop((_s1, _s2, _s3));
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from((oh, ow, 3))))
        }
    }

    fn axis_ptrs(a: &AxisTensors) -> candle_core::Result<[Ptr<'_>; 4]> {
        Ok([ptr_of::<u32>(&a.left)?, ptr_of::<u32>(&a.count)?, ptr_of::<u32>(&a.offset)?, ptr_of::<f32>(&a.weights)?])
    }

    /// The image crate's Catmull-Rom resize of an `[H, W, 3]` u8 frame on the card, with the
    /// weights of [`crate::preprocess::resize_axis`] for rows (H → OH) and columns (W → OW).
    pub fn resize(frame: &Tensor, rows: &AxisTensors, cols: &AxisTensors) -> candle_core::Result<Tensor> {
        frame.apply_op1_no_bwd(&Resize { rows, cols })
    }

    /// Softmax attention of `q` (`[1, H, 1, D]`, already scaled) over the first `n` positions
    /// of the caches (`[1, KVH, cap, D]`), as `[1, 1, H·D]` (ready for `o_proj`).
    pub fn decode_attention(q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, n: usize) -> candle_core::Result<Tensor> {
        check_bf16(&[q, k_cache, v_cache])?;
        q.apply_op1_no_bwd(&DecodeAttn { k_cache, v_cache, n })
    }

    /// One fused kernel against the candle ops it replaces, on random inputs.
    #[derive(Clone, Debug, serde::Serialize)]
    pub struct Check {
        pub kernel: &'static str,
        pub shape: String,
        /// ‖fused − reference‖ / ‖reference‖ over every output element.
        pub rel_l2: f32,
        pub max_abs: f32,
        pub passed: bool,
    }

    /// Agreement bar: both sides are bf16 with different summation orders and roundings.
    pub const CHECK_TOLERANCE: f32 = 1e-2;

    pub(crate) fn compare(kernel: &'static str, shape: String, fused: &Tensor, reference: &Tensor) -> candle_core::Result<Check> {
        let (a, b) = (fused.to_dtype(DType::F32)?.flatten_all()?, reference.to_dtype(DType::F32)?.flatten_all()?);
        let diff = (&a - &b)?;
        let rel_l2 = (diff.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?) / b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?.max(1e-30);
        let max_abs = diff.abs()?.max_all()?.to_scalar::<f32>()?;
        Ok(Check { kernel, shape, rel_l2, max_abs, passed: rel_l2.is_finite() && rel_l2 < CHECK_TOLERANCE })
    }

    /// Every fused kernel at the 7B decoder's shapes (32 heads of 128, 4096 wide, 11008 MLP,
    /// 279-position prompt plus one decoded position) against candle's unfused ops, which the
    /// CPU tests and the PyTorch comparison vouch for. CI has no GPU, so `vela vla check-fused`
    /// runs this on the GPU machine.
    pub fn self_check(dev: &candle_core::Device) -> candle_core::Result<Vec<Check>> {
        let (h, kvh, d, hidden, inter, start, cap, max_pos) = (32usize, 32usize, 128usize, 4096usize, 11008usize, 279usize, 286usize, 2048usize);
        let bf = |t: Tensor| t.to_dtype(DType::BF16);
        let rnd = |shape: &[usize], scale: f64| -> candle_core::Result<Tensor> { bf((Tensor::randn(0f32, 1.0, shape, dev)? * scale)?) };
        let mut out = Vec::new();

        // Rotary + cache write, one decoded position after a prompt of `start`.
        let qkv = rnd(&[1, 1, (h + 2 * kvh) * d], 1.0)?;
        let freqs = Tensor::arange(0f32, max_pos as f32, dev)?.reshape((max_pos, 1))?.broadcast_mul(&Tensor::rand(0f32, 1.0, (1, d / 2), dev)?)?;
        let (cos, sin) = (bf(freqs.cos()?)?, bf(freqs.sin()?)?);
        let (cos_s, sin_s) = (bf((freqs.cos()? * 0.088)?)?, bf((freqs.sin()? * 0.088)?)?);
        let kc = rnd(&[1, kvh, cap, d], 1.0)?;
        let vc = rnd(&[1, kvh, cap, d], 1.0)?;
        let (kc_ref, vc_ref) = (kc.copy()?, vc.copy()?);
        let q = rope_kv(&qkv, [&cos_s, &sin_s, &cos, &sin], &kc, &vc, h, kvh, d, start)?;
        let part = |o: usize, n: usize| -> candle_core::Result<Tensor> { qkv.narrow(2, o * d, n * d)?.reshape((1, 1, n, d))?.transpose(1, 2)?.contiguous() };
        let rope = |x: &Tensor, c: &Tensor, s: &Tensor| candle_nn::rotary_emb::rope(x, &c.narrow(0, start, 1)?, &s.narrow(0, start, 1)?);
        let q_ref = rope(&part(0, h)?, &cos_s, &sin_s)?;
        kc_ref.slice_set(&rope(&part(h, kvh)?, &cos, &sin)?, 2, start)?;
        vc_ref.slice_set(&part(h + kvh, kvh)?, 2, start)?;
        out.push(compare("rope_kv (q)", format!("{h}x{d} at {start}"), &q, &q_ref)?);
        out.push(compare("rope_kv (k cache)", format!("{kvh}x{cap}x{d}"), &kc, &kc_ref)?);
        out.push(compare("rope_kv (v cache)", format!("{kvh}x{cap}x{d}"), &vc, &vc_ref)?);

        // One-position attention over the first start+1 positions.
        let n = start + 1;
        let att = decode_attention(&q, &kc, &vc, n)?;
        let (k, v) = (kc.narrow(2, 0, n)?, vc.narrow(2, 0, n)?);
        let p = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let att_ref = p.matmul(&v)?.transpose(1, 2)?.reshape((1, 1, h * d))?;
        out.push(compare("decode_attention", format!("{h} heads over {n}"), &att, &att_ref)?);

        // Residual add + RMSNorm, at one position and at a prompt's worth.
        for rows in [1usize, start] {
            let x = rnd(&[1, rows, hidden], 1.0)?;
            let r = rnd(&[1, rows, hidden], 1.0)?;
            let w = rnd(&[hidden], 1.0)?;
            let (sum, norm) = add_rms_norm(&x, &r, &w, 1e-6)?;
            let sum_ref = (&x + &r)?;
            out.push(compare("add_rmsnorm (sum)", format!("{rows}x{hidden}"), &sum, &sum_ref)?);
            out.push(compare("add_rmsnorm (norm)", format!("{rows}x{hidden}"), &norm, &candle_nn::ops::rms_norm(&sum_ref, &w, 1e-6)?)?);
        }

        // The vision epilogues, at DINOv2-L's shapes (257 tokens, 1024 wide, 4096 MLP).
        {
            let (t, dim, mlp) = (257usize, 1024usize, 4096usize);
            let y = rnd(&[1, t, mlp], 1.0)?;
            let b = rnd(&[mlp], 0.5)?;
            out.push(compare("bias_gelu", format!("{t}x{mlp}"), &bias_gelu(&y, &b)?, &y.broadcast_add(&b)?.gelu_erf()?)?);
            let (y, b, x, g) = (rnd(&[1, t, dim], 1.0)?, rnd(&[dim], 0.5)?, rnd(&[1, t, dim], 1.0)?, rnd(&[dim], 0.1)?);
            let reference = (&x + y.broadcast_add(&b)?.broadcast_mul(&g)?)?;
            out.push(compare("bias_scale_residual", format!("{t}x{dim}"), &bias_scale_residual(&y, &b, Some(&g), &x)?, &reference)?);
            let reference = (&x + y.broadcast_add(&b)?)?;
            out.push(compare("bias_residual", format!("{t}x{dim}"), &bias_scale_residual(&y, &b, None, &x)?, &reference)?);
        }

        // silu(gate) * up, and the down projection with it folded in.
        for rows in [1usize, start] {
            let gu = rnd(&[1, rows, 2 * inter], 2.0)?;
            let reference = (candle_nn::ops::silu(&gu.narrow(2, 0, inter)?)? * gu.narrow(2, inter, inter)?)?;
            out.push(compare("silu_mul", format!("{rows}x{inter}"), &silu_mul(&gu)?, &reference)?);
        }
        let gu = rnd(&[1, 1, 2 * inter], 2.0)?;
        let down = rnd(&[hidden, inter], 0.02)?;
        let a = (candle_nn::ops::silu(&gu.narrow(2, 0, inter)?)? * gu.narrow(2, inter, inter)?)?;
        out.push(compare("gemv_silu (down)", format!("{hidden}x{inter}"), &gemv_silu(&gu, &down)?, &a.broadcast_matmul(&down.t()?)?)?);

        // The camera frame's resize (must match the image crate exactly: same weights, same
        // order of f32 operations, no FMA contraction).
        for (w, h) in [(256u32, 256u32), (320, 240)] {
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 + y * 3) as u8, ((x * y) % 251) as u8, if (x + y) % 5 == 0 { 255 } else { (y % 256) as u8 }]));
            let frame = Tensor::from_slice(img.as_raw(), (h as usize, w as usize, 3), dev)?;
            let rows = AxisTensors::new(&crate::preprocess::resize_axis(h, 224), dev)?;
            let cols = AxisTensors::new(&crate::preprocess::resize_axis(w, 224), dev)?;
            let got = resize(&frame, &rows, &cols)?;
            let want = Tensor::from_slice(crate::preprocess::resize(&img, 224).as_raw(), (224, 224, 3), dev)?;
            let mut c = compare("resize (exact)", format!("{w}x{h} -> 224"), &got.to_dtype(DType::F32)?, &want.to_dtype(DType::F32)?)?;
            c.passed = c.max_abs == 0.0;
            out.push(c);
        }

        // Q4_K: the expansion for prefill must equal candle's, value for value.
        for (n_out, k) in [(3 * hidden, hidden), (hidden, inter)] {
            let w = candle_core::quantized::QTensor::quantize(&rnd(&[n_out, k], 0.02)?.to_dtype(DType::F32)?, candle_core::quantized::GgmlDType::Q4K)?;
            let mut c = compare("dequantize_q4k (exact)", format!("{n_out}x{k}"), &dequantize_q4k(&w)?, &w.dequantize_f16(dev)?)?;
            c.passed = c.max_abs == 0.0;
            out.push(c);
            let mut c = compare("dequantize_q4k bf16 (exact)", format!("{n_out}x{k}"), &dequantize_q4k_as(&w, DType::BF16)?, &w.dequantize(dev)?.to_dtype(DType::BF16)?)?;
            c.passed = c.max_abs == 0.0;
            out.push(c);
        }

        // The prompt's masked softmax over keys padded to a multiple of 8, against the mask add
        // and softmax over the real keys, padded with zeros: the whole prompt, and a few
        // positions after a cached one.
        for (t, at) in [(start, 0usize), (5, start)] {
            let n = at + t;
            let padded = n.next_multiple_of(8);
            let scores = rnd(&[1, h, t, padded], 3.0)?;
            let mask = crate::llama::causal_mask(t, at, DType::BF16, dev).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let real = candle_nn::ops::softmax_last_dim(&scores.narrow(3, 0, n)?.broadcast_add(&mask)?)?;
            let reference = Tensor::cat(&[real, Tensor::zeros((1, h, t, padded - n), DType::BF16, dev)?], 3)?;
            out.push(compare("causal_softmax", format!("{h}x{t}x{padded} at {at}"), &causal_softmax(&scores, t, at)?, &reference)?);
        }

        // A Linear's bias, at the vision qkv's shape.
        {
            let (y, b) = (rnd(&[1, 257, 3072], 1.0)?, rnd(&[3072], 0.5)?);
            out.push(compare("bias_add", "257x3072".into(), &bias_add(&y, &b)?, &y.broadcast_add(&b)?)?);
        }

        // One-row matmuls at the decoder's widths (qkv, o, gate/up, lm_head).
        for (n_out, k) in [(3 * hidden, hidden), (hidden, hidden), (2 * inter, hidden), (32_064, hidden)] {
            let x = rnd(&[1, 1, k], 1.0)?;
            let w = rnd(&[n_out, k], 0.02)?;
            if !gemv_applies(&x, &w) {
                candle_core::bail!("gemv does not apply to {n_out}x{k}");
            }
            out.push(compare("gemv", format!("{n_out}x{k}"), &gemv(&x, &w)?, &x.broadcast_matmul(&w.t()?)?)?);
        }
        Ok(out)
    }
}
