//! The `WhisperASR` node: speech chunks in, transcripts out.
//!
//! Audio is collected until an end-of-speech marker (VADFilter's `end_of_speech`, or
//! EndOfStream), then the utterance is transcribed and sent on `final`. While audio
//! keeps coming, the whole utterance so far is re-transcribed every
//! `partial_transcripts` seconds and sent on `partial` — never more often than the
//! model can keep up with. End markers from VADFilter carry the running sample count,
//! so an utterance is cut at the right sample even when the marker overtakes audio
//! on the way (they travel on different edges).
//!
//! The VAD closes an utterance only after half a second of silence, so the final
//! transcript would start that late. Instead, once the speech goes quiet the node
//! transcribes what it has while the VAD waits (`speculate`); when the end marker comes
//! and nothing loud arrived since, that transcript is the final one. Whisper pads every
//! input with silence to its window anyway, so the longer quiet tail changes nothing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use vela_runtime::{
    AlertLevel, Context, DataType, Event, Message, Node, NodeDescriptor, NodeError, NodeInit,
    ParamKind, ParamSpec, Payload, Text,
};

use crate::assemble::UtteranceAssembler;
use crate::mel::SAMPLE_RATE;
use crate::vad::END_OF_SPEECH;
use crate::recognizer::{self, Backend, EncoderWindow, Recognizer};
use crate::whisper::{WhisperError, WhisperModel, MODELS};

/// Shortest audio worth a partial transcript.
const MIN_PARTIAL_S: f64 = 0.3;
/// RMS under which a chunk counts as quiet (-40 dBFS): microphone noise sits well below,
/// speech well above. It only decides when to transcribe early; the VAD still decides
/// where utterances end.
const QUIET_RMS: f32 = 0.01;
/// Quiet that must follow speech before the early transcript starts: longer than the gaps
/// inside a sentence, well under the VAD's 0.5 s window.
const QUIET_BEFORE_EARLY_S: f64 = 0.2;

/// The candle model by name (tests and tools reach into its encoder); nodes use
/// [`recognizer::load`].
pub fn load_model(name: &str) -> Result<Arc<Mutex<WhisperModel>>, WhisperError> {
    recognizer::load_candle(name)
}

/// Why WhisperASR cannot run here at all: neither backend has the default model's files.
pub fn unavailable_reason() -> Option<String> {
    let default = Backend::default_for_build();
    let reason = recognizer::unavailable_reason(default)?;
    recognizer::unavailable_reason(Backend::Candle)?;
    Some(reason)
}

pub struct WhisperAsr {
    model_name: String,
    backend: Backend,
    model: Option<Recognizer>,
    partial_s: f64,
    audio: UtteranceAssembler,
    last_partial: Option<Instant>,
    last_compute_s: f64,
    last_rtfx: f64,
    finals: u64,
    last_text: String,
    speculate: bool,
    window: EncoderWindow,
    /// Samples of the current utterance up to its last loud chunk.
    voiced_len: usize,
    /// Seconds of quiet since the last loud chunk.
    quiet_s: f64,
    /// The utterance's audio up to a quiet moment, where its loud part ended then, and its
    /// transcript, made while the VAD waited for the utterance to end.
    early: Option<(Vec<f32>, usize, crate::whisper::Transcript)>,
    /// Finals that reused the early transcript.
    early_finals: u64,
}

fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|x| x * x).sum::<f32>() / samples.len() as f32).sqrt()
}

