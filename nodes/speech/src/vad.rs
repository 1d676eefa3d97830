//! Voice activity detection: the `VADFilter` node passes only speech on.
//!
//! Audio of any rate and channel count is mixed to mono and resampled to 16 kHz, cut
//! into chunks (0.1 s by default) and scored with earshot's neural VAD (16 ms frames,
//! averaged per chunk). Speech is "on" while any score in the last `window` seconds is
//! above the threshold, which gives every utterance a short tail. Unlike Agent Studio,
//! the interrupt fires on every utterance (theirs never re-arms), a threshold ≤ 0 passes
//! audio through once (theirs sends it twice), and a little audio from before the onset
//! is kept so the first syllable is not clipped.

use std::collections::VecDeque;

use earshot::Detector;
use serde_json::{json, Value};
use vela_runtime::{
    AlertLevel, Audio, Context, DataType, Event, Message, Node, NodeDescriptor, NodeError,
    NodeInit, ParamKind, ParamSpec, Payload,
};

use crate::resample::{to_mono, Resampler};

pub const VAD_RATE: u32 = 16_000;
const FRAME: usize = 256;

/// Name of the custom event that marks the end of an utterance.
pub const END_OF_SPEECH: &str = "end_of_speech";
/// Name of the custom event sent when someone talks for `interrupt_after` seconds.
pub const INTERRUPT: &str = "interrupt";

#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    pub threshold: f32,
    pub window_s: f64,
    pub interrupt_after_s: f64,
    pub chunk_s: f64,
    pub pre_roll_s: f64,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold: 0.5,
            window_s: 0.5,
            interrupt_after_s: 0.5,
            chunk_s: 0.1,
            pre_roll_s: 0.2,
        }
    }
}

/// One utterance, in seconds of the 16 kHz stream since the detector started.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub index: u64,
    pub start_s: f64,
    pub end_s: f64,
    /// Samples of this utterance sent on `audio`.
    pub samples: u64,
    /// All samples sent on `audio` so far, this utterance included. Consumers use it to
    /// tell where the utterance ends even if the marker overtakes the audio.
    pub total: u64,
    /// All samples received when the utterance was closed (its end plus the silence it
    /// took to be sure): how far the live audio had got, for timing what follows.
    pub received: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VadOutput {
    Speech { samples: Vec<f32>, confidence: f32 },
    Interrupt { utterance: u64, after_s: f64 },
    End(Utterance),
}

/// The detector without the graph around it.
pub struct VadCore {
    cfg: VadConfig,
    detector: Box<Detector>,
    resampler: Option<(u32, Resampler)>,
    /// 16 kHz samples not yet scored as a chunk.
    pending: Vec<f32>,
    /// Samples of the current chunk not yet a whole earshot frame.
    frame_buf: Vec<i16>,
    recent: VecDeque<f32>,
    pre_roll: VecDeque<Vec<f32>>,
    pre_roll_len: usize,
    speaking: bool,
    interrupted: bool,
    /// Start of the current chunk in the 16 kHz stream.
    position: u64,
    utter_start: u64,
    utter_samples: u64,
    utter_speech_s: f64,
    sent_total: u64,
    utterances: u64,
    pub last_confidence: f32,
    /// Seconds of 16 kHz audio scored, and of it speech.
    pub scored_s: f64,
    pub speech_s: f64,
}

impl VadCore {
    pub fn new(cfg: VadConfig) -> Self {
        VadCore {
            cfg,
            detector: Detector::default_boxed(),
            resampler: None,
            pending: Vec::new(),
            frame_buf: Vec::with_capacity(FRAME),
            recent: VecDeque::new(),
            pre_roll: VecDeque::new(),
            pre_roll_len: 0,
            speaking: false,
            interrupted: false,
            position: 0,
            utter_start: 0,
            utter_samples: 0,
            utter_speech_s: 0.0,
            sent_total: 0,
            utterances: 0,
            last_confidence: 0.0,
            scored_s: 0.0,
            speech_s: 0.0,
        }
    }

