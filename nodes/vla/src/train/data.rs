//! Episodes → (image, instruction, action) samples → padded token batches.
//!
//! Memory: a 1000-episode dataset at 224² is ~22 GB of uint8 frames, so nothing holds it.
//! Each epoch shuffles the episode order, then walks it in chunks of `shuffle_episodes`
//! episodes: a chunk is decoded, its frames downscaled once to the model's input size
//! (uint8), its steps shuffled, and it is dropped after use. A loader thread decodes the next
//! chunk while the current one trains. The order is a pure function of (seed, epoch), so a
//! resumed run sees exactly the samples an uninterrupted one would.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use vela_data::stats::training_action;
use vela_data::{Episode, EpisodeReader};

use crate::action::{normalize, ActionTokenizer};
use crate::config::{DatasetStats, Stats, VitConfig};
use crate::model::prompt_ids;
use crate::preprocess::{pixel_values, resize};
use crate::rng::{tensor_seed, SplitMix64};
use crate::tokenizer::{TextTokenizer, EOS};
use crate::{Result, VlaError};

pub type SharedReader = Arc<Mutex<Box<dyn EpisodeReader>>>;

/// One training example; the frame is already at the model's input size.
#[derive(Clone, Debug)]
pub struct Sample {
    pub image: RgbImage,
    pub instruction: String,
    /// Action with the gripper remapped to 1 = open, 0 = closed (`training_action`), not
    /// yet normalised.
    pub action: [f32; 7],
}

/// How episodes are read.
#[derive(Clone, Debug)]
pub struct DataOptions {
    /// Camera to train on (default: `agentview` when present, else the first one).
    pub camera: Option<String>,
    /// Instruction for episodes that have none.
    pub instruction: Option<String>,
    /// Side of the square model input.
    pub image_size: usize,
}

fn episode_name(ep: &Episode, index: usize) -> String {
    if ep.name.is_empty() { format!("#{index}") } else { ep.name.clone() }
}

