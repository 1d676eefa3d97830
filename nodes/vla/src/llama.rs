//! Llama-2 decoder that accepts input embeddings (so image patches can be spliced in after BOS)
//! and keeps a KV cache. Names mirror `LlamaForCausalLM` under `language_model.`.

use candle_core::{DType, Device, Module, Tensor, D};

use crate::config::TextConfig;
use crate::weights::{Lin, Weights};
use crate::Result;

/// RMSNorm with the eps from `text_config` (1e-6 for the released OpenVLA config, not Llama-2's 1e-5).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps: eps as f32 }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::ops::rms_norm(x, &self.weight, self.eps)?)
    }
}

/// Precomputed RoPE tables for the HF (rotate-half) layout.
#[derive(Clone, Debug)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
    /// The same tables times `1/sqrt(head_dim)`: rotating queries with these also applies the
    /// attention scale, one kernel less per layer.
    cos_scaled: Tensor,
    sin_scaled: Tensor,
}

impl Rotary {
    pub fn new(head_dim: usize, max_pos: usize, theta: f64, dtype: DType, dev: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64) as f32).collect();
        let inv = Tensor::from_vec(inv, (1, half), dev)?;
        let pos = Tensor::arange(0u32, max_pos as u32, dev)?.to_dtype(DType::F32)?.reshape((max_pos, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        let s = 1.0 / (head_dim as f64).sqrt();
        Ok(Self {
            cos_scaled: (&cos * s)?.to_dtype(dtype)?,
            sin_scaled: (&sin * s)?.to_dtype(dtype)?,
            cos: cos.to_dtype(dtype)?,
            sin: sin.to_dtype(dtype)?,
        })
    }
    /// `x`: `[B, H, T, hd]`, positions `start..start+T`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        Self::rope(x, &self.cos, &self.sin, start)
    }
    /// Like [`Self::apply`], also scaled by `1/sqrt(head_dim)` (for queries).
    pub fn apply_scaled(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        Self::rope(x, &self.cos_scaled, &self.sin_scaled, start)
    }
    fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, start: usize) -> Result<Tensor> {
        let t = x.dim(2)?;
        Ok(crate::ops::rope(x, &cos.narrow(0, start, t)?, &sin.narrow(0, start, t)?)?)
    }
}

#[derive(Clone, Debug)]
struct Layer {
    qkv: Parallel,
    o: Lin,
    gate_up: Parallel,
    down: Lin,
    input_norm: RmsNorm,
    post_norm: RmsNorm,
}

/// Linear layers reading the same input: one fused matmul whose output is split (views, no
/// copies at one position), or the separate layers.
#[derive(Clone, Debug)]
enum Parallel {
    Fused { lin: Lin, sizes: Vec<usize> },
    Split(Vec<Lin>),
}

impl Parallel {
    fn new(parts: Vec<Lin>, fuse: bool) -> Result<Self> {
        if !fuse || parts.iter().any(Lin::is_trainable) {
            return Ok(Self::Split(parts));
        }
        let sizes = parts.iter().map(|p| p.out_features()).collect::<Result<Vec<_>>>()?;
        Ok(Self::Fused { lin: Lin::fuse(&parts)?, sizes })
    }
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Split(ls) => ls.iter().map(|l| Ok(l.forward(x)?)).collect(),
            Self::Fused { lin, sizes } => {
                let y = lin.forward(x)?;
                let mut off = 0;
                sizes
                    .iter()
                    .map(|&n| {
                        let part = y.narrow(D::Minus1, off, n)?;
                        off += n;
                        Ok(part)
                    })
                    .collect()
            }
        }
    }
    fn weight_bytes(&self) -> u64 {
        match self {
            Self::Split(ls) => ls.iter().map(Lin::weight_bytes).sum(),
            Self::Fused { lin, .. } => lin.weight_bytes(),
        }
    }
}

