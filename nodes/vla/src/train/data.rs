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
    /// The actions of the steps after this one that a chunked model also predicts
    /// (`--action-chunk K`: K - 1 of them, the episode's last action repeated past its end).
    pub later: Vec<[f32; 7]>,
    /// Pointing questions this frame can answer (`DataOptions::pointing`; empty when the
    /// episode has no `object` observations).
    pub pointing: Vec<Pointing>,
    /// Set when the sample has been turned into one of its pointing questions: the seven
    /// answer values, already in [-1, 1], which bypass the action statistics.
    pub point_target: Option<[f32; 7]>,
}

impl Sample {
    pub fn new(image: RgbImage, instruction: String, action: [f32; 7]) -> Self {
        Self { image, instruction, action, later: Vec::new(), pointing: Vec::new(), point_target: None }
    }
}

/// An auxiliary "point at the red cube" question about one frame (`vela train --pointing`).
///
/// Models trained on Stack data alone learned to ignore which cube the instruction names:
/// in D0-D4 the small cube always goes on the big one, so the image decides. A question that
/// names either cube, answered by where that cube is, cannot be solved without reading the
/// name, and it trains the path from a colour (or size) word to a place in the image that
/// following an instruction needs. The answer uses the same seven action tokens:
/// cube - gripper (x, y, z) / 0.3 m, the cube's table x, y / 0.25 m, its lift above where it
/// started / 0.2 m, then 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Pointing {
    pub instruction: String,
    pub target: [f32; 7],
}

const POINT_REL_M: f32 = 0.3;
const POINT_TABLE_M: f32 = 0.25;
const POINT_LIFT_M: f32 = 0.2;

/// The phrases naming the cube to move and the target cube in an instruction made by the
/// simulator's template ("stack the red cube on top of the green one"): `("red cube",
/// "green cube")`. A side named only as "the other" gives `None`; so does a text without
/// the template's shape.
pub fn instruction_phrases(text: &str) -> Option<(Option<String>, Option<String>)> {
    let words: Vec<String> = text.to_lowercase().split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_string()).collect();
    let on = words.iter().position(|w| w == "on" || w == "onto")?;
    let first_the = words[..on].iter().position(|w| w == "the")?;
    let last_the = on + words[on..].iter().rposition(|w| w == "the")?;
    let phrase = |ws: &[String]| -> Option<String> {
        if ws.is_empty() || ws.iter().any(|w| w == "other") {
            return None;
        }
        let mut ws: Vec<&str> = ws.iter().map(String::as_str).collect();
        if let Some(last) = ws.last_mut() {
            if *last == "one" {
                *last = "cube";
            }
        }
        if ws.len() == 1 {
            ws.push("cube");
        }
        Some(ws.join(" "))
    };
    let moved = phrase(&words[first_the + 1..on]);
    let target = phrase(&words[last_the + 1..]);
    (moved.is_some() || target.is_some()).then_some((moved, target))
}

/// The cube colours instructions name (the simulator's six).
const COLOUR_WORDS: [&str; 6] = ["red", "orange", "yellow", "green", "blue", "purple"];

/// `text` with its first two different colour words swapped ("put the red cube on the green
/// one" → "put the green cube on the red one"); `None` unless it names two colours. The
/// validation's text-sensitivity check asks the model both.
pub fn swap_colours(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split(' ').collect();
    let colour = |w: &str| {
        let bare = w.trim_matches(|c: char| !c.is_alphanumeric()).to_ascii_lowercase();
        COLOUR_WORDS.iter().position(|c| *c == bare)
    };
    let i = words.iter().position(|w| colour(w).is_some())?;
    let j = i + 1 + words[i + 1..].iter().position(|w| colour(w).is_some_and(|c| Some(c) != colour(words[i])))?;
    let (a, b) = (COLOUR_WORDS[colour(words[i])?], COLOUR_WORDS[colour(words[j])?]);
    let mut out: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    out[i] = words[i].replacen(a, b, 1);
    out[j] = words[j].replacen(b, a, 1);
    Some(out.join(" "))
}

