//! WAV files: a small reader/writer and the `WavSource` node that plays one into a graph.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use vela_runtime::{
    Audio, Context, DataType, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind,
    ParamSpec,
};

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("not a WAV file: {0}")]
    Format(String),
    #[error("unsupported WAV encoding: format {format}, {bits} bits")]
    Unsupported { format: u16, bits: u16 },
}

/// Decoded audio: interleaved f32 samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct WavData {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: u16,
}

impl WavData {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / (self.sample_rate as f64 * self.channels.max(1) as f64)
    }
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses PCM 8/16/24/32-bit integer and 32/64-bit float WAV (also WAVE_FORMAT_EXTENSIBLE).
pub fn parse_wav(bytes: &[u8]) -> Result<WavData, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::Format("missing RIFF/WAVE header".into()));
    }
    let mut pos = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let mut size = u32le(bytes, pos + 4) as usize;
        let body = pos + 8;
        // Streamed writers (espeak-ng to a pipe, sox) may leave the data size as 0 or 0xFFFFFFFF.
        if id == b"data" && (size == 0 || size == 0xFFFF_FFFF || body + size > bytes.len()) {
            size = bytes.len() - body;
        }
        if body + size > bytes.len() {
            return Err(WavError::Format(format!(
                "chunk {:?} runs past the end",
                String::from_utf8_lossy(id)
            )));
        }
        let chunk = &bytes[body..body + size];
        match id {
            b"fmt " => {
                if size < 16 {
                    return Err(WavError::Format("fmt chunk too short".into()));
                }
                let mut format = u16le(chunk, 0);
                let channels = u16le(chunk, 2);
                let rate = u32le(chunk, 4);
                let bits = u16le(chunk, 14);
                if format == 0xFFFE && size >= 26 {
                    format = u16le(chunk, 24); // sub-format GUID starts with the format code
                }
                fmt = Some((format, channels, rate, bits));
            }
            b"data" => {
                let (format, channels, sample_rate, bits) =
                    fmt.ok_or_else(|| WavError::Format("data before fmt".into()))?;
                if channels == 0 || sample_rate == 0 {
                    return Err(WavError::Format("zero channels or sample rate".into()));
                }
                let samples: Vec<f32> = match (format, bits) {
                    (1, 8) => chunk.iter().map(|&b| (b as f32 - 128.0) / 128.0).collect(),
                    (1, 16) => chunk
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                        .collect(),
                    (1, 24) => chunk
                        .chunks_exact(3)
                        .map(|b| {
                            (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
                        })
                        .collect(),
                    (1, 32) => chunk
                        .chunks_exact(4)
                        .map(|b| {
                            i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0
                        })
                        .collect(),
                    (3, 32) => chunk
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                    (3, 64) => chunk
                        .chunks_exact(8)
                        .map(|b| {
                            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                                as f32
                        })
                        .collect(),
                    (format, bits) => return Err(WavError::Unsupported { format, bits }),
                };
                let whole = samples.len() / channels as usize * channels as usize;
                let mut samples = samples;
                samples.truncate(whole);
                return Ok(WavData {
                    samples,
                    sample_rate,
                    channels,
                });
            }
            _ => {}
        }
        pos = body + size + (size & 1);
    }
    Err(WavError::Format("no data chunk".into()))
}

pub fn read_wav(path: &Path) -> Result<WavData, WavError> {
    let bytes = std::fs::read(path).map_err(|e| WavError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse_wav(&bytes)
}

/// 16-bit PCM WAV bytes.
pub fn encode_wav(samples: &[f32], sample_rate: u32, channels: u16) -> Vec<u8> {
    let data_len = samples.len() * 2;
    let mut b = Vec::with_capacity(44 + data_len);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&sample_rate.to_le_bytes());
    b.extend_from_slice(&(sample_rate * channels as u32 * 2).to_le_bytes());
    b.extend_from_slice(&(channels * 2).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data_len as u32).to_le_bytes());
    for s in samples {
        b.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
    }
    b
}

