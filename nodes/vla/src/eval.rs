//! Offline-evaluation metrics, matching the reference's definitions.

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

    pub fn save(&self, path: &std::path::Path) -> crate::Result<()> {
        let s = serde_json::to_string_pretty(self).map_err(|e| crate::VlaError::Config(e.to_string()))?;
        std::fs::write(path, s).map_err(|e| crate::VlaError::io(path, e))
    }
}

fn fmt_vec(v: &[f32]) -> String {
    format!("[{}]", v.iter().map(|x| format!("{x:+.4}")).collect::<Vec<_>>().join(" "))
}

/// One dataset step for [`evaluate`]; dataset readers (RLDS, MimicGen HDF5) produce these.
pub struct EvalStep<'a> {
    pub image: &'a image::RgbImage,
    pub instruction: &'a str,
    /// Ground-truth action in the same space as the predictions.
    pub action: &'a [f32],
}

/// The loop behind `vela vla eval`: predict every step, score it with NRMSE against the
/// ground truth (and against `eval_model` when comparing, e.g. INT4 vs FP16), hand the console
/// lines to `on_line`, and rewrite `save_stats` after every step like the reference does.
pub fn evaluate<'a>(
    model: &crate::OpenVla,
    eval_model: Option<&crate::OpenVla>,
    steps: impl IntoIterator<Item = EvalStep<'a>>,
    action_space: &str,
    mut on_line: impl FnMut(&str),
    save_stats: Option<&std::path::Path>,
) -> crate::Result<EvalStats> {
    let range = if action_space == crate::model::NORMALIZED {
        ActionRange::Normalized
    } else {
        let s = model.config.action_stats(action_space)?;
        ActionRange::Quantiles { q01: s.q01.clone(), q99: s.q99.clone() }
    };
    let mut stats = EvalStats::default();
    for (i, step) in steps.into_iter().enumerate() {
        let t = std::time::Instant::now();
        let p = model.predict_action_stream(step.image, step.instruction, action_space, |_| {})?;
        let latency = t.elapsed().as_secs_f64();
        stats.push(latency, range.nrmse(step.action, &p.action));
        on_line(&stats.step_line(i, &p.action));
        on_line(&EvalStats::gt_line(i, step.action));
        if let Some(e) = eval_model {
            let t = std::time::Instant::now();
            let q = e.predict_action_stream(step.image, step.instruction, action_space, |_| {})?;
            let el = t.elapsed().as_secs_f64();
            let eval_error = range.nrmse(step.action, &q.action);
            let quant_error = range.nrmse(&q.action, &p.action);
            stats.push_eval(el, eval_error, quant_error);
            on_line(&format!(
                "eval {i}  {}  accuracy {:.4} ~{:.4}  time={:.1} ms  q_err={:.4} ~{:.4}",
                fmt_vec(&q.action),
                1.0 - eval_error,
                1.0 - stats.mean.eval_error.unwrap_or(f64::NAN),
                el * 1e3,
                quant_error,
                stats.mean.quant_error.unwrap_or(f64::NAN),
            ));
        }
        if let Some(path) = save_stats {
            stats.save(path)?;
        }
    }
    Ok(stats)
}
