//! `vela train`: LoRA or full fine-tuning of an OpenVLA-family model on episode datasets,
//! following OpenVLA's `finetune.py` (AdamW, constant learning rate, loss on the 7 action
//! tokens and `</s>` only, action-token accuracy and L1 as metrics).
//!
//! Output folder layout:
//! - the HF-layout checkpoint (LoRA merged), with the dataset's statistics as
//!   `norm_stats[<dataset name>]`, written every `save_every` steps and at the end;
//! - `state/` (trainable tensors, AdamW moments, step, metric history) for `--resume`;
//! - `training.json` (arguments, metrics, time, hardware) and `training.png` (curves).

pub mod data;
pub mod model;
pub mod optim;
pub mod params;
pub mod plot;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use vela_data::EpisodeReader;

use crate::action::{unnormalize, ActionTokenizer};
use crate::checkpoint::{write_checkpoint, TokenizerSource};
use crate::config::{DatasetStats, OpenVlaConfig, Stats};
use crate::tokenizer::{ByteTokenizer, SpmTokenizer, TextTokenizer};
use crate::{Result, VlaError};

use data::{Collator, DataOptions, EpochPlan, Sample, SharedReader, SUPERVISED};
use model::TrainModel;
use optim::{lr_at, AdamW, AdamWConfig};
pub use params::{Mode, Params, ParamStore, Source};

/// Where the starting model comes from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// `--config tiny|small|...`: a fresh model (deterministic init from `seed`).
    Config(String),
    /// `--model DIR`: an HF-layout folder.
    Dir(PathBuf),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    pub out: PathBuf,
    pub epochs: u64,
    pub max_steps: Option<u64>,
    /// Wall-clock budget for the training loop: after a few dozen steps the run measures its
    /// pace and sets the step count (and so the cosine schedule) to end inside it. Leased GPU
    /// time is what limits a run, not an epoch count.
    #[serde(default)]
    pub time_budget_secs: Option<f64>,
    /// Also export the model after every epoch to `epochs/epoch-NN/` (episodes-vs-epochs
    /// studies evaluate these).
    #[serde(default)]
    pub keep_epochs: bool,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Cosine decay to a tenth of `lr` over the run (after warmup) instead of a constant rate.
    pub cosine: bool,
    pub max_grad_norm: Option<f64>,
    pub weight_decay: f64,
    pub image_aug: bool,
    /// Mixed precision: bf16 activations and weight copies, f32 variables and optimizer.
    #[serde(default)]
    pub bf16: bool,
    /// With `image_aug`: random crops only, no colour jitter.
    #[serde(default)]
    pub no_colour_jitter: bool,
    /// Fraction of training samples asked a pointing question instead of an action
    /// ([`data::Pointing`]); 0 = off.
    #[serde(default)]
    pub pointing: f64,
    /// Tensor-name prefixes (e.g. `language_model`, `projector`) whose values restart from a
    /// fresh initialisation instead of the starting checkpoint's ([`Params::reinit`]).
    #[serde(default)]
    pub reinit: Vec<String>,
    /// Actions per label ([`crate::OpenVlaConfig::vela_action_chunk`]); `None` keeps the
    /// starting model's.
    #[serde(default)]
    pub action_chunk: Option<usize>,
    /// Learning-rate factors by tensor-name prefix ([`AdamWConfig::lr_scale`]); 0 freezes.
    #[serde(default)]
    pub lr_scale: Vec<(String, f64)>,
    pub val_split: f64,
    /// At most this many validation samples per evaluation (keeps validation cheap).
    pub val_max_samples: usize,
    pub log_every: u64,
    pub save_every: u64,
    pub resume: bool,
    pub seed: u64,
    /// Episodes decoded and shuffled together (see [`data`]).
    pub shuffle_episodes: usize,
    pub camera: Option<String>,
    pub instruction: Option<String>,
    /// `norm_stats` key (default: the dataset's name).
    pub dataset_name: Option<String>,
    /// Train on the 7-D series under this observation key instead of `actions` (e.g.
    /// `intended_action`, the noise-free actions `vela datagen` records); statistics follow.
    #[serde(default)]
    pub action_labels: Option<String>,
    /// Show a progress bar.
    #[serde(skip)]
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("train-out"),
            epochs: 1,
            max_steps: None,
            time_budget_secs: None,
            keep_epochs: false,
            batch_size: 16,
            lr: 5e-4,
            warmup_steps: 0,
            cosine: false,
            max_grad_norm: Some(1.0),
            weight_decay: 0.01,
            image_aug: false,
            bf16: false,
            no_colour_jitter: false,
            pointing: 0.0,
            reinit: Vec::new(),
            action_chunk: None,
            lr_scale: Vec::new(),
            val_split: 0.05,
            val_max_samples: 512,
            log_every: 10,
            save_every: 1000,
            resume: false,
            seed: 0,
            shuffle_episodes: 16,
            camera: None,
            instruction: None,
            dataset_name: None,
            action_labels: None,
            progress: false,
        }
    }
}