/// Plays a WAV file into the graph in chunks, in real time or as fast as downstream takes it.
pub struct WavSource {
    data: WavData,
    path: String,
    chunk_frames: usize,
    realtime: bool,
    finish: bool,
    pos: usize,
    done: bool,
}

impl WavSource {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("WavSource", "Audio", "WAV file")
            .describe("Plays a WAV file (PCM or float, any rate and channel count) as audio chunks, then an `end_of_stream` event that gives the file's length.")
            .output("audio", DataType::Audio, "audio chunks as stored in the file")
            .output("end", DataType::Event, "custom event `end_of_stream` {frames, sample_rate} once the whole file was sent")
            .param(ParamSpec::new("path", ParamKind::Path, "", "the WAV file").startup_only())
            .param(ParamSpec::new("chunk", ParamKind::Float { min: Some(0.005), max: Some(10.0) }, 0.1, "seconds of audio per message").startup_only())
            .param(ParamSpec::new("realtime", ParamKind::Bool, true, "pace chunks at the audio's own speed (off: as fast as downstream allows)").startup_only())
            .param(ParamSpec::new("finish", ParamKind::Bool, false, "end the run when the file is done"))
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let path = init.params.str("path")?.to_string();
        if path.is_empty() {
            return Err(NodeError::param("path", "no WAV file given"));
        }
        let data = read_wav(Path::new(&path)).map_err(|e| NodeError::param("path", e))?;
        let chunk_frames =
            ((init.params.f64("chunk")? * data.sample_rate as f64).round() as usize).max(1);
        Ok(WavSource {
            data,
            path,
            chunk_frames,
            realtime: init.params.bool("realtime")?,
            finish: init.params.bool("finish")?,
            pos: 0,
            done: false,
        })
    }
}

impl Node for WavSource {
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        if self.done {
            return Some(Duration::from_secs(3600));
        }
        Some(if self.realtime {
            Duration::from_secs_f64(self.chunk_frames as f64 / self.data.sample_rate as f64)
        } else {
            Duration::ZERO
        })
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.done {
            return Ok(());
        }
        let ch = self.data.channels as usize;
        let total = self.data.samples.len() / ch;
        if self.pos < total {
            let end = (self.pos + self.chunk_frames).min(total);
            let chunk: Vec<f32> = self.data.samples[self.pos * ch..end * ch].to_vec();
            self.pos = end;
            ctx.send(
                "audio",
                Audio::new(chunk, self.data.sample_rate, self.data.channels),
            )?;
        } else {
            self.done = true;
            // The length lets a consumer wait for audio still on its way: the marker
            // travels on its own edge and may overtake the last chunks.
            ctx.send(
                "end",
                crate::end_of_stream(total as u64, self.data.sample_rate),
            )?;
            if self.finish {
                ctx.finish(format!("played {}", self.path));
            }
        }
        Ok(())
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "finish" => {
                self.finish = value.as_bool().unwrap_or(false);
                Ok(())
            }
            _ => Err(NodeError::param(name, "cannot change while running")),
        }
    }

    fn summary(&self) -> Option<String> {
        let rate = self.data.sample_rate as f64;
        let total = self.data.samples.len() / self.data.channels as usize;
        Some(format!(
            "{:.1}/{:.1}s{}",
            self.pos as f64 / rate,
            total as f64 / rate,
            if self.done { " done" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_16_bit() {
        let x: Vec<f32> = (0..100).map(|i| (i as f32 / 50.0) - 1.0).collect();
        let w = parse_wav(&encode_wav(&x, 22050, 2)).unwrap();
        assert_eq!(
            (w.sample_rate, w.channels, w.samples.len()),
            (22050, 2, 100)
        );
        for (a, b) in x.iter().zip(&w.samples) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_wav(b"not a wav").is_err());
    }
}
