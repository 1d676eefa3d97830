//! Speech nodes of Vela: voice activity detection (`VADFilter`), Whisper speech
//! recognition (`WhisperASR`, on whisper.cpp through whisper-rs or on candle, both from the
//! CTranslate2 models scripts/setup-speech.sh installs and converts) and a WAV file player
//! (`WavSource`).

pub mod asr;
pub mod assemble;
pub mod mel;
pub mod recognizer;
pub mod resample;
pub mod transcribe;
pub mod vad;
pub mod wav;
pub mod whisper;
#[cfg(feature = "whisper-cpp")]
pub mod whisper_cpp;

// The CT2 reader and the token table live in the converter's crate (setup builds it alone).
pub use vela_speech_convert::{ct2, ggml, tokenizer};

pub use asr::WhisperAsr;
pub use vad::{VadConfig, VadCore, VadFilter, VadOutput};
pub use wav::WavSource;

use vela_runtime::{Event, Registry};

/// Name of the custom event that ends a stream and says how long it was.
pub const END_OF_STREAM: &str = "end_of_stream";

/// The end of an audio stream of `frames` frames. The engine keeps order per edge
/// only, so a marker sent on its own port can overtake the audio before it; with the
/// length, a consumer waits until it has all of the audio (plain `EndOfStream` is
/// accepted too and acts at once).
pub fn end_of_stream(frames: u64, sample_rate: u32) -> Event {
    Event::Custom {
        name: END_OF_STREAM.into(),
        data: serde_json::json!({"frames": frames, "sample_rate": sample_rate}),
    }
}

pub fn register(r: &mut Registry) {
    r.register(VadFilter::descriptor(), |init| {
        Ok(Box::new(VadFilter::new(init)?))
    });
    r.register(WavSource::descriptor(), |init| {
        Ok(Box::new(WavSource::new(init)?))
    });
    match asr::unavailable_reason() {
        None => r.register(WhisperAsr::descriptor(), |init| {
            Ok(Box::new(WhisperAsr::new(init)?))
        }),
        Some(reason) => r.register_unavailable(WhisperAsr::descriptor(), reason),
    }
}