/// The pointing questions of every frame of `ep` (see [`Pointing`]). Needs robosuite's 23-D
/// `object` observation (cube A pos, quat, cube B pos, ...) and `robot0_eef_pos`; the cube
/// that was moved is the one on top at the end, so only episodes that end stacked have
/// questions.
pub fn pointing_questions(ep: &Episode, instructions: &[String]) -> Vec<Vec<Pointing>> {
    let n = instructions.len();
    let none = || vec![Vec::new(); n];
    let (Some(obj), Some(eef)) = (ep.low_dim.get("object"), ep.low_dim.get("robot0_eef_pos")) else { return none() };
    if n == 0 || obj.dim != 23 || eef.dim != 3 || obj.data.len() < n * 23 || eef.data.len() < n * 3 {
        return none();
    }
    let o = |t: usize, i: usize| obj.data[t * 23 + i] as f32;
    let (za, zb) = (o(n - 1, 2), o(n - 1, 9));
    if (za - zb).abs() < 0.03 {
        return none();
    }
    let a_moved = za > zb;
    let rest = [o(0, 2), o(0, 9)];
    (0..n)
        .map(|t| {
            let Some((moved, target)) = instruction_phrases(&instructions[t]) else { return Vec::new() };
            [(moved, a_moved), (target, !a_moved)]
                .into_iter()
                .filter_map(|(phrase, is_a)| {
                    let phrase = phrase?;
                    let (k, r) = if is_a { (0, rest[0]) } else { (7, rest[1]) };
                    let c = [o(t, k), o(t, k + 1), o(t, k + 2)];
                    let e = [eef.data[t * 3] as f32, eef.data[t * 3 + 1] as f32, eef.data[t * 3 + 2] as f32];
                    let v = [
                        (c[0] - e[0]) / POINT_REL_M,
                        (c[1] - e[1]) / POINT_REL_M,
                        (c[2] - e[2]) / POINT_REL_M,
                        c[0] / POINT_TABLE_M,
                        c[1] / POINT_TABLE_M,
                        (c[2] - r) / POINT_LIFT_M,
                        0.0,
                    ];
                    Some(Pointing { instruction: format!("point at the {phrase}"), target: v.map(|x| x.clamp(-1.0, 1.0)) })
                })
                .collect()
        })
        .collect()
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
    /// Attach each frame's pointing questions ([`Pointing`]).
    pub pointing: bool,
    /// Actions per sample's label (`--action-chunk`; 1 = OpenVLA's single action).
    pub action_chunk: usize,
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
    let mut questions = if opts.pointing { pointing_questions(&ep, &instructions) } else { Vec::new() }.into_iter();
    let labels: Vec<[f32; 7]> = ep.actions.iter().map(|a| training_action(a)).collect();
    let out = images
        .into_iter()
        .zip(instructions)
        .enumerate()
        .map(|(t, (image, instruction))| Sample {
            pointing: questions.next().unwrap_or_default(),
            later: chunk_after(&labels, t, opts.action_chunk),
            ..Sample::new(image, instruction, labels[t])
        })
        .collect();
    Ok(out)
}

/// The `k - 1` labels after step `t`; past the episode's end its last action repeats (the
/// arm has finished; holding that last command is what the demo would have kept doing).
pub fn chunk_after(labels: &[[f32; 7]], t: usize, k: usize) -> Vec<[f32; 7]> {
    let last = labels.len().saturating_sub(1);
    (1..k.max(1)).map(|i| labels[(t + i).min(last)]).collect()
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
    /// Supervised token ids, [`Batch::per_sample`] per sample (7 per action + `</s>`), same
    /// order as `gather`.
    pub targets: Vec<u32>,
    pub per_sample: usize,
    /// Per sample: a pointing question, not an action (left out of the action metrics).
    pub pointing: Vec<bool>,
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
    /// Actions per label (`--action-chunk`).
    pub chunk: usize,
    prompts: HashMap<String, Vec<u32>>,
}

/// Supervised tokens per sample of a single-action model (7 actions + `</s>`).
pub const SUPERVISED: usize = 8;

impl Collator {
    pub fn new(tokenizer: Box<dyn TextTokenizer>, actions: ActionTokenizer, stats: Stats, towers: Vec<VitConfig>, pad_id: u32, device: Device) -> Self {
        let n_patches = towers[0].num_patches();
        Self { tokenizer, actions, stats, towers, pad_id, n_patches, device, chunk: 1, prompts: HashMap::new() }
    }

    /// Labels of `k` actions each (the model learns to predict a chunk).
    pub fn with_chunk(mut self, k: usize) -> Self {
        self.chunk = k.max(1);
        self
    }

    /// Supervised tokens per sample: 7 per action and `</s>`.
    pub fn supervised(&self) -> usize {
        7 * self.chunk + 1
    }

