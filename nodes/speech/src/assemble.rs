//! Collects speech chunks into utterances for the recogniser.
//!
//! The engine keeps messages in order per edge only. Audio and end markers reach
//! WhisperASR on different edges, so a marker can overtake the audio it closes. Markers
//! therefore carry counts (VADFilter's `end_of_speech` the running total of 16 kHz
//! samples it sent, WavSource's `end_of_stream` the file's frame count) and the
//! assembler waits until that much audio is in before it closes the utterance.

use crate::mel::SAMPLE_RATE;
use crate::resample::{to_mono, Resampler};

#[derive(Default)]
pub struct UtteranceAssembler {
    resampler: Option<(u32, Resampler)>,
    /// 16 kHz audio of the current utterance (and anything received after its end).
    buffer: Vec<f32>,
    /// Samples received before `buffer[0]`.
    base: u64,
    /// End positions announced by markers that arrived before their audio.
    pending_ends: Vec<u64>,
    /// The stream ended while announced audio was still on its way.
    pending_eos: bool,
    /// Input frames since the last end of stream, and the stream length an
    /// `end_of_stream` announced before all of its audio was in.
    frames_in: u64,
    stream_end_at: Option<u64>,
}

impl UtteranceAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// 16 kHz samples received so far (all utterances).
    pub fn received(&self) -> u64 {
        self.base + self.buffer.len() as u64
    }

    /// The open utterance so far (for partial transcripts).
    pub fn current(&self) -> &[f32] {
        &self.buffer
    }

    /// Whether an announced end is still waiting for audio (no partials then: the
    /// buffer holds a finished utterance).
    pub fn waiting(&self) -> bool {
        !self.pending_ends.is_empty() || self.pending_eos
    }

    /// Adds audio of any rate and layout; returns the utterances it completes.
    pub fn audio(&mut self, samples: &[f32], rate: u32, channels: u16) -> Vec<Vec<f32>> {
        let mut done = Vec::new();
        if rate == 0 || channels == 0 {
            return done;
        }
        let mono = to_mono(samples, channels);
        let audio = if rate as usize == SAMPLE_RATE {
            mono
        } else {
            match &mut self.resampler {
                Some((r, rs)) if *r == rate => rs.process(&mono),
                _ => {
                    let mut rs = Resampler::new(rate, SAMPLE_RATE as u32);
                    let out = rs.process(&mono);
                    self.resampler = Some((rate, rs));
                    out
                }
            }
        };
        self.buffer.extend(audio);
        self.frames_in += (samples.len() / channels as usize) as u64;
        while let Some(&end) = self.pending_ends.first() {
            if self.received() < end {
                break;
            }
            self.pending_ends.remove(0);
            done.extend(self.cut(Some(end)));
        }
        if matches!(self.stream_end_at, Some(n) if self.frames_in >= n) {
            done.extend(self.end_of_stream(None));
        } else if self.pending_ends.is_empty() && self.pending_eos {
            self.pending_eos = false;
            self.flush_resampler();
            done.extend(self.cut(None));
        }
        done
    }

    /// An end of speech; `total` is the running sample count it closes at, if known.
    pub fn end_of_speech(&mut self, total: Option<u64>) -> Vec<Vec<f32>> {
        match total {
            Some(t) if self.received() < t => {
                self.pending_ends.push(t);
                Vec::new()
            }
            Some(t) => self.cut(Some(t)).into_iter().collect(),
            None => {
                self.flush_resampler();
                self.cut(None).into_iter().collect()
            }
        }
    }

    /// The stream ended; `frames` is its length in input frames, if known.
    pub fn end_of_stream(&mut self, frames: Option<u64>) -> Vec<Vec<f32>> {
        if let Some(n) = frames {
            if self.frames_in < n {
                self.stream_end_at = Some(n);
                return Vec::new();
            }
        }
        self.stream_end_at = None;
        self.frames_in = 0;
        if !self.pending_ends.is_empty() {
            self.pending_eos = true;
            return Vec::new();
        }
        self.flush_resampler();
        self.cut(None).into_iter().collect()
    }

    fn flush_resampler(&mut self) {
        if let Some((_, mut rs)) = self.resampler.take() {
            self.buffer.extend(rs.flush());
        }
    }

    /// Takes the buffer up to absolute sample `end` (None: all of it).
    fn cut(&mut self, end: Option<u64>) -> Option<Vec<f32>> {
        let n = match end {
            Some(e) => (e.saturating_sub(self.base) as usize).min(self.buffer.len()),
            None => self.buffer.len(),
        };
        let audio: Vec<f32> = self.buffer.drain(..n).collect();
        self.base += n as u64;
        (!audio.is_empty()).then_some(audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(v: f32, n: usize) -> Vec<f32> {
        vec![v; n]
    }

    #[test]
    fn in_order() {
        let mut a = UtteranceAssembler::new();
        assert!(a.audio(&chunk(1.0, 1600), 16000, 1).is_empty());
        assert!(a.audio(&chunk(1.0, 1600), 16000, 1).is_empty());
        let u = a.end_of_speech(Some(3200));
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].len(), 3200);
        assert!(a.current().is_empty());
    }

    #[test]
    fn marker_overtakes_audio_and_the_next_utterance_starts_early() {
        let mut a = UtteranceAssembler::new();
        a.audio(&chunk(1.0, 1600), 16000, 1);
        // The end of utterance 1 (3200 samples) arrives before its second chunk...
        assert!(a.end_of_speech(Some(3200)).is_empty());
        assert!(a.waiting());
        // ...and so does the end of stream.
        assert!(a.end_of_stream(None).is_empty());
        // The second chunk and the first of the next utterance arrive together.
        let mut second = chunk(1.0, 1600);
        second.extend(chunk(2.0, 800));
        let done = a.audio(&second, 16000, 1);
        assert_eq!(done.len(), 2, "utterance 1, then the rest at end of stream");
        assert_eq!(done[0].len(), 3200);
        assert!(done[0].iter().all(|&x| x == 1.0));
        assert_eq!(done[1], chunk(2.0, 800));
        assert!(!a.waiting());
    }

    #[test]
    fn stream_length_waits_for_the_last_frames() {
        let mut a = UtteranceAssembler::new();
        // 22050 Hz stereo, 2205 frames per chunk; the file has 3 chunks.
        let c: Vec<f32> = chunk(0.5, 2205 * 2);
        a.audio(&c, 22050, 2);
        assert!(a.end_of_stream(Some(3 * 2205)).is_empty());
        assert!(a.audio(&c, 22050, 2).is_empty());
        let done = a.audio(&c, 22050, 2);
        assert_eq!(done.len(), 1);
        // 0.3 s at 16 kHz, resampled and mixed down.
        assert!(
            (done[0].len() as i64 - 4800).abs() <= 1,
            "{}",
            done[0].len()
        );
    }
}