/// Metrics of one optimizer step (or one validation pass).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub step: u64,
    pub epoch: u64,
    pub loss: f32,
    /// Fraction of the 7 action tokens predicted exactly.
    pub accuracy: f32,
    /// Mean |predicted − true| action in the dataset's units (de-normalised bin centres).
    pub l1: f32,
    pub lr: f64,
    pub grad_norm: f64,
    /// Validation only: mean largest change of the first action token's logits when the two
    /// colours of the instruction swap places (`data::swap_colours`). Near 0 means the model
    /// no longer reads which cube the text names; session 24's models were at 0.01-0.02, a
    /// random initialisation at 0.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_sensitivity: Option<f32>,
    /// Validation only: the same measure when the frame changes instead (same instruction,
    /// a frame from elsewhere in the validation set). The scale the text change is read
    /// against: a model early in training can read its text and not yet its image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sensitivity: Option<f32>,
}

/// What a resumed run must agree on with the run that saved the state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Fingerprint {
    model: String,
    mode: Mode,
    batch_size: usize,
    seed: u64,
    shuffle_episodes: usize,
    image_aug: bool,
    val_split: f64,
    episodes: usize,
    camera: Option<String>,
    #[serde(default)]
    action_labels: Option<String>,
    #[serde(default)]
    pointing: f64,
    #[serde(default)]
    reinit: Vec<String>,
    #[serde(default = "one")]
    action_chunk: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedState {
    step: u64,
    fingerprint: Fingerprint,
    dataset_name: String,
    stats: DatasetStats,
    lengths: BTreeMap<usize, usize>,
    history: Vec<Metrics>,
    validation: Vec<Metrics>,
    elapsed_secs: f64,
    /// The step count a time budget fixed (a resumed run keeps its schedule).
    #[serde(default)]
    budget_steps: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub steps: u64,
    pub epochs_completed: u64,
    pub samples_seen: u64,
    pub train_secs: f64,
    pub samples_per_sec: f64,
    pub trainable_params: usize,
    pub total_params: usize,
    pub last: Option<Metrics>,
    pub validation: Option<Metrics>,
    pub history: Vec<Metrics>,
    pub val_history: Vec<Metrics>,
}

/// The tokenizer the model trains with, and what the exported checkpoint ships (the same).
fn tokenizer_for(source: &ModelSource) -> Result<(Box<dyn TextTokenizer>, TokenizerSource)> {
    let file = match source {
        ModelSource::Dir(d) => d.join("tokenizer.json"),
        ModelSource::Config(_) => crate::tokenizer::cache_dir().join("tokenizer.json"),
    };
    if file.exists() {
        Ok((Box::new(SpmTokenizer::from_file(&file)?), TokenizerSource::File(file)))
    } else {
        tracing::warn!("no tokenizer.json: training with the byte-fallback tokenizer");
        Ok((Box::new(ByteTokenizer), TokenizerSource::None))
    }
}

fn state_dir(out: &Path) -> PathBuf {
    out.join("state")
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| VlaError::Train(e.to_string()))?;
    std::fs::write(path, s).map_err(|e| VlaError::io(path, e))
}

fn one() -> usize {
    1
}

/// Accuracy over the action tokens (not `</s>`) and L1 in action units, from logits at the
/// supervised positions (`per_sample` of them per sample).
///
/// A chunked model is scored on its first action only, the one it is asked for at this frame,
/// so its figures compare with a single-action model's; the loss covers the whole chunk.
fn score(logits: &Tensor, targets: &[u32], per_sample: usize, pointing: &[bool], actions: &ActionTokenizer, stats: &Stats) -> Result<(f32, f32)> {
    let pred: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
    let (mut hits, mut n, mut l1) = (0usize, 0usize, 0f64);
    let first = (SUPERVISED - 1).min(per_sample.saturating_sub(1));
    // Pointing questions train the model but are not actions: accuracy and L1 stay about actions.
    for ((p, t), _) in pred.chunks(per_sample).zip(targets.chunks(per_sample)).zip(pointing).filter(|(_, &q)| !q) {
        let (p, t) = (&p[..first], &t[..first]);
        hits += p.iter().zip(t).filter(|(a, b)| a == b).count();
        n += p.len();
        let pa = unnormalize(&p.iter().map(|&x| actions.decode(x)).collect::<Vec<_>>(), stats);
        let ta = unnormalize(&t.iter().map(|&x| actions.decode(x)).collect::<Vec<_>>(), stats);
        l1 += pa.iter().zip(&ta).map(|(a, b)| (a - b).abs() as f64).sum::<f64>();
    }
    Ok((hits as f32 / n.max(1) as f32, (l1 / n.max(1) as f64) as f32))
}