    pub fn config(&self) -> &VadConfig {
        &self.cfg
    }

    pub fn set_config(&mut self, cfg: VadConfig) {
        self.cfg = cfg;
    }

    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Seconds of the current utterance so far.
    pub fn utterance_s(&self) -> f64 {
        if self.speaking {
            self.utter_samples as f64 / VAD_RATE as f64
        } else {
            0.0
        }
    }

    fn chunk_len(&self) -> usize {
        ((self.cfg.chunk_s * VAD_RATE as f64).round() as usize).max(1)
    }

    fn window_len(&self) -> usize {
        // Agent Studio keeps scores while chunk·n < window.
        let n = (self.cfg.window_s / self.cfg.chunk_s - 1e-9).ceil();
        (n as usize).max(1)
    }

    /// Feeds audio of any rate and layout.
    pub fn push(&mut self, samples: &[f32], sample_rate: u32, channels: u16) -> Vec<VadOutput> {
        if samples.is_empty() || sample_rate == 0 || channels == 0 {
            return Vec::new();
        }
        let mono = to_mono(samples, channels);
        let mono = if sample_rate == VAD_RATE {
            if let Some((_, mut r)) = self.resampler.take() {
                self.pending.extend(r.flush());
            }
            mono
        } else {
            match &mut self.resampler {
                Some((rate, r)) if *rate == sample_rate => r.process(&mono),
                _ => {
                    if let Some((_, mut old)) = self.resampler.take() {
                        self.pending.extend(old.flush());
                    }
                    let mut r = Resampler::new(sample_rate, VAD_RATE);
                    let out = r.process(&mono);
                    self.resampler = Some((sample_rate, r));
                    out
                }
            }
        };
        self.pending.extend(mono);
        self.drain_chunks(false)
    }

    /// The stream ended: scores what is left and closes an open utterance.
    pub fn flush(&mut self) -> Vec<VadOutput> {
        if let Some((_, mut r)) = self.resampler.take() {
            self.pending.extend(r.flush());
        }
        let mut out = self.drain_chunks(true);
        if self.speaking {
            out.push(self.end_utterance(self.position));
        }
        self.recent.clear();
        self.pre_roll.clear();
        self.pre_roll_len = 0;
        self.detector.reset();
        self.frame_buf.clear();
        out
    }

    fn drain_chunks(&mut self, all: bool) -> Vec<VadOutput> {
        let mut out = Vec::new();
        let n = self.chunk_len();
        while self.pending.len() >= n || (all && !self.pending.is_empty()) {
            let take = n.min(self.pending.len());
            let chunk: Vec<f32> = self.pending.drain(..take).collect();
            self.process_chunk(chunk, &mut out);
        }
        out
    }

    fn score(&mut self, chunk: &[f32]) -> f32 {
        let (mut sum, mut count) = (0f32, 0usize);
        for s in chunk {
            self.frame_buf.push((s.clamp(-1.0, 1.0) * 32767.0) as i16);
            if self.frame_buf.len() == FRAME {
                sum += self.detector.predict_i16(&self.frame_buf);
                count += 1;
                self.frame_buf.clear();
            }
        }
        if count == 0 {
            self.last_confidence
        } else {
            sum / count as f32
        }
    }

