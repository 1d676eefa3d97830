//! The timm ViT towers (DINOv2-with-registers, SigLIP), fused as OpenVLA's vision backbone, and
//! the projector into the LLM embedding space. Names mirror the timm state dict under
//! `vision_backbone.featurizer.` / `vision_backbone.fused_featurizer.` / `projector.`.

use candle_core::{Module, Tensor, D};

use crate::config::{OpenVlaConfig, TowerKind, VitConfig};
use crate::ops::Ln as LayerNorm;
use crate::weights::{Lin, Weights};
use crate::Result;

fn layer_norm(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    let w = w.pp(name);
    Ok(LayerNorm::new(w.get(&[dim], "weight")?, w.get(&[dim], "bias")?, eps))
}

/// Conv2d(3, D, k=p, s=p) applied as a matmul over flattened non-overlapping patches; this is
/// the same arithmetic as the strided convolution and avoids im2col on CPU.
#[derive(Clone, Debug)]
pub struct PatchEmbed {
    proj: Lin,
    patch: usize,
}

impl PatchEmbed {
    pub fn load(w: &Weights, dim: usize, patch: usize) -> Result<Self> {
        let w = w.pp("patch_embed.proj");
        let weight = w.get(&[dim, 3, patch, patch], "weight")?.reshape((dim, 3 * patch * patch))?;
        let bias = w.get(&[dim], "bias")?;
        Ok(Self { proj: Lin::Dense(candle_nn::Linear::new(weight, Some(bias))), patch })
    }

    /// `[B, 3, H, W]` → `[B, (H/p)·(W/p), D]`, patches in row-major order like timm's flatten(2).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let x = x
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, c * p * p))?;
        Ok(self.proj.forward(&x)?)
    }
}

#[derive(Clone, Debug)]
pub struct VitAttention {
    qkv: Lin,
    proj: Lin,
    heads: usize,
    head_dim: usize,
}

impl VitAttention {
    fn load(w: &Weights, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            qkv: w.linear("qkv", dim, 3 * dim, true)?,
            proj: w.linear("proj", dim, dim, true)?,
            heads,
            head_dim: dim / heads,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.proj.forward(&self.attend(x, false)?)?)
    }

    /// Attention up to the output projection. `scale_q` scales q as it is made contiguous
    /// (timm's unfused order) instead of scaling the scores: one kernel fewer, used by the
    /// fused CUDA path only so that the CPU's numbers stay as they were.
    fn attend(&self, x: &Tensor, scale_q: bool) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        // timm reshapes qkv to (B, N, 3, H, hd): rows are [Q; K; V], each head-contiguous.
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = if scale_q {
            (qkv.get(0)? * scale)?.matmul(&k.t()?)?
        } else {
            (qkv.get(0)?.contiguous()?.matmul(&k.t()?)? * scale)?
        };
        let att = crate::ops::softmax_last_dim(&att)?;
        Ok(att.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?)
    }
}

#[derive(Clone, Debug)]
pub struct VitBlock {
    norm1: LayerNorm,
    attn: VitAttention,
    ls1: Option<Tensor>,
    norm2: LayerNorm,
    fc1: Lin,
    fc2: Lin,
    ls2: Option<Tensor>,
}

