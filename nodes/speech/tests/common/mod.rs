//! Shared helpers: speech made on the spot with espeak-ng, and the model check.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vela_speech::recognizer::Backend;
use vela_speech::whisper::ModelFiles;

/// The installed tiny.en files, or None (with a loud message) when setup-speech.sh has
/// not run. Set VELA_REQUIRE_MODELS=1 to make their absence a failure instead.
pub fn model_files() -> Option<ModelFiles> {
    model_files_for("tiny.en")
}

/// [`model_files`] for another model (`base`).
pub fn model_files_for(name: &str) -> Option<ModelFiles> {
    model_files_on(name, Backend::Candle)
}

/// The files `backend` needs for model `name` (for whisper.cpp, the converted ggml file
/// too), or None with the same loud message.
pub fn model_files_on(name: &str, backend: Backend) -> Option<ModelFiles> {
    let files = ModelFiles::locate(name);
    match files.missing().or_else(|| backend.missing(&files)) {
        None => Some(files),
        Some(p) => {
            let msg = format!(
                "\n\n!!!!!!!! SKIPPING: Whisper file {} is missing. Run scripts/setup-speech.sh !!!!!!!!\n",
                p.display()
            );
            if std::env::var_os("VELA_REQUIRE_MODELS").is_some() {
                panic!("{msg}");
            }
            eprintln!("{msg}");
            None
        }
    }
}

/// Speaks `text` into a WAV file in `dir` (22050 Hz mono from espeak-ng). A slower
/// rate with 100 ms gaps between words makes the robotic voice much easier for tiny.en
/// (with 50 ms gaps it hears "red lock" for "red block" whenever an utterance starts
/// with ~0.15 s of silence; CTranslate2 does the same on the same input).
pub fn speak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-s", "130", "-g", "10", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect(
            "espeak-ng is not installed: run scripts/setup-speech.sh (apt-get install espeak-ng)",
        );
    assert!(status.success(), "espeak-ng failed");
    path
}

/// A fresh temporary directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-speech-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `secs` of silence at `rate`.
pub fn silence(rate: u32, secs: f64) -> Vec<f32> {
    vec![0.0; (rate as f64 * secs) as usize]
}
