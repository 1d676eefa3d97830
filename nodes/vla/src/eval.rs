//! Offline evaluation (`vela vla eval`): metrics matching the reference's definitions, the
//! per-step loop, and the walk over a recorded dataset.

use std::path::{Path, PathBuf};

use image::RgbImage;
use vela_data::stats::training_action;
use vela_data::{Episode, EpisodeReader};

use crate::model::NORMALIZED;
use crate::{OpenVla, Result, VlaError};

/// `sqrt(nanmean(((gt − pred)/(q99 − q01))²))`. A dimension whose range is zero (constant in
/// the dataset) is scored on its absolute error instead of dividing by zero; NaN entries (e.g.
/// missing ground truth) are skipped. Returns NaN when nothing is comparable.
pub fn nrmse(gt: &[f32], pred: &[f32], q01: &[f32], q99: &[f32]) -> f32 {
    let mut sum = 0f64;
    let mut n = 0usize;
    for i in 0..gt.len().min(pred.len()) {
        let range = match (q01.get(i), q99.get(i)) {
            (Some(lo), Some(hi)) if (hi - lo).abs() > f32::EPSILON => (hi - lo) as f64,
            _ => 1.0,
        };
        let e = (gt[i] as f64 - pred[i] as f64) / range;
        if e.is_nan() {
            continue;
        }
        sum += e * e;
        n += 1;
    }
    if n == 0 { f32::NAN } else { (sum / n as f64).sqrt() as f32 }
}

/// `1 − NRMSE`.
pub fn accuracy(gt: &[f32], pred: &[f32], q01: &[f32], q99: &[f32]) -> f32 {
    1.0 - nrmse(gt, pred, q01, q99)
}

/// Running mean that ignores NaNs, for the `~mean` column of the eval log.
#[derive(Clone, Debug, Default)]
pub struct NanMean {
    sum: f64,
    n: usize,
}

impl NanMean {
    pub fn push(&mut self, x: f32) {
        if !x.is_nan() {
            self.sum += x as f64;
            self.n += 1;
        }
    }
    pub fn mean(&self) -> f32 {
        if self.n == 0 { f32::NAN } else { (self.sum / self.n as f64) as f32 }
    }
    pub fn count(&self) -> usize {
        self.n
    }
}

/// NRMSE with the scalar range the reference uses for `--normalized` runs (outputs in [-1, 1]):
/// `sqrt(nanmean((gt − pred)²)) / 2`.
pub fn nrmse_normalized(gt: &[f32], pred: &[f32]) -> f32 {
    let ones = vec![0.0f32; gt.len()];
    let twos = vec![1.0f32; gt.len()];
    // range 1 per dimension gives the plain RMSE; divide by the scalar range 2.
    nrmse(gt, pred, &ones, &twos) / 2.0
}

/// Per-dimension ranges for NRMSE, as chosen by `vela vla eval`.
#[derive(Clone, Debug)]
pub enum ActionRange {
    /// `q99 − q01` of the action space's statistics.
    Quantiles { q01: Vec<f32>, q99: Vec<f32> },
    /// `--normalized`: scalar range 2.0.
    Normalized,
}

impl ActionRange {
    pub fn nrmse(&self, gt: &[f32], pred: &[f32]) -> f32 {
        match self {
            Self::Quantiles { q01, q99 } => nrmse(gt, pred, q01, q99),
            Self::Normalized => nrmse_normalized(gt, pred),
        }
    }
}

/// Aggregates in the `mean` block of `--save-stats`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct EvalMean {
    pub timesteps: usize,
    pub latency: f64,
    pub fps: f64,
    pub error: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_latency: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_fps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quant_error: Option<f64>,
}

/// The `--save-stats FILE.json` document (same keys as the reference; latencies in seconds).
/// The eval_* / quant_error lists stay empty unless a second model is compared.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct EvalStats {
    pub latency: Vec<f64>,
    pub eval_latency: Vec<f64>,
    pub eval_error: Vec<f64>,
    pub quant_error: Vec<f64>,
    pub error: Vec<f64>,
    pub mean: EvalMean,
}

