//! Streaming sample-rate conversion with a Kaiser-windowed sinc (band-limited
//! interpolation). When downsampling, the cutoff moves below the new Nyquist
//! frequency so content above it is filtered out instead of aliasing back.

/// Zero crossings of the sinc on each side (at the lower of the two rates).
const ZEROS: f64 = 16.0;
/// Kaiser window shape: ~80 dB stop band.
const BETA: f64 = 8.0;
/// Fraction of the lower Nyquist frequency kept (the rest is the transition band).
const ROLLOFF: f64 = 0.94;
/// Beyond this many distinct phases the kernel is computed per sample instead of tabled.
const MAX_TABLE_PHASES: usize = 4096;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Modified Bessel function of the first kind, order 0.
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// Averages interleaved channels into one. Non-finite samples (NaN, ±inf from a broken
/// source) become silence so they cannot poison filters and models downstream.
pub fn to_mono(samples: &[f32], channels: u16) -> Vec<f32> {
    let c = channels.max(1) as usize;
    let clean = |x: f32| if x.is_finite() { x } else { 0.0 };
    if c == 1 {
        return samples.iter().map(|&x| clean(x)).collect();
    }
    samples
        .chunks_exact(c)
        .map(|f| f.iter().map(|&x| clean(x)).sum::<f32>() / c as f32)
        .collect()
}

/// Converts one mono stream from `from` Hz to `to` Hz, chunk by chunk.
pub struct Resampler {
    from: u64,
    to: u64,
    /// Input samples per output sample, as the reduced fraction `step_num / step_den`.
    step_num: u64,
    step_den: u64,
    cutoff: f64,
    /// Half the kernel length, in input samples.
    half: usize,
    /// Kernel taps for each phase `p / step_den` of the output position, when tabled.
    table: Option<Vec<Vec<f32>>>,
    /// Input not yet fully consumed; `history[0]` is input sample number `base`.
    history: Vec<f32>,
    base: u64,
    /// Next output sample number.
    next_out: u64,
    inv_i0_beta: f64,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Self {
        assert!(from > 0 && to > 0, "sample rates must be positive");
        let (from, to) = (from as u64, to as u64);
        let g = gcd(from, to);
        let (step_num, step_den) = (from / g, to / g);
        let cutoff = ROLLOFF * (to as f64 / from as f64).min(1.0);
        let half = (ZEROS / cutoff).ceil() as usize;
        let mut r = Resampler {
            from,
            to,
            step_num,
            step_den,
            cutoff,
            half,
            table: None,
            history: Vec::new(),
            base: 0,
            next_out: 0,
            inv_i0_beta: 1.0 / bessel_i0(BETA),
        };
        if from != to && (step_den as usize) <= MAX_TABLE_PHASES {
            let table = (0..step_den)
                .map(|p| r.kernel(p as f64 / step_den as f64))
                .collect();
            r.table = Some(table);
        }
        r
    }

    pub fn rates(&self) -> (u32, u32) {
        (self.from as u32, self.to as u32)
    }

    /// Taps for input samples `floor(t) - half + 1 ..= floor(t) + half`, where `frac = t - floor(t)`.
    fn kernel(&self, frac: f64) -> Vec<f32> {
        let n = 2 * self.half;
        let mut taps = Vec::with_capacity(n);
        for i in 0..n {
            // distance from the output position to this input sample
            let x = (i as f64 - self.half as f64 + 1.0) - frac;
            let u = x / self.half as f64;
            let w = if u.abs() >= 1.0 {
                0.0
            } else {
                bessel_i0(BETA * (1.0 - u * u).sqrt()) * self.inv_i0_beta
            };
            let arg = std::f64::consts::PI * self.cutoff * x;
            let sinc = if arg.abs() < 1e-12 {
                1.0
            } else {
                arg.sin() / arg
            };
            taps.push((self.cutoff * sinc * w) as f32);
        }
        taps
    }

    /// Feeds input, returns every output sample that can be computed so far.
    pub fn process(&mut self, input: &[f32]) -> Vec<f32> {
        if self.from == self.to {
            return input.to_vec();
        }
        self.history.extend_from_slice(input);
        self.produce_until(None)
    }

