//! The engines that can run Whisper, and loaded models shared by every node.
//!
//! Both backends read the same installed model (tiny.en or base): candle from the
//! CTranslate2 file directly, whisper.cpp from the ggml file setup converts from it. They
//! decode the same way (greedy, English, no timestamps), so a node can switch engines
//! without changing what it means.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::Device;

use crate::whisper::{ModelFiles, Transcript, WhisperError, WhisperModel, MODELS};
#[cfg(feature = "whisper-cpp")]
use crate::whisper_cpp::WhisperCpp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// whisper.cpp through whisper-rs (ggml f16 weights).
    WhisperCpp,
    /// candle-transformers' Whisper (weights widened to f32).
    Candle,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::WhisperCpp, Backend::Candle];

    /// whisper.cpp when this build has it: on the 2-core box it hears the test commands
    /// exactly as candle does and transcribes them 1.5–2.7x faster (BENCHMARKS.md, Speech).
    pub fn default_for_build() -> Backend {
        if Backend::WhisperCpp.built() {
            Backend::WhisperCpp
        } else {
            Backend::Candle
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::WhisperCpp => "whisper.cpp",
            Backend::Candle => "candle",
        }
    }

    pub fn parse(s: &str) -> Result<Backend, WhisperError> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                WhisperError::Model(format!(
                    "unknown Whisper backend '{s}' (known: whisper.cpp, candle)"
                ))
            })
    }

    /// Whether this binary was built with the backend (whisper.cpp needs the `whisper-cpp`
    /// feature, on by default).
    pub fn built(self) -> bool {
        match self {
            Backend::WhisperCpp => cfg!(feature = "whisper-cpp"),
            Backend::Candle => true,
        }
    }

    /// The first file this backend needs for `files` that is missing, if any.
    pub fn missing<'a>(self, files: &'a ModelFiles) -> Option<&'a Path> {
        match self {
            Backend::WhisperCpp => [&files.ggml, &files.config_json]
                .into_iter()
                .find(|p| !p.is_file())
                .map(|p| p.as_path()),
            Backend::Candle => files.missing(),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How much audio Whisper's encoder looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderWindow {
    /// The utterance plus half a second, at least 7.7 s: whisper.cpp's
    /// `audio_ctx`. Whisper pads every input to 30 s and the encoder's cost grows with the
    /// window, so a 4 s command costs about a quarter as much. On our spoken commands it
    /// hears as well or better (BENCHMARKS.md, "Voice").
    #[default]
    Fit,
    /// The whole 30 s window Whisper was trained on.
    Full,
}

impl EncoderWindow {
    pub const NAMES: [&'static str; 2] = ["fit", "full"];

    pub fn parse(s: &str) -> Result<Self, WhisperError> {
        match s {
            "fit" => Ok(Self::Fit),
            "full" => Ok(Self::Full),
            other => Err(WhisperError::Model(format!("unknown encoder window '{other}' (fit or full)"))),
        }
    }
}

/// A loaded model on one backend; clones share it.
#[derive(Clone)]
pub enum Recognizer {
    Candle(Arc<Mutex<WhisperModel>>),
    #[cfg(feature = "whisper-cpp")]
    WhisperCpp(Arc<Mutex<WhisperCpp>>),
}

impl Recognizer {
    /// Transcribes 16 kHz mono audio of any length.
    pub fn transcribe(&self, audio: &[f32]) -> Result<Transcript, WhisperError> {
        self.transcribe_with(audio, EncoderWindow::default())
    }

    /// [`Self::transcribe`] with a chosen encoder window (whisper.cpp only; candle always
    /// encodes the whole 30 s).
    pub fn transcribe_with(&self, audio: &[f32], window: EncoderWindow) -> Result<Transcript, WhisperError> {
        match self {
            Recognizer::Candle(m) => {
                let _ = window;
                m.lock().unwrap_or_else(|e| e.into_inner()).transcribe(audio)
            }
            #[cfg(feature = "whisper-cpp")]
            Recognizer::WhisperCpp(m) => m.lock().unwrap_or_else(|e| e.into_inner()).transcribe_with(audio, window),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Recognizer::Candle(_) => Backend::Candle,
            #[cfg(feature = "whisper-cpp")]
            Recognizer::WhisperCpp(_) => Backend::WhisperCpp,
        }
    }