fn nanmean(v: &[f64]) -> f64 {
    let (s, n) = v.iter().filter(|x| !x.is_nan()).fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

impl EvalStats {
    /// Records one step of the model under test.
    pub fn push(&mut self, latency_s: f64, error: f32) {
        self.latency.push(latency_s);
        self.error.push(error as f64);
        self.update_mean();
    }

    /// Records the comparison model for the same step (`--eval-model`).
    pub fn push_eval(&mut self, latency_s: f64, eval_error: f32, quant_error: f32) {
        self.eval_latency.push(latency_s);
        self.eval_error.push(eval_error as f64);
        self.quant_error.push(quant_error as f64);
        self.update_mean();
    }

    fn update_mean(&mut self) {
        let opt = |v: &[f64]| if v.is_empty() { None } else { Some(nanmean(v)) };
        let latency = nanmean(&self.latency);
        let eval_latency = opt(&self.eval_latency);
        self.mean = EvalMean {
            timesteps: self.latency.len(),
            latency,
            fps: 1.0 / latency,
            error: nanmean(&self.error),
            eval_latency,
            eval_fps: eval_latency.map(|l| 1.0 / l),
            eval_error: opt(&self.eval_error),
            quant_error: opt(&self.quant_error),
        };
    }

    /// `step {i}  [actions]  accuracy a ~mean  time=… ms  fps=… ~…`
    pub fn step_line(&self, i: usize, action: &[f32]) -> String {
        let err = self.error.last().copied().unwrap_or(f64::NAN);
        let t = self.latency.last().copied().unwrap_or(f64::NAN);
        format!(
            "step {i}  {}  accuracy {:.4} ~{:.4}  time={:.1} ms  fps={:.2} ~{:.2}",
            fmt_vec(action),
            1.0 - err,
            1.0 - self.mean.error,
            t * 1e3,
            1.0 / t,
            self.mean.fps
        )
    }

    /// `gt   {i}  [gt]`
    pub fn gt_line(i: usize, gt: &[f32]) -> String {
        format!("gt   {i}  {}", fmt_vec(gt))
    }

    /// Writes the JSON through a temporary file and a rename, because it is rewritten after
    /// every step and a reader (or an interrupted run) must never see half a document.
    pub fn save(&self, path: &Path) -> Result<()> {
        let s = serde_json::to_string_pretty(self).map_err(|e| VlaError::Config(e.to_string()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, s + "\n").map_err(|e| VlaError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| VlaError::io(path, e))
    }

    /// The end-of-run table: the `mean` block with accuracy spelled out.
    pub fn summary(&self) -> String {
        let m = &self.mean;
        let mut s = format!(
            "timesteps {}  accuracy {:.4}  error {:.4}  latency {:.1} ms  fps {:.2}",
            m.timesteps,
            1.0 - m.error,
            m.error,
            m.latency * 1e3,
            m.fps
        );
        if let (Some(err), Some(lat), Some(q)) = (m.eval_error, m.eval_latency, m.quant_error) {
            s += &format!(
                "\neval model: accuracy {:.4}  error {:.4}  latency {:.1} ms  fps {:.2}  quant_error {q:.4}",
                1.0 - err,
                err,
                lat * 1e3,
                1.0 / lat
            );
        }
        s
    }
}

fn fmt_vec(v: &[f32]) -> String {
    format!("[{}]", v.iter().map(|x| format!("{x:+.4}")).collect::<Vec<_>>().join(" "))
}

/// One dataset step for [`Evaluator::step`]; dataset readers (RLDS, MimicGen HDF5) produce these.
pub struct EvalStep<'a> {
    pub image: &'a RgbImage,
    pub instruction: &'a str,
    /// Ground-truth action in the same space as the predictions.
    pub action: &'a [f32],
}

/// The loop behind `vela vla eval`, one step at a time so episodes can be read lazily: predict
/// with the model under test, score it with NRMSE against the ground truth (and against
/// `eval_model` when comparing, e.g. INT4 vs FP16), and rewrite `save_stats` after every step
/// like the reference does, so an interrupted run keeps its numbers.
pub struct Evaluator<'m> {
    model: &'m OpenVla,
    eval_model: Option<&'m OpenVla>,
    action_space: String,
    range: ActionRange,
    stats: EvalStats,
    save_stats: Option<PathBuf>,
}

