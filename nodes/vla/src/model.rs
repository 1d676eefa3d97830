//! `OpenVLAForActionPrediction`: image + instruction → 7 greedy action tokens → action vector.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use image::RgbImage;

use crate::action::{unnormalize, ActionTokenizer};
use crate::config::{OpenVlaConfig, VitConfig};
use crate::llama::{argmax, KvCache, Llama};
use crate::quantize::Quantization;
use crate::tokenizer::{self, TextTokenizer, SPACE_TOKEN};
use crate::vision::{Projector, VisionBackbone};
use crate::weights::{parse_torch_dtype, GgufStore, ProgressStore, SafetensorsStore, Weights};
use crate::{Result, VlaError};

pub(crate) mod batch;
pub(crate) mod replay;

/// Pseudo action space that skips un-normalisation and returns values in [-1, 1].
pub const NORMALIZED: &str = "normalized";

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Load `model-<mode>.gguf` from the folder instead of the safetensors shards.
    pub quantization: Option<Quantization>,
    pub device: Device,
    /// Compute dtype; F32 on CPU (candle's CPU matmuls are fastest and exact there).
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { quantization: None, device: Device::Cpu, dtype: DType::F32 }
    }
}

/// Emitted once per generated token while decoding.
#[derive(Clone, Debug)]
pub struct PartialAction {
    /// Which action dimension this token decoded (0-based).
    pub index: usize,
    pub token: u32,
    /// Action values decoded so far (un-normalised unless the space is `normalized`).
    pub values: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct ActionPrediction {
    pub action: Vec<f32>,
    pub normalized: Vec<f32>,
    pub tokens: Vec<u32>,
    pub prompt_ids: Vec<u32>,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// Per-stage wall times of [`OpenVla::predict_timed`], device synchronised in between.
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    /// Host-side preprocessing (crop, resize) and the upload of the result.
    pub preprocess_ms: f64,
    /// Both vision towers (with replays also the pixel scaling, which runs on the device there).
    pub vision_ms: f64,
    pub projector_ms: f64,
    /// The prompt pass through the LLM plus the first token's argmax.
    pub prefill_ms: f64,
    /// One entry per further token (embed, one-position pass, argmax).
    pub token_ms: Vec<f64>,
    pub tokens: Vec<u32>,
    /// Positions in the prefill (BOS + patches + prompt).
    pub prefill_len: usize,
}

pub struct OpenVla {
    pub config: OpenVlaConfig,
    towers: Vec<VitConfig>,
    backbone: VisionBackbone,
    projector: Projector,
    llm: Llama,
    tokenizer: Box<dyn TextTokenizer>,
    actions: ActionTokenizer,
    dtype: DType,
    device: Device,
    /// How the weights were stored (for `--verbose` / stats).
    pub weights_kind: String,
    /// The recorded plan of the latest prompt (CUDA graphs; see `replay.rs`).
    replays: std::sync::Mutex<replay::ReplayCache>,
    /// Actions of a chunk that predictions decode (0: all of them); see
    /// [`OpenVla::set_decoded_actions`].
    decoded: std::sync::atomic::AtomicUsize,
    /// Bins either side of the mode that a decoded value averages over (0: the argmax bin);
    /// see [`OpenVla::set_decode_window`].
    window: std::sync::atomic::AtomicUsize,
}

/// The inference prompt, without the trailing space the training text had.
pub fn prompt_text(instruction: &str) -> String {
    format!("In: What action should the robot take to {}?\nOut:", instruction.to_lowercase())
}

/// Prompt ids with BOS and the trailing "▁" token the reference appends (training puts the
/// action tokens right after it, so both sides see the same ids).
pub fn prompt_ids(tokenizer: &dyn TextTokenizer, instruction: &str) -> Vec<u32> {
    let mut ids = tokenizer.encode(&prompt_text(instruction), true);
    if ids.last() != Some(&SPACE_TOKEN) {
        ids.push(SPACE_TOKEN);
    }
    ids
}

impl OpenVla {
    /// Loads an HF-layout folder (config.json + safetensors shards) or a `quantize` output.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::load_with_progress(dir, opts, |_, _| {})
    }

