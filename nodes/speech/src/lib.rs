//! Speech nodes of Vela: voice activity detection (`VADFilter`), Whisper speech
//! recognition (`WhisperASR`, on candle, with weights from the CTranslate2 file that
//! scripts/setup-speech.sh installs) and a WAV file player (`WavSource`).

pub mod asr;
pub mod ct2;
pub mod mel;
pub mod resample;
pub mod tokenizer;
pub mod vad;
pub mod wav;
pub mod whisper;

pub use asr::WhisperAsr;
pub use vad::{VadConfig, VadCore, VadFilter, VadOutput};
pub use wav::WavSource;

use vela_runtime::Registry;

pub fn register(r: &mut Registry) {
    r.register(VadFilter::descriptor(), |init| Ok(Box::new(VadFilter::new(init)?)));
    r.register(WavSource::descriptor(), |init| Ok(Box::new(WavSource::new(init)?)));
    match asr::unavailable_reason() {
        None => r.register(WhisperAsr::descriptor(), |init| Ok(Box::new(WhisperAsr::new(init)?))),
        Some(reason) => r.register_unavailable(WhisperAsr::descriptor(), reason),
    }
}
