//! Vela messages ⇄ Arrow arrays plus dora metadata.
//!
//! Follows the dora node-hub conventions so Vela nodes and hub nodes (dora-rerun,
//! recorders, VAD/Whisper...) understand each other:
//!
//! | Vela payload | Arrow array | metadata |
//! |---|---|---|
//! | image | `UInt8`, row-major RGB | `encoding: "rgb8"`, `width`, `height` |
//! | audio | `Float32`, interleaved | `sample_rate`, `channels` |
//! | text | `Utf8`, one element | `is_final` |
//! | actions | `Float32` | `partial`, `space` |
//! | prompt | `UInt8`, the image parts' pixels back to back | `encoding: "vela-prompt-v1"`, `parts` (JSON: `[{"text": ..} \| {"image": {"width", "height"}}]`) |
//! | event, json | `Utf8`, one element holding JSON | `encoding: "json"` |
//!
//! Every message also carries `vela_type` (the Vela data type), `vela_sender` and
//! `vela_ts` (the sender's wall-clock nanoseconds, so latency is measurable across
//! processes). Messages from other dora nodes lack them and are mapped by their
//! Arrow type and hub metadata instead (`bgr8` images are converted to RGB).

use std::sync::Arc;

use bytes::Bytes;
use dora_node_api::arrow_v59::array::{Array, ArrayRef, AsArray, Float32Array, StringArray, UInt8Array};
use dora_node_api::arrow_v59::buffer::Buffer;
use dora_node_api::arrow_v59::datatypes::{DataType as ArrowType, Float32Type, Float64Type, Int32Type, Int64Type, UInt8Type};
use dora_node_api::{MetadataParameters, Parameter};
use serde_json::{json, Value};
use vela_runtime::{Actions, Audio, DataType, Image, Message, Payload, Prompt, PromptPart, Text};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("metadata '{key}' is missing or not {expected}")]
    Metadata { key: &'static str, expected: &'static str },
    #[error("expected a {expected} array for {what}, got {got}")]
    ArrowType { what: &'static str, expected: &'static str, got: String },
    #[error("{0}")]
    Invalid(String),
}

const PROMPT_ENCODING: &str = "vela-prompt-v1";

fn s(v: &str) -> Parameter {
    Parameter::String(v.into())
}

fn int(p: &MetadataParameters, key: &'static str) -> Result<i64, CodecError> {
    match p.get(key) {
        Some(Parameter::Integer(i)) => Ok(*i),
        _ => Err(CodecError::Metadata { key, expected: "an integer" }),
    }
}

fn text_param<'a>(p: &'a MetadataParameters, key: &str) -> Option<&'a str> {
    match p.get(key) {
        Some(Parameter::String(s)) => Some(s),
        _ => None,
    }
}

