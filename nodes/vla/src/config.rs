//! Model configuration, mirroring the Hugging Face `config.json` of `openvla/openvla-7b`.
//!
//! The HF file does not spell out the vision tower hyper-parameters: they are implied by the
//! timm model ids. We derive them from the ids we know and, for our own small models, store
//! them explicitly under the extra key `vela_vision_towers` (unknown keys are ignored by HF).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Result, VlaError};

/// Which family a vision tower belongs to; decides prefix tokens, layer scale and normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TowerKind {
    /// DINOv2 with registers: cls + register prefix tokens, LayerScale, ImageNet normalisation.
    Dinov2,
    /// SigLIP: no prefix tokens, no LayerScale, (0.5, 0.5) normalisation.
    Siglip,
}

/// Hyper-parameters of one timm ViT tower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub kind: TowerKind,
    pub image_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    /// Number of register tokens (DINOv2-reg4: 4).
    pub num_reg_tokens: usize,
    pub class_token: bool,
    /// LayerScale `ls1`/`ls2` present (DINOv2 uses init_values, so yes).
    pub layer_scale: bool,
    /// SigLIP's MAP pooling head exists in the checkpoint but OpenVLA never runs it.
    pub attn_pool: bool,
    pub ln_eps: f64,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// ImageNet mean/std rounded to bf16, exactly as the released preprocessor_config.json has them.
#[allow(clippy::excessive_precision)]
pub const DINO_MEAN: [f32; 3] = [0.484375, 0.455078125, 0.40625];
#[allow(clippy::excessive_precision)]
pub const DINO_STD: [f32; 3] = [0.228515625, 0.2236328125, 0.224609375];
pub const SIGLIP_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
pub const SIGLIP_STD: [f32; 3] = [0.5, 0.5, 0.5];

impl VitConfig {
    pub fn num_patches(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g
    }
    pub fn num_prefix_tokens(&self) -> usize {
        self.num_reg_tokens + usize::from(self.class_token)
    }
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Tower hyper-parameters implied by a timm model id at the given image size.
    pub fn from_timm_id(id: &str, image_size: usize) -> Result<Self> {
        let base = id.split('.').next().unwrap_or(id);
        match base {
            "vit_large_patch14_reg4_dinov2" => Ok(Self::dino(image_size, 14, 1024, 24, 16, 4096, 4)),
            "vit_so400m_patch14_siglip_224" => Ok(Self::siglip(image_size, 14, 1152, 27, 16, 4304, true)),
            _ => Err(VlaError::Config(format!(
                "unknown timm model id `{id}`: add `vela_vision_towers` to config.json"
            ))),
        }
    }

    pub fn dino(image_size: usize, patch: usize, dim: usize, depth: usize, heads: usize, mlp: usize, regs: usize) -> Self {
        Self {
            kind: TowerKind::Dinov2,
            image_size,
            patch_size: patch,
            embed_dim: dim,
            depth,
            num_heads: heads,
            mlp_hidden: mlp,
            num_reg_tokens: regs,
            class_token: true,
            layer_scale: true,
            attn_pool: false,
            ln_eps: 1e-6,
            image_mean: DINO_MEAN,
            image_std: DINO_STD,
        }
    }

    pub fn siglip(image_size: usize, patch: usize, dim: usize, depth: usize, heads: usize, mlp: usize, attn_pool: bool) -> Self {
        Self {
            kind: TowerKind::Siglip,
            image_size,
            patch_size: patch,
            embed_dim: dim,
            depth,
            num_heads: heads,
            mlp_hidden: mlp,
            num_reg_tokens: 0,
            class_token: false,
            layer_scale: false,
            attn_pool,
            ln_eps: 1e-6,
            image_mean: SIGLIP_MEAN,
            image_std: SIGLIP_STD,
        }
    }
}

/// The Llama `text_config`. Defaults are transformers' `LlamaConfig()` defaults, because the
/// OpenVLA export only stores non-default entries (so e.g. `rms_norm_eps` is really 1e-6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default = "d::model_type_llama")]
    pub model_type: String,
    #[serde(default = "d::vocab")]
    pub vocab_size: usize,
    #[serde(default = "d::hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::inter")]
    pub intermediate_size: usize,
    #[serde(default = "d::layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::heads")]
    pub num_attention_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "d::eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d::max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d::theta")]
    pub rope_theta: f64,
    #[serde(default = "d::bos")]
    pub bos_token_id: u32,
    #[serde(default = "d::eos")]
    pub eos_token_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