    /// Like [`Self::load`], calling `progress(loaded, total)` after each tensor. Meant to run on
    /// a loader thread, off the graph's hot path.
    pub fn load_with_progress(
        dir: &Path,
        opts: &LoadOptions,
        progress: impl Fn(usize, usize) + Send + Sync + 'static,
    ) -> Result<Self> {
        let config = OpenVlaConfig::from_file(&dir.join("config.json"))?;
        let total = crate::checkpoint::loader_expectations(&config)?.len();
        let cb: Box<dyn Fn(usize, usize) + Send + Sync> = Box::new(progress);
        let t0 = Instant::now();
        let (weights, kind) = match opts.quantization {
            Some(q) => {
                let path = crate::quantize::ensure_quantized(dir, q)?;
                let store = GgufStore::open(&path, opts.dtype, &opts.device)?;
                (Weights::new(Arc::new(ProgressStore::new(store, total, cb))), q.to_string())
            }
            None => {
                let stored = parse_torch_dtype(&config.torch_dtype)?;
                let store = SafetensorsStore::open(dir, stored, opts.dtype, &opts.device)?;
                (Weights::new(Arc::new(ProgressStore::new(store, total, cb))), format!("safetensors {}", config.torch_dtype))
            }
        };
        let tok = tokenizer::load_for_model(dir)?;
        let m = Self::from_weights(config, &weights, tok, opts.dtype)?;
        tracing::info!(dir = %dir.display(), weights = %kind, tokenizer = m.tokenizer.name(), secs = t0.elapsed().as_secs_f64(), "loaded OpenVLA");
        Ok(Self { weights_kind: kind, ..m })
    }

    /// Builds the model from any weight store (files, GGUF, or a recording store).
    pub fn from_weights(config: OpenVlaConfig, w: &Weights, tokenizer: Box<dyn TextTokenizer>, dtype: DType) -> Result<Self> {
        let towers = config.vision_towers()?;
        let backbone = VisionBackbone::load(w, &towers)?;
        let projector = Projector::load(w, &config, backbone.feature_dim())?;
        let llm = Llama::load(&w.pp("language_model"), &config.text_config, dtype)?;
        let actions = ActionTokenizer::new(config.base_vocab() as u32, config.n_action_bins);
        Ok(Self {
            towers,
            backbone,
            projector,
            llm,
            tokenizer,
            actions,
            dtype,
            device: w.device().clone(),
            weights_kind: "memory".into(),
            replays: std::sync::Mutex::new(replay::ReplayCache::new(replay::default_enabled(w.device()))),
            decoded: std::sync::atomic::AtomicUsize::new(0),
            window: std::sync::atomic::AtomicUsize::new(0),
            config,
        })
    }

