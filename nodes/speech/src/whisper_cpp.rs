//! Whisper on whisper.cpp (through whisper-rs), from the ggml file that
//! scripts/setup-speech.sh converts from the CTranslate2 model (`vela-speech-convert`).
//!
//! whisper.cpp runs the log-mel, the encoder and each decoder step; the greedy loop is ours,
//! the same as the candle backend's (prompt, tokens suppressed from `config.json`, token cap
//! per 30 s window), so both decode alike. Owning the loop also lets the decoder run on one
//! thread: ggml's threads wait for each other by spinning after every operation, and a
//! decoder step is hundreds of tiny operations, so on a busy 2-core box two decoder threads
//! took 4-11 s for a command that one thread decodes in under 0.1 s. The encoder's few large
//! operations get [`threads`].

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use whisper_rs::{WhisperContext, WhisperContextParameters, WhisperState};

use crate::mel::{N_SAMPLES, SAMPLE_RATE};
use crate::recognizer::EncoderWindow;
use crate::whisper::{read_suppress_ids, ModelFiles, Transcript, WhisperError};
use vela_speech_convert::ggml;

pub struct WhisperCpp {
    state: WhisperState,
    ctx: WhisperContext,
    threads: usize,
    multilingual: bool,
    /// Start of transcript, then for a multilingual model English and "transcribe", then
    /// "no timestamps".
    prompt: Vec<i32>,
    eot: i32,
    /// Ids never produced (symbols, and every special token but the end of text).
    suppress: Vec<bool>,
    /// Ids never produced first (a blank, the end of text).
    suppress_begin: Vec<bool>,
    /// The decoder's context, in tokens.
    n_text_ctx: usize,
    pub name: String,
    pub path: PathBuf,
}

fn cpp_err(path: &Path, what: &str, e: whisper_rs::WhisperError) -> WhisperError {
    WhisperError::Model(format!("whisper.cpp {what} ({}): {e}", path.display()))
}

