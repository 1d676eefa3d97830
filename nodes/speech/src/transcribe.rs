//! Whole-file transcription: VAD segments, then Whisper on each (what a
//! `vela speech transcribe FILE.wav` command needs).

use crate::recognizer::{load, Backend, EncoderWindow};
use crate::vad::{Utterance, VadConfig, VadCore, VadOutput};
use crate::whisper::WhisperError;

#[derive(Debug, Clone)]
pub struct Segment {
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
}

/// Finds the utterances in `samples` (any rate and channel count) and transcribes each,
/// encoding `window` of audio (whisper.cpp; see [`EncoderWindow`]).
pub fn transcribe_segments(
    samples: &[f32],
    sample_rate: u32,
    channels: u16,
    model: &str,
    backend: Backend,
    vad: VadConfig,
    window: EncoderWindow,
) -> Result<Vec<Segment>, WhisperError> {
    let model = load(model, backend)?;
    let mut core = VadCore::new(vad);
    let block = (sample_rate as usize / 50).max(1) * channels.max(1) as usize;
    let mut outputs = Vec::new();
    for c in samples.chunks(block) {
        outputs.extend(core.push(c, sample_rate, channels));
    }
    outputs.extend(core.flush());
    let mut speech: Vec<f32> = Vec::new();
    let mut segments = Vec::new();
    for o in outputs {
        match o {
            VadOutput::Speech { samples, .. } => speech.extend(samples),
            VadOutput::End(Utterance { start_s, end_s, .. }) => {
                let t = model.transcribe_with(&speech, window)?;
                speech.clear();
                if !t.text.is_empty() {
                    segments.push(Segment {
                        start_s,
                        end_s,
                        text: t.text,
                    });
                }
            }
            VadOutput::Interrupt { .. } => {}
        }
    }
    Ok(segments)
}