impl WhisperAsr {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("WhisperASR", "Speech", "Whisper speech recognition")
            .describe("Transcribes speech with OpenAI Whisper (on whisper.cpp or candle): final text after each utterance, partial text while it goes on.")
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
            .param(
                ParamSpec::new(
                    "backend",
                    ParamKind::Choice { options: Backend::ALL.iter().map(|b| b.name().to_string()).collect() },
                    Backend::default_for_build().name(),
                    "engine: whisper.cpp (ggml f16, converted by setup) or candle (f32, from the CTranslate2 file)",
                )
                .startup_only(),
            )
            .param(ParamSpec::new(
                "partial_transcripts",
                ParamKind::Float { min: None, max: Some(60.0) },
                0.25,
                "seconds between partial transcripts (≤ 0: none)",
            ))
            .param(ParamSpec::new(
                "encoder_window",
                ParamKind::Choice { options: EncoderWindow::NAMES.iter().map(|s| s.to_string()).collect() },
                EncoderWindow::NAMES[0],
                "whisper.cpp: fit = the encoder sees the utterance (at least 7.7 s), about 4x faster; full = Whisper's whole 30 s window",
            ))
            .param(ParamSpec::new(
                "speculate",
                ParamKind::Bool,
                true,
                "transcribe as soon as the speech goes quiet, while the VAD waits out its silence; the final reuses it if nothing was said since",
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
        let backend = Backend::parse(init.params.str("backend")?)
            .map_err(|e| NodeError::param("backend", e.to_string()))?;
        if !backend.built() {
            return Err(NodeError::param(
                "backend",
                format!("this build has no {backend} backend (vela-speech feature `whisper-cpp`)"),
            ));
        }
        Ok(WhisperAsr {
            model_name,
            backend,
            model: None,
            partial_s: init.params.f64("partial_transcripts")?,
            audio: UtteranceAssembler::new(),
            last_partial: None,
            last_compute_s: 0.0,
            last_rtfx: 0.0,
            finals: 0,
            last_text: String::new(),
            speculate: init.params.bool("speculate")?,
            window: EncoderWindow::parse(init.params.str("encoder_window")?).map_err(|e| NodeError::param("encoder_window", e.to_string()))?,
            voiced_len: 0,
            quiet_s: 0.0,
            early: None,
            early_finals: 0,
        })
    }

    fn transcribe(&mut self, audio: &[f32]) -> Result<crate::whisper::Transcript, NodeError> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| NodeError::msg("model not loaded"))?;
        let t = model.transcribe_with(audio, self.window).map_err(NodeError::msg)?;
        self.last_compute_s = t.compute_s;
        Ok(t)
    }

    /// Transcribes a finished utterance and sends it.
    fn finish_utterance(&mut self, audio: Vec<f32>, ctx: &mut Context) -> Result<(), NodeError> {
        self.last_partial = None;
        let voiced = std::mem::take(&mut self.voiced_len);
        self.quiet_s = 0.0;
        let early = self.early.take();
        if audio.len() < SAMPLE_RATE / 10 {
            return Ok(()); // under 0.1 s: nothing to say
        }
        let t = match early {
            // The same speech, and nothing loud since: the early transcript is the final one.
            Some((head, loud, t)) if loud == voiced && audio.starts_with(&head) => {
                self.early_finals += 1;
                crate::whisper::Transcript { audio_s: audio.len() as f64 / SAMPLE_RATE as f64, ..t }
            }
            _ => self.transcribe(&audio)?,
        };
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
            || self.audio.waiting()
            || self.audio.current().len() < (MIN_PARTIAL_S * SAMPLE_RATE as f64) as usize
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
        let audio = self.audio.current().to_vec();
        let t = self.transcribe(&audio)?;
        self.last_partial = Some(Instant::now());
        if !t.text.is_empty() {
            ctx.send("partial", Text::partial(t.text))?;
        }
        Ok(())
    }

    /// The speech went quiet: transcribe the utterance so far now, once per quiet stretch,
    /// while the VAD waits to be sure it ended.
    fn maybe_speculate(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        let n = self.voiced_len;
        if !self.speculate
            || self.quiet_s < QUIET_BEFORE_EARLY_S
            || self.audio.waiting()
            || n < (MIN_PARTIAL_S * SAMPLE_RATE as f64) as usize
            || n > self.audio.current().len()
            || self.early.as_ref().is_some_and(|(_, loud, _)| *loud == n)
        {
            return Ok(());
        }
        // With the quiet so far: cut at the last loud chunk, Whisper hears a clipped word.
        let head = self.audio.current().to_vec();
        let t = self.transcribe(&head)?;
        self.last_partial = Some(Instant::now());
        if self.partial_s > 0.0 && !t.text.is_empty() {
            ctx.send("partial", Text::partial(t.text.clone()))?;
        }
        self.early = Some((head, n, t));
        Ok(())
    }

    fn finish_all(&mut self, done: Vec<Vec<f32>>, ctx: &mut Context) -> Result<(), NodeError> {
        for u in done {
            self.finish_utterance(u, ctx)?;
        }
        Ok(())
    }
}

impl Node for WhisperAsr {
    fn start(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        let m = recognizer::load(&self.model_name, self.backend).map_err(|e| {
            NodeError::msg(format!("cannot load Whisper {} on {}: {e}", self.model_name, self.backend))
        })?;
        self.model = Some(m);
        ctx.publish(json!({"loaded": self.model_name, "backend": self.backend.name()}));
        Ok(())
    }

    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        match &msg.payload {
            Payload::Audio(a) => {
                if a.sample_rate == 0 || a.channels == 0 {
                    // One bad message must not take the recogniser down.
                    ctx.alert(
                        AlertLevel::Warning,
                        format!("WhisperASR skipped {}", msg.payload.describe()),
                    );
                    return Ok(());
                }
                let done = self.audio.audio(&a.samples, a.sample_rate, a.channels);
                if !done.is_empty() {
                    return self.finish_all(done, ctx);
                }
                if rms(&a.samples) >= QUIET_RMS {
                    self.voiced_len = self.audio.current().len();
                    self.quiet_s = 0.0;
                    self.maybe_partial(ctx)
                } else {
                    let frames = a.samples.len() / a.channels as usize;
                    self.quiet_s += frames as f64 / a.sample_rate as f64;
                    self.maybe_speculate(ctx)
                }
            }
            Payload::Event(Event::Custom { name, data }) if name == END_OF_SPEECH => {
                let done = self
                    .audio
                    .end_of_speech(data.get("total").and_then(Value::as_u64));
                self.finish_all(done, ctx)
            }
            Payload::Event(Event::EndOfStream) => {
                let done = self.audio.end_of_stream(None);
                self.finish_all(done, ctx)
            }
            Payload::Event(Event::Custom { name, data }) if name == crate::END_OF_STREAM => {
                let done = self
                    .audio
                    .end_of_stream(data.get("frames").and_then(Value::as_u64));
                self.finish_all(done, ctx)
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
            "encoder_window" => {
                self.window = EncoderWindow::parse(value.as_str().unwrap_or_default()).map_err(|e| NodeError::param(name, e.to_string()))?;
                Ok(())
            }
            "speculate" => {
                self.speculate = value.as_bool().ok_or_else(|| NodeError::param(name, "expected true or false"))?;
                if !self.speculate {
                    self.early = None;
                }
                Ok(())
            }
            _ => Err(NodeError::param(name, "cannot change while running")),
        }
    }

    fn summary(&self) -> Option<String> {
        Some(if self.finals == 0 && self.last_rtfx == 0.0 {
            if self.model.is_some() {
                format!("{} on {} ready", self.model_name, self.backend)
            } else {
                "loading".into()
            }
        } else {
            format!("RTFX={:.2} · {}/{} finals early", self.last_rtfx, self.early_finals, self.finals)
        })
    }

    fn blocking(&self) -> bool {
        true
    }
}