/// Per-dimension statistics of one dataset (`norm_stats[key]["action"]`): the type
/// `vela dataset stats` computes, so a checkpoint's statistics and a dataset's are one thing.
pub use vela_data::stats::DimStats as Stats;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub action: Stats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proprio: Option<Stats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_transitions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_trajectories: Option<u64>,
}

/// `OpenVLAConfig` as serialised by `save_pretrained`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenVlaConfig {
    #[serde(default = "d::model_type")]
    pub model_type: String,
    #[serde(default = "d::architectures")]
    pub architectures: Vec<String>,
    pub vision_backbone_id: String,
    pub llm_backbone_id: String,
    #[serde(default = "d::arch")]
    pub arch_specifier: String,
    pub use_fused_vision_backbone: bool,
    pub timm_model_ids: Vec<String>,
    #[serde(default)]
    pub timm_override_act_layers: Vec<Option<String>>,
    pub image_sizes: Vec<usize>,
    #[serde(default = "d::resize")]
    pub image_resize_strategy: String,
    #[serde(default)]
    pub hf_llm_id: String,
    #[serde(default = "d::max_len")]
    pub llm_max_length: usize,
    #[serde(default = "d::pad_id")]
    pub pad_token_id: u32,
    #[serde(default = "d::pad_multiple")]
    pub pad_to_multiple_of: usize,
    #[serde(default = "d::bins")]
    pub n_action_bins: usize,
    #[serde(default)]
    pub output_projector_states: bool,
    #[serde(default = "d::dtype")]
    pub torch_dtype: String,
    pub text_config: TextConfig,
    #[serde(default)]
    pub norm_stats: BTreeMap<String, DatasetStats>,
    /// Area of the centre crop evaluation applies, for models trained with random-resized-crop
    /// augmentation (`vela train --image-aug` writes 0.9, the crop's area in training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vela_center_crop: Option<f32>,
    /// Actions per prediction (`vela train --action-chunk`): the model decodes this many
    /// 7-D actions in a row, the current one first, and the simulator executes them before it
    /// asks again. OpenVLA-7B predicts one; chunking is what OpenVLA-OFT and ACT found to
    /// stop the pauses and drift of single-step policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vela_action_chunk: Option<usize>,
    /// Explicit tower hyper-parameters for models whose timm ids we cannot infer (our own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vela_vision_towers: Option<Vec<VitConfig>>,
    /// Everything else (auto_map, transformers_version, ...) is carried through untouched.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

mod d {
    pub fn model_type() -> String { "openvla".into() }
    pub fn model_type_llama() -> String { "llama".into() }
    pub fn architectures() -> Vec<String> { vec!["OpenVLAForActionPrediction".into()] }
    pub fn arch() -> String { "no-align+fused-gelu-mlp".into() }
    pub fn resize() -> String { "resize-naive".into() }
    pub fn max_len() -> usize { 2048 }
    pub fn pad_id() -> u32 { 32000 }
    pub fn pad_multiple() -> usize { 64 }
    pub fn bins() -> usize { 256 }
    pub fn dtype() -> String { "bfloat16".into() }
    pub fn vocab() -> usize { 32000 }
    pub fn hidden() -> usize { 4096 }
    pub fn inter() -> usize { 11008 }
    pub fn layers() -> usize { 32 }
    pub fn heads() -> usize { 32 }
    pub fn eps() -> f64 { 1e-6 }
    pub fn max_pos() -> usize { 2048 }
    pub fn theta() -> f64 { 10000.0 }
    pub fn bos() -> u32 { 1 }
    pub fn eos() -> u32 { 2 }
}