/// Where a training step's wall time goes, summed between two log lines: the loop waiting on
/// the loader (which also draws the crops), collating, and the device's forward, backward and
/// update.
/// The device parts are separated by synchronising only with `VELA_TRAIN_PROFILE=1`, since a
/// sync costs a little; otherwise `fwd` holds all device time.
#[derive(Default, Clone, Copy)]
struct Phases {
    wait: f64,
    collate: f64,
    fwd: f64,
    bwd: f64,
    opt: f64,
}

impl Phases {
    fn per_step_ms(&self, steps: f64) -> [f64; 5] {
        let k = 1e3 / steps.max(1.0);
        [self.wait * k, self.collate * k, self.fwd * k, self.bwd * k, self.opt * k]
    }
}

struct Trainer {
    params: Arc<Params>,
    model: TrainModel,
    collator: Collator,
    stats: Stats,
    /// Compute dtype; the variables (and AdamW) stay f32.
    compute: DType,
    phases: Phases,
    profile: bool,
}

impl Trainer {
    /// Forward + loss (+ backward and update when `opt` is given) on one batch.
    fn step(&mut self, samples: &[Sample], opt: Option<(&mut AdamW, &[(String, candle_core::Var)], f64)>) -> Result<(f32, f32, f32, f64)> {
        let t0 = Instant::now();
        let b = self.collator.batch(samples)?;
        let pixels = self.cast(&b.pixels)?;
        let sync = |t: &Tensor| -> Result<()> {
            if self.profile {
                t.device().synchronize()?;
            }
            Ok(())
        };
        sync(&pixels)?;
        let t1 = Instant::now();
        let logits = self.model.forward(&pixels, &b.ids, &b.gather)?;
        let targets = Tensor::from_vec(b.targets.clone(), b.targets.len(), logits.device())?;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
        sync(&loss)?;
        let t2 = Instant::now();
        let mut grad_norm = 0.0;
        let mut t3 = t2;
        if let Some((opt, vars, lr)) = opt {
            let grads = loss.backward()?;
            sync(&loss)?;
            t3 = Instant::now();
            grad_norm = opt.step(vars, &grads, lr)?;
        }
        let (acc, l1) = score(&logits, &b.targets, b.per_sample, &b.pointing, &self.collator.actions, &self.stats)?;
        let loss = loss.to_scalar::<f32>()?;
        let t4 = Instant::now();
        let p = &mut self.phases;
        p.collate += (t1 - t0).as_secs_f64();
        p.fwd += (t2 - t1).as_secs_f64();
        p.bwd += (t3 - t2).as_secs_f64();
        p.opt += (t4 - t3).as_secs_f64();
        Ok((loss, acc, l1, grad_norm))
    }

    /// In mixed precision, fresh casts of the current weights (they changed at the last
    /// update) and the pixels in the compute dtype.
    fn cast(&mut self, pixels: &Tensor) -> Result<Tensor> {
        if self.compute == DType::F32 {
            return Ok(pixels.clone());
        }
        let store = model::CastStore { inner: ParamStore(self.params.clone()), dtype: self.compute };
        self.model = TrainModel::with_dtype(&self.params.config, Arc::new(store), self.compute)?;
        Ok(pixels.to_dtype(self.compute)?)
    }

    /// Logits `[n, V]` (f32) of the first action token of each sample.
    fn first_token_logits(&mut self, samples: &[Sample]) -> Result<Tensor> {
        let b = self.collator.batch(samples)?;
        let pixels = self.cast(&b.pixels)?;
        let first = Tensor::arange_step(0u32, (samples.len() * b.per_sample) as u32, b.per_sample as u32, b.gather.device())?;
        Ok(self.model.forward(&pixels, &b.ids, &b.gather.index_select(&first, 0)?)?)
    }