    pub fn tokenizer_name(&self) -> &'static str {
        self.tokenizer.name()
    }

    pub fn action_tokenizer(&self) -> &ActionTokenizer {
        &self.actions
    }

    /// Valid values for `action_space`: the `norm_stats` keys plus `normalized`.
    pub fn action_spaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.config.norm_stats.keys().cloned().collect();
        v.push(NORMALIZED.into());
        v
    }

    /// Prompt ids with BOS and the trailing "▁" token the reference appends.
    pub fn prompt_ids(&self, instruction: &str) -> Vec<u32> {
        prompt_ids(self.tokenizer.as_ref(), instruction)
    }

    /// The statistics that un-normalise actions in `action_space` (none for `normalized`) and
    /// the number of action dimensions, i.e. tokens to decode.
    ///
    /// A model that predicts a chunk of K actions decodes K times the dimensions, and its
    /// statistics repeat K times, so every consumer of a prediction sees one flat vector of
    /// K whole actions, the current one first.
    pub(crate) fn space_stats(&self, action_space: &str) -> Result<(Option<crate::config::Stats>, usize)> {
        let stats = if action_space == NORMALIZED { None } else { Some(self.config.action_stats(action_space)?.clone()) };
        let dims = stats.as_ref().map(|s| s.q01.len()).unwrap_or(7);
        let k = self.decoded_actions();
        Ok((stats.map(|s| crate::action::tile_stats(&s, k)), dims * k))
    }

    /// Actions per prediction (`vela_action_chunk`; 1 for OpenVLA-7B).
    pub fn action_chunk(&self) -> usize {
        self.config.action_chunk()
    }

    /// Decode only the first `n` actions of each chunk (0 or more than the chunk: all).
    ///
    /// Why: a chunked model run with a receding horizon of `n` actions (the OpenVLA node's
    /// `execute`) would otherwise decode tokens nobody uses; executing one action of 4 costs a
    /// quarter of the decode steps. Decoding is autoregressive, so the first `n` actions are the
    /// same as the whole chunk's first `n`.
    pub fn set_decoded_actions(&self, n: usize) {
        self.decoded.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Actions one prediction decodes: the chunk, or fewer after [`Self::set_decoded_actions`].
    pub fn decoded_actions(&self) -> usize {
        match self.decoded.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.action_chunk(),
            n => n.min(self.action_chunk()),
        }
    }

    /// Decode each action value as the probability-weighted mean of the bins within `w` of the
    /// most likely one (0, the default: the argmax bin's centre, as OpenVLA does). The token
    /// fed back to the decoder stays the most likely action token, so only the emitted values
    /// change. See [`crate::action::ActionTokenizer::decode_window`] for why.
    ///
    /// CUDA's replayed plan keeps only token ids on the device, so a window above 0 decodes
    /// without it (op by op).
    pub fn set_decode_window(&self, w: usize) {
        self.window.store(w, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn decode_window(&self) -> usize {
        self.window.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next token of each row of `logits` (`[V]` or `[B, V]`) and its normalised action
    /// value: the argmax over the whole vocabulary, or with a decode window the most likely
    /// action token and the windowed mean around it.
    pub(crate) fn pick_tokens(&self, logits: &Tensor) -> Result<Vec<(u32, f32)>> {
        let logits = if logits.rank() == 1 { logits.unsqueeze(0)? } else { logits.clone() };
        let w = self.decode_window();
        if w == 0 {
            let ids: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
            return Ok(ids.into_iter().map(|t| (t, self.actions.decode(t))).collect());
        }
        let (first, n) = (self.actions.first_action_id(), self.actions.n_bins());
        let bins: Vec<Vec<f32>> = logits.narrow(D::Minus1, first as usize, n)?.to_dtype(DType::F32)?.to_vec2()?;
        Ok(bins
            .iter()
            .map(|row| {
                let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(j, _)| j).unwrap_or(0);
                (first + best as u32, self.actions.decode_window(row, w))
            })
            .collect())
    }

    /// Action tokens one prediction decodes: 7 per decoded action.
    pub fn action_tokens(&self) -> usize {
        7 * self.decoded_actions()
    }

    /// Pixel values as the model was trained to see them: models trained with random-crop
    /// augmentation (`vela_center_crop` in config.json) look at the centre crop of the same
    /// area, as OpenVLA evaluates its augmented fine-tunes; others at the whole frame.
    pub fn pixel_values(&self, img: &RgbImage) -> Result<Tensor> {
        crate::preprocess::pixel_values(&self.framed(img), &self.towers, self.dtype, &self.device)
    }

    /// The frame the towers see before resizing: the centre crop for augmented models.
    fn framed<'a>(&self, img: &'a RgbImage) -> std::borrow::Cow<'a, RgbImage> {
        match self.config.vela_center_crop {
            Some(area) if area < 1.0 => std::borrow::Cow::Owned(crate::preprocess::center_crop(img, area)),
            _ => std::borrow::Cow::Borrowed(img),
        }
    }

    /// Projected image patches `[1, N, H]`.
    pub fn encode_image(&self, img: &RgbImage) -> Result<Tensor> {
        let px = self.pixel_values(img)?;
        self.encode_pixels(&px)
    }

    pub fn encode_pixels(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.projector.forward(&self.backbone.forward(pixel_values)?)
    }

    pub fn predict_action(&self, img: &RgbImage, instruction: &str, action_space: &str) -> Result<[f32; 7]> {
        let p = self.predict_action_stream(img, instruction, action_space, |_| {})?;
        // The current action; a chunked model's later actions are for the steps after it.
        let per = p.action.len() / self.decoded_actions();
        p.action[..per].try_into().map_err(|_| VlaError::Input(format!("action space has {per} dims, not 7")))
    }

    /// Like [`Self::predict_action`] but calls `on_token` after every decoded token with the
    /// partial action vector, so a graph node can publish partials while decoding.
    pub fn predict_action_stream(
        &self,
        img: &RgbImage,
        instruction: &str,
        action_space: &str,
        mut on_token: impl FnMut(&PartialAction),
    ) -> Result<ActionPrediction> {
        if self.replay_enabled() && self.decode_window() == 0 {
            if action_space != NORMALIZED {
                // An unknown action space is the caller's error, not the replay's.
                self.config.action_stats(action_space)?;
            }
            match self.predict_replayed(img, instruction, action_space, &mut on_token) {
                Ok(p) => return Ok(p),
                Err(e) => self.replay_failed(e),
            }
        }
        let t0 = Instant::now();
        let patches = self.encode_image(img)?;
        let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
        let ids = self.prompt_ids(instruction);
        let mut p = self.generate(&patches, &ids, action_space, on_token)?;
        p.vision_ms = vision_ms;
        Ok(p)
    }

    /// Logits after the prefill of `[BOS] + patches + ids[1..]` (for checks and scoring).
    pub fn prefill_logits(&self, patches: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let emb = Tensor::cat(&[&self.llm.embed(&ids[..1])?, patches, &self.llm.embed(&ids[1..])?], 1)?;
        let mut cache = KvCache::new(self.config.text_config.num_hidden_layers);
        self.llm.forward_embeds(&emb, &mut cache)
    }

    /// Greedy decoding of one token per action dimension from projected patches + prompt ids.
    pub fn generate(
        &self,
        patches: &Tensor,
        ids: &[u32],
        action_space: &str,
        mut on_token: impl FnMut(&PartialAction),
    ) -> Result<ActionPrediction> {
        let mut stream = self.start_decoding(patches, ids, action_space)?;
        let t1 = Instant::now();
        for step in stream.by_ref() {
            on_token(&step?);
        }
        let mut p = stream.finish()?;
        p.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(tokens = ?p.tokens, action = ?p.action, "decoded action");
        Ok(p)
    }

    /// Iterator form of the decoder: encodes the image and runs the prefill now, then yields
    /// one [`PartialAction`] per `next()`. Dropping it early abandons the rest of the decode
    /// (a node can skip stale frames this way).
    pub fn stream(&self, img: &RgbImage, instruction: &str, action_space: &str) -> Result<ActionStream<'_>> {
        let t0 = Instant::now();
        let patches = self.encode_image(img)?;
        let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut s = self.start_decoding(&patches, &self.prompt_ids(instruction), action_space)?;
        s.vision_ms = vision_ms;
        Ok(s)
    }

    /// Prefill of `[BOS] + patches + ids[1..]`; decoding continues in the returned stream.
    pub fn start_decoding(&self, patches: &Tensor, ids: &[u32], action_space: &str) -> Result<ActionStream<'_>> {
        if ids.is_empty() {
            return Err(VlaError::Input("empty prompt".into()));
        }
        let (stats, dims) = self.space_stats(action_space)?;
        let t0 = Instant::now();
        // [BOS] + image patches + rest of the prompt, positions 0..L-1 over the whole sequence.
        let emb = Tensor::cat(&[&self.llm.embed(&ids[..1])?, patches, &self.llm.embed(&ids[1..])?], 1)?;
        let mut cache = KvCache::new(self.config.text_config.num_hidden_layers);
        let logits = self.llm.forward_embeds(&emb, &mut cache)?;
        Ok(ActionStream {
            model: self,
            cache,
            logits: Some(logits),
            stats,
            dims,
            tokens: Vec::with_capacity(dims),
            normalized: Vec::with_capacity(dims),
            prompt_ids: ids.to_vec(),
            vision_ms: 0.0,
            prefill_ms: t0.elapsed().as_secs_f64() * 1e3,
            decode_start: Instant::now(),
            failed: false,
        })
    }

    /// One greedy prediction with the device synchronised after each stage, so each stage's
    /// wall time is its own (on CUDA the ops only queue work; unsynchronised stage times
    /// would show launch cost, not GPU time). Decodes in the `normalized` space.
    pub fn predict_timed(&self, img: &RgbImage, instruction: &str) -> Result<StageTimes> {
        if self.replay_enabled() {
            match self.predict_timed_replayed(img, instruction) {
                Ok(t) => return Ok(t),
                Err(e) => self.replay_failed(e),
            }
        }
        let sync = || self.device.synchronize();
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        sync()?;
        let t = Instant::now();
        let px = self.pixel_values(img)?;
        sync()?;
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let feats = self.backbone.forward(&px)?;
        sync()?;
        let vision_ms = ms(t);
        let t = Instant::now();
        let patches = self.projector.forward(&feats)?;
        sync()?;
        let projector_ms = ms(t);
        let ids = self.prompt_ids(instruction);
        let t = Instant::now();
        let emb = Tensor::cat(&[&self.llm.embed(&ids[..1])?, &patches, &self.llm.embed(&ids[1..])?], 1)?;
        let mut cache = KvCache::new(self.config.text_config.num_hidden_layers);
        let mut logits = self.llm.forward_embeds(&emb, &mut cache)?;
        let mut tokens = vec![argmax(&logits)?];
        let prefill_ms = ms(t);
        let prefill_len = emb.dim(1)?;
        let mut token_ms = Vec::new();
        while tokens.len() < self.action_tokens() {
            let t = Instant::now();
            logits = self.llm.forward_embeds(&self.llm.embed(&tokens[tokens.len() - 1..])?, &mut cache)?;
            tokens.push(argmax(&logits)?);
            token_ms.push(ms(t));
        }
        Ok(StageTimes { preprocess_ms, vision_ms, projector_ms, prefill_ms, token_ms, tokens, prefill_len })
    }

    /// Bytes of weights one decode step reads (every decoder matrix, norms and `lm_head`; the
    /// embedding table only contributes one row).
    pub fn decode_weight_bytes(&self) -> u64 {
        self.llm.streamed_bytes()
    }

    /// Intermediate values for checking against another implementation: pixel values, the
    /// projector output `[1, N, H]`, prompt ids and the first-token logits `[V]`.
    pub fn trace(&self, img: &RgbImage, instruction: &str) -> Result<(Tensor, Tensor, Vec<u32>, Tensor)> {
        let px = self.pixel_values(img)?;
        let patches = self.encode_pixels(&px)?;
        let ids = self.prompt_ids(instruction);
        let logits = self.prefill_logits(&patches, &ids)?;
        Ok((px, patches, ids, logits))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Reads an image file (PNG/JPEG) as RGB8.
    pub fn read_image(path: &Path) -> Result<RgbImage> {
        Ok(image::open(path)?.to_rgb8())
    }
}