/// Reads episode `index` and turns it into samples.
pub fn load_episode(reader: &SharedReader, index: usize, opts: &DataOptions) -> Result<Vec<Sample>> {
    let ep = reader.lock().expect("poisoned").read(index)?;
    let name = episode_name(&ep, index);
    let camera = match &opts.camera {
        Some(c) => c.clone(),
        None if ep.images.contains_key("agentview") => "agentview".into(),
        None => ep.images.keys().next().cloned().ok_or_else(|| VlaError::Train(format!("episode {name}: no camera images")))?,
    };
    let frames = ep.images.get(&camera).ok_or_else(|| {
        VlaError::Train(format!("episode {name}: no camera `{camera}` (has: {})", ep.images.keys().cloned().collect::<Vec<_>>().join(", ")))
    })?;
    if frames.len() != ep.actions.len() {
        return Err(VlaError::Train(format!("episode {name}: {} `{camera}` frames for {} actions", frames.len(), ep.actions.len())));
    }
    let mut instructions = Vec::with_capacity(frames.len());
    for (t, (f, a)) in frames.iter().zip(&ep.actions).enumerate() {
        if f.rgb.len() != (f.width * f.height * 3) as usize {
            return Err(VlaError::Train(format!("episode {name}: frame {t} of `{camera}` has {} bytes for {}x{}", f.rgb.len(), f.width, f.height)));
        }
        if a.iter().any(|x| !x.is_finite()) {
            return Err(VlaError::Train(format!("episode {name}: action {t} is not finite: {a:?}")));
        }
        match ep.instructions.get(t).filter(|s| !s.trim().is_empty()).or(opts.instruction.as_ref()) {
            Some(s) => instructions.push(s.clone()),
            None => return Err(VlaError::Train(format!("episode {name}: step {t} has no instruction (pass --instruction)"))),
        }
    }
    // Downscaling is most of the loader's CPU time: spread it over the cores so that a GPU
    // run does not wait on one thread.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(frames.len()).max(1);
    let per = frames.len().div_ceil(threads).max(1);
    let size = opts.image_size;
    let images: Vec<RgbImage> = std::thread::scope(|sc| {
        let jobs: Vec<_> = frames
            .chunks(per)
            .map(|part| {
                sc.spawn(move || {
                    part.iter()
                        .map(|f| resize(&RgbImage::from_raw(f.width, f.height, f.rgb.clone()).expect("size checked above"), size))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter().flat_map(|j| j.join().expect("resize thread panicked")).collect()
    });
    let out = images
        .into_iter()
        .zip(instructions)
        .zip(&ep.actions)
        .map(|((image, instruction), a)| Sample { image, instruction, action: training_action(a) })
        .collect();
    Ok(out)
}

/// Episode indices for training and validation: a seeded shuffle, the first `val_split`
/// fraction (at least one episode when the split is non-zero and there are two or more)
/// goes to validation.
pub fn split(n: usize, val_split: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let order = permutation(n, seed ^ 0x5a11);
    let mut n_val = (n as f64 * val_split).round() as usize;
    if val_split > 0.0 && n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    }
    let (val, train) = order.split_at(n_val.min(n));
    let mut train = train.to_vec();
    let mut val = val.to_vec();
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Fisher-Yates with the crate's portable generator.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// vela-data's statistics (the one place that computes them, with the gripper remapped) in
/// the model config's `norm_stats` type.
pub fn to_norm_stats(s: &vela_data::stats::DatasetStats) -> Result<DatasetStats> {
    serde_json::to_value(s)
        .and_then(serde_json::from_value)
        .map_err(|e| VlaError::Train(format!("dataset statistics: {e}")))
}

/// Area of the random crop in [`augment`] (and of the centre crop at evaluation).
pub const AUG_CROP_AREA: f32 = 0.9;

/// OpenVLA's training augmentation on a model-size frame: random resized crop (90 % area,
/// square), then brightness ±0.2, contrast and saturation ×[0.8, 1.2], hue ±0.05 (in turns),
/// in that order, on [0, 1] values.
pub fn augment(img: &RgbImage, rng: &mut SplitMix64) -> RgbImage {
    augment_with(img, rng, true)
}

/// [`augment`], optionally without the colour jitter: when instructions name block colours,
/// a hue shift of up to 18° can turn an orange block red in the picture but not in the text.
/// The random draws are the same either way, so the crops do not depend on the choice.
pub fn augment_with(img: &RgbImage, rng: &mut SplitMix64, colour: bool) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = AUG_CROP_AREA.sqrt();
    let (cw, ch) = (((w as f32) * side).round().max(1.0) as u32, ((h as f32) * side).round().max(1.0) as u32);
    let x0 = (rng.uniform() * (w - cw + 1) as f32) as u32;
    let y0 = (rng.uniform() * (h - ch + 1) as f32) as u32;
    let crop = image::imageops::crop_imm(img, x0.min(w - cw), y0.min(h - ch), cw, ch).to_image();
    let mut out = image::imageops::resize(&crop, w, h, image::imageops::FilterType::Triangle);
    let brightness = (rng.uniform() * 2.0 - 1.0) * 0.2;
    let contrast = 0.8 + rng.uniform() * 0.4;
    let saturation = 0.8 + rng.uniform() * 0.4;
    let hue = (rng.uniform() * 2.0 - 1.0) * 0.05;
    if !colour {
        return out;
    }
    let n = (w * h) as f32;
    let mut mean = [0f32; 3];
    for p in out.pixels() {
        for c in 0..3 {
            mean[c] += (p.0[c] as f32 / 255.0 + brightness) / n;
        }
    }
    for p in out.pixels_mut() {
        let mut v = [0f32; 3];
        for c in 0..3 {
            let x = p.0[c] as f32 / 255.0 + brightness;
            v[c] = (x - mean[c]) * contrast + mean[c];
        }
        let grey = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
        for x in &mut v {
            *x = (*x - grey) * saturation + grey;
        }
        let v = rotate_hue(v, hue);
        for c in 0..3 {
            p.0[c] = (v[c].clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}

/// Hue shift by `turns` of the colour wheel, via HSV.
fn rotate_hue(rgb: [f32; 3], turns: f32) -> [f32; 3] {
    let [r, g, b] = rgb.map(|x| x.clamp(0.0, 1.0));
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    if d <= f32::EPSILON {
        return [r, g, b];
    }
    let h = if max == r { ((g - b) / d).rem_euclid(6.0) } else if max == g { (b - r) / d + 2.0 } else { (r - g) / d + 4.0 } / 6.0;
    let h = (h + turns).rem_euclid(1.0) * 6.0;
    let (s, v) = (d / max, max);
    let i = h.floor();
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// A batch ready for [`super::model::TrainModel::forward`].
pub struct Batch {
    pub pixels: Tensor,
    pub ids: Tensor,
    pub gather: Tensor,
    /// Supervised token ids, 8 per sample (7 actions + `</s>`), same order as `gather`.
    pub targets: Vec<u32>,
    pub size: usize,
}

/// Samples → tokens and tensors, exactly as inference sees them: `pixel_values` from the
/// inference preprocessing, the inference prompt ids (with the trailing "▁"), then the 7
/// action tokens of the q01/q99-normalised action and `</s>`.
pub struct Collator {
    pub tokenizer: Box<dyn TextTokenizer>,
    pub actions: ActionTokenizer,
    pub stats: Stats,
    pub towers: Vec<VitConfig>,
    pub pad_id: u32,
    pub n_patches: usize,
    pub device: Device,
    prompts: HashMap<String, Vec<u32>>,
}

/// Supervised tokens per sample.
pub const SUPERVISED: usize = 8;

impl Collator {
    pub fn new(tokenizer: Box<dyn TextTokenizer>, actions: ActionTokenizer, stats: Stats, towers: Vec<VitConfig>, pad_id: u32, device: Device) -> Self {
        let n_patches = towers[0].num_patches();
        Self { tokenizer, actions, stats, towers, pad_id, n_patches, device, prompts: HashMap::new() }
    }

    pub fn tokens(&mut self, s: &Sample) -> Vec<u32> {
        let tok = self.tokenizer.as_ref();
        let mut ids = self.prompts.entry(s.instruction.clone()).or_insert_with(|| prompt_ids(tok, &s.instruction)).clone();
        ids.extend(normalize(&s.action, &self.stats).iter().map(|&a| self.actions.encode(a)));
        ids.push(EOS);
        ids
    }

    pub fn batch(&mut self, samples: &[Sample]) -> Result<Batch> {
        let seqs: Vec<Vec<u32>> = samples.iter().map(|s| self.tokens(s)).collect();
        let l = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let seq_len = self.n_patches + l;
        let mut ids = Vec::with_capacity(samples.len() * l);
        let mut gather = Vec::with_capacity(samples.len() * SUPERVISED);
        let mut targets = Vec::with_capacity(samples.len() * SUPERVISED);
        for (b, s) in seqs.iter().enumerate() {
            ids.extend(s.iter().copied().chain(std::iter::repeat(self.pad_id).take(l - s.len())));
            for j in s.len() - SUPERVISED..s.len() {
                gather.push((b * seq_len + self.n_patches + j - 1) as u32);
                targets.push(s[j]);
            }
        }
        let n = samples.len();
        let pixels = match self.device_pixels(samples)? {
            Some(px) => px,
            None => self.cpu_pixels(samples)?,
        };
        Ok(Batch {
            pixels,
            ids: Tensor::from_vec(ids, (n, l), &self.device)?,
            gather: Tensor::from_vec(gather, n * SUPERVISED, &self.device)?,
            targets,
            size: n,
        })
    }

    /// `pixel_values` of frames that already have every tower's size, computed on the device
    /// from the raw bytes: the CPU path below normalises 128 frames into 87 MB of f32 and took
    /// 60-90 ms a step on the H100 machine, longer than the forward pass. `None` when a frame
    /// would need resizing.
    fn device_pixels(&self, samples: &[Sample]) -> Result<Option<Tensor>> {
        let Some(first) = samples.first() else { return Ok(None) };
        let s = first.image.width() as usize;
        if self.towers.iter().any(|t| t.image_size != s) || samples.iter().any(|x| x.image.width() as usize != s || x.image.height() as usize != s) {
            return Ok(None);
        }
        let mut raw = Vec::with_capacity(samples.len() * s * s * 3);
        for x in samples {
            raw.extend_from_slice(x.image.as_raw());
        }
        let x = Tensor::from_vec(raw, (samples.len(), s, s, 3), &self.device)?.to_dtype(DType::F32)?.permute((0, 3, 1, 2))?;
        let x = (x / 255.0)?;
        let mut towers = Vec::with_capacity(self.towers.len());
        for t in &self.towers {
            let mean = Tensor::from_vec(t.image_mean.to_vec(), (1, 3, 1, 1), &self.device)?;
            let std = Tensor::from_vec(t.image_std.to_vec(), (1, 3, 1, 1), &self.device)?;
            towers.push(x.broadcast_sub(&mean)?.broadcast_div(&std)?);
        }
        Ok(Some(Tensor::cat(&towers, 1)?.contiguous()?))
    }

    fn cpu_pixels(&self, samples: &[Sample]) -> Result<Tensor> {
        // Normalising 64+ frames is tens of milliseconds on one core, time the GPU would idle.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let towers = &self.towers;
        let px: Vec<Tensor> = std::thread::scope(|sc| {
            let jobs: Vec<_> = samples
                .chunks(samples.len().div_ceil(threads).max(1))
                .map(|part| sc.spawn(move || part.iter().map(|s| pixel_values(&s.image, towers, DType::F32, &Device::Cpu)).collect::<Result<Vec<_>>>()))
                .collect();
            jobs.into_iter().map(|j| j.join().expect("pixel thread panicked")).collect::<Result<Vec<Vec<Tensor>>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        Ok(Tensor::cat(&px, 0)?.to_device(&self.device)?)
    }
}

/// The order of one epoch: shuffled episodes in chunks, each chunk's steps shuffled.
pub struct EpochPlan {
    pub chunks: Vec<Vec<usize>>,
}

impl EpochPlan {
    pub fn new(train: &[usize], chunk: usize, seed: u64, epoch: u64) -> Self {
        let perm = permutation(train.len(), tensor_seed(seed, &format!("epoch{epoch}")));
        let eps: Vec<usize> = perm.into_iter().map(|i| train[i]).collect();
        Self { chunks: eps.chunks(chunk.max(1)).map(<[usize]>::to_vec).collect() }
    }
}

/// Decoded chunks of one epoch, produced on a loader thread one chunk ahead, each with its
/// steps shuffled.
pub fn spawn_loader(reader: SharedReader, opts: DataOptions, plan: EpochPlan, seed: u64, epoch: u64, first_chunk: usize, aug: Option<AugPlan>) -> Receiver<Result<Vec<Sample>>> {
    let (tx, rx) = sync_channel(1);
    std::thread::spawn(move || {
        let mut position = aug.as_ref().map_or(0, |a| a.first_position);
        for (ci, chunk) in plan.chunks.iter().enumerate().skip(first_chunk) {
            let mut samples = Vec::new();
            let mut failed = None;
            for &e in chunk {
                match load_episode(&reader, e, &opts) {
                    Ok(s) => samples.extend(s),
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            let msg = match failed {
                Some(e) => Err(e),
                None => {
                    let order = permutation(samples.len(), tensor_seed(seed, &format!("epoch{epoch}/chunk{ci}")));
                    let mut slots: Vec<Option<Sample>> = samples.into_iter().map(Some).collect();
                    let mut shuffled: Vec<Sample> = order.into_iter().map(|i| slots[i].take().expect("permutation")).collect();
                    if let Some(a) = &aug {
                        augment_samples(&mut shuffled, a.seed, epoch, position, a.colour);
                        position += shuffled.len();
                    }
                    Ok(shuffled)
                }
            };
            let stop = msg.is_err();
            if tx.send(msg).is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Random-crop augmentation of the samples a loader sends.
#[derive(Clone, Debug)]
pub struct AugPlan {
    pub seed: u64,
    /// Colour jitter on top of the crop.
    pub colour: bool,
    /// Position in the epoch of the first sample of the first chunk loaded (non-zero when a
    /// resumed run starts mid-epoch).
    pub first_position: usize,
}

/// Random crops of `samples`, spread over the cores: one thread cropping and resizing 128
/// frames at 168 px took longer than the GPU step it fed (400 against 230 ms per step on an
/// H100). Sample `j` is at `offset + j` in the epoch, and its draws depend only on that
/// position, so neither the threads nor where the crops are drawn change the result.
pub fn augment_samples(samples: &mut [Sample], seed: u64, epoch: u64, offset: usize, colour: bool) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
    let per = samples.len().div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        for (k, part) in samples.chunks_mut(per).enumerate() {
            sc.spawn(move || {
                for (j, s) in part.iter_mut().enumerate() {
                    let i = offset + k * per + j;
                    let mut rng = SplitMix64::new(tensor_seed(seed, &format!("aug/{epoch}/{i}")));
                    s.image = augment_with(&s.image, &mut rng, colour);
                }
            });
        }
    });
}

/// Episodes held in memory (tests, throughput benchmarks, datasets built on the fly).
pub struct MemoryReader {
    pub meta: vela_data::DatasetMeta,
    pub episodes: Vec<Episode>,
}

impl EpisodeReader for MemoryReader {
    fn meta(&self) -> &vela_data::DatasetMeta {
        &self.meta
    }
    fn len(&self) -> usize {
        self.episodes.len()
    }
    fn read(&mut self, index: usize) -> vela_data::Result<Episode> {
        self.episodes.get(index).cloned().ok_or_else(|| vela_data::DataError::Other(format!("no episode {index} (have {})", self.episodes.len())))
    }
}