    /// [`Metrics::text_sensitivity`] and [`Metrics::image_sensitivity`] over up to 64
    /// samples spread over `samples`; `None` when no instruction names two colours.
    fn sensitivity(&mut self, samples: &[Sample], batch: usize) -> Result<Option<(f32, f32)>> {
        let pairs: Vec<(Sample, Sample)> = samples
            .iter()
            .filter_map(|s| data::swap_colours(&s.instruction).map(|t| (s.clone(), Sample { instruction: t, ..s.clone() })))
            .collect();
        if pairs.is_empty() {
            return Ok(None);
        }
        let every = pairs.len().div_ceil(64);
        let (a, b): (Vec<Sample>, Vec<Sample>) = pairs.into_iter().step_by(every).unzip();
        // A frame half the list away (one step further, so that it is not the same step of
        // another episode), with the first frame's instruction.
        let c: Vec<Sample> = (0..a.len()).map(|i| Sample { instruction: a[i].instruction.clone(), ..samples[(i * every + samples.len() / 2 + 1) % samples.len()].clone() }).collect();
        let (mut text, mut image, mut n) = (0f64, 0f64, 0usize);
        let k = batch.max(1);
        for ((ca, cb), cc) in a.chunks(k).zip(b.chunks(k)).zip(c.chunks(k)) {
            let la = self.first_token_logits(ca)?;
            let sum = |d: Tensor| -> Result<f64> { Ok(d.abs()?.max(1)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?) };
            text += sum((&la - self.first_token_logits(cb)?)?)?;
            image += sum((&la - self.first_token_logits(cc)?)?)?;
            n += ca.len();
        }
        Ok(Some(((text / n as f64) as f32, (image / n as f64) as f32)))
    }

    /// Teacher-forced metrics over (at most `max` samples of) the validation episodes.
    fn validate(&mut self, reader: &SharedReader, val: &[usize], opts: &DataOptions, batch: usize, max: usize) -> Result<Option<(f32, f32, f32, Option<(f32, f32)>)>> {
        if val.is_empty() || max == 0 {
            return Ok(None);
        }
        self.params.set_training(false);
        // Gather at most `max` samples, then score them batch by batch.
        let mut samples = Vec::new();
        for &e in val {
            samples.extend(data::load_episode(reader, e, opts)?);
            if samples.len() >= max {
                break;
            }
        }
        samples.truncate(max);
        let (mut loss, mut acc, mut l1, mut n) = (0f64, 0f64, 0f64, 0usize);
        for b in samples.chunks(batch) {
            let (l, a, e, _) = self.step(b, None)?;
            let k = b.len() as f64;
            loss += l as f64 * k;
            acc += a as f64 * k;
            l1 += e as f64 * k;
            n += b.len();
        }
        let sensitivity = self.sensitivity(&samples, batch)?;
        self.params.set_training(true);
        let n = n.max(1) as f64;
        Ok(Some(((loss / n) as f32, (acc / n) as f32, (l1 / n) as f32, sensitivity)))
    }
}