    fn process_chunk(&mut self, chunk: Vec<f32>, out: &mut Vec<VadOutput>) {
        let len = chunk.len() as u64;
        let p = self.score(&chunk);
        self.last_confidence = p;
        self.scored_s += len as f64 / VAD_RATE as f64;
        let speaking = if self.cfg.threshold <= 0.0 {
            true
        } else {
            self.recent.push_back(p);
            while self.recent.len() > self.window_len() {
                self.recent.pop_front();
            }
            self.recent.iter().any(|&x| x > self.cfg.threshold)
        };
        if speaking {
            if !self.speaking {
                self.speaking = true;
                self.interrupted = false;
                self.utter_samples = 0;
                self.utter_speech_s = 0.0;
                self.utter_start = self.position - self.pre_roll_len as u64;
                for pre in std::mem::take(&mut self.pre_roll) {
                    self.send(pre, p, out);
                }
                self.pre_roll_len = 0;
            }
            self.utter_speech_s += len as f64 / VAD_RATE as f64;
            self.speech_s += len as f64 / VAD_RATE as f64;
            self.send(chunk, p, out);
            if !self.interrupted && self.utter_speech_s >= self.cfg.interrupt_after_s {
                self.interrupted = true;
                out.push(VadOutput::Interrupt {
                    utterance: self.utterances,
                    after_s: self.utter_speech_s,
                });
            }
        } else {
            if self.speaking {
                out.push(self.end_utterance(self.position + len + self.pending.len() as u64));
            }
            let keep = (self.cfg.pre_roll_s * VAD_RATE as f64) as usize;
            self.pre_roll_len += chunk.len();
            self.pre_roll.push_back(chunk);
            while self.pre_roll_len > keep {
                match self.pre_roll.front() {
                    Some(front)
                        if self.pre_roll_len - front.len() >= keep || front.len() > keep =>
                    {
                        self.pre_roll_len -= front.len();
                        self.pre_roll.pop_front();
                    }
                    _ => break,
                }
            }
        }
        self.position += len;
    }

    fn send(&mut self, samples: Vec<f32>, confidence: f32, out: &mut Vec<VadOutput>) {
        self.utter_samples += samples.len() as u64;
        self.sent_total += samples.len() as u64;
        out.push(VadOutput::Speech {
            samples,
            confidence,
        });
    }

    fn end_utterance(&mut self, received: u64) -> VadOutput {
        self.speaking = false;
        self.interrupted = false;
        let u = Utterance {
            index: self.utterances,
            start_s: self.utter_start as f64 / VAD_RATE as f64,
            end_s: (self.utter_start + self.utter_samples) as f64 / VAD_RATE as f64,
            samples: self.utter_samples,
            total: self.sent_total,
            received,
        };
        self.utterances += 1;
        VadOutput::End(u)
    }
}

/// The `VADFilter` node.
pub struct VadFilter {
    core: VadCore,
    name: String,
    /// Input frames received since the last end of stream.
    frames_in: u64,
    /// An `end_of_stream` that overtook its audio: the frame count to wait for.
    eos_at: Option<u64>,
}

fn seconds(min: f64, max: f64) -> ParamKind {
    ParamKind::Float {
        min: Some(min),
        max: Some(max),
    }
}

