//! Whisper on whisper.cpp (through whisper-rs), from the ggml file that
//! scripts/setup-speech.sh converts from the CTranslate2 model (`vela-speech-convert`).
//!
//! Decoding matches the candle backend: greedy, English, no timestamps, no temperature
//! fallback, non-speech tokens suppressed, the same token cap per window; each call is
//! independent (no text carried over from the previous utterance).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

use crate::mel::SAMPLE_RATE;
use crate::whisper::{Transcript, WhisperError};
use vela_speech_convert::ggml;

/// whisper.cpp skips input under 100 ms; shorter audio is padded with silence (Whisper pads
/// every window to 30 s anyway, so this changes nothing else).
const MIN_SAMPLES: usize = SAMPLE_RATE / 10 + SAMPLE_RATE / 100;

pub struct WhisperCpp {
    state: WhisperState,
    // Keeps the model alive for the state (the state holds it too; this makes it explicit).
    _ctx: WhisperContext,
    threads: usize,
    multilingual: bool,
    eot: i32,
    pub name: String,
    pub path: PathBuf,
}

fn cpp_err(path: &Path, what: &str, e: whisper_rs::WhisperError) -> WhisperError {
    WhisperError::Model(format!("whisper.cpp {what} ({}): {e}", path.display()))
}

/// Threads for whisper.cpp: every core this process may use (2 on the CI box), as candle
/// does.
fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl WhisperCpp {
    /// Loads a converted model. The file is checked first: whisper.cpp aborts the whole
    /// process on some malformed files instead of returning an error.
    pub fn load(name: &str, path: &Path) -> Result<Self, WhisperError> {
        let setup = "run scripts/setup-speech.sh (or scripts/setup.sh) to convert it from the CTranslate2 model";
        if !path.is_file() {
            return Err(WhisperError::Model(format!(
                "Whisper {name} for whisper.cpp: file {} is missing: {setup}",
                path.display()
            )));
        }
        let summary = ggml::inspect(path).map_err(|e| {
            WhisperError::Model(format!("Whisper {name} for whisper.cpp is unusable: {e}; {setup}"))
        })?;
        static LOGS: Once = Once::new();
        // whisper.cpp's own log lines go to tracing (debug level for its chatter).
        LOGS.call_once(whisper_rs::install_logging_hooks);
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(path, params)
            .map_err(|e| cpp_err(path, "cannot load the model", e))?;
        let state = ctx
            .create_state()
            .map_err(|e| cpp_err(path, "cannot create a decoding state", e))?;
        let eot = ctx.token_eot();
        Ok(WhisperCpp {
            state,
            _ctx: ctx,
            threads: threads(),
            multilingual: summary.hparams.multilingual(),
            eot,
            name: name.to_string(),
            path: path.to_path_buf(),
        })
    }

    pub fn multilingual(&self) -> bool {
        self.multilingual
    }

    /// Transcribes 16 kHz mono audio of any length (whisper.cpp walks 30 s windows itself).
    pub fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript, WhisperError> {
        let t0 = Instant::now();
        let audio_s = audio.len() as f64 / SAMPLE_RATE as f64;
        let padded;
        let input = if audio.len() < MIN_SAMPLES {
            padded = {
                let mut v = audio.to_vec();
                v.resize(MIN_SAMPLES, 0.0);
                v
            };
            &padded[..]
        } else {
            audio
        };
        let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        p.set_n_threads(self.threads as i32);
        p.set_language(Some("en"));
        p.set_translate(false);
        p.set_no_context(true);
        p.set_no_timestamps(true);
        p.set_single_segment(true);
        p.set_print_special(false);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_timestamps(false);
        p.set_suppress_blank(true);
        p.set_suppress_nst(true);
        p.set_temperature(0.0);
        p.set_temperature_inc(0.0);
        // Speech runs at a few tokens per second; a cap stops greedy loops on noise (per
        // 30 s window, as on candle).
        let window_s = audio_s.min(30.0);
        p.set_max_tokens((window_s * 10.0) as i32 + 16);
        self.state
            .full(p, input)
            .map_err(|e| cpp_err(&self.path, "transcription failed", e))?;
        let mut text = String::new();
        let mut tokens = Vec::new();
        for seg in self.state.as_iter() {
            let s = seg
                .to_str_lossy()
                .map_err(|e| cpp_err(&self.path, "cannot read a segment", e))?;
            text.push_str(&s);
            for i in 0..seg.n_tokens() {
                if let Some(t) = seg.get_token(i) {
                    let id = t.token_id();
                    if id < self.eot {
                        tokens.push(id as u32);
                    }
                }
            }
        }
        Ok(Transcript {
            text: text.trim().to_string(),
            tokens,
            audio_s,
            compute_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// Log-mel and encoder of one (padded) 30 s window, in seconds: the fixed cost of every
    /// call, for benchmarks.
    pub fn encode_window(&mut self, audio: &[f32]) -> Result<f64, WhisperError> {
        let t0 = Instant::now();
        self.state
            .pcm_to_mel(audio, self.threads)
            .map_err(|e| cpp_err(&self.path, "log-mel failed", e))?;
        self.state
            .encode(0, self.threads)
            .map_err(|e| cpp_err(&self.path, "encoder failed", e))?;
        Ok(t0.elapsed().as_secs_f64())
    }
}
