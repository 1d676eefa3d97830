//! OpenVLA's 256-bin action tokenizer and the q01/q99 un-normalisation.

use crate::config::Stats;

/// Maps continuous actions in [-1, 1] to the last `n_bins` ids of the tokenizer vocabulary.
///
/// Encoding uses the `n_bins` *edges* of `linspace(-1, 1, n_bins)` (numpy `digitize`), decoding
/// the `n_bins - 1` bin *centres*; the asymmetry is the reference behaviour and is kept.
#[derive(Clone, Debug)]
pub struct ActionTokenizer {
    /// Tokenizer vocabulary without padding (32000 for Llama-2).
    pub vocab: u32,
    bins: Vec<f64>,
    centers: Vec<f64>,
}

impl ActionTokenizer {
    pub fn new(vocab: u32, n_bins: usize) -> Self {
        let bins: Vec<f64> = (0..n_bins).map(|i| -1.0 + 2.0 * i as f64 / (n_bins - 1) as f64).collect();
        let centers = bins.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        Self { vocab, bins, centers }
    }

    pub fn n_bins(&self) -> usize {
        self.bins.len()
    }

    /// First id that can be an action token (ids above `vocab - n_bins - 1`).
    pub fn first_action_id(&self) -> u32 {
        self.vocab - self.bins.len() as u32
    }

    /// Normalised action value → token id (`vocab - digitize(clip(a))`).
    pub fn encode(&self, a: f32) -> u32 {
        let a = (a as f64).clamp(-1.0, 1.0);
        // numpy digitize (right=False): number of edges <= a.
        let d = self.bins.partition_point(|&e| e <= a);
        self.vocab - d as u32
    }

    /// Token id → normalised value (the bin centre); out-of-range ids clip like the reference.
    pub fn decode(&self, token: u32) -> f32 {
        let idx = (self.vocab as i64 - token as i64 - 1).clamp(0, self.centers.len() as i64 - 1);
        self.centers[idx as usize] as f32
    }

    /// Normalised value from the logits of the `n_bins` action ids (`first_action_id..vocab`,
    /// in id order): the probability-weighted mean of the bin centres within `window` bins of
    /// the most likely one. `window = 0` is the bin centre of the argmax, as [`Self::decode`].
    ///
    /// Why: a policy whose token accuracy is about 0.3 spreads its probability over
    /// neighbouring bins, and the argmax throws that away, snapping to one bin of 2/255. The
    /// mean stays local to the mode, so a two-peaked distribution (go left or go right) is
    /// not averaged into a move between the peaks.
    pub fn decode_window(&self, bin_logits: &[f32], window: usize) -> f32 {
        let n = bin_logits.len();
        // Id `first_action_id + j` is `vocab - (n - j)`, whose centre index is `n - j - 1`.
        let centre = |j: usize| self.centers[(n - j - 1).min(self.centers.len() - 1)];
        let Some((best, &max)) = bin_logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else { return 0.0 };
        let (lo, hi) = (best.saturating_sub(window), (best + window).min(n - 1));
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for j in lo..=hi {
            let w = ((bin_logits[j] - max) as f64).exp();
            num += w * centre(j);
            den += w;
        }
        (num / den) as f32
    }
}

/// `0.5·(n+1)·(q99−q01) + q01` on masked dimensions; unmasked ones (the gripper) pass through.
pub fn unnormalize(normalized: &[f32], stats: &Stats) -> Vec<f32> {
    normalized
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let masked = stats.mask.as_ref().map(|m| m.get(i).copied().unwrap_or(true)).unwrap_or(true);
            match (masked, stats.q01.get(i), stats.q99.get(i)) {
                (true, Some(&lo), Some(&hi)) => 0.5 * (n + 1.0) * (hi - lo) + lo,
                _ => n,
            }
        })
        .collect()
}

/// The inverse used for training targets (`BOUNDS_Q99`), handy for tests and the eval tooling.
pub fn normalize(action: &[f32], stats: &Stats) -> Vec<f32> {
    action
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let masked = stats.mask.as_ref().map(|m| m.get(i).copied().unwrap_or(true)).unwrap_or(true);
            if !masked {
                return x;
            }
            let (lo, hi) = (stats.q01[i], stats.q99[i]);
            (2.0 * (x - lo) / (hi - lo + 1e-8) - 1.0).clamp(-1.0, 1.0)
        })
        .collect()
}

/// The statistics of one action repeated for a chunk of `k` actions laid end to end.
pub fn tile_stats(s: &Stats, k: usize) -> Stats {
    if k <= 1 {
        return s.clone();
    }
    let rep = |v: &Vec<f32>| v.iter().copied().cycle().take(v.len() * k).collect::<Vec<f32>>();
    Stats {
        mean: rep(&s.mean),
        std: rep(&s.std),
        max: rep(&s.max),
        min: rep(&s.min),
        q01: rep(&s.q01),
        q99: rep(&s.q99),
        mask: s.mask.as_ref().map(|m| m.iter().copied().cycle().take(m.len() * k).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::ActionTokenizer;

    /// Logits over the 256 action ids with `peaks` as (bin index in id order, logit), the rest
    /// far below.
    fn logits(peaks: &[(usize, f32)]) -> Vec<f32> {
        let mut v = vec![-50.0; 256];
        for &(j, l) in peaks {
            v[j] = l;
        }
        v
    }

    #[test]
    fn window_zero_is_the_argmax_bin_centre() {
        let t = ActionTokenizer::new(32000, 256);
        for j in [0, 1, 100, 200, 254, 255] {
            let l = logits(&[(j, 3.0), ((j + 7) % 256, 1.0)]);
            assert_eq!(t.decode_window(&l, 0), t.decode(t.first_action_id() + j as u32), "bin {j}");
        }
    }

    #[test]
    fn the_window_averages_neighbours_and_ignores_a_far_mode() {
        let t = ActionTokenizer::new(32000, 256);
        let centre = |j: usize| t.decode(t.first_action_id() + j as u32);
        // Equal neighbours either side: the mean is the mode's centre.
        let l = logits(&[(100, 2.0), (99, 1.0), (101, 1.0)]);
        assert!((t.decode_window(&l, 4) - centre(100)).abs() < 1e-6);
        // Two equally likely neighbouring bins: halfway between their centres.
        let l = logits(&[(100, 2.0), (101, 2.0)]);
        assert!((t.decode_window(&l, 1) - 0.5 * (centre(100) + centre(101))).abs() < 1e-6);
        // A second mode 50 bins away, nearly as likely, is outside a window of 8.
        let l = logits(&[(100, 2.0), (150, 1.9)]);
        assert!((t.decode_window(&l, 8) - centre(100)).abs() < 1e-6);
        // The window is clipped at both ends of the range.
        for j in [0, 255] {
            let v = t.decode_window(&logits(&[(j, 1.0)]), 16);
            assert!((v - centre(j)).abs() < 1e-6 && (-1.0..=1.0).contains(&v));
        }
    }
}