/// Per-layer key/value tensors `[B, kvH, T, hd]` accumulated over a generation.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Number of positions already in the cache.
    pub pos: usize,
    /// `Some(capacity)` when the layers are preallocated buffers written in place.
    capacity: Option<usize>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers], pos: 0, capacity: None }
    }

    /// A cache of `capacity` positions allocated up front: appending writes into it and
    /// attention reads a view of its first positions. No step then allocates memory that a
    /// later step reads, which is what replaying captured CUDA graphs needs (each captured
    /// step must find the keys of the earlier ones at the addresses it was recorded with).
    pub fn preallocated(cfg: &TextConfig, batch: usize, capacity: usize, dtype: DType, dev: &Device) -> Result<Self> {
        let shape = (batch, cfg.kv_heads(), capacity, cfg.head_dim());
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok(Some((Tensor::zeros(shape, dtype, dev)?, Tensor::zeros(shape, dtype, dev)?))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, pos: 0, capacity: Some(capacity) })
    }

    /// Appends `k`, `v` (`[B, kvH, T, hd]`) for layer `li` at positions `start..start+T` and
    /// returns every position's keys and values so far.
    fn append(&mut self, li: usize, start: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let kv = match (self.capacity, &self.layers[li]) {
            (Some(cap), Some((ck, cv))) => {
                if start + t > cap {
                    return Err(crate::VlaError::Input(format!(
                        "preallocated KV cache holds {cap} positions, asked for {}",
                        start + t
                    )));
                }
                ck.slice_set(&k.contiguous()?, 2, start)?;
                cv.slice_set(&v.contiguous()?, 2, start)?;
                return Ok((ck.narrow(2, 0, start + t)?, cv.narrow(2, 0, start + t)?));
            }
            (None, Some((pk, pv))) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            (_, None) => (k, v),
        };
        self.layers[li] = Some(kv.clone());
        Ok(kv)
    }
}

#[derive(Clone, Debug)]
pub struct Llama {
    pub cfg: TextConfig,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Lin,
    rotary: Rotary,
}

impl Llama {
    pub fn load(w: &Weights, cfg: &TextConfig, dtype: DType) -> Result<Self> {
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let kv = cfg.kv_heads() * hd;
        let i = cfg.intermediate_size;
        let m = w.pp("model");
        // On a GPU each launch costs about as much as streaming a small matrix, so layers that
        // read the same input become one. CPU keeps them apart (no gain, and the loader-layout
        // check records requests without materialising weights).
        let fuse = !w.device().is_cpu();
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let w = m.pp(format!("layers.{l}"));
                let a = w.pp("self_attn");
                let f = w.pp("mlp");
                let qkv = [a.linear("q_proj", h, h, false)?, a.linear("k_proj", h, kv, false)?, a.linear("v_proj", h, kv, false)?];
                let gate_up = [f.linear("gate_proj", h, i, false)?, f.linear("up_proj", h, i, false)?];
                Ok(Layer {
                    qkv: Parallel::new(qkv.into(), fuse)?,
                    o: a.linear("o_proj", h, h, false)?,
                    gate_up: Parallel::new(gate_up.into(), fuse)?,
                    down: f.linear("down_proj", i, h, false)?,
                    input_norm: RmsNorm::new(w.pp("input_layernorm").get(&[h], "weight")?, cfg.rms_norm_eps),
                    post_norm: RmsNorm::new(w.pp("post_attention_layernorm").get(&[h], "weight")?, cfg.rms_norm_eps),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            w.pp("model").linear("embed_tokens", h, cfg.vocab_size, false)?
        } else {
            w.linear("lm_head", h, cfg.vocab_size, false)?
        };
        Ok(Self {
            embed_tokens: m.pp("embed_tokens").get(&[cfg.vocab_size, h], "weight")?,
            layers,
            norm: RmsNorm::new(m.pp("norm").get(&[h], "weight")?, cfg.rms_norm_eps),
            lm_head,
            rotary: Rotary::new(hd, cfg.max_position_embeddings, cfg.rope_theta, dtype, w.device())?,
            cfg: cfg.clone(),
        })
    }

    /// Bytes one decode step streams from memory: every layer's matrices and norms, the final
    /// norm and `lm_head`, in their stored form (quantized blocks or dense).
    pub fn streamed_bytes(&self) -> u64 {
        let t = |x: &Tensor| (x.elem_count() * x.dtype().size_in_bytes()) as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.weight_bytes() + l.gate_up.weight_bytes() + l.o.weight_bytes() + l.down.weight_bytes()
                    + t(&l.input_norm.weight)
                    + t(&l.post_norm.weight)
            })
            .sum();
        layers + t(&self.norm.weight) + self.lm_head.weight_bytes()
    }

    /// Token ids → `[1, n, H]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, self.embed_tokens.device())?;
        Ok(self.embed_tokens.index_select(&ids, 0)?.unsqueeze(0)?)
    }

    /// Token ids `[B, T]` (u32) → embeddings `[B, T, H]`.
    pub fn embed_batch(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let e = self.embed_tokens.index_select(&ids.flatten_all()?, 0)?;
        Ok(e.reshape((b, t, self.cfg.hidden_size))?)
    }

    /// Runs `x` (`[1, T, H]`) at positions `cache.pos..` and returns the logits of the last
    /// position (`[V]`), appending keys/values to the cache.
    pub fn forward_embeds(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.forward_embeds_batch(x, cache)?.squeeze(0)?)
    }

    /// [`Self::forward_embeds`] for `B` sequences of equal length (`[B, T, H]` → `[B, V]`).
    pub fn forward_embeds_batch(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let t = x.dim(1)?;
        let x = self.run_layers(x, Some(cache))?;
        let last = self.norm.forward(&x.narrow(1, t - 1, 1)?)?;
        Ok(self.lm_head.forward(&last)?.squeeze(1)?.to_dtype(DType::F32)?)
    }

    /// Training forward: causal attention over the whole of `x` (`[B, T, H]`, positions from 0,
    /// no cache) → final-normed hidden states `[B, T, H]`. Right padding needs no extra mask:
    /// under the causal mask no real token ever attends to a later pad.
    pub fn forward_hidden(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(&self.run_layers(x, None)?)
    }

    /// `lm_head` on hidden states (any leading shape).
    /// The compute dtype (that of the embedding table).
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(h)?)
    }

    /// The decoder layers on `x` at positions `cache.pos..` (0 without a cache).
    fn run_layers(&self, x: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let heads = self.cfg.num_attention_heads;
        let kvh = self.cfg.kv_heads();
        let hd = self.cfg.head_dim();
        let start = cache.as_ref().map_or(0, |c| c.pos);
        if start + t > self.cfg.max_position_embeddings {
            return Err(crate::VlaError::Input(format!(
                "sequence of {} tokens exceeds max_position_embeddings {}",
                start + t,
                self.cfg.max_position_embeddings
            )));
        }
        if x.device().is_cuda() {
            crate::model::replay::note_eager_pass();
        }
        #[cfg(feature = "cuda")]
        if let Some(c) = cache.as_deref_mut() {
            if self.can_fuse(x, c) {
                return self.run_layers_fused(x, c);
            }
        }
        let mask = if t > 1 { Some(causal_mask(t, start, x.dtype(), x.device())?) } else { None };
        let mut x = x.clone();
        for (li, layer) in self.layers.iter().enumerate() {
            let r = x.clone();
            let n = layer.input_norm.forward(&x)?;
            // At t = 1 the narrows, reshapes and transposes are views, not copies.
            let [q, k, v] = <[Tensor; 3]>::try_from(layer.qkv.forward(&n)?).expect("three projections");
            let q = q.reshape((b, t, heads, hd))?.transpose(1, 2)?;
            let k = k.reshape((b, t, kvh, hd))?.transpose(1, 2)?;
            let v = v.reshape((b, t, kvh, hd))?.transpose(1, 2)?.contiguous()?;
            let q = self.rotary.apply_scaled(&q, start)?;
            let k = self.rotary.apply(&k, start)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(cache) => cache.append(li, start, k, v)?,
                None => (k, v),
            };
            let k = repeat_kv(k, heads / kvh)?;
            let v = repeat_kv(v, heads / kvh)?;
            let mut att = q.matmul(&k.t()?)?;
            if let Some(m) = &mask {
                att = att.broadcast_add(m)?;
            }
            let att = crate::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
            x = (r + layer.o.forward(&y)?)?;
            let r = x.clone();
            let n = layer.post_norm.forward(&x)?;
            let [g, u] = <[Tensor; 2]>::try_from(layer.gate_up.forward(&n)?).expect("two projections");
            let y = layer.down.forward(&crate::cpu_ops::silu_mul(&g, &u)?)?;
            x = (r + y)?;
        }
        if let Some(c) = cache {
            c.pos += t;
        }
        Ok(x)
    }
}