/// Threads for whisper.cpp's log-mel and encoder: `$VELA_WHISPER_THREADS`, else every core
/// but one. ggml's spinning threads stall whenever the OS runs something else on one of their
/// cores; Vela's pipeline always has other work (simulator, policy, video), and on the
/// 2-core box with the load at 3-4, one encoder thread took 0.9 s where two took 1.7-1.8 s. On
/// an idle box two threads would halve the encoder (0.46 s), hence the override.
fn threads() -> usize {
    if let Some(n) = std::env::var("VELA_WHISPER_THREADS").ok().and_then(|s| s.parse::<usize>().ok()) {
        return n.max(1);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    cores.saturating_sub(1).max(1)
}

/// The shortest fitted window, 7.7 s: with under about 5 s, tiny.en repeats a one-word
/// command ("Stop. Stop. Stop. ...") until its token cap.
pub const FIT_MIN_FRAMES: usize = 384;

/// Encoder frames (20 ms each) for `samples` of audio; `None` for the whole window.
fn encoder_frames(samples: usize, window: EncoderWindow) -> Option<usize> {
    if window == EncoderWindow::Full {
        return None;
    }
    let frames = ((samples as f64 / SAMPLE_RATE as f64 + 0.5) * 50.0).ceil() as usize;
    Some((frames.div_ceil(64) * 64).clamp(FIT_MIN_FRAMES, 1500))
}

impl WhisperCpp {
    /// Loads a converted model (and the suppressed tokens from the CT2 `config.json`). The
    /// file is checked first: whisper.cpp aborts the whole process on some malformed files
    /// instead of returning an error.
    pub fn load(name: &str, files: &ModelFiles) -> Result<Self, WhisperError> {
        let path = files.ggml.as_path();
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
        let h = summary.hparams;
        let eot = ctx.token_eot();
        let mut prompt = vec![ctx.token_sot()];
        if h.multilingual() {
            let en = whisper_rs::get_lang_id("en")
                .ok_or_else(|| WhisperError::Model("whisper.cpp knows no language 'en'".into()))?;
            prompt.extend([ctx.token_lang(en), ctx.token_transcribe()]);
        }
        prompt.push(ctx.token_not());
        let n_vocab = h.n_vocab as usize;
        let (ids, begin_ids) = read_suppress_ids(&files.config_json)?;
        let mut suppress = vec![false; n_vocab];
        for id in ids {
            if let Some(s) = suppress.get_mut(id as usize) {
                *s = true;
            }
        }
        for s in suppress.iter_mut().skip(eot as usize + 1) {
            *s = true;
        }
        let mut suppress_begin = vec![false; n_vocab];
        for id in begin_ids {
            if let Some(s) = suppress_begin.get_mut(id as usize) {
                *s = true;
            }
        }
        Ok(WhisperCpp {
            state,
            ctx,
            threads: threads(),
            multilingual: h.multilingual(),
            prompt,
            eot,
            suppress,
            suppress_begin,
            n_text_ctx: h.n_text_ctx as usize,
            name: name.to_string(),
            path: path.to_path_buf(),
        })
    }

    pub fn multilingual(&self) -> bool {
        self.multilingual
    }

    /// Transcribes 16 kHz mono audio of any length, 30 s at a time.
    pub fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript, WhisperError> {
        self.transcribe_with(audio, EncoderWindow::default())
    }

    /// [`Self::transcribe`] with a chosen encoder window.
    pub fn transcribe_with(&mut self, audio: &[f32], window: EncoderWindow) -> Result<Transcript, WhisperError> {
        let t0 = Instant::now();
        let mut tokens = Vec::new();
        for chunk in audio.chunks(N_SAMPLES) {
            // Speech runs at a few tokens per second; a cap stops greedy loops on noise.
            let secs = chunk.len() as f64 / SAMPLE_RATE as f64;
            let max_tokens = ((secs * 10.0) as usize + 16).min(self.n_text_ctx / 2);
            self.encode(chunk, window)?;
            tokens.extend(self.decode(max_tokens)?);
        }
        let mut bytes = Vec::new();
        for &id in &tokens {
            let b = self
                .ctx
                .token_to_bytes(id as i32)
                .map_err(|e| cpp_err(&self.path, "unknown token", e))?;
            bytes.extend_from_slice(b);
        }
        Ok(Transcript {
            text: String::from_utf8_lossy(&bytes).trim().to_string(),
            tokens,
            audio_s: audio.len() as f64 / SAMPLE_RATE as f64,
            compute_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// Log-mel and encoder of one window (whisper.cpp pads it to 30 s), on every core.
    fn encode(&mut self, window: &[f32], fit: EncoderWindow) -> Result<(), WhisperError> {
        let padded;
        let window = if window.len() < SAMPLE_RATE / 10 {
            // whisper.cpp's log-mel wants some audio; Whisper pads to 30 s with zeros anyway.
            padded = [window, &vec![0.0; SAMPLE_RATE / 10 - window.len()]].concat();
            &padded[..]
        } else {
            window
        };
        // whisper.cpp takes an encoder window only through `whisper_full`, which keeps it in
        // the state for the `encode`/`decode` calls that follow (0: the whole 30 s). With a
        // 100 ms duration its decoding loop ends before it starts, so this call computes the
        // log-mel and sets the window, nothing else.
        let mut p = whisper_rs::FullParams::new(whisper_rs::SamplingStrategy::Greedy { best_of: 1 });
        p.set_n_threads(self.threads as i32);
        p.set_audio_ctx(encoder_frames(window.len(), fit).unwrap_or(0) as i32);
        p.set_duration_ms(100);
        p.set_language(Some("en"));
        p.set_no_context(true);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_special(false);
        p.set_print_timestamps(false);
        self.state.full(p, window).map_err(|e| cpp_err(&self.path, "log-mel failed", e))?;
        self.state
            .encode(0, self.threads)
            .map_err(|e| cpp_err(&self.path, "encoder failed", e))
    }

    /// Greedy decoding of the encoded window, one decoder thread (see the module docs).
    fn decode(&mut self, max_tokens: usize) -> Result<Vec<u32>, WhisperError> {
        let mut out = Vec::new();
        // The prompt but its last token fills the cache; the last one alone then leaves its
        // logits in the first row, the only one whisper-rs returns.
        let Some((last, head)) = self.prompt.split_last() else {
            return Err(WhisperError::Model("whisper.cpp: empty decoder prompt".into()));
        };
        self.state
            .decode(head, 0, 1)
            .map_err(|e| cpp_err(&self.path, "decoder failed", e))?;
        let mut next = *last;
        let mut n_past = head.len();
        for step in 0..max_tokens {
            self.state
                .decode(&[next], n_past, 1)
                .map_err(|e| cpp_err(&self.path, "decoder failed", e))?;
            n_past += 1;
            let logits = self
                .state
                .get_logits()
                .map_err(|e| cpp_err(&self.path, "no logits", e))?;
            let mut best = (f32::NEG_INFINITY, self.eot);
            for (id, &l) in logits.iter().enumerate() {
                if self.suppress.get(id).copied().unwrap_or(true)
                    || (step == 0 && self.suppress_begin.get(id).copied().unwrap_or(true))
                {
                    continue;
                }
                if l > best.0 {
                    best = (l, id as i32);
                }
            }
            if best.1 == self.eot {
                break;
            }
            out.push(best.1 as u32);
            next = best.1;
        }
        Ok(out)
    }

    /// Log-mel and encoder of one (padded) 30 s window, in seconds: the fixed cost of every
    /// call, for benchmarks.
    pub fn encode_window(&mut self, audio: &[f32]) -> Result<f64, WhisperError> {
        let t0 = Instant::now();
        self.encode(&audio[..audio.len().min(N_SAMPLES)], EncoderWindow::Full)?;
        Ok(t0.elapsed().as_secs_f64())
    }
}