impl<'m> Evaluator<'m> {
    /// `action_space` is what both models decode into: a `norm_stats` key (NRMSE over its
    /// q01..q99 range) or `normalized` (scalar range 2).
    pub fn new(model: &'m OpenVla, eval_model: Option<&'m OpenVla>, action_space: &str, save_stats: Option<&Path>) -> Result<Self> {
        let range = if action_space == NORMALIZED {
            ActionRange::Normalized
        } else {
            let s = model.config.action_stats(action_space)?;
            if let Some(e) = eval_model {
                e.config.action_stats(action_space).map_err(|err| VlaError::Config(format!("eval model: {err}")))?;
            }
            ActionRange::Quantiles { q01: s.q01.clone(), q99: s.q99.clone() }
        };
        Ok(Self {
            model,
            eval_model,
            action_space: action_space.to_string(),
            range,
            stats: EvalStats::default(),
            save_stats: save_stats.map(Path::to_path_buf),
        })
    }

    /// Runs one step through `OpenVla::predict_action_stream` (the node's path) and returns
    /// the console lines: `step`, `gt`, and `eval` when a second model is compared.
    pub fn step(&mut self, step: &EvalStep) -> Result<Vec<String>> {
        let i = self.stats.latency.len();
        let t = std::time::Instant::now();
        let p = self.model.predict_action_stream(step.image, step.instruction, &self.action_space, |_| {})?;
        let latency = t.elapsed().as_secs_f64();
        self.stats.push(latency, self.range.nrmse(step.action, &p.action));
        let mut lines = vec![self.stats.step_line(i, &p.action), EvalStats::gt_line(i, step.action)];
        if let Some(e) = self.eval_model {
            let t = std::time::Instant::now();
            let q = e.predict_action_stream(step.image, step.instruction, &self.action_space, |_| {})?;
            let el = t.elapsed().as_secs_f64();
            let eval_error = self.range.nrmse(step.action, &q.action);
            let quant_error = self.range.nrmse(&q.action, &p.action);
            self.stats.push_eval(el, eval_error, quant_error);
            lines.push(format!(
                "eval {i}  {}  accuracy {:.4} ~{:.4}  time={:.1} ms  q_err={:.4} ~{:.4}",
                fmt_vec(&q.action),
                1.0 - eval_error,
                1.0 - self.stats.mean.eval_error.unwrap_or(f64::NAN),
                el * 1e3,
                quant_error,
                self.stats.mean.quant_error.unwrap_or(f64::NAN),
            ));
        }
        if let Some(path) = &self.save_stats {
            self.stats.save(path)?;
        }
        Ok(lines)
    }

    pub fn stats(&self) -> &EvalStats {
        &self.stats
    }

    pub fn into_stats(self) -> EvalStats {
        self.stats
    }
}

/// [`Evaluator`] over steps already in memory.
pub fn evaluate<'a>(
    model: &OpenVla,
    eval_model: Option<&OpenVla>,
    steps: impl IntoIterator<Item = EvalStep<'a>>,
    action_space: &str,
    mut on_line: impl FnMut(&str),
    save_stats: Option<&Path>,
) -> Result<EvalStats> {
    let mut ev = Evaluator::new(model, eval_model, action_space, save_stats)?;
    for step in steps {
        for l in ev.step(&step)? {
            on_line(&l);
        }
    }
    Ok(ev.into_stats())
}

/// How `vela vla eval` picks steps out of a dataset.
#[derive(Clone, Debug, Default)]
pub struct DatasetOptions {
    /// `norm_stats` key (default: the dataset's name when the model has it, else the model's
    /// only key).
    pub action_space: Option<String>,
    /// Compare in the [-1, 1] space the model decodes into: predictions skip
    /// un-normalisation and the ground truth is normalised with the action space's q01/q99.
    pub normalized: bool,
    /// Camera to feed the model (default: `agentview` when present, else the first one, as
    /// training picks it).
    pub camera: Option<String>,
    /// Instruction for steps that have none.
    pub instruction: Option<String>,
    pub max_episodes: Option<usize>,
    /// Cap on the total number of steps over all episodes.
    pub max_steps: Option<usize>,
}

/// The action space whose statistics score (and, unless `normalized`, un-normalise) the run.
pub fn resolve_action_space(model: &OpenVla, dataset_name: &str, requested: Option<&str>) -> Result<String> {
    let keys: Vec<&String> = model.config.norm_stats.keys().collect();
    let have = || keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
    match requested {
        Some(NORMALIZED) => Err(VlaError::Config(format!(
            "use --normalized to compare in normalised space; --action-space names the statistics (have: {})",
            have()
        ))),
        Some(k) => model.config.action_stats(k).map(|_| k.to_string()),
        None if model.config.norm_stats.contains_key(dataset_name) => Ok(dataset_name.to_string()),
        None if keys.len() == 1 => Ok(keys[0].clone()),
        None => Err(VlaError::Config(format!(
            "the model has no statistics named after dataset `{dataset_name}`; pick one with --action-space (have: {})",
            have()
        ))),
    }
}

