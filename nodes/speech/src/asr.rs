//! The `WhisperASR` node: speech chunks in, transcripts out.
//!
//! Audio is collected until an end-of-speech marker (VADFilter's `end_of_speech`, or
//! EndOfStream), then the utterance is transcribed and sent on `final`. While audio
//! keeps coming, the whole utterance so far is re-transcribed every
//! `partial_transcripts` seconds and sent on `partial` — never more often than the
//! model can keep up with. End markers from VADFilter carry the running sample count,
//! so an utterance is cut at the right sample even when the marker overtakes audio
//! on the way (they travel on different edges).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::Device;
use serde_json::{json, Value};
use vela_runtime::{
    Context, DataType, Event, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind,
    ParamSpec, Payload, Text,
};

use crate::mel::SAMPLE_RATE;
use crate::resample::{to_mono, Resampler};
use crate::vad::END_OF_SPEECH;
use crate::whisper::{ModelFiles, WhisperError, WhisperModel, MODELS};

/// Shortest audio worth a partial transcript.
const MIN_PARTIAL_S: f64 = 0.3;

type Shared = Arc<Mutex<WhisperModel>>;

/// Loaded models, shared by every node (and kept across node restarts), like Agent
/// Studio's model cache.
fn cache() -> &'static Mutex<HashMap<String, Shared>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Shared>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// Loads (or reuses) a model by name.
pub fn load_model(name: &str) -> Result<Shared, WhisperError> {
    let mut c = cache().lock().unwrap();
    if let Some(m) = c.get(name) {
        return Ok(m.clone());
    }
    let files = ModelFiles::locate(name);
    let t0 = Instant::now();
    let m = Arc::new(Mutex::new(WhisperModel::load(name, &files, &device())?));
    tracing::info!(
        "loaded Whisper {name} in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    c.insert(name.to_string(), m.clone());
    Ok(m)
}

/// Why WhisperASR cannot run here, if it cannot.
pub fn unavailable_reason() -> Option<String> {
    let files = ModelFiles::locate(MODELS[0]);
    files.missing().map(|p| {
        format!(
            "Whisper model file {} is missing: run scripts/setup-speech.sh (or scripts/setup.sh)",
            p.display()
        )
    })
}

pub struct WhisperAsr {
    model_name: String,
    model: Option<Shared>,
    partial_s: f64,
    resampler: Option<(u32, Resampler)>,
    /// 16 kHz audio of the current utterance (and anything received after its end).
    buffer: Vec<f32>,
    /// Samples received before `buffer[0]`.
    buffer_base: u64,
    /// End positions announced by markers that arrived before their audio.
    pending_ends: Vec<u64>,
    /// EndOfStream arrived while announced audio was still on its way.
    pending_eos: bool,
    /// Input frames since the last end of stream, and the length an `end_of_stream`
    /// event announced before all of its audio was in (WavSource wired straight in).
    frames_in: u64,
    stream_end_at: Option<u64>,
    last_partial: Option<Instant>,
    last_compute_s: f64,
    last_rtfx: f64,
    finals: u64,
    last_text: String,
}

impl WhisperAsr {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("WhisperASR", "Speech", "Whisper speech recognition")
            .describe("Transcribes speech with OpenAI Whisper (run on candle): final text after each utterance, partial text while it goes on.")
            .input("in", &[DataType::Audio, DataType::Event], "speech audio (any rate; 16 kHz mono is best) and end-of-speech markers")
            .output("final", DataType::Text, "the transcript of each utterance")
            .output("partial", DataType::Text, "transcripts of the utterance so far, while it goes on")
            .param(
                ParamSpec::new(
                    "model",
                    ParamKind::Choice { options: MODELS.iter().map(|s| s.to_string()).collect() },
                    MODELS[0],
                    "Whisper model (installed by scripts/setup-speech.sh)",
                )
                .startup_only(),
            )
            .param(ParamSpec::new(
                "partial_transcripts",
                ParamKind::Float { min: None, max: Some(60.0) },
                0.25,
                "seconds between partial transcripts (≤ 0: none)",
            ))
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let model_name = init.params.str("model")?.to_string();
        if !MODELS.contains(&model_name.as_str()) {
            return Err(NodeError::param(
                "model",
                format!("unknown model (known: {})", MODELS.join(", ")),
            ));
        }
        Ok(WhisperAsr {
            model_name,
            model: None,
            partial_s: init.params.f64("partial_transcripts")?,
            resampler: None,
            buffer: Vec::new(),
            buffer_base: 0,
            pending_ends: Vec::new(),
            pending_eos: false,
            frames_in: 0,
            stream_end_at: None,
            last_partial: None,
            last_compute_s: 0.0,
            last_rtfx: 0.0,
            finals: 0,
            last_text: String::new(),
        })
    }

    fn received(&self) -> u64 {
        self.buffer_base + self.buffer.len() as u64
    }

    fn transcribe(&mut self, audio: &[f32]) -> Result<crate::whisper::Transcript, NodeError> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| NodeError::msg("model not loaded"))?;
        let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
        let t = m.transcribe(audio).map_err(NodeError::msg)?;
        self.last_compute_s = t.compute_s;
        Ok(t)
    }

    /// Transcribes the buffer up to absolute sample `end` (None: all of it) and sends it.
    fn finish_utterance(&mut self, end: Option<u64>, ctx: &mut Context) -> Result<(), NodeError> {
        let cut = match end {
            Some(e) => (e.saturating_sub(self.buffer_base) as usize).min(self.buffer.len()),
            None => self.buffer.len(),
        };
        let audio: Vec<f32> = self.buffer.drain(..cut).collect();
        self.buffer_base += cut as u64;
        self.last_partial = None;
        if audio.len() < SAMPLE_RATE / 10 {
            return Ok(()); // under 0.1 s: nothing to say
        }
        let t = self.transcribe(&audio)?;
        self.last_rtfx = t.rtfx();
        tracing::debug!(
            "final {:?} ({:.2}s of audio, RTFX {:.2})",
            t.text,
            t.audio_s,
            t.rtfx()
        );
        if !t.text.is_empty() {
            self.finals += 1;
            self.last_text = t.text.clone();
            ctx.publish(json!({"final": t.text, "audio_s": t.audio_s, "rtfx": t.rtfx()}));
            ctx.send("final", Text::final_text(t.text))?;
        }
        Ok(())
    }

    fn maybe_partial(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.partial_s <= 0.0
            || self.buffer.len() < (MIN_PARTIAL_S * SAMPLE_RATE as f64) as usize
        {
            return Ok(());
        }
        // Do not fall behind: wait at least as long as the last transcription took.
        let gap = self.partial_s.max(self.last_compute_s);
        match self.last_partial {
            None => {
                // The first partial waits a full period after the utterance began.
                self.last_partial = Some(Instant::now());
                return Ok(());
            }
            Some(t) if t.elapsed().as_secs_f64() < gap => return Ok(()),
            _ => {}
        }
        let audio = self.buffer.clone();
        let t = self.transcribe(&audio)?;
        self.last_partial = Some(Instant::now());
        if !t.text.is_empty() {
            ctx.send("partial", Text::partial(t.text))?;
        }
        Ok(())
    }

    fn on_audio(
        &mut self,
        samples: &[f32],
        rate: u32,
        channels: u16,
        ctx: &mut Context,
    ) -> Result<(), NodeError> {
        if rate == 0 || channels == 0 {
            return Err(NodeError::msg(
                "audio with a zero sample rate or channel count",
            ));
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
        if matches!(self.stream_end_at, Some(n) if self.frames_in >= n) {
            return self.end_stream(ctx);
        }
        // Markers that overtook this audio can be honoured now.
        while let Some(&end) = self.pending_ends.first() {
            if self.received() < end {
                break;
            }
            self.pending_ends.remove(0);
            self.finish_utterance(Some(end), ctx)?;
        }
        if self.pending_ends.is_empty() && self.pending_eos {
            self.pending_eos = false;
            self.flush_resampler();
            return self.finish_utterance(None, ctx);
        }
        if self.pending_ends.is_empty() {
            self.maybe_partial(ctx)?;
        }
        Ok(())
    }

    /// The input stream ended: transcribe whatever is left.
    fn end_stream(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        self.stream_end_at = None;
        self.frames_in = 0;
        if !self.pending_ends.is_empty() {
            // It overtook audio that an earlier end marker announced: finish once that is in.
            self.pending_eos = true;
            return Ok(());
        }
        self.flush_resampler();
        self.finish_utterance(None, ctx)
    }

    fn flush_resampler(&mut self) {
        if let Some((_, mut rs)) = self.resampler.take() {
            self.buffer.extend(rs.flush());
        }
    }
}