/// Named model sizes that `make_checkpoint` can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Fused DINO+SigLIP at 28 px with a 2-layer, 64-wide Llama: for unit tests.
    Tiny,
    /// Like `Tiny` but with a single DINOv2-reg tower (exercises the non-fused projector).
    TinySingle,
    /// Single DINOv2-reg tower at 224 px, 4-layer 256-wide Llama: a laptop-CPU model.
    Small,
    /// `Small` at 112 px (64 patches instead of 256) with tied input/output embeddings: about
    /// 3x cheaper to train and run, and 29 MB in bf16 instead of 45 (the vocabulary matrices
    /// dominate). The size the shipped MimicGen model is trained at.
    Small112,
    /// `Small` at 168 px (144 patches) with tied embeddings: MimicGen's D2-D4 tell the cube to
    /// move only by size (4 vs 5 cm) or a colour word, and at 112 px the two cubes differ by
    /// about one pixel.
    Small168,
    /// `Small` at 224 px with tied embeddings (the reference's resolution; 31 MB in bf16).
    SmallTied,
    /// The exact openvla-7b layout (7.5 B parameters).
    SevenB,
}

impl std::str::FromStr for Preset {
    type Err = VlaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "tiny-single" => Ok(Self::TinySingle),
            "small" => Ok(Self::Small),
            "small-112" => Ok(Self::Small112),
            "small-168" => Ok(Self::Small168),
            "small-tied" => Ok(Self::SmallTied),
            "7b-shape" | "7b" => Ok(Self::SevenB),
            _ => Err(VlaError::Config(format!("unknown preset `{s}` (tiny|tiny-single|small|small-112|small-168|small-tied|7b-shape)"))),
        }
    }
}

impl OpenVlaConfig {
    pub fn preset(p: Preset) -> Self {
        let mut norm_stats = BTreeMap::new();
        norm_stats.insert("bridge_orig".to_string(), bridge_orig_stats());
        let llm = |hidden, inter, layers, heads| TextConfig {
            model_type: "llama".into(),
            vocab_size: 32064,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: None,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 2048,
            rope_theta: 10000.0,
            bos_token_id: 1,
            eos_token_id: 2,
            pad_token_id: Some(32000),
            tie_word_embeddings: false,
            torch_dtype: Some("bfloat16".into()),
            extra: Default::default(),
        };
        let mut extra = serde_json::Map::new();
        extra.insert("transformers_version".into(), "4.40.1".into());
        let base = |vision_id: &str, fused: bool, ids: Vec<String>, sizes: Vec<usize>, text, towers| Self {
            model_type: d::model_type(),
            architectures: d::architectures(),
            vision_backbone_id: vision_id.into(),
            llm_backbone_id: "llama2-7b-pure".into(),
            arch_specifier: if fused { "no-align+fused-gelu-mlp".into() } else { "no-align+gelu-mlp".into() },
            use_fused_vision_backbone: fused,
            timm_override_act_layers: ids.iter().map(|_| None).collect(),
            timm_model_ids: ids,
            image_sizes: sizes,
            image_resize_strategy: d::resize(),
            hf_llm_id: "meta-llama/Llama-2-7b-hf".into(),
            llm_max_length: 2048,
            pad_token_id: 32000,
            pad_to_multiple_of: 64,
            n_action_bins: 256,
            output_projector_states: false,
            torch_dtype: d::dtype(),
            text_config: text,
            norm_stats: norm_stats.clone(),
            vela_center_crop: None,
            vela_action_chunk: None,
            vela_vision_towers: towers,
            extra: extra.clone(),
        };
        // One DINOv2-reg tower (6 layers, 192 wide) and a 4-layer, 256-wide Llama; tied
        // embeddings halve the size, since the vocabulary matrices dominate.
        let small = |px: usize, tied: bool| {
            base(
                &format!("vela-small-dinov2-{px}px"),
                false,
                vec!["vela_small_patch14_reg4_dinov2".into()],
                vec![px],
                TextConfig { tie_word_embeddings: tied, ..llm(256, 768, 4, 4) },
                Some(vec![VitConfig::dino(px, 14, 192, 6, 3, 768, 4)]),
            )
        };
        match p {
            Preset::SevenB => base(
                "dinosiglip-vit-so-224px",
                true,
                vec!["vit_large_patch14_reg4_dinov2.lvd142m".into(), "vit_so400m_patch14_siglip_224".into()],
                vec![224, 224],
                llm(4096, 11008, 32, 32),
                None,
            ),
            Preset::Tiny => base(
                "vela-tiny-dinosiglip-28px",
                true,
                vec!["vela_tiny_patch14_reg4_dinov2".into(), "vela_tiny_patch14_siglip".into()],
                vec![28, 28],
                llm(64, 128, 2, 4),
                Some(vec![
                    VitConfig::dino(28, 14, 32, 3, 2, 64, 4),
                    VitConfig::siglip(28, 14, 48, 3, 2, 96, true),
                ]),
            ),
            Preset::TinySingle => base(
                "vela-tiny-dinov2-28px",
                false,
                vec!["vela_tiny_patch14_reg4_dinov2".into()],
                vec![28],
                llm(64, 128, 2, 4),
                Some(vec![VitConfig::dino(28, 14, 32, 3, 2, 64, 4)]),
            ),
            Preset::Small => small(224, false),
            Preset::Small112 => small(112, true),
            Preset::Small168 => small(168, true),
            Preset::SmallTied => small(224, true),
        }
    }