#[cfg(feature = "cuda")]
impl Llama {
    /// The fused kernels' preconditions: bf16 on CUDA, one sequence, a preallocated cache,
    /// fused qkv and gate/up projections, inference only.
    fn can_fuse(&self, x: &Tensor, cache: &KvCache) -> bool {
        crate::fused::enabled()
            && x.device().is_cuda()
            && x.dtype() == DType::BF16
            && x.dim(0).is_ok_and(|b| b == 1)
            // The attention kernel's limits: a warp per cached row, each lane D/32 values
            // read as pairs.
            && cache.capacity.is_some()
            && !x.track_op()
            && { let hd = self.cfg.head_dim(); hd % 64 == 0 && hd <= 256 }
            && self.layers.iter().all(|l| matches!((&l.qkv, &l.gate_up), (Parallel::Fused { .. }, Parallel::Fused { .. })))
    }

    /// [`Self::run_layers`] with the fused kernels (see fused.rs): about nine launches per
    /// layer instead of twenty. The residual add of each sublayer is fused into the next norm.
    fn run_layers_fused(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        use crate::fused;
        let (_, t, h) = x.dims3()?;
        let heads = self.cfg.num_attention_heads;
        let kvh = self.cfg.kv_heads();
        let hd = self.cfg.head_dim();
        let start = cache.pos;
        // The prompt's attention masks inside its softmax kernel and reads keys padded to a
        // multiple of 8 positions (the padding gets weight 0): at 279 positions the score and
        // value GEMMs had rows of odd length, and cuBLAS fell back to its unaligned kernels.
        let masked_softmax = fused::causal_softmax_on();
        let mask = if t > 1 && !masked_softmax { Some(causal_mask(t, start, x.dtype(), x.device())?) } else { None };
        let r = &self.rotary;
        let tables = [&r.cos_scaled, &r.sin_scaled, &r.cos, &r.sin];
        let dev = x.device();
        let p = |op: &'static str, f: &mut dyn FnMut() -> Result<Tensor>| fused::profile::timed(dev, op, f);
        let p2 = |op: &'static str, f: &mut dyn FnMut() -> Result<(Tensor, Tensor)>| fused::profile::timed(dev, op, f);
        let mut resid = x.clone();
        let mut n = p("rmsnorm", &mut || self.layers[0].input_norm.forward(x))?;
        for (li, layer) in self.layers.iter().enumerate() {
            let qkv = p("qkv", &mut || Ok(fused_lin(&layer.qkv)?.forward(&n)?))?;
            let (kc, vc) = cache.layers[li].as_ref().expect("preallocated cache has every layer");
            let q = p("rope_kv", &mut || Ok(fused::rope_kv(&qkv.contiguous()?, tables, kc, vc, heads, kvh, hd, start)?))?;
            let y = if t == 1 {
                p("attention", &mut || Ok(fused::decode_attention(&q, kc, vc, start + 1)?))?
            } else {
                p("attention", &mut || {
                    let n = if masked_softmax { (start + t).next_multiple_of(8).min(kc.dim(2)?) } else { start + t };
                    let k = repeat_kv(kc.narrow(2, 0, n)?, heads / kvh)?;
                    let v = repeat_kv(vc.narrow(2, 0, n)?, heads / kvh)?;
                    let att = q.matmul(&k.t()?)?;
                    let att = match &mask {
                        Some(m) => crate::ops::softmax_last_dim(&att.broadcast_add(m)?)?,
                        None => fused::causal_softmax(&att, t, start)?,
                    };
                    Ok(att.matmul(&v)?.transpose(1, 2)?.reshape((1, t, h))?)
                })?
            };
            let o = p("o", &mut || Ok(layer.o.forward(&y)?))?;
            let (r2, n2) = p2("add_rmsnorm", &mut || Ok(fused::add_rms_norm(&o, &resid, &layer.post_norm.weight, layer.post_norm.eps)?))?;
            let gu = p("gate_up", &mut || Ok(fused_lin(&layer.gate_up)?.forward(&n2)?))?;
            let d = match &layer.down {
                Lin::Dense(l) if l.bias().is_none() && fused::gemv_silu_applies(&gu, l.weight()) => {
                    p("silu_mul+down", &mut || Ok(fused::gemv_silu(&gu, l.weight())?))?
                }
                down => {
                    let a = p("silu_mul", &mut || Ok(fused::silu_mul(&gu)?))?;
                    p("down", &mut || Ok(down.forward(&a)?))?
                }
            };
            match self.layers.get(li + 1) {
                Some(next) => {
                    let (r3, n3) = p2("add_rmsnorm", &mut || Ok(fused::add_rms_norm(&d, &r2, &next.input_norm.weight, next.input_norm.eps)?))?;
                    resid = r3;
                    n = n3;
                }
                None => resid = (r2 + d)?,
            }
        }
        cache.pos += t;
        Ok(resid)
    }
}