impl Node for WhisperAsr {
    fn start(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        let m = load_model(&self.model_name)
            .map_err(|e| NodeError::msg(format!("cannot load Whisper {}: {e}", self.model_name)))?;
        self.model = Some(m);
        ctx.publish(json!({"loaded": self.model_name}));
        Ok(())
    }

    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        match &msg.payload {
            Payload::Audio(a) => self.on_audio(&a.samples, a.sample_rate, a.channels, ctx),
            Payload::Event(Event::Custom { name, data }) if name == END_OF_SPEECH => {
                match data.get("total").and_then(Value::as_u64) {
                    Some(total) if self.received() < total => {
                        self.pending_ends.push(total);
                        Ok(())
                    }
                    Some(total) => self.finish_utterance(Some(total), ctx),
                    None => {
                        self.flush_resampler();
                        self.finish_utterance(None, ctx)
                    }
                }
            }
            Payload::Event(Event::EndOfStream) => self.end_stream(ctx),
            Payload::Event(Event::Custom { name, data }) if name == crate::END_OF_STREAM => {
                match data.get("frames").and_then(Value::as_u64) {
                    Some(n) if self.frames_in < n => {
                        self.stream_end_at = Some(n);
                        Ok(())
                    }
                    _ => self.end_stream(ctx),
                }
            }
            _ => Ok(()),
        }
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "partial_transcripts" => {
                self.partial_s = value
                    .as_f64()
                    .ok_or_else(|| NodeError::param(name, "expected a number"))?;
                Ok(())
            }
            _ => Err(NodeError::param(name, "cannot change while running")),
        }
    }

    fn summary(&self) -> Option<String> {
        Some(if self.finals == 0 && self.last_rtfx == 0.0 {
            if self.model.is_some() {
                format!("{} ready", self.model_name)
            } else {
                "loading".into()
            }
        } else {
            format!("RTFX={:.2}", self.last_rtfx)
        })
    }

    fn blocking(&self) -> bool {
        true
    }
}
