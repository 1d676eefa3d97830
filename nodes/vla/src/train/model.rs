//! The training forward pass: a batch of images + token sequences → logits at the supervised
//! positions only (7 action tokens + `</s>` per sample), with the same modules as inference.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::config::OpenVlaConfig;
use crate::llama::Llama;
use crate::vision::{Projector, VisionBackbone};
use crate::weights::{Store, Weights};
use crate::Result;

pub struct TrainModel {
    backbone: VisionBackbone,
    projector: Projector,
    llm: Llama,
    n_patches: usize,
}

impl TrainModel {
    pub fn new(config: &OpenVlaConfig, store: Arc<dyn Store>) -> Result<Self> {
        let w = Weights::new(store);
        let towers = config.vision_towers()?;
        let backbone = VisionBackbone::load(&w, &towers)?;
        let projector = Projector::load(&w, config, backbone.feature_dim())?;
        let llm = Llama::load(&w.pp("language_model"), &config.text_config, DType::F32)?;
        Ok(Self { backbone, projector, llm, n_patches: towers[0].num_patches() })
    }

    pub fn n_patches(&self) -> usize {
        self.n_patches
    }

    /// `pixels` `[B, 3·T, S, S]`, `ids` `[B, L]` (right-padded), `gather` the flattened indices
    /// (`b · seq_len + position`) of the hidden states that predict the supervised tokens →
    /// logits `[len(gather), V]`.
    ///
    /// The sequence is laid out as at inference: `[BOS] + patches + ids[1..]`, positions
    /// 0.., so text token `j ≥ 1` of sample `b` sits at `n_patches + j` and is predicted
    /// from position `n_patches + j − 1`.
    pub fn forward(&self, pixels: &Tensor, ids: &Tensor, gather: &Tensor) -> Result<Tensor> {
        let patches = self.projector.forward(&self.backbone.forward(pixels)?)?;
        let text = self.llm.embed_batch(ids)?;
        let l = text.dim(1)?;
        let seq = Tensor::cat(&[&text.narrow(1, 0, 1)?, &patches, &text.narrow(1, 1, l - 1)?], 1)?;
        let h = self.llm.forward_hidden(&seq)?;
        let (b, t, d) = h.dims3()?;
        let picked = h.reshape((b * t, d))?.index_select(gather, 0)?;
        self.llm.logits(&picked)
    }

    /// Length of the model sequence for text of `l` tokens (`[BOS] + patches + l − 1`).
    pub fn seq_len(&self, l: usize) -> usize {
        self.n_patches + l
    }
}