impl VadFilter {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("VADFilter", "Speech", "Voice activity filter")
            .describe("Passes on only the audio that holds speech (16 kHz mono), marks where each utterance ends, and signals an interrupt when someone talks over the bot.")
            .input("in", &[DataType::Audio, DataType::Event], "audio of any rate and channel count; EndOfStream or `end_of_stream` {frames} ends the stream")
            // Same order as Agent Studio's outputs (audio, interrupt), so imported presets keep their wiring.
            .output("audio", DataType::Audio, "speech, 16 kHz mono, in chunks")
            .output("interrupt", DataType::Event, "custom event `interrupt` after `interrupt_after` s of speech, once per utterance")
            .output("end", DataType::Event, "custom event `end_of_speech` {start, end, samples, total, received} after each utterance (received: seconds of audio heard by then); EndOfStream is passed on")
            .param(ParamSpec::new("threshold", seconds(0.0, 1.0), 0.5, "voice probability above which a chunk counts as speech (≤ 0: pass everything)"))
            .param(ParamSpec::new("window", seconds(0.01, 10.0), 0.5, "speech stays on while any chunk in this many seconds was voiced"))
            .param(ParamSpec::new("interrupt_after", seconds(0.0, 60.0), 0.5, "seconds of speech before `interrupt` fires"))
            .param(ParamSpec::new("chunk", seconds(0.016, 2.0), 0.1, "seconds of audio scored at a time"))
            .param(ParamSpec::new("pre_roll", seconds(0.0, 2.0), 0.2, "seconds of audio from before the onset sent with each utterance"))
    }

    fn config_from(p: &vela_runtime::Params) -> Result<VadConfig, NodeError> {
        Ok(VadConfig {
            threshold: p.f64("threshold")? as f32,
            window_s: p.f64("window")?,
            interrupt_after_s: p.f64("interrupt_after")?,
            chunk_s: p.f64("chunk")?,
            pre_roll_s: p.f64("pre_roll")?,
        })
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        Ok(VadFilter {
            core: VadCore::new(Self::config_from(init.params)?),
            name: init.name.to_string(),
            frames_in: 0,
            eos_at: None,
        })
    }

    fn emit(&mut self, outputs: Vec<VadOutput>, ctx: &mut Context) -> Result<(), NodeError> {
        for o in outputs {
            match o {
                VadOutput::Speech { samples, .. } => {
                    ctx.send("audio", Audio::new(samples, VAD_RATE, 1))?
                }
                VadOutput::Interrupt { utterance, after_s } => ctx.send(
                    "interrupt",
                    Event::Custom {
                        name: INTERRUPT.into(),
                        data: json!({"utterance": utterance, "after": after_s}),
                    },
                )?,
                VadOutput::End(u) => {
                    let data = json!({
                        "utterance": u.index, "start": u.start_s, "end": u.end_s,
                        "samples": u.samples, "total": u.total,
                        "received": u.received as f64 / VAD_RATE as f64,
                    });
                    tracing::debug!(node = %self.name, "utterance {} from {:.2}s to {:.2}s", u.index, u.start_s, u.end_s);
                    ctx.publish(json!({"utterance": data.clone()}));
                    ctx.send(
                        "end",
                        Event::Custom {
                            name: END_OF_SPEECH.into(),
                            data,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }
}

impl VadFilter {
    /// Closes an open utterance and passes EndOfStream on (after it, on the same edge).
    fn end_stream(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        self.eos_at = None;
        self.frames_in = 0;
        let out = self.core.flush();
        self.emit(out, ctx)?;
        ctx.send("end", Event::EndOfStream)
    }
}

impl Node for VadFilter {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        match &msg.payload {
            Payload::Audio(a) if a.sample_rate == 0 || a.channels == 0 => {
                ctx.alert(
                    AlertLevel::Warning,
                    format!("VADFilter skipped {}", msg.payload.describe()),
                );
                Ok(())
            }
            Payload::Audio(a) => {
                let out = self.core.push(&a.samples, a.sample_rate, a.channels);
                self.emit(out, ctx)?;
                self.frames_in += (a.samples.len() / a.channels.max(1) as usize) as u64;
                match self.eos_at {
                    Some(n) if self.frames_in >= n => self.end_stream(ctx),
                    _ => Ok(()),
                }
            }
            Payload::Event(Event::Custom { name, data }) if name == crate::END_OF_STREAM => {
                match data.get("frames").and_then(Value::as_u64) {
                    Some(n) if self.frames_in < n => {
                        self.eos_at = Some(n);
                        Ok(())
                    }
                    _ => self.end_stream(ctx),
                }
            }
            Payload::Event(Event::EndOfStream) => self.end_stream(ctx),
            _ => Ok(()),
        }
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        let v = value
            .as_f64()
            .ok_or_else(|| NodeError::param(name, "expected a number"))?;
        let mut cfg = self.core.config().clone();
        match name {
            "threshold" => cfg.threshold = v as f32,
            "window" => cfg.window_s = v,
            "interrupt_after" => cfg.interrupt_after_s = v,
            "chunk" => cfg.chunk_s = v,
            "pre_roll" => cfg.pre_roll_s = v,
            _ => return Err(NodeError::param(name, "unknown")),
        }
        self.core.set_config(cfg);
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        let mut s = format!("{:.1}%", self.core.last_confidence * 100.0);
        if self.core.speaking() {
            s.push_str(&format!(" {:.1}s", self.core.utterance_s()));
        }
        Some(s)
    }
}