    /// The vision towers, in checkpoint order (featurizer, then fused_featurizer).
    pub fn vision_towers(&self) -> Result<Vec<VitConfig>> {
        let towers = match &self.vela_vision_towers {
            Some(t) => t.clone(),
            None => self
                .timm_model_ids
                .iter()
                .zip(self.image_sizes.iter())
                .map(|(id, &s)| VitConfig::from_timm_id(id, s))
                .collect::<Result<Vec<_>>>()?,
        };
        let want = if self.use_fused_vision_backbone { 2 } else { 1 };
        if towers.len() != want {
            return Err(VlaError::Config(format!(
                "use_fused_vision_backbone={} needs {want} towers, found {}",
                self.use_fused_vision_backbone,
                towers.len()
            )));
        }
        if towers.iter().any(|t| t.num_patches() != towers[0].num_patches()) {
            return Err(VlaError::Config("fused towers must produce the same number of patches".into()));
        }
        Ok(towers)
    }

    /// Size of the tokenizer vocabulary proper (without the padding added for the embedding).
    pub fn base_vocab(&self) -> usize {
        self.text_config.vocab_size - self.pad_to_multiple_of
    }

    /// Actions decoded per prediction (1 unless trained with `--action-chunk`).
    pub fn action_chunk(&self) -> usize {
        self.vela_action_chunk.unwrap_or(1).max(1)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| VlaError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| VlaError::Config(format!("{}: {e}", path.display())))
    }

    pub fn action_stats(&self, key: &str) -> Result<&Stats> {
        self.norm_stats.get(key).map(|s| &s.action).ok_or_else(|| {
            VlaError::Config(format!(
                "action space `{key}` not in norm_stats (have: {})",
                self.norm_stats.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Bridge V2 action statistics as published in openvla-7b's config.json.
#[allow(clippy::excessive_precision)]
pub fn bridge_orig_stats() -> DatasetStats {
    DatasetStats {
        action: Stats {
            mask: Some(vec![true, true, true, true, true, true, false]),
            q01: vec![-0.02872725307941437, -0.04170349963009357, -0.026093858778476715, -0.08092105075716972, -0.09288699507713317, -0.20718276381492615, 0.0],
            q99: vec![0.028309678435325586, 0.040855254605412394, 0.040161586627364146, 0.08192047759890528, 0.07792850524187081, 0.20382574498653397, 1.0],
            mean: vec![0.0002334194869035855, 0.00013004911306779832, -0.00012762474943883717, -0.0001556558854645118, -0.0004039328487124294, 0.00023557482927571982, 0.5764579176902771],
            std: vec![0.009765930473804474, 0.013689135201275349, 0.012667362578213215, 0.028534092009067535, 0.030637972056865692, 0.07691419124603271, 0.4973701536655426],
            min: vec![-0.4007510244846344, -0.13874775171279907, -0.22553899884223938, -3.2010786533355713, -1.8618112802505493, -6.279075622558594, 0.0],
            max: vec![0.41691166162490845, 0.25864794850349426, 0.21218234300613403, 3.122201919555664, 1.8618112802505493, 6.280478477478027, 1.0],
        },
        proprio: Some(Stats {
            mean: vec![0.0; 7],
            std: vec![0.0; 7],
            max: vec![0.0; 7],
            min: vec![0.0; 7],
            q01: vec![0.0; 7],
            q99: vec![0.0; 7],
            mask: None,
        }),
        num_transitions: Some(2135463),
        num_trajectories: Some(60064),
    }
}
