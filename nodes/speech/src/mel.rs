//! Whisper's log-mel spectrogram, computed the way the reference implementation does:
//! 16 kHz audio padded with 30 s of silence, a centred STFT (n_fft 400, hop 160,
//! periodic Hann window, reflect padding of 200), power spectrum, the 80-band mel
//! filter bank, `log10(max(x, 1e-10))`, clamped to (max − 8), then `(x + 4) / 4`.
//! The first 3000 frames (30 s) are the encoder's input.

use std::path::Path;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
pub const N_FREQ: usize = N_FFT / 2 + 1;
/// Frames in one 30 s window.
pub const N_FRAMES: usize = 3000;
/// Samples in one 30 s window.
pub const N_SAMPLES: usize = N_FRAMES * HOP;

#[derive(Debug, thiserror::Error)]
pub enum MelError {
    #[error("cannot read mel filters {path}: {message}")]
    Read { path: String, message: String },
}

#[derive(Clone, Copy, Debug, Default)]
struct C64 {
    re: f64,
    im: f64,
}

impl C64 {
    fn mul(self, o: C64) -> C64 {
        C64 {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn add(self, o: C64) -> C64 {
        C64 {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
}

/// A mixed-radix FFT for one fixed size (400 = 2⁴·5²).
struct Fft {
    n: usize,
    /// exp(-2πi j / n)
    twiddle: Vec<C64>,
}

impl Fft {
    fn new(n: usize) -> Self {
        let twiddle = (0..n)
            .map(|j| {
                let a = -2.0 * std::f64::consts::PI * j as f64 / n as f64;
                C64 {
                    re: a.cos(),
                    im: a.sin(),
                }
            })
            .collect();
        Fft { n, twiddle }
    }

    fn transform(&self, x: &[C64]) -> Vec<C64> {
        self.rec(x, 1, x.len())
    }

    /// FFT of the `n` values `x[0], x[stride], x[2·stride], ...`.
    fn rec(&self, x: &[C64], stride: usize, n: usize) -> Vec<C64> {
        if n == 1 {
            return vec![x[0]];
        }
        let p = (2..=n).find(|p| n.is_multiple_of(*p)).unwrap();
        let m = n / p;
        // Sub-transforms of the p decimated sequences.
        let subs: Vec<Vec<C64>> = (0..p)
            .map(|r| self.rec(&x[r * stride..], stride * p, m))
            .collect();
        let step = self.n / n; // twiddle index scale for this size
        let mut out = vec![C64::default(); n];
        for (k, o) in out.iter_mut().enumerate() {
            let km = k % m;
            let mut acc = C64::default();
            for (r, sub) in subs.iter().enumerate() {
                let w = self.twiddle[(r * k * step) % self.n];
                acc = acc.add(sub[km].mul(w));
            }
            *o = acc;
        }
        out
    }
}

/// Mel front end with its filter bank loaded.
pub struct MelFrontEnd {
    /// N_MELS × N_FREQ, row-major.
    filters: Vec<f32>,
    window: Vec<f64>,
    fft: Fft,
}

impl MelFrontEnd {
    /// Reads the filter bank as raw little-endian f32 (80 × 201), as setup-speech.sh writes it.
    pub fn load(path: &Path) -> Result<Self, MelError> {
        let err = |m: String| MelError::Read {
            path: path.display().to_string(),
            message: m,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.len() != N_MELS * N_FREQ * 4 {
            return Err(err(format!(
                "{} bytes, expected {}",
                bytes.len(),
                N_MELS * N_FREQ * 4
            )));
        }
        let filters = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self::with_filters(filters))
    }

    pub fn with_filters(filters: Vec<f32>) -> Self {
        assert_eq!(filters.len(), N_MELS * N_FREQ);
        // Periodic Hann: the window of length N+1 without its last point.
        let window = (0..N_FFT)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
            .collect();
        MelFrontEnd {
            filters,
            window,
            fft: Fft::new(N_FFT),
        }
    }

    /// Log-mel features of `audio` (16 kHz mono, at most 30 s are used), as an
    /// `N_MELS × N_FRAMES` row-major matrix ready for the encoder.
    pub fn log_mel(&self, audio: &[f32]) -> Vec<f32> {
        let audio = &audio[..audio.len().min(N_SAMPLES)];
        let n = audio.len();
        // The reference pads 30 s of zeros after the audio, then reflect-pads by N_FFT/2.
        let padded_len = n + N_SAMPLES;
        let half = (N_FFT / 2) as isize;
        let sample = |i: isize| -> f64 {
            // index into the reflect-padded signal
            let mut j = i - half;
            if j < 0 {
                j = -j;
            }
            if j >= padded_len as isize {
                j = 2 * (padded_len as isize - 1) - j;
            }
            let j = j as usize;
            if j < n {
                audio[j] as f64
            } else {
                0.0
            }
        };
        let mut mel = vec![0f64; N_MELS * N_FRAMES];
        let mut power = vec![0f64; N_FREQ];
        let mut frame = vec![C64::default(); N_FFT];
        for t in 0..N_FRAMES {
            let start = (t * HOP) as isize;
            // Frames that only see padding are silent: their power is exactly zero.
            let first_real = start - half;
            let last_real = start - half + N_FFT as isize;
            if first_real >= n as isize && last_real >= n as isize && first_real >= 0 {
                continue;
            }
            for (i, f) in frame.iter_mut().enumerate() {
                *f = C64 {
                    re: sample(start + i as isize) * self.window[i],
                    im: 0.0,
                };
            }
            let spec = self.fft.transform(&frame);
            for (k, p) in power.iter_mut().enumerate() {
                *p = spec[k].re * spec[k].re + spec[k].im * spec[k].im;
            }
            for m in 0..N_MELS {
                let row = &self.filters[m * N_FREQ..(m + 1) * N_FREQ];
                let mut acc = 0f64;
                for (w, p) in row.iter().zip(&power) {
                    acc += *w as f64 * p;
                }
                mel[m * N_FRAMES + t] = acc;
            }
        }
        let mut out: Vec<f64> = mel.iter().map(|&x| x.max(1e-10).log10()).collect();
        let max = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        for x in out.iter_mut() {
            *x = (x.max(max - 8.0) + 4.0) / 4.0;
        }
        out.into_iter().map(|x| x as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_a_direct_dft() {
        let fft = Fft::new(N_FFT);
        let x: Vec<C64> = (0..N_FFT)
            .map(|i| C64 {
                re: ((i * 7919) % 101) as f64 / 50.0 - 1.0,
                im: 0.0,
            })
            .collect();
        let y = fft.transform(&x);
        for k in [0, 1, 17, 200, 399] {
            let mut acc = C64::default();
            for (i, v) in x.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (i * k) as f64 / N_FFT as f64;
                acc = acc.add(v.mul(C64 {
                    re: a.cos(),
                    im: a.sin(),
                }));
            }
            assert!(
                (acc.re - y[k].re).abs() < 1e-9 && (acc.im - y[k].im).abs() < 1e-9,
                "bin {k}"
            );
        }
    }
}