/// What [`evaluate_dataset`] reports besides the per-step lines.
pub trait EvalProgress {
    /// Once, before the first step, with the number of steps the run will take.
    fn start(&mut self, total_steps: usize);
    /// After every step, with its console lines.
    fn step(&mut self, lines: &[String]);
}

/// Evaluates the models on a recorded dataset (episodes read one at a time). Ground truth is
/// compared in the space training uses (gripper 1 = open, 0 = closed), so predictions and
/// recorded actions mean the same thing. Errors name the dataset file and the episode.
pub fn evaluate_dataset(
    model: &OpenVla,
    eval_model: Option<&OpenVla>,
    reader: &mut dyn EpisodeReader,
    dataset: &Path,
    opts: &DatasetOptions,
    save_stats: Option<&Path>,
    progress: &mut dyn EvalProgress,
) -> Result<EvalStats> {
    let key = resolve_action_space(model, &reader.meta().name, opts.action_space.as_deref())?;
    let stats = model.config.action_stats(&key)?.clone();
    let space = if opts.normalized { NORMALIZED } else { key.as_str() };
    tracing::info!(action_space = %key, normalized = opts.normalized, "evaluating");
    let mut ev = Evaluator::new(model, eval_model, space, save_stats)?;
    let episodes = opts.max_episodes.map_or(reader.len(), |m| m.min(reader.len()));
    if episodes == 0 {
        return Err(VlaError::Input(format!("{}: no episodes to evaluate", dataset.display())));
    }
    let max_steps = opts.max_steps.unwrap_or(usize::MAX);
    // Counting from the low-dimensional series skips frame decoding, so the bar knows its
    // length at a fraction of the cost of the run.
    let mut total = 0usize;
    for e in 0..episodes {
        total += reader.read_lowdim(e)?.len();
        if total >= max_steps {
            break;
        }
    }
    progress.start(total.min(max_steps));
    'episodes: for e in 0..episodes {
        let ep = reader.read(e)?;
        let name = if ep.name.is_empty() { format!("#{e}") } else { ep.name.clone() };
        let at = |msg: String| VlaError::Input(format!("{}: episode {name}: {msg}", dataset.display()));
        let (camera, frames) = episode_frames(&ep, opts.camera.as_deref()).map_err(at)?;
        for (t, (f, a)) in frames.iter().zip(&ep.actions).enumerate() {
            if ev.stats().latency.len() >= max_steps {
                break 'episodes;
            }
            let image = RgbImage::from_raw(f.width, f.height, f.rgb.clone())
                .ok_or_else(|| at(format!("frame {t} of `{camera}` has {} bytes for {}x{}", f.rgb.len(), f.width, f.height)))?;
            let instruction = ep
                .instructions
                .get(t)
                .filter(|s| !s.trim().is_empty())
                .or(opts.instruction.as_ref())
                .ok_or_else(|| at(format!("step {t} has no instruction (pass --instruction)")))?;
            let mut gt = training_action(a).to_vec();
            if opts.normalized {
                gt = crate::action::normalize(&gt, &stats);
            }
            let lines = ev.step(&EvalStep { image: &image, instruction, action: &gt })?;
            progress.step(&lines);
        }
    }
    Ok(ev.into_stats())
}

/// The chosen camera's frames, one per action.
fn episode_frames<'e>(ep: &'e Episode, camera: Option<&str>) -> std::result::Result<(String, &'e [vela_data::Frame]), String> {
    let cameras = || ep.images.keys().cloned().collect::<Vec<_>>().join(", ");
    let camera = match camera {
        Some(c) => c.to_string(),
        None if ep.images.contains_key("agentview") => "agentview".into(),
        None => ep.images.keys().next().cloned().ok_or_else(|| "no camera images".to_string())?,
    };
    let frames = ep.images.get(&camera).ok_or_else(|| format!("no camera `{camera}` (has: {})", cameras()))?;
    if frames.len() != ep.actions.len() {
        return Err(format!("{} `{camera}` frames for {} actions", frames.len(), ep.actions.len()));
    }
    Ok((camera, frames))
}