impl VitBlock {
    pub fn load(w: &Weights, cfg: &VitConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        // HF renamed LayerScale's `gamma` to `scale_factor` on export (params named gamma are
        // rewritten by transformers), so that is the name in the checkpoint.
        let ls = |n: &str| -> Result<Option<Tensor>> {
            if cfg.layer_scale { Ok(Some(w.pp(n).get(&[d], "scale_factor")?)) } else { Ok(None) }
        };
        Ok(Self {
            norm1: layer_norm(w, "norm1", d, cfg.ln_eps)?,
            attn: VitAttention::load(&w.pp("attn"), d, cfg.num_heads)?,
            ls1: ls("ls1")?,
            norm2: layer_norm(w, "norm2", d, cfg.ln_eps)?,
            fc1: w.pp("mlp").linear("fc1", d, cfg.mlp_hidden, true)?,
            fc2: w.pp("mlp").linear("fc2", cfg.mlp_hidden, d, true)?,
            ls2: ls("ls2")?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(y) = self.forward_fused(x)? {
            return Ok(y);
        }
        let scale = |y: Tensor, ls: &Option<Tensor>| -> Result<Tensor> {
            Ok(match ls {
                Some(g) => y.broadcast_mul(g)?,
                None => y,
            })
        };
        let y = self.attn.forward(&self.norm1.forward(x)?)?;
        let x = (x + scale(y, &self.ls1)?)?;
        let h = crate::cpu_ops::gelu_erf(&self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        let y = self.fc2.forward(&h)?;
        Ok((&x + scale(y, &self.ls2)?)?)
    }

    /// [`Self::forward`] with each Linear's bias, GELU, LayerScale and residual add in one
    /// kernel after its matmul (see `fused::bias_scale_residual`): 17 launches per block
    /// instead of 23. `None` when the kernels do not apply (CPU, f32, training, quantized).
    #[cfg(feature = "cuda")]
    fn forward_fused(&self, x: &Tensor) -> Result<Option<Tensor>> {
        use crate::fused;
        fn dense(l: &Lin) -> Option<(Tensor, &Tensor)> {
            match l {
                Lin::Dense(d) => d.bias().map(|b| (d.weight().clone(), b)),
                _ => None,
            }
        }
        let (Some((wp, bp)), Some((w1, b1)), Some((w2, b2))) = (dense(&self.attn.proj), dense(&self.fc1), dense(&self.fc2)) else {
            return Ok(None);
        };
        if !fused::epilogue_applies(x) {
            return Ok(None);
        }
        let matmul = |x: &Tensor, w: Tensor| -> Result<Tensor> { Ok(candle_nn::Linear::new(w, None).forward(x)?) };
        let a = self.attn.attend(&self.norm1.forward(x)?, true)?;
        let x = fused::bias_scale_residual(&matmul(&a, wp)?, bp, self.ls1.as_ref(), x)?;
        let h = fused::bias_gelu(&matmul(&self.norm2.forward(&x)?, w1)?, b1)?;
        Ok(Some(fused::bias_scale_residual(&matmul(&h, w2)?, b2, self.ls2.as_ref(), &x)?))
    }
}

/// One tower. Only the blocks up to the second-to-last are loaded: OpenVLA takes features from
/// `get_intermediate_layers(n={depth-2})`, so the last block, the final norm and SigLIP's
/// attention-pool head never influence the output.
#[derive(Clone, Debug)]
pub struct Vit {
    pub cfg: VitConfig,
    patch_embed: PatchEmbed,
    pos_embed: Tensor,
    cls_token: Option<Tensor>,
    reg_token: Option<Tensor>,
    blocks: Vec<VitBlock>,
}

impl Vit {
    pub fn load(w: &Weights, cfg: &VitConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        let n = cfg.num_patches();
        let cls_token = if cfg.class_token { Some(w.get(&[1, 1, d], "cls_token")?) } else { None };
        let reg_token = if cfg.num_reg_tokens > 0 { Some(w.get(&[1, cfg.num_reg_tokens, d], "reg_token")?) } else { None };
        let used = cfg.depth.saturating_sub(1);
        let blocks = (0..used).map(|i| VitBlock::load(&w.pp(format!("blocks.{i}")), cfg)).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embed: PatchEmbed::load(w, d, cfg.patch_size)?,
            pos_embed: w.get(&[1, n, d], "pos_embed")?,
            cls_token,
            reg_token,
            blocks,
        })
    }

    /// Patch tokens plus position embedding, with `[cls, reg…]` prepended afterwards: with
    /// `no_embed_class` the prefix tokens get no position embedding.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.patch_embed.forward(x)?.broadcast_add(&self.pos_embed)?;
        let b = x.dim(0)?;
        let d = self.cfg.embed_dim;
        let mut parts = Vec::new();
        if let Some(c) = &self.cls_token {
            parts.push(c.broadcast_as((b, 1, d))?);
        }
        if let Some(r) = &self.reg_token {
            parts.push(r.broadcast_as((b, self.cfg.num_reg_tokens, d))?);
        }
        if parts.is_empty() {
            return Ok(x);
        }
        parts.push(x);
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// `[B, 3, S, S]` (already normalised for this tower) → `[B, N, D]` patch features.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.embed(x)?;
        for blk in &self.blocks {
            h = blk.forward(&h)?;
        }
        let p = self.cfg.num_prefix_tokens();
        Ok(h.narrow(1, p, self.cfg.num_patches())?)
    }
}

/// Checkpoint prefix of tower `i`.
pub fn tower_prefix(i: usize) -> &'static str {
    if i == 0 { "vision_backbone.featurizer" } else { "vision_backbone.fused_featurizer" }
}

#[derive(Clone, Debug)]
pub struct VisionBackbone {
    pub towers: Vec<Vit>,
}

impl VisionBackbone {
    pub fn load(w: &Weights, towers: &[VitConfig]) -> Result<Self> {
        let towers = towers.iter().enumerate().map(|(i, c)| Vit::load(&w.pp(tower_prefix(i)), c)).collect::<Result<_>>()?;
        Ok(Self { towers })
    }

    pub fn feature_dim(&self) -> usize {
        self.towers.iter().map(|t| t.cfg.embed_dim).sum()
    }

    /// `[B, 3·T, S, S]` → `[B, N, ΣD]`: tower i reads channels 3i..3i+3, outputs concatenated on
    /// the feature dimension.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let feats = self
            .towers
            .iter()
            .enumerate()
            .map(|(i, t)| t.forward(&pixels.narrow(1, 3 * i, 3)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&feats, D::Minus1)?)
    }
}

/// `PrismaticProjector`: fc1→GELU→fc2→GELU→fc3 for fused backbones (fc1 widens 4×), and
/// fc1→GELU→fc2 for a single tower. GELUs are exact (erf).
#[derive(Clone, Debug)]
pub struct Projector {
    layers: Vec<Lin>,
}

impl Projector {
    pub fn dims(cfg: &OpenVlaConfig, vision_dim: usize) -> Vec<(usize, usize)> {
        let llm = cfg.text_config.hidden_size;
        if cfg.use_fused_vision_backbone {
            vec![(vision_dim, 4 * vision_dim), (4 * vision_dim, llm), (llm, llm)]
        } else {
            vec![(vision_dim, llm), (llm, llm)]
        }
    }

    pub fn load(w: &Weights, cfg: &OpenVlaConfig, vision_dim: usize) -> Result<Self> {
        let w = w.pp("projector");
        let layers = Self::dims(cfg, vision_dim)
            .into_iter()
            .enumerate()
            .map(|(i, (a, b))| w.linear(&format!("fc{}", i + 1), a, b, true))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = crate::cpu_ops::gelu_erf(&h)?;
            }
        }
        Ok(h)
    }
}

pub fn tower_kind_label(k: TowerKind) -> &'static str {
    match k {
        TowerKind::Dinov2 => "dinov2-reg",
        TowerKind::Siglip => "siglip",
    }
}
