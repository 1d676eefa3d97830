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