/// Token-by-token greedy decoding with the KV cache; see [`OpenVla::stream`].
pub struct ActionStream<'a> {
    model: &'a OpenVla,
    cache: KvCache,
    /// Logits for the next token; `None` once all dimensions are decoded.
    logits: Option<Tensor>,
    stats: Option<crate::config::Stats>,
    dims: usize,
    tokens: Vec<u32>,
    normalized: Vec<f32>,
    prompt_ids: Vec<u32>,
    vision_ms: f64,
    prefill_ms: f64,
    decode_start: Instant,
    failed: bool,
}

impl ActionStream<'_> {
    fn values(&self) -> Vec<f32> {
        match &self.stats {
            Some(s) => unnormalize(&self.normalized, s),
            None => self.normalized.clone(),
        }
    }

    fn step(&mut self) -> Result<Option<PartialAction>> {
        let Some(logits) = self.logits.take() else { return Ok(None) };
        let (tok, value) = self.model.pick_tokens(&logits)?[0];
        self.tokens.push(tok);
        self.normalized.push(value);
        let index = self.tokens.len() - 1;
        if self.tokens.len() < self.dims {
            let emb = self.model.llm.embed(&[tok])?;
            self.logits = Some(self.model.llm.forward_embeds(&emb, &mut self.cache)?);
        }
        Ok(Some(PartialAction { index, token: tok, values: self.values() }))
    }

    /// Decodes whatever is left and returns the full prediction.
    pub fn finish(mut self) -> Result<ActionPrediction> {
        while self.step()?.is_some() {}
        Ok(ActionPrediction {
            action: self.values(),
            normalized: self.normalized.clone(),
            tokens: self.tokens.clone(),
            prompt_ids: self.prompt_ids.clone(),
            vision_ms: self.vision_ms,
            prefill_ms: self.prefill_ms,
            decode_ms: self.decode_start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

impl Iterator for ActionStream<'_> {
    type Item = Result<PartialAction>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(p) => p.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