    /// Ends the stream: the remaining outputs, as if silence followed.
    pub fn flush(&mut self) -> Vec<f32> {
        if self.from == self.to {
            return Vec::new();
        }
        let total_in = self.base + self.history.len() as u64;
        let out = self.produce_until(Some(total_in));
        self.history.clear();
        self.base = 0;
        self.next_out = 0;
        out
    }

    /// `end`: on flush, the number of real input samples (outputs are made up to the
    /// matching output length, reading zeros past the end).
    fn produce_until(&mut self, end: Option<u64>) -> Vec<f32> {
        let mut out = Vec::new();
        let available = self.base + self.history.len() as u64;
        let half = self.half as u64;
        loop {
            // position in input samples: next_out * step_num / step_den
            let num = self.next_out * self.step_num;
            let whole = num / self.step_den;
            let phase = (num % self.step_den) as usize;
            match end {
                None => {
                    if whole + half >= available {
                        break;
                    }
                }
                Some(total) => {
                    // output length = ceil(total * to / from)
                    if self.next_out * self.step_num >= total * self.step_den {
                        break;
                    }
                }
            }
            let owned;
            let taps: &[f32] = match &self.table {
                Some(t) => &t[phase],
                None => {
                    owned = self.kernel(phase as f64 / self.step_den as f64);
                    &owned
                }
            };
            let first = whole as i64 - half as i64 + 1;
            let mut acc = 0f32;
            let j0 = first - self.base as i64;
            if j0 >= 0 && j0 as usize + taps.len() <= self.history.len() {
                // Common case: every tap inside the buffer.
                let x = &self.history[j0 as usize..j0 as usize + taps.len()];
                acc = x.iter().zip(taps).map(|(a, b)| a * b).sum();
                out.push(acc);
                self.next_out += 1;
                continue;
            }
            for (i, w) in taps.iter().enumerate() {
                let idx = first + i as i64;
                if idx < self.base as i64 {
                    continue; // before the stream began (or already dropped): silence
                }
                let j = (idx - self.base as i64) as usize;
                if let Some(x) = self.history.get(j) {
                    acc += x * w;
                }
            }
            out.push(acc);
            self.next_out += 1;
        }
        // Drop input no future output will read.
        let num = self.next_out * self.step_num;
        let keep_from = (num / self.step_den).saturating_sub(half);
        if keep_from > self.base {
            let drop = ((keep_from - self.base) as usize).min(self.history.len());
            self.history.drain(..drop);
            self.base += drop as u64;
        }
        out
    }
}

/// Converts a whole buffer at once.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut r = Resampler::new(from, to);
    let mut out = r.process(input);
    out.extend(r.flush());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, secs: f64) -> Vec<f32> {
        let n = (rate as f64 * secs) as usize;
        (0..n)
            .map(|i| {
                (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32 * 0.5
            })
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn keeps_a_tone_in_band_and_length_right() {
        for from in [8000u32, 22050, 44100, 48000] {
            let x = sine(440.0, from, 1.0);
            let y = resample(&x, from, 16000);
            assert!(
                (y.len() as i64 - 16000).abs() <= 1,
                "{from}: {} samples",
                y.len()
            );
            // Compare with the ideal tone away from the edges.
            let ideal = sine(440.0, 16000, 1.0);
            let err: f64 = y[400..15600]
                .iter()
                .zip(&ideal[400..15600])
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / 15200.0;
            assert!(err.sqrt() < 1e-3, "{from} Hz: rms error {}", err.sqrt());
        }
    }

    #[test]
    fn removes_content_above_the_new_nyquist() {
        // 12 kHz at 48 kHz would alias to 4 kHz at 16 kHz without filtering.
        let x = sine(12000.0, 48000, 1.0);
        let y = resample(&x, 48000, 16000);
        assert!(
            rms(&y[400..15600]) < 0.5 * 0.707 * 1e-3,
            "alias rms {}",
            rms(&y)
        );
    }

    #[test]
    fn chunked_equals_whole() {
        let x = sine(1000.0, 44100, 0.5);
        let whole = resample(&x, 44100, 16000);
        let mut r = Resampler::new(44100, 16000);
        let mut parts = Vec::new();
        for c in x.chunks(441) {
            parts.extend(r.process(c));
        }
        parts.extend(r.flush());
        assert_eq!(whole.len(), parts.len());
        for (a, b) in whole.iter().zip(&parts) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn mono_mix() {
        assert_eq!(to_mono(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
    }
}