fn flag(p: &MetadataParameters, key: &str) -> Option<bool> {
    match p.get(key) {
        Some(Parameter::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn bytes_array(data: &Bytes) -> ArrayRef {
    // Wraps the frame's reference-counted buffer: no copy until dora moves it to shared memory.
    Arc::new(UInt8Array::new(Buffer::from(data.clone()).into(), None))
}

fn one_string(v: String) -> ArrayRef {
    Arc::new(StringArray::from(vec![v]))
}

/// Encodes a message for `send_output`.
pub fn encode(msg: &Message) -> (ArrayRef, MetadataParameters) {
    let mut p = MetadataParameters::new();
    p.insert("vela_type".into(), s(msg.data_type().as_str()));
    p.insert("vela_sender".into(), s(&msg.sender));
    p.insert("vela_ts".into(), Parameter::Integer(msg.timestamp as i64));
    let array: ArrayRef = match &msg.payload {
        Payload::Image(img) => {
            p.insert("encoding".into(), s("rgb8"));
            p.insert("width".into(), Parameter::Integer(img.width.into()));
            p.insert("height".into(), Parameter::Integer(img.height.into()));
            p.insert("vela_frame_ts".into(), Parameter::Integer(img.timestamp as i64));
            bytes_array(&img.data)
        }
        Payload::Audio(a) => {
            p.insert("sample_rate".into(), Parameter::Integer(a.sample_rate.into()));
            p.insert("channels".into(), Parameter::Integer(a.channels.into()));
            p.insert("vela_frame_ts".into(), Parameter::Integer(a.timestamp as i64));
            Arc::new(Float32Array::from(a.samples.to_vec()))
        }
        Payload::Text(t) => {
            p.insert("is_final".into(), Parameter::Bool(t.is_final));
            one_string(t.text.clone())
        }
        Payload::Actions(a) => {
            p.insert("partial".into(), Parameter::Bool(a.partial));
            p.insert("space".into(), s(&a.space));
            Arc::new(Float32Array::from(a.values.clone()))
        }
        Payload::Prompt(prompt) => {
            let mut pixels = Vec::new();
            let parts: Vec<Value> = prompt
                .parts
                .iter()
                .map(|part| match part {
                    PromptPart::Text(t) => json!({ "text": t }),
                    PromptPart::Image(img) => {
                        pixels.extend_from_slice(&img.data);
                        json!({ "image": { "width": img.width, "height": img.height, "ts": img.timestamp } })
                    }
                })
                .collect();
            p.insert("encoding".into(), s(PROMPT_ENCODING));
            p.insert("parts".into(), s(&Value::Array(parts).to_string()));
            Arc::new(UInt8Array::from(pixels))
        }
        Payload::Event(e) => {
            p.insert("encoding".into(), s("json"));
            one_string(serde_json::to_string(e).expect("events serialise"))
        }
        Payload::Json(v) => {
            p.insert("encoding".into(), s("json"));
            one_string(v.to_string())
        }
    };
    (array, p)
}

fn u8_values<'a>(array: &'a ArrayRef, what: &'static str) -> Result<&'a [u8], CodecError> {
    match array.as_primitive_opt::<UInt8Type>() {
        Some(a) => Ok(a.values()),
        None => Err(CodecError::ArrowType { what, expected: "UInt8", got: array.data_type().to_string() }),
    }
}

fn f32_values(array: &ArrayRef, what: &'static str) -> Result<Vec<f32>, CodecError> {
    if let Some(a) = array.as_primitive_opt::<Float32Type>() {
        return Ok(a.values().to_vec());
    }
    if let Some(a) = array.as_primitive_opt::<Float64Type>() {
        return Ok(a.values().iter().map(|v| *v as f32).collect());
    }
    Err(CodecError::ArrowType { what, expected: "Float32", got: array.data_type().to_string() })
}

fn single_string(array: &ArrayRef, what: &'static str) -> Result<String, CodecError> {
    let strings: Vec<&str> = match array.data_type() {
        ArrowType::Utf8 => array.as_string::<i32>().iter().flatten().collect(),
        ArrowType::LargeUtf8 => array.as_string::<i64>().iter().flatten().collect(),
        other => return Err(CodecError::ArrowType { what, expected: "Utf8", got: other.to_string() }),
    };
    Ok(strings.join("\n"))
}

fn image(array: &ArrayRef, p: &MetadataParameters) -> Result<Image, CodecError> {
    let (width, height) = (int(p, "width")?, int(p, "height")?);
    let data = u8_values(array, "an image")?;
    let dims = |v: i64| u32::try_from(v).map_err(|_| CodecError::Invalid(format!("image size {width}x{height} is out of range")));
    let (w, h) = (dims(width)?, dims(height)?);
    let data = match text_param(p, "encoding").unwrap_or("rgb8") {
        "rgb8" => Bytes::copy_from_slice(data),
        "bgr8" => Bytes::from(data.chunks_exact(3).flat_map(|c| [c[2], c[1], c[0]]).collect::<Vec<u8>>()),
        other => return Err(CodecError::Invalid(format!("image encoding '{other}' is not supported (rgb8, bgr8)"))),
    };
    let mut img = Image::rgb8(w, h, data).map_err(|e| CodecError::Invalid(e.to_string()))?;
    if let Ok(ts) = int(p, "vela_frame_ts") {
        img.timestamp = ts as u64;
    }
    Ok(img)
}

fn prompt(array: &ArrayRef, p: &MetadataParameters) -> Result<Prompt, CodecError> {
    let parts = text_param(p, "parts").ok_or(CodecError::Metadata { key: "parts", expected: "a JSON string" })?;
    let parts: Vec<Value> = serde_json::from_str(parts).map_err(|e| CodecError::Invalid(format!("prompt parts: {e}")))?;
    let mut pixels = u8_values(array, "a prompt")?;
    let mut out = Prompt::default();
    for part in parts {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            out.parts.push(PromptPart::Text(t.into()));
        } else if let Some(img) = part.get("image") {
            let dim = |k: &str| img.get(k).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
            let (Some(w), Some(h)) = (dim("width"), dim("height")) else {
                return Err(CodecError::Invalid(format!("prompt image part without width/height: {img}")));
            };
            let len = w as usize * h as usize * 3;
            if pixels.len() < len {
                return Err(CodecError::Invalid(format!("prompt image {w}x{h} needs {len} bytes, {} left", pixels.len())));
            }
            let mut image = Image::rgb8(w, h, Bytes::copy_from_slice(&pixels[..len])).map_err(|e| CodecError::Invalid(e.to_string()))?;
            image.timestamp = img.get("ts").and_then(Value::as_u64).unwrap_or(image.timestamp);
            pixels = &pixels[len..];
            out.parts.push(PromptPart::Image(image));
        } else {
            return Err(CodecError::Invalid(format!("prompt part is neither text nor image: {part}")));
        }
    }
    Ok(out)
}

fn parse_json(text: &str) -> Result<Value, CodecError> {
    serde_json::from_str(text).map_err(|e| CodecError::Invalid(format!("bad JSON: {e}")))
}

/// Numbers of any primitive array as a JSON array (for foreign nodes' plain data).
fn numbers(array: &ArrayRef) -> Option<Value> {
    let vals: Vec<Value> = if let Some(a) = array.as_primitive_opt::<Int64Type>() {
        a.values().iter().map(|v| json!(v)).collect()
    } else if let Some(a) = array.as_primitive_opt::<Int32Type>() {
        a.values().iter().map(|v| json!(v)).collect()
    } else if let Some(a) = array.as_primitive_opt::<Float64Type>() {
        a.values().iter().map(|v| json!(v)).collect()
    } else if let Some(a) = array.as_boolean_opt() {
        a.iter().map(|v| json!(v)).collect()
    } else {
        return None;
    };
    Some(Value::Array(vals))
}

/// Decodes a dora input into a Vela payload.
pub fn decode(array: &ArrayRef, p: &MetadataParameters) -> Result<Payload, CodecError> {
    let declared = text_param(p, "vela_type");
    let kind = match declared {
        Some(t) => serde_json::from_value::<DataType>(Value::String(t.into()))
            .map_err(|_| CodecError::Invalid(format!("unknown vela_type '{t}'")))?,
        // A message from another dora node: go by the node-hub conventions.
        None => match (array.data_type(), text_param(p, "encoding")) {
            (ArrowType::UInt8, Some("rgb8" | "bgr8")) => DataType::Image,
            (ArrowType::UInt8, Some(PROMPT_ENCODING)) => DataType::Prompt,
            (ArrowType::Float32 | ArrowType::Float64, _) if p.contains_key("sample_rate") => DataType::Audio,
            (ArrowType::Float32, _) => DataType::Actions,
            (ArrowType::Utf8 | ArrowType::LargeUtf8, Some("json")) => DataType::Json,
            (ArrowType::Utf8 | ArrowType::LargeUtf8, _) => DataType::Text,
            (ArrowType::Null, _) => return Ok(Payload::Json(Value::Null)),
            _ => {
                return numbers(array).map(Payload::Json).ok_or_else(|| {
                    CodecError::Invalid(format!("cannot map an Arrow {} array to a Vela message", array.data_type()))
                })
            }
        },
    };
    Ok(match kind {
        DataType::Image => Payload::Image(image(array, p)?),
        DataType::Audio => {
            let rate = int(p, "sample_rate")?;
            let channels = int(p, "channels").unwrap_or(1);
            let mut a = Audio::new(
                f32_values(array, "audio")?,
                u32::try_from(rate).map_err(|_| CodecError::Invalid(format!("sample_rate {rate} is out of range")))?,
                u16::try_from(channels).map_err(|_| CodecError::Invalid(format!("channels {channels} is out of range")))?,
            );
            if let Ok(ts) = int(p, "vela_frame_ts") {
                a.timestamp = ts as u64;
            }
            Payload::Audio(a)
        }
        DataType::Text => {
            Payload::Text(Text { text: single_string(array, "text")?, is_final: flag(p, "is_final").unwrap_or(true) })
        }
        DataType::Actions => Payload::Actions(Actions {
            values: f32_values(array, "actions")?,
            partial: flag(p, "partial").unwrap_or(false),
            space: text_param(p, "space").unwrap_or_default().into(),
        }),
        DataType::Prompt => Payload::Prompt(prompt(array, p)?),
        DataType::Event => {
            let text = single_string(array, "an event")?;
            Payload::Event(serde_json::from_str(&text).map_err(|e| CodecError::Invalid(format!("bad event: {e}")))?)
        }
        DataType::Json | DataType::Any => Payload::Json(parse_json(&single_string(array, "JSON")?)?),
    })
}

/// Decodes an input into a full message, keeping the original sender and timestamp.
pub fn decode_message(array: &ArrayRef, p: &MetadataParameters, fallback_sender: &str) -> Result<Message, CodecError> {
    let payload = decode(array, p)?;
    let mut msg = Message::new(text_param(p, "vela_sender").unwrap_or(fallback_sender), payload);
    if let Ok(ts) = int(p, "vela_ts") {
        msg.timestamp = ts as u64;
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dora_node_api::arrow_v59::array::{BooleanArray, NullArray};
    use vela_runtime::Event;

    fn round_trip(payload: Payload) -> Message {
        let msg = Message::new("src", payload);
        let (array, params) = encode(&msg);
        let back = decode_message(&array, &params, "other").unwrap();
        assert_eq!(back.payload, msg.payload);
        assert_eq!(back.sender, msg.sender);
        assert_eq!(back.timestamp, msg.timestamp);
        back
    }

    fn image(w: u32, h: u32) -> Image {
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        Image::rgb8(w, h, data).unwrap()
    }

    #[test]
    fn every_payload_round_trips() {
        round_trip(Payload::Image(image(224, 224)));
        round_trip(Payload::Audio(Audio::new(vec![0.0, 0.5, -0.25, 1.0], 16_000, 2)));
        round_trip(Payload::Text(Text::partial("pick up the red cube")));
        round_trip(Payload::Actions(Actions { values: vec![0.1, -0.2, 1.0], partial: true, space: "bridge_orig".into() }));
        round_trip(Payload::Prompt(Prompt {
            parts: vec![PromptPart::Text("What should the robot do? ".into()), PromptPart::Image(image(4, 3)), PromptPart::Image(image(2, 2))],
        }));
        round_trip(Payload::Event(Event::EpisodeEnd { episode: 3, success: true, steps: 120 }));
        round_trip(Payload::Json(json!({ "a": [1, 2.5, "x"], "b": null })));
    }

    #[test]
    fn images_follow_the_node_hub_convention() {
        let (array, p) = encode(&Message::new("cam", image(8, 4)));
        assert_eq!(array.data_type(), &ArrowType::UInt8);
        assert_eq!(array.len(), 8 * 4 * 3);
        assert_eq!(p["encoding"], Parameter::String("rgb8".into()));
        assert_eq!((p["width"].clone(), p["height"].clone()), (Parameter::Integer(8), Parameter::Integer(4)));
        let (array, p) = encode(&Message::new("mic", Audio::new(vec![0.0; 160], 16_000, 1)));
        assert_eq!(array.data_type(), &ArrowType::Float32);
        assert_eq!(p["sample_rate"], Parameter::Integer(16_000));
    }

    #[test]
    fn foreign_messages_map_by_type_and_hub_metadata() {
        // A bgr8 camera frame from a hub node, without any vela_* keys.
        let mut p = MetadataParameters::new();
        p.insert("encoding".into(), s("bgr8"));
        p.insert("width".into(), Parameter::Integer(2));
        p.insert("height".into(), Parameter::Integer(1));
        let array: ArrayRef = Arc::new(UInt8Array::from(vec![1, 2, 3, 4, 5, 6]));
        let Payload::Image(img) = decode(&array, &p).unwrap() else { panic!("not an image") };
        assert_eq!(&img.data[..], &[3, 2, 1, 6, 5, 4]);

        let mut p = MetadataParameters::new();
        p.insert("sample_rate".into(), Parameter::Integer(48_000));
        let array: ArrayRef = Arc::new(Float32Array::from(vec![0.5f32; 10]));
        assert!(matches!(decode(&array, &p).unwrap(), Payload::Audio(a) if a.sample_rate == 48_000 && a.channels == 1));
        assert!(matches!(decode(&array, &MetadataParameters::new()).unwrap(), Payload::Actions(_)));

        let array: ArrayRef = Arc::new(StringArray::from(vec!["hello"]));
        assert_eq!(decode(&array, &MetadataParameters::new()).unwrap(), Payload::Text(Text::final_text("hello")));
        let array: ArrayRef = Arc::new(NullArray::new(0));
        assert_eq!(decode(&array, &MetadataParameters::new()).unwrap(), Payload::Json(Value::Null));
        let array: ArrayRef = Arc::new(BooleanArray::from(vec![true, false]));
        assert_eq!(decode(&array, &MetadataParameters::new()).unwrap(), Payload::Json(json!([true, false])));
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        let mut p = MetadataParameters::new();
        p.insert("vela_type".into(), s("image"));
        p.insert("width".into(), Parameter::Integer(10));
        p.insert("height".into(), Parameter::Integer(10));
        let short: ArrayRef = Arc::new(UInt8Array::from(vec![0u8; 5]));
        let e = decode(&short, &p).unwrap_err().to_string();
        assert!(e.contains("10x10 needs 300 bytes, got 5"), "{e}");
        p.remove("width");
        assert!(decode(&short, &p).unwrap_err().to_string().contains("'width'"));
        p.insert("vela_type".into(), s("hologram"));
        assert!(decode(&short, &p).unwrap_err().to_string().contains("unknown vela_type 'hologram'"));
        p.insert("vela_type".into(), s("json"));
        let e = decode(&short, &p).unwrap_err().to_string();
        assert!(e.contains("expected a Utf8 array for JSON, got UInt8"), "{e}");
    }
}