    /// Whether the model takes a language token (base), unlike the `.en` models.
    pub fn multilingual(&self) -> bool {
        match self {
            Recognizer::Candle(m) => m.lock().unwrap_or_else(|e| e.into_inner()).multilingual(),
            #[cfg(feature = "whisper-cpp")]
            Recognizer::WhisperCpp(m) => m.lock().unwrap_or_else(|e| e.into_inner()).multilingual(),
        }
    }

    /// Seconds for log-mel + encoder of one 30 s window: the fixed cost of every call.
    pub fn encode_window(&self, audio: &[f32]) -> Result<f64, WhisperError> {
        match self {
            Recognizer::Candle(m) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                let t = Instant::now();
                m.encode(audio)?;
                Ok(t.elapsed().as_secs_f64())
            }
            #[cfg(feature = "whisper-cpp")]
            Recognizer::WhisperCpp(m) => m.lock().unwrap_or_else(|e| e.into_inner()).encode_window(audio),
        }
    }
}

/// Loaded models by backend and name, shared by every node (and kept across node restarts),
/// like Agent Studio's model cache.
fn cache() -> &'static Mutex<HashMap<(Backend, String), Recognizer>> {
    static CACHE: OnceLock<Mutex<HashMap<(Backend, String), Recognizer>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

fn setup_hint() -> &'static str {
    "run scripts/setup-speech.sh (or scripts/setup.sh)"
}

/// Loads (or reuses) model `name` on `backend`.
pub fn load(name: &str, backend: Backend) -> Result<Recognizer, WhisperError> {
    let key = (backend, name.to_string());
    if let Some(r) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(r.clone());
    }
    if !MODELS.contains(&name) {
        return Err(WhisperError::Model(format!(
            "unknown Whisper model '{name}' (known: {})",
            MODELS.join(", ")
        )));
    }
    let files = ModelFiles::locate(name);
    let t0 = Instant::now();
    // Loading happens outside the cache lock: a second model may load meanwhile.
    let r = match backend {
        Backend::Candle => {
            if let Some(p) = files.missing() {
                return Err(WhisperError::Model(format!(
                    "Whisper {name}: file {} is missing: {}",
                    p.display(),
                    setup_hint()
                )));
            }
            Recognizer::Candle(Arc::new(Mutex::new(WhisperModel::load(name, &files, &device())?)))
        }
        #[cfg(feature = "whisper-cpp")]
        Backend::WhisperCpp => Recognizer::WhisperCpp(Arc::new(Mutex::new(WhisperCpp::load(name, &files)?))),
        #[cfg(not(feature = "whisper-cpp"))]
        Backend::WhisperCpp => {
            return Err(WhisperError::Model(
                "this build has no whisper.cpp backend (vela-speech feature `whisper-cpp`); use backend candle".into(),
            ))
        }
    };
    tracing::info!("loaded Whisper {name} on {backend} in {:.1}s", t0.elapsed().as_secs_f64());
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    Ok(c.entry(key).or_insert(r).clone())
}

/// The candle model itself (tests and tools reach into its encoder and tokenizer).
pub fn load_candle(name: &str) -> Result<Arc<Mutex<WhisperModel>>, WhisperError> {
    match load(name, Backend::Candle)? {
        Recognizer::Candle(m) => Ok(m),
        #[cfg(feature = "whisper-cpp")]
        Recognizer::WhisperCpp(_) => Err(WhisperError::Model(
            "internal: the model cache returned a whisper.cpp model for candle".into(),
        )),
    }
}

/// Why `backend` cannot run the default model here, if it cannot.
pub fn unavailable_reason(backend: Backend) -> Option<String> {
    if !backend.built() {
        return Some(format!("this build has no {backend} backend"));
    }
    let files = ModelFiles::locate(MODELS[0]);
    backend.missing(&files).map(|p| {
        format!(
            "Whisper model file {} is missing: {}",
            p.display(),
            setup_hint()
        )
    })
}