/// Builds the model on `device`, reads `reader`, trains, and writes the output folder.
pub fn train(reader: Box<dyn EpisodeReader>, source: &ModelSource, mode: Mode, opts: &TrainOptions, device: &Device) -> Result<TrainSummary> {
    let reader: Box<dyn EpisodeReader> = match &opts.action_labels {
        Some(key) => Box::new(vela_data::Relabel { inner: reader, key: key.clone() }),
        None => reader,
    };
    let t_start = Instant::now();
    let out = &opts.out;
    if opts.batch_size == 0 {
        return Err(VlaError::Train("--batch-size must be at least 1".into()));
    }
    if opts.bf16 && mode != Mode::Full {
        return Err(VlaError::Train("--bf16 trains every weight: pass --full (LoRA adapters stay f32)".into()));
    }
    if let ModelSource::Dir(d) = source {
        if d.canonicalize().ok() == out.canonicalize().ok() {
            return Err(VlaError::Train(format!("--out {} would overwrite the base model", out.display())));
        }
    }
    let sdir = state_dir(out);
    let saved: Option<SavedState> = match (opts.resume, sdir.join("state.json").exists()) {
        (true, true) => {
            let p = sdir.join("state.json");
            let text = std::fs::read_to_string(&p).map_err(|e| VlaError::io(&p, e))?;
            Some(serde_json::from_str(&text).map_err(|e| VlaError::Train(format!("{}: {e}", p.display())))?)
        }
        (true, false) => return Err(VlaError::Train(format!("--resume: no saved state in {}", sdir.display()))),
        (false, true) => {
            return Err(VlaError::Train(format!("{} already holds a training run: pass --resume or choose another --out", out.display())))
        }
        (false, false) => None,
    };
    std::fs::create_dir_all(&sdir).map_err(|e| VlaError::io(&sdir, e))?;
    if device.is_cuda() {
        // f32 GEMMs on tensor cores (TF32): several times faster on Hopper, and the 10-bit
        // mantissa is far below the noise of stochastic gradients (PyTorch's AMP default too).
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }

    let params = match source {
        ModelSource::Config(name) => {
            let config = OpenVlaConfig::preset(name.parse()?);
            Params::new(Source::Init { config, seed: opts.seed }, mode.clone(), opts.seed, device)?
        }
        ModelSource::Dir(dir) => Params::new(Source::Checkpoint(dir), mode.clone(), opts.seed, device)?,
    };
    if !opts.reinit.is_empty() {
        if matches!(source, ModelSource::Config(_)) {
            return Err(VlaError::Train("--reinit needs --model (a fresh --config model is all initialisation already)".into()));
        }
        let n = params.reinit(&opts.reinit, opts.seed)?;
        tracing::info!(tensors = n, prefixes = ?opts.reinit, "restarted from a fresh initialisation");
    }
    let config = params.config.clone();
    let chunk = opts.action_chunk.unwrap_or_else(|| config.action_chunk()).max(1);
    if chunk > 1 && opts.pointing > 0.0 {
        return Err(VlaError::Train("--pointing answers are one action long: it cannot be combined with --action-chunk above 1".into()));
    }
    if chunk != config.action_chunk() {
        tracing::info!(from = config.action_chunk(), to = chunk, "the model learns to predict a different number of actions per frame");
    }
    let model = TrainModel::new(&config, Arc::new(ParamStore(params.clone())))?;
    let vars = params.vars();
    tracing::info!(trainable = params.n_trainable(), total = params.n_total(), tensors = vars.len(), "model ready");
    let (tokenizer, tok_source) = tokenizer_for(source)?;
    let towers = config.vision_towers()?;

    let n_episodes = reader.len();
    let meta_name = reader.meta().name.clone();
    let reader: SharedReader = Arc::new(Mutex::new(reader));
    let fingerprint = Fingerprint {
        model: match source {
            ModelSource::Config(c) => format!("config:{c}"),
            ModelSource::Dir(d) => format!("model:{}", d.display()),
        },
        mode: mode.clone(),
        batch_size: opts.batch_size,
        seed: opts.seed,
        shuffle_episodes: opts.shuffle_episodes,
        image_aug: opts.image_aug,
        val_split: opts.val_split,
        episodes: n_episodes,
        camera: opts.camera.clone(),
        action_labels: opts.action_labels.clone(),
        pointing: opts.pointing,
        reinit: opts.reinit.clone(),
        action_chunk: chunk,
    };
    if let Some(s) = &saved {
        if s.fingerprint != fingerprint {
            return Err(VlaError::Train(format!(
                "--resume: the saved run differs from this one (config/checkpoint mismatch):\n saved: {:?}\n  now:  {:?}",
                s.fingerprint, fingerprint
            )));
        }
    }
    let (train_eps, val_eps) = data::split(n_episodes, opts.val_split, opts.seed);
    if train_eps.is_empty() {
        return Err(VlaError::Train(format!("dataset has {n_episodes} episode(s): nothing left to train on")));
    }
    let dataset_name = opts.dataset_name.clone().filter(|s| !s.is_empty()).unwrap_or(if meta_name.is_empty() { "dataset".into() } else { meta_name });

    // Statistics over the whole dataset as OpenVLA computes them (or the saved ones on resume:
    // identical by construction), and the length of every training episode.
    let (stats, lengths) = match &saved {
        Some(s) => (s.stats.clone(), s.lengths.clone()),
        None => {
            let bar = bar(opts.progress, n_episodes as u64, "statistics");
            let mut r = reader.lock().expect("poisoned");
            // Check every episode's actions first: a NaN would otherwise surface as an
            // unreadable statistics error.
            let mut lengths = BTreeMap::new();
            for e in 0..n_episodes {
                let ep = r.read_lowdim(e)?;
                if ep.is_empty() {
                    return Err(VlaError::Train(format!("episode {} (index {e}) has no steps", ep.name)));
                }
                if let Some((t, a)) = ep.actions.iter().enumerate().find(|(_, a)| a.iter().any(|x| !x.is_finite())) {
                    return Err(VlaError::Train(format!("episode {} (index {e}): action {t} is not finite: {a:?}", ep.name)));
                }
                if train_eps.binary_search(&e).is_ok() {
                    lengths.insert(e, ep.len());
                }
            }
            let stats = data::to_norm_stats(&vela_data::stats::compute(&mut **r, |i| bar.set_position(i as u64))?)?;
            bar.finish_and_clear();
            (stats, lengths)
        }
    };
    let n_samples: usize = lengths.values().sum();
    let steps_per_epoch = n_samples.div_ceil(opts.batch_size) as u64;
    let mut total_steps = opts.max_steps.map_or(steps_per_epoch * opts.epochs, |m| m.min(steps_per_epoch * opts.epochs));
    let mut budget_steps = saved.as_ref().and_then(|s| s.budget_steps);
    if let Some(b) = budget_steps {
        total_steps = total_steps.min(b);
    }
    tracing::info!(dataset = %dataset_name, episodes = n_episodes, train_episodes = train_eps.len(), val_episodes = val_eps.len(), samples = n_samples, steps_per_epoch, total_steps, "dataset ready");

    let actions = ActionTokenizer::new(config.base_vocab() as u32, config.n_action_bins);
    let collator = Collator::new(tokenizer, actions, stats.action.clone(), towers.clone(), config.pad_token_id, device.clone()).with_chunk(chunk);
    let compute = if opts.bf16 { DType::BF16 } else { DType::F32 };
    let profile = std::env::var("VELA_TRAIN_PROFILE").is_ok_and(|v| v == "1");
    let mut trainer = Trainer { params: params.clone(), model, collator, stats: stats.action.clone(), compute, phases: Phases::default(), profile };
    let data_opts = DataOptions { camera: opts.camera.clone(), instruction: opts.instruction.clone(), image_size: towers[0].image_size, pointing: opts.pointing > 0.0, action_chunk: chunk };

    for (prefix, factor) in &opts.lr_scale {
        if !(*factor >= 0.0 && factor.is_finite()) {
            return Err(VlaError::Train(format!("--lr-scale {prefix}={factor}: the factor must be a finite number >= 0")));
        }
        if !vars.iter().any(|(n, _)| n.starts_with(prefix.as_str())) {
            return Err(params::no_tensor_under("--lr-scale", prefix, vars.iter().map(|(n, _)| n.as_str())));
        }
    }
    let mut opt = AdamW::new(AdamWConfig { weight_decay: opts.weight_decay, max_grad_norm: opts.max_grad_norm, lr_scale: opts.lr_scale.clone(), ..Default::default() });
    let mut step = 0u64;
    let mut history = Vec::new();
    let mut validation = Vec::new();
    let mut prior_secs = 0.0;
    if let Some(s) = &saved {
        let w = candle_core::safetensors::load(sdir.join("trainable.safetensors"), device)?;
        params.restore(&w)?;
        let o = candle_core::safetensors::load(sdir.join("optimizer.safetensors"), device)?;
        opt.restore(&o, s.step, device)?;
        step = s.step;
        history = s.history.clone();
        validation = s.validation.clone();
        prior_secs = s.elapsed_secs;
        tracing::info!(step, "resumed");
    }

    let mut export_cfg = config.clone();
    export_cfg.norm_stats = BTreeMap::from([(dataset_name.clone(), stats.clone())]);
    if opts.image_aug {
        export_cfg.vela_center_crop = Some(data::AUG_CROP_AREA);
    }
    export_cfg.vela_action_chunk = (chunk > 1).then_some(chunk);
    let save = |opt: &AdamW, step: u64, history: &[Metrics], validation: &[Metrics], secs: f64, budget_steps: Option<u64>| -> Result<()> {
        let vars: HashMap<String, Tensor> = params.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        candle_core::safetensors::save(&vars, sdir.join("trainable.safetensors"))?;
        candle_core::safetensors::save(&opt.state(), sdir.join("optimizer.safetensors"))?;
        let st = SavedState {
            step,
            fingerprint: fingerprint.clone(),
            dataset_name: dataset_name.clone(),
            stats: stats.clone(),
            lengths: lengths.clone(),
            history: history.to_vec(),
            validation: validation.to_vec(),
            elapsed_secs: secs,
            budget_steps,
        };
        write_json(&sdir.join("state.json"), &st)?;
        let p = params.clone();
        write_checkpoint(&export_cfg, out, None, &tok_source, &|t| Ok(p.merged(&t.name)?.flatten_all()?.to_vec1::<f32>()?))?;
        Ok(())
    };

    let bar = bar(opts.progress, total_steps, "training");
    bar.set_position(step.min(total_steps));
    params.set_training(true);
    let t_loop = Instant::now();
    let mut samples_seen = 0u64;
    // Validation and checkpoint writing are left out of samples/s.
    let mut side_secs = 0.0;
    let mut window: Vec<Metrics> = Vec::new();
    let mut epochs_completed = step / steps_per_epoch.max(1);
    const CALIBRATE_FROM: u64 = 20;
    const CALIBRATE_STEPS: u64 = 40;
    let mut steps_this_run = 0u64;
    let mut t_calibrate: Option<(Instant, f64)> = None;
    'epochs: for epoch in step / steps_per_epoch.max(1)..opts.epochs {
        if step >= total_steps {
            break;
        }
        let plan = EpochPlan::new(&train_eps, opts.shuffle_episodes, opts.seed, epoch);
        // Skip to where a resumed run left off inside this epoch.
        let mut skip = ((step - epoch * steps_per_epoch) * opts.batch_size as u64) as usize;
        let mut first_chunk = 0;
        while first_chunk < plan.chunks.len() {
            let len: usize = plan.chunks[first_chunk].iter().map(|e| lengths[e]).sum();
            if skip < len {
                break;
            }
            skip -= len;
            first_chunk += 1;
        }
        let n_chunks = plan.chunks.len();
        // Crops are drawn on the loader thread, off the step's critical path; a sample's crop
        // depends only on its position in the epoch, which for the first chunk loaded is the
        // length of the chunks before it.
        let aug = (opts.image_aug || opts.pointing > 0.0).then(|| data::AugPlan {
            seed: opts.seed,
            crop: opts.image_aug,
            colour: !opts.no_colour_jitter,
            point: opts.pointing,
            first_position: plan.chunks[..first_chunk].iter().flatten().map(|e| lengths[e]).sum(),
        });
        let rx = data::spawn_loader(reader.clone(), data_opts.clone(), plan, opts.seed, epoch, first_chunk, aug);
        let mut pending: Vec<Sample> = Vec::new();
        let mut t_recv = Instant::now();
        for (ci, chunk) in (first_chunk..).zip(rx) {
            trainer.phases.wait += t_recv.elapsed().as_secs_f64();
            let mut chunk = chunk?;
            if skip > 0 {
                chunk.drain(..skip.min(chunk.len()));
                skip = 0;
            }
            pending.extend(chunk);
            let last = ci + 1 == n_chunks;
            while pending.len() >= opts.batch_size || (last && !pending.is_empty()) {
                if step >= total_steps {
                    break 'epochs;
                }
                let n = opts.batch_size.min(pending.len());
                let batch: Vec<Sample> = pending.drain(..n).collect();
                let lr = lr_at(opts.lr, opts.warmup_steps, step, opts.cosine.then_some(total_steps));
                let (loss, accuracy, l1, grad_norm) = trainer.step(&batch, Some((&mut opt, &vars, lr)))?;
                if !loss.is_finite() {
                    return Err(VlaError::Train(format!("loss became {loss} at step {step}: lower --lr")));
                }
                step += 1;
                samples_seen += n as u64;
                steps_this_run += 1;
                if steps_this_run == CALIBRATE_FROM {
                    t_calibrate = Some((Instant::now(), side_secs));
                }
                if let (Some(budget), None, Some((t0, side0))) = (opts.time_budget_secs, budget_steps, t_calibrate) {
                    if steps_this_run == CALIBRATE_FROM + CALIBRATE_STEPS {
                        // Pace over steps that include chunk loading; validation and exports
                        // come on top, so keep a margin for them.
                        let per_step = (t0.elapsed().as_secs_f64() - (side_secs - side0)) / CALIBRATE_STEPS as f64;
                        let left = budget - t_loop.elapsed().as_secs_f64();
                        let more = ((left * 0.95 - side_secs) / per_step).max(0.0) as u64;
                        let b = step + more;
                        budget_steps = Some(b);
                        total_steps = total_steps.min(b);
                        bar.set_length(total_steps);
                        bar.suspend(|| tracing::info!(per_step_ms = per_step * 1e3, budget_secs = budget, total_steps, epochs = total_steps as f64 / steps_per_epoch as f64, "time budget: step count fixed"));
                    }
                }
                let m = Metrics { step, epoch, loss, accuracy, l1, lr, grad_norm, text_sensitivity: None, image_sensitivity: None };
                history.push(m.clone());
                window.push(m);
                bar.set_position(step);
                if step % opts.log_every.max(1) == 0 || step == total_steps {
                    let k = window.len() as f32;
                    let sps = samples_seen as f64 / (t_loop.elapsed().as_secs_f64() - side_secs).max(1e-9);
                    bar.suspend(|| {
                        tracing::info!(
                            step,
                            epoch,
                            loss = window.iter().map(|m| m.loss).sum::<f32>() / k,
                            accuracy = window.iter().map(|m| m.accuracy).sum::<f32>() / k,
                            l1 = window.iter().map(|m| m.l1).sum::<f32>() / k,
                            lr,
                            grad_norm,
                            samples_per_sec = sps,
                            "train"
                        )
                    });
                    let [wait, collate, fwd, bwd, upd] = trainer.phases.per_step_ms(k as f64);
                    bar.suspend(|| tracing::info!(step, wait, collate, fwd, bwd, upd, profiled = trainer.profile, "step time (ms per step)"));
                    trainer.phases = Phases::default();
                    bar.set_message(format!("loss {:.3} acc {:.2}", window.iter().map(|m| m.loss).sum::<f32>() / k, window.iter().map(|m| m.accuracy).sum::<f32>() / k));
                    window.clear();
                }
                if opts.save_every > 0 && step % opts.save_every == 0 && step < total_steps {
                    let t = Instant::now();
                    save(&opt, step, &history, &validation, prior_secs + t_start.elapsed().as_secs_f64(), budget_steps)?;
                    side_secs += t.elapsed().as_secs_f64();
                }
            }
            t_recv = Instant::now();
        }
        if (step - epoch * steps_per_epoch) < steps_per_epoch {
            break; // max_steps reached mid-epoch
        }
        epochs_completed = epoch + 1;
        let t = Instant::now();
        let val = trainer.validate(&reader, &val_eps, &data_opts, opts.batch_size, opts.val_max_samples)?;
        trainer.phases = Phases::default();
        if opts.keep_epochs {
            let dir = out.join("epochs").join(format!("epoch-{:02}", epoch + 1));
            let p = params.clone();
            write_checkpoint(&export_cfg, &dir, None, &tok_source, &|t| Ok(p.merged(&t.name)?.flatten_all()?.to_vec1::<f32>()?))?;
        }
        side_secs += t.elapsed().as_secs_f64();
        if let Some((loss, accuracy, l1, sensitivity)) = val {
            let (text_sensitivity, image_sensitivity) = (sensitivity.map(|s| s.0), sensitivity.map(|s| s.1));
            bar.suspend(|| tracing::info!(step, epoch, loss, accuracy, l1, text_sensitivity, image_sensitivity, "validation"));
            let lr = lr_at(opts.lr, opts.warmup_steps, step, opts.cosine.then_some(total_steps));
            validation.push(Metrics { step, epoch, loss, accuracy, l1, lr, grad_norm: 0.0, text_sensitivity, image_sensitivity });
        }
    }
    bar.finish_and_clear();
    let train_secs = t_loop.elapsed().as_secs_f64() - side_secs;
    let total_secs = prior_secs + t_start.elapsed().as_secs_f64();
    save(&opt, step, &history, &validation, total_secs, budget_steps)?;
    if let Err(e) = plot::write_png(&out.join("training.png"), &history, &validation) {
        tracing::warn!(error = %e, "could not draw training.png");
    }
    let summary = TrainSummary {
        out: out.clone(),
        steps: step,
        epochs_completed,
        samples_seen,
        train_secs,
        samples_per_sec: samples_seen as f64 / train_secs.max(1e-9),
        trainable_params: params.n_trainable(),
        total_params: params.n_total(),
        last: history.last().cloned(),
        validation: validation.last().cloned(),
        history,
        val_history: validation,
    };
    write_json(
        &out.join("training.json"),
        &serde_json::json!({
            "args": opts,
            "model": fingerprint.model,
            "mode": mode,
            "dataset": {"name": dataset_name, "episodes": n_episodes, "train_episodes": train_eps.len(), "val_episodes": val_eps.len(), "train_samples": n_samples},
            "steps": summary.steps,
            "steps_per_epoch": steps_per_epoch,
            "epochs_completed": summary.epochs_completed,
            "trainable_params": summary.trainable_params,
            "total_params": summary.total_params,
            "final_train": summary.last,
            "final_validation": summary.validation,
            "validation": summary.val_history,
            "time_secs": total_secs,
            "samples_per_sec_this_run": summary.samples_per_sec,
            "hardware": hardware(device),
        }),
    )?;
    Ok(summary)
}

fn bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_prefix(what.to_string());
    b
}

/// Where the numbers came from.
pub fn hardware(device: &Device) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()));
    serde_json::json!({
        "device": format!("{device:?}"),
        "cpu": cpu,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "os": std::env::consts::OS,
    })
}

/// `cpu`, `cuda` or `cuda:N`. A build without the `cuda` feature says so instead of failing
/// somewhere inside candle.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| VlaError::Config(format!("bad device `{s}` (cpu | cuda | cuda:N)")))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(VlaError::Config(format!(
                    "device `{s}`: this build has no CUDA support (rebuild with `--features cuda`)"
                )));
            }
            crate::device::parse_device(&format!("cuda:{ordinal}"))
        }
        _ => Err(VlaError::Config(format!("bad device `{s}` (cpu | cuda | cuda:N)"))),
    }
}

