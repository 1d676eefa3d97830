//! The binary WebSocket frame a browser uses to send microphone PCM to a WebAudioIn node.
//!
//! All integers little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | magic `VAU1` (ASCII) |
//! | 4 | 4 | sample rate in Hz (u32), the AudioContext's real rate, 8000..=192000 |
//! | 8 | 2 | channels (u16), 1..=8; samples are interleaved |
//! | 10 | 2 | sample format (u16): 1 = i16, 2 = f32 |
//! | 12 | 2 | length N of the node name in bytes (u16), 1..=256 |
//! | 14 | N | node name, UTF-8 |
//! | 14+N | … | samples; a whole number of frames (channels × sample size) |
//!
//! One frame carries at most one second of audio; the browser module sends blocks of
//! about 40 ms.

use std::sync::Arc;

use vela_runtime::Audio;

pub const MAGIC: &[u8; 4] = b"VAU1";
pub const FORMAT_I16: u16 = 1;
pub const FORMAT_F32: u16 = 2;
const HEADER: usize = 14;

/// A parsed frame: which node it is for and the audio it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    pub node: String,
    pub audio: Audio,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("binary audio frame too short ({0} bytes; the header alone is 14 bytes plus the node name)")]
    TooShort(usize),
    #[error("binary frame does not start with the audio magic \"VAU1\" (binary messages carry microphone audio)")]
    BadMagic,
    #[error("sample rate {0} Hz is out of range 8000..=192000")]
    BadRate(u32),
    #[error("channel count {0} is out of range 1..=8")]
    BadChannels(u16),
    #[error("unknown sample format {0} (1 = i16, 2 = f32)")]
    BadFormat(u16),
    #[error("node name length {0} is out of range 1..=256")]
    BadNameLength(usize),
    #[error("node name is not UTF-8")]
    BadName,
    #[error("{bytes} sample bytes are not a whole number of {frame}-byte frames")]
    Ragged { bytes: usize, frame: usize },
    #[error("an audio frame must carry between 1 sample and 1 s of audio, not {0} samples per channel")]
    BadLength(usize),
}

/// Parses one binary WebSocket message.
pub fn parse(buf: &[u8]) -> Result<AudioFrame, FrameError> {
    if buf.len() < 4 || &buf[..4] != MAGIC {
        return Err(if buf.len() < 4 { FrameError::TooShort(buf.len()) } else { FrameError::BadMagic });
    }
    if buf.len() < HEADER {
        return Err(FrameError::TooShort(buf.len()));
    }
    let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
    let rate = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let channels = u16_at(8);
    let format = u16_at(10);
    let name_len = u16_at(12) as usize;
    if !(8000..=192_000).contains(&rate) {
        return Err(FrameError::BadRate(rate));
    }
    if !(1..=8).contains(&channels) {
        return Err(FrameError::BadChannels(channels));
    }
    let sample_size = match format {
        FORMAT_I16 => 2,
        FORMAT_F32 => 4,
        other => return Err(FrameError::BadFormat(other)),
    };
    if !(1..=256).contains(&name_len) {
        return Err(FrameError::BadNameLength(name_len));
    }
    if buf.len() < HEADER + name_len {
        return Err(FrameError::TooShort(buf.len()));
    }
    let node = std::str::from_utf8(&buf[HEADER..HEADER + name_len]).map_err(|_| FrameError::BadName)?.to_string();
    let data = &buf[HEADER + name_len..];
    let frame = sample_size * channels as usize;
    let per_channel = data.len() / frame;
    if per_channel * frame != data.len() {
        return Err(FrameError::Ragged { bytes: data.len(), frame });
    }
    if per_channel == 0 || per_channel > rate as usize {
        return Err(FrameError::BadLength(per_channel));
    }
    let samples: Arc<[f32]> = match format {
        FORMAT_I16 => data.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0).collect(),
        _ => data
            .chunks_exact(4)
            .map(|c| {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if v.is_finite() { v.clamp(-1.0, 1.0) } else { 0.0 }
            })
            .collect(),
    };
    Ok(AudioFrame { node, audio: Audio::new(samples, rate, channels) })
}

/// Builds a frame; what the browser module does, for tests and Rust clients.
pub fn encode_i16(node: &str, sample_rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let mut out = header(node, sample_rate, channels, FORMAT_I16);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

pub fn encode_f32(node: &str, sample_rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
    let mut out = header(node, sample_rate, channels, FORMAT_F32);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

fn header(node: &str, sample_rate: u32, channels: u16, format: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + node.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&(node.len() as u16).to_le_bytes());
    out.extend_from_slice(node.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_formats() {
        let f = parse(&encode_i16("mic", 44_100, 1, &[0, 16384, -32768, 32767])).unwrap();
        assert_eq!(f.node, "mic");
        assert_eq!((f.audio.sample_rate, f.audio.channels), (44_100, 1));
        assert_eq!(&f.audio.samples[..3], &[0.0, 0.5, -1.0]);
        let f = parse(&encode_f32("mic_2", 48_000, 2, &[0.25, -0.25, 2.0, f32::NAN])).unwrap();
        assert_eq!((f.node.as_str(), f.audio.channels), ("mic_2", 2));
        assert_eq!(&f.audio.samples[..], &[0.25, -0.25, 1.0, 0.0], "clamped, NaN zeroed");
    }

    #[test]
    fn rejects_malformed_frames() {
        assert_eq!(parse(&[1, 2, 3]), Err(FrameError::TooShort(3)));
        assert_eq!(parse(b"RIFF0000000000000"), Err(FrameError::BadMagic));
        assert_eq!(parse(&encode_i16("m", 100, 1, &[0])), Err(FrameError::BadRate(100)));
        assert_eq!(parse(&encode_i16("m", 48_000, 0, &[0])), Err(FrameError::BadChannels(0)));
        assert_eq!(parse(&encode_i16("m", 48_000, 2, &[0])), Err(FrameError::Ragged { bytes: 2, frame: 4 }));
        assert_eq!(parse(&encode_i16("m", 48_000, 1, &[])), Err(FrameError::BadLength(0)));
        assert_eq!(parse(&encode_i16("", 48_000, 1, &[0])), Err(FrameError::BadNameLength(0)));
        let mut bad_fmt = encode_i16("m", 48_000, 1, &[0]);
        bad_fmt[10] = 9;
        assert_eq!(parse(&bad_fmt), Err(FrameError::BadFormat(9)));
        let mut bad_name = encode_i16("m", 48_000, 1, &[0]);
        bad_name[14] = 0xff;
        assert_eq!(parse(&bad_name), Err(FrameError::BadName));
        let mut truncated = encode_i16("long-name", 48_000, 1, &[0]);
        truncated.truncate(16);
        assert_eq!(parse(&truncated), Err(FrameError::TooShort(16)));
        assert_eq!(parse(&encode_i16("m", 8000, 1, &vec![0; 8001])), Err(FrameError::BadLength(8001)));
    }
}