    pub fn tokens(&mut self, s: &Sample) -> Vec<u32> {
        let tok = self.tokenizer.as_ref();
        let mut ids = self.prompts.entry(s.instruction.clone()).or_insert_with(|| prompt_ids(tok, &s.instruction)).clone();
        match &s.point_target {
            Some(t) => ids.extend(t.iter().map(|&a| self.actions.encode(a))),
            None => {
                ids.extend(normalize(&s.action, &self.stats).iter().map(|&a| self.actions.encode(a)));
                for i in 1..self.chunk {
                    // A sample loaded without its later actions holds its own (the last step).
                    let a = s.later.get(i - 1).or(s.later.last()).unwrap_or(&s.action);
                    ids.extend(normalize(a, &self.stats).iter().map(|&a| self.actions.encode(a)));
                }
            }
        }
        ids.push(EOS);
        ids
    }

    pub fn batch(&mut self, samples: &[Sample]) -> Result<Batch> {
        let seqs: Vec<Vec<u32>> = samples.iter().map(|s| self.tokens(s)).collect();
        let l = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let seq_len = self.n_patches + l;
        let mut ids = Vec::with_capacity(samples.len() * l);
        let sup = self.supervised();
        let mut gather = Vec::with_capacity(samples.len() * sup);
        let mut targets = Vec::with_capacity(samples.len() * sup);
        for (b, s) in seqs.iter().enumerate() {
            ids.extend(s.iter().copied().chain(std::iter::repeat(self.pad_id).take(l - s.len())));
            for j in s.len() - sup..s.len() {
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
            gather: Tensor::from_vec(gather, n * sup, &self.device)?,
            targets,
            per_sample: sup,
            pointing: samples.iter().map(|s| s.point_target.is_some()).collect(),
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
                        augment_samples(&mut shuffled, a, epoch, position);
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

/// Per-sample draws on the samples a loader sends: random crops and pointing questions.
#[derive(Clone, Debug)]
pub struct AugPlan {
    pub seed: u64,
    /// Random crops.
    pub crop: bool,
    /// Colour jitter on top of the crop.
    pub colour: bool,
    /// Fraction of samples (with questions) turned into pointing questions.
    pub point: f64,
    /// Position in the epoch of the first sample of the first chunk loaded (non-zero when a
    /// resumed run starts mid-epoch).
    pub first_position: usize,
}

/// Random crops of `samples`, spread over the cores: one thread cropping and resizing 128
/// frames at 168 px took longer than the GPU step it fed (400 against 230 ms per step on an
/// H100). Sample `j` is at `offset + j` in the epoch, and its draws depend only on that
/// position, so neither the threads nor where the crops are drawn change the result.
pub fn augment_samples(samples: &mut [Sample], plan: &AugPlan, epoch: u64, offset: usize) {
    let AugPlan { seed, crop, colour, point, .. } = *plan;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
    let per = samples.len().div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        for (k, part) in samples.chunks_mut(per).enumerate() {
            sc.spawn(move || {
                for (j, s) in part.iter_mut().enumerate() {
                    let i = offset + k * per + j;
                    if crop {
                        let mut rng = SplitMix64::new(tensor_seed(seed, &format!("aug/{epoch}/{i}")));
                        s.image = augment_with(&s.image, &mut rng, colour);
                    }
                    if point > 0.0 && !s.pointing.is_empty() {
                        let mut rng = SplitMix64::new(tensor_seed(seed, &format!("point/{epoch}/{i}")));
                        if (rng.uniform() as f64) < point {
                            let q = &s.pointing[(rng.next_u64() % s.pointing.len() as u64) as usize];
                            s.instruction = q.instruction.clone();
                            s.point_target = Some(q.target);
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use vela_data::LowDim;

    #[test]
    fn colours_swap_places() {
        assert_eq!(swap_colours("put the red cube on the green one").as_deref(), Some("put the green cube on the red one"));
        assert_eq!(swap_colours("stack the blue block on top of the purple block.").as_deref(), Some("stack the purple block on top of the blue block."));
        assert_eq!(swap_colours("put the red cube on the other one"), None);
        assert_eq!(swap_colours("red red"), None);
    }

    #[test]
    fn phrases_follow_the_simulators_template() {
        let p = |s: &str| instruction_phrases(s).unwrap();
        assert_eq!(p("put the red cube on the green cube"), (Some("red cube".into()), Some("green cube".into())));
        assert_eq!(p("stack the smaller block on top of the blue one"), (Some("smaller block".into()), Some("blue cube".into())));
        assert_eq!(p("place the big cube on the other block"), (Some("big cube".into()), None));
        assert_eq!(p("put the red block on top of the green block."), (Some("red block".into()), Some("green block".into())));
        assert_eq!(instruction_phrases("stack them"), None);
        assert_eq!(instruction_phrases("put it on the table"), None);
    }

    /// Two steps of a Stack_Lang-like episode where the big cube B ends on top of A.
    fn episode() -> (Episode, Vec<String>) {
        let mut object = vec![0.0f64; 46];
        // step 0: A at (0.1, -0.1) resting at z 0.82, B at (-0.1, 0.05, 0.825)
        object[0..3].copy_from_slice(&[0.1, -0.1, 0.82]);
        object[7..10].copy_from_slice(&[-0.1, 0.05, 0.825]);
        // step 1: B stacked on A
        object[23..26].copy_from_slice(&[0.1, -0.1, 0.82]);
        object[30..33].copy_from_slice(&[0.1, -0.1, 0.865]);
        let eef = vec![0.0, 0.0, 1.0, 0.1, -0.1, 0.9];
        let mut ep = Episode::default();
        ep.low_dim.insert("object".into(), LowDim { dim: 23, data: object });
        ep.low_dim.insert("robot0_eef_pos".into(), LowDim { dim: 3, data: eef });
        let text = "put the green cube on the red one".to_string();
        (ep, vec![text.clone(), text])
    }

    #[test]
    fn pointing_answers_where_the_named_cube_is() {
        let (ep, instr) = episode();
        let q = pointing_questions(&ep, &instr);
        assert_eq!(q.len(), 2);
        // The moved cube is B (on top at the end), named "green cube".
        assert_eq!(q[0][0].instruction, "point at the green cube");
        let t = q[0][0].target;
        let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
        assert!(close(t[0], -0.1 / 0.3) && close(t[1], 0.05 / 0.3) && close(t[2], -0.175 / 0.3), "{t:?}");
        assert!(close(t[3], -0.1 / 0.25) && close(t[4], 0.05 / 0.25) && close(t[5], 0.0), "{t:?}");
        // The target cube is A, "red cube"; at step 1 B is lifted 4 cm above where it started.
        assert_eq!(q[0][1].instruction, "point at the red cube");
        assert!(close(q[0][1].target[3], 0.1 / 0.25));
        assert!(close(q[1][0].target[5], 0.04 / 0.2), "{:?}", q[1][0].target);
        assert!(q.iter().flatten().all(|p| p.target.iter().all(|x| (-1.0..=1.0).contains(x))));
    }

    #[test]
    fn no_questions_without_a_stack_or_object_observations() {
        let (mut ep, instr) = episode();
        // Not stacked at the end: which cube was moved is unknown.
        ep.low_dim.get_mut("object").unwrap().data[32] = 0.825;
        assert!(pointing_questions(&ep, &instr).iter().all(Vec::is_empty));
        ep.low_dim.remove("object");
        assert!(pointing_questions(&ep, &instr).iter().all(Vec::is_empty));
    }

    #[test]
    fn pointing_draws_depend_on_position_only() {
        let (ep, instr) = episode();
        let q = pointing_questions(&ep, &instr);
        let make = || -> Vec<Sample> {
            (0..64).map(|i| Sample { pointing: q[i % 2].clone(), ..Sample::new(RgbImage::new(4, 4), instr[0].clone(), [0.0; 7]) }).collect()
        };
        let plan = AugPlan { seed: 3, crop: false, colour: false, point: 0.25, first_position: 0 };
        let (mut a, mut b) = (make(), make());
        augment_samples(&mut a, &plan, 1, 0);
        augment_samples(&mut b[..32], &plan, 1, 0);
        augment_samples(&mut b[32..], &plan, 1, 32);
        let asked: Vec<_> = a.iter().map(|s| (s.instruction.clone(), s.point_target)).collect();
        assert_eq!(asked, b.iter().map(|s| (s.instruction.clone(), s.point_target)).collect::<Vec<_>>());
        let n = a.iter().filter(|s| s.point_target.is_some()).count();
        assert!((6..=28).contains(&n), "{n} of 64 asked");
        assert!(a.iter().filter(|s| s.point_target.is_some()).all(|s| s.instruction.starts_with("point at the ")));
    }

    #[test]
    fn chunk_labels_look_ahead_and_hold_the_last_action() {
        let labels: Vec<[f32; 7]> = (0..4).map(|i| [i as f32; 7]).collect();
        let firsts = |v: Vec<[f32; 7]>| v.iter().map(|a| a[0]).collect::<Vec<_>>();
        assert_eq!(firsts(chunk_after(&labels, 0, 3)), [1.0, 2.0]);
        assert_eq!(firsts(chunk_after(&labels, 2, 3)), [3.0, 3.0]);
        assert_eq!(firsts(chunk_after(&labels, 3, 4)), [3.0, 3.0, 3.0]);
        assert!(chunk_after(&labels, 1, 1).is_empty());
    }
}