#[cfg(feature = "cuda")]
fn fused_lin(p: &Parallel) -> Result<&Lin> {
    match p {
        Parallel::Fused { lin, .. } => Ok(lin),
        Parallel::Split(_) => Err(crate::VlaError::Input("fused decoder needs fused projections".into())),
    }
}

/// `[T, start+T]` additive mask: query i may see keys 0..=start+i.
///
/// Built on the device from two position ranges rather than uploaded: the ranges are a few
/// hundred bytes, which candle can keep resident for CUDA graph capture, while a host-built
/// `T × (start+T)` mask is too large for that and would have to be uploaded at every replay.
pub fn causal_mask(t: usize, start: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let total = start + t;
    let query = Tensor::arange(start as u32, total as u32, dev)?.reshape((t, 1))?;
    let key = Tensor::arange(0u32, total as u32, dev)?.reshape((1, total))?;
    let hidden = key.broadcast_gt(&query)?;
    let neg = Tensor::new(f32::NEG_INFINITY, dev)?.to_dtype(dtype)?.broadcast_as((t, total))?;
    let zero = Tensor::zeros((), dtype, dev)?.broadcast_as((t, total))?;
    Ok(hidden.where_cond(&neg, &zero)?)
}

fn repeat_kv(x: Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, h, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?.broadcast_as((b, h, n, t, d))?.reshape((b, h * n, t, d))?)
}

/// Index of the largest logit (greedy decoding, as every official OpenVLA call does).
pub fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?)
}
