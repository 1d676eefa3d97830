//! Messages that travel along the edges of a graph.
//!
//! Payloads are cheap to clone: image and audio buffers sit behind reference-counted
//! storage, so fanning a 512×512 frame out to several consumers never copies pixels.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::DataType;

/// Nanoseconds since the UNIX epoch. Wall-clock so that timestamps from different
/// processes (browser, dora peers) can be compared and logged.
pub type Timestamp = u64;

/// The current wall-clock time as a [`Timestamp`].
pub fn now_ns() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One message: a payload plus where and when it was made.
#[derive(Debug, Clone)]
pub struct Message {
    /// Name of the node that sent it (shared, so stamping it costs one refcount).
    pub sender: Arc<str>,
    /// When the sender produced it.
    pub timestamp: Timestamp,
    pub payload: Payload,
}

impl Message {
    pub fn new(sender: impl Into<Arc<str>>, payload: impl Into<Payload>) -> Self {
        Message { sender: sender.into(), timestamp: now_ns(), payload: payload.into() }
    }

    pub fn data_type(&self) -> DataType {
        self.payload.data_type()
    }
}

/// Everything a node can emit. `Json` is the escape hatch for data that has no
/// dedicated type yet; prefer a typed variant so edges can be checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Image(Image),
    Audio(Audio),
    Text(Text),
    Prompt(Prompt),
    Actions(Actions),
    Event(Event),
    Json(serde_json::Value),
}

impl Payload {
    pub fn data_type(&self) -> DataType {
        match self {
            Payload::Image(_) => DataType::Image,
            Payload::Audio(_) => DataType::Audio,
            Payload::Text(_) => DataType::Text,
            Payload::Prompt(_) => DataType::Prompt,
            Payload::Actions(_) => DataType::Actions,
            Payload::Event(_) => DataType::Event,
            Payload::Json(_) => DataType::Json,
        }
    }

    /// A short human description, for logs and the studio's output widgets.
    pub fn describe(&self) -> String {
        match self {
            Payload::Image(i) => format!("image {}x{}", i.width, i.height),
            Payload::Audio(a) => format!(
                "audio {} samples @ {} Hz x{}",
                a.samples.len(),
                a.sample_rate,
                a.channels
            ),
            Payload::Text(t) => {
                format!("text{} {:?}", if t.is_final { "" } else { " (partial)" }, t.text)
            }
            Payload::Prompt(p) => format!("prompt with {} parts", p.parts.len()),
            Payload::Actions(a) => format!(
                "actions{} [{}]",
                if a.partial { " (partial)" } else { "" },
                a.values.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", ")
            ),
            Payload::Event(e) => format!("event {e:?}"),
            Payload::Json(v) => format!("json {v}"),
        }
    }
}

/// An RGB8 image, rows top to bottom, no padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes, shared between every consumer of the frame.
    pub data: Bytes,
    /// When the frame was captured or rendered (may precede the message timestamp).
    pub timestamp: Timestamp,
}

impl Image {
    /// Wraps an RGB8 buffer, checking its length so a bad frame fails where it was made.
    pub fn rgb8(width: u32, height: u32, data: impl Into<Bytes>) -> Result<Self, crate::RuntimeError> {
        let data = data.into();
        let want = width as usize * height as usize * 3;
        if data.len() != want {
            return Err(crate::RuntimeError::BadPayload(format!(
                "RGB8 image {width}x{height} needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Image { width, height, data, timestamp: now_ns() })
    }

    /// The RGB triple at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// PCM audio as f32 in [-1, 1], interleaved when `channels > 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Arc<[f32]>,
    pub sample_rate: u32,
    pub channels: u16,
    pub timestamp: Timestamp,
}

impl Audio {
    pub fn new(samples: impl Into<Arc<[f32]>>, sample_rate: u32, channels: u16) -> Self {
        Audio { samples: samples.into(), sample_rate, channels, timestamp: now_ns() }
    }

    pub fn duration_s(&self) -> f64 {
        if self.sample_rate == 0 || self.channels == 0 {
            return 0.0;
        }
        self.samples.len() as f64 / (self.sample_rate as f64 * self.channels as f64)
    }
}

/// Text, e.g. a transcript. Speech recognisers stream partial hypotheses before the final one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub text: String,
    pub is_final: bool,
}

impl Text {
    pub fn final_text(text: impl Into<String>) -> Self {
        Text { text: text.into(), is_final: true }
    }
    pub fn partial(text: impl Into<String>) -> Self {
        Text { text: text.into(), is_final: false }
    }
}

/// An ordered multimodal prompt, as Agent Studio's AutoPrompt emits: text and image
/// parts in the order the template named them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prompt {
    pub parts: Vec<PromptPart>,
}

impl Prompt {
    /// The concatenated text parts.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                PromptPart::Text(t) => Some(t.as_str()),
                PromptPart::Image(_) => None,
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// The last image part, which is what single-image VLAs consume.
    pub fn last_image(&self) -> Option<&Image> {
        self.parts.iter().rev().find_map(|p| match p {
            PromptPart::Image(i) => Some(i),
            PromptPart::Text(_) => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptPart {
    Text(String),
    Image(Image),
}

/// A robot action vector. VLAs that decode token by token emit partial vectors first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actions {
    pub values: Vec<f32>,
    /// True while the decoder has produced only some of the dimensions.
    pub partial: bool,
    /// Which action space (normalisation statistics key) the values are in.
    pub space: String,
}

impl Actions {
    pub fn new(values: Vec<f32>, space: impl Into<String>) -> Self {
        Actions { values, partial: false, space: space.into() }
    }
}

/// Control-flow events: episodes, completion, user-facing notices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    EpisodeStart { episode: u64, seed: u64, instruction: String },
    EpisodeEnd { episode: u64, success: bool, steps: u32 },
    Success { episode: u64, steps: u32 },
    Timeout { episode: u64, steps: u32 },
    Reset,
    /// A stream has ended; downstream nodes may flush.
    EndOfStream,
    Custom { name: String, data: serde_json::Value },
}

macro_rules! payload_from {
    ($($t:ident),*) => {$(
        impl From<$t> for Payload {
            fn from(v: $t) -> Self { Payload::$t(v) }
        }
    )*};
}
payload_from!(Image, Audio, Text, Prompt, Actions, Event);

impl From<serde_json::Value> for Payload {
    fn from(v: serde_json::Value) -> Self {
        Payload::Json(v)
    }
}
