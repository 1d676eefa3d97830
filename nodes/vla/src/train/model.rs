//! The training forward pass: a batch of images + token sequences → logits at the supervised
//! positions only (7 action tokens + `</s>` per sample), with the same modules as inference.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::config::OpenVlaConfig;
use crate::llama::Llama;
use crate::vision::{Projector, VisionBackbone};
use crate::weights::{Store, Weights};
use crate::Result;

/// The training parameters seen in another dtype: every tensor is cast on the way out, so the
/// gradient flows back through the cast into the f32 variables (mixed precision with f32
/// master weights). Casts are taken once per model build, so the model is rebuilt each step.
pub struct CastStore<S: Store> {
    pub inner: S,
    pub dtype: DType,
}

impl<S: Store> Store for CastStore<S> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.inner.tensor(name, shape)?.to_dtype(self.dtype)?)
    }
    fn device(&self) -> &candle_core::Device {
        self.inner.device()
    }
}

pub struct TrainModel {
    backbone: VisionBackbone,
    projector: Projector,
    llm: Llama,
    n_patches: usize,
}

impl TrainModel {
    pub fn new(config: &OpenVlaConfig, store: Arc<dyn Store>) -> Result<Self> {
        Self::with_dtype(config, store, DType::F32)
    }

    /// A model computing in `dtype` (the store's tensors must be in it too, e.g. [`CastStore`]).
    pub fn with_dtype(config: &OpenVlaConfig, store: Arc<dyn Store>, dtype: DType) -> Result<Self> {
        let w = Weights::new(store);
        let towers = config.vision_towers()?;
        let backbone = VisionBackbone::load(&w, &towers)?;
        let projector = Projector::load(&w, config, backbone.feature_dim())?;
        let llm = Llama::load(&w.pp("language_model"), &config.text_config, dtype)?;
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
        let patches = patches.to_dtype(self.llm.dtype())?;
        let text = self.llm.embed_batch(ids)?;
        let l = text.dim(1)?;
        let seq = Tensor::cat(&[&text.narrow(1, 0, 1)?, &patches, &text.narrow(1, 1, l - 1)?], 1)?;
        let h = self.llm.forward_hidden(&seq)?;
        let (b, t, d) = h.dims3()?;
        let picked = h.reshape((b * t, d))?.index_select(gather, 0)?;
        // The loss and the scores want f32 whatever the compute dtype.
        Ok(self.llm.logits(&picked)?.to_dtype(DType::F32)?)
    }

    /// Length of the model sequence for text of `l` tokens (`[BOS] + patches + l − 1`).
    pub fn seq_len(&self, l: usize) -> usize {
        self.n_patches + l
    }
}
