//! The whisper.cpp backend on the real models: our converter's ggml file, written here from
//! the installed CTranslate2 model, loads in whisper.cpp (through whisper-rs) and hears
//! espeak-ng's commands; broken inputs and outputs give errors that say what to do.
#![cfg(feature = "whisper-cpp")]

mod common;

use std::path::{Path, PathBuf};

use vela_speech::ggml::{self, Sources};
use vela_speech::recognizer::Backend;
use vela_speech::resample::resample;
use vela_speech::wav::read_wav;
use vela_speech::whisper::ModelFiles;
use vela_speech::whisper_cpp::WhisperCpp;

fn sources(files: &ModelFiles) -> Sources {
    Sources {
        model_bin: files.model_bin.clone(),
        tokenizer_json: files.tokenizer_json.clone(),
        mel_filters: files.mel_filters.clone(),
    }
}

/// Converts `model` into a fresh file under `dir` and checks its structure.
fn convert(model: &str, dir: &Path) -> Option<PathBuf> {
    let files = common::model_files_for(model)?;
    let out = dir.join(format!("{model}.ggml"));
    let s = ggml::convert(&sources(&files), &out).unwrap();
    let back = ggml::inspect(&out).unwrap();
    assert_eq!(s.hparams, back.hparams);
    assert_eq!(s.tensors, back.tensors);
    assert_eq!(s.bytes, std::fs::metadata(&out).unwrap().len());
    Some(out)
}

/// espeak-ng speech at 16 kHz; `slow` is the slowed voice the other tests use (tiny.en
/// needs it), otherwise espeak's default rate.
fn speech(dir: &Path, name: &str, text: &str, slow: bool) -> Vec<f32> {
    let path = if slow {
        common::speak(dir, name, text)
    } else {
        let p = dir.join(format!("{name}.wav"));
        let ok = std::process::Command::new("espeak-ng").arg("-w").arg(&p).arg(text).status().unwrap().success();
        assert!(ok, "espeak-ng failed");
        p
    };
    let wav = read_wav(&path).unwrap();
    resample(&wav.samples, wav.sample_rate, 16000)
}

/// Loads a converted file with the installed model's `config.json`.
fn load(model: &str, ggml: &Path) -> Result<WhisperCpp, vela_speech::whisper::WhisperError> {
    WhisperCpp::load(model, &ModelFiles { ggml: ggml.to_path_buf(), ..ModelFiles::locate(model) })
}

fn check_words(m: &mut WhisperCpp, audio: &[f32], said: &str, words: &[&str]) {
    let t = m.transcribe(audio).unwrap();
    eprintln!("{}: {said:?} -> {:?} (RTFX {:.2}, tokens {:?})", m.name, t.text, t.rtfx(), t.tokens);
    let lower = t.text.to_lowercase();
    for w in words {
        assert!(lower.contains(w), "{w:?} missing from {:?} (said: {said:?})", t.text);
    }
}

#[test]
fn converted_tiny_en_runs_in_whisper_cpp() {
    let dir = common::temp_dir("cpp-tiny");
    let Some(path) = convert("tiny.en", &dir) else {
        return;
    };
    let mut m = load("tiny.en", &path).unwrap();
    assert!(!m.multilingual());
    for (i, (text, words)) in [
        ("put the red block on the green block", &["red", "green", "block"][..]),
        ("pick up the blue cup and place it on the plate", &["blue", "cup", "plate"][..]),
        ("stack the yellow block on the purple one", &["yellow", "purple"][..]),
    ]
    .iter()
    .enumerate()
    {
        let audio = speech(&dir, &format!("c{i}"), text, true);
        check_words(&mut m, &audio, text, words);
    }
    // Silence and a 50 ms blip must not fail (whisper.cpp skips input under 100 ms).
    let t = m.transcribe(&vec![0.0; 800]).unwrap();
    eprintln!("50 ms of silence -> {:?}", t.text);
    let _ = m.transcribe(&vec![0.0; 16000 * 2]).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// The fitted encoder window (the default) and Whisper's whole 30 s window hear the same
/// commands, a one-word command included (too short a window made tiny.en repeat it until
/// its token cap), and one state switches between them.
#[test]
fn fitted_and_full_encoder_windows_hear_the_same_commands() {
    use vela_speech::recognizer::EncoderWindow;
    let dir = common::temp_dir("cpp-window");
    let Some(path) = convert("tiny.en", &dir) else {
        return;
    };
    let mut m = load("tiny.en", &path).unwrap();
    for (i, (text, words)) in [
        ("put the purple block on the yellow block", &["purple", "yellow", "block"][..]),
        ("stop", &["stop"][..]),
        ("move the arm to the left, then open the gripper and put the green block on top of the red block", &["left", "green", "red"][..]),
    ]
    .iter()
    .enumerate()
    {
        let audio = speech(&dir, &format!("w{i}"), text, true);
        for window in [EncoderWindow::Fit, EncoderWindow::Full, EncoderWindow::Fit] {
            let t = m.transcribe_with(&audio, window).unwrap();
            eprintln!("{window:?}: {text:?} -> {:?} ({:.2} s)", t.text, t.compute_s);
            let lower = t.text.to_lowercase();
            for w in words.iter() {
                assert!(lower.contains(w), "{window:?}: {w:?} missing from {:?} (said: {text:?})", t.text);
            }
            assert!(lower.matches("stop").count() <= 1, "{window:?}: {:?}", t.text);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn converted_base_runs_in_whisper_cpp() {
    let dir = common::temp_dir("cpp-base");
    let Some(path) = convert("base", &dir) else {
        return;
    };
    let mut m = load("base", &path).unwrap();
    assert!(m.multilingual(), "base is multilingual: whisper.cpp must prompt it with <|en|>");
    // espeak's default rate, as the candle test of base uses.
    for (i, (text, words)) in [
        ("put the red block on the green block", &["red", "green"][..]),
        ("stack the yellow block on the purple one", &["yellow", "purple"][..]),
        ("put the small block on top of the big block", &["small", "top", "big", "block"][..]),
    ]
    .iter()
    .enumerate()
    {
        let audio = speech(&dir, &format!("c{i}"), text, false);
        check_words(&mut m, &audio, text, words);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The file setup installed is the one this converter writes (setup pins its sha256, so a
/// converter change that alters the output shows here first).
#[test]
fn installed_ggml_files_match_the_converter() {
    for model in ["tiny.en", "base"] {
        let Some(files) = common::model_files_on(model, Backend::WhisperCpp) else {
            continue;
        };
        let dir = common::temp_dir(&format!("cpp-same-{model}"));
        let fresh = convert(model, &dir).unwrap();
        let a = std::fs::read(&fresh).unwrap();
        let b = std::fs::read(&files.ggml).unwrap();
        assert!(a == b, "{} differs from a fresh conversion: rerun scripts/setup-speech.sh", files.ggml.display());
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn converter_rejects_truncated_and_corrupt_ct2_files() {
    let Some(files) = common::model_files() else {
        return;
    };
    let dir = common::temp_dir("cpp-bad-ct2");
    let real = std::fs::read(&files.model_bin).unwrap();
    let bad = dir.join("model.bin");
    let out = dir.join("out.ggml");
    let src = Sources { model_bin: bad.clone(), ..sources(&files) };

    // Cut in the middle of the weights (a half-finished download or join).
    std::fs::write(&bad, &real[..real.len() / 2]).unwrap();
    let e = ggml::convert(&src, &out).unwrap_err().to_string();
    assert!(e.contains(&bad.display().to_string()) && e.contains("truncated"), "{e}");
    assert!(!out.exists(), "a failed conversion must leave no output");

    // Cut inside the header.
    std::fs::write(&bad, &real[..10]).unwrap();
    let e = ggml::convert(&src, &out).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");

    // Not a CT2 file at all.
    std::fs::write(&bad, b"this is not a model").unwrap();
    let e = ggml::convert(&src, &out).unwrap_err().to_string();
    assert!(e.contains(&bad.display().to_string()) && e.contains("version"), "{e}");

    // A variable's byte count that does not match its shape.
    let mut corrupt = real.clone();
    let name = b"encoder/conv1/weight\0";
    let at = corrupt.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    // rank 3, three u32 dims, dtype, then the u32 byte count.
    let count = at + 1 + 12 + 1;
    corrupt[count..count + 4].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&bad, &corrupt).unwrap();
    let e = ggml::convert(&src, &out).unwrap_err().to_string();
    assert!(e.contains("encoder/conv1/weight"), "{e}");

    // Empty file.
    std::fs::write(&bad, b"").unwrap();
    assert!(ggml::convert(&src, &out).is_err());

    // Missing file.
    let gone = Sources { model_bin: dir.join("absent.bin"), ..sources(&files) };
    let e = ggml::convert(&gone, &out).unwrap_err().to_string();
    assert!(e.contains("absent.bin"), "{e}");

    // Mel filters of the wrong size.
    let mel = dir.join("mel.f32");
    std::fs::write(&mel, vec![0u8; 1000]).unwrap();
    let e = ggml::convert(&Sources { mel_filters: mel, ..sources(&files) }, &out).unwrap_err().to_string();
    assert!(e.contains("mel.f32") && e.contains("bytes"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_or_broken_ggml_file_gets_a_clear_error() {
    let dir = common::temp_dir("cpp-bad-ggml");
    let Some(good) = convert("tiny.en", &dir) else {
        return;
    };
    let setup = "setup-speech.sh";
    let missing = dir.join("nothing-here.bin");
    let e = load("tiny.en", &missing).err().unwrap().to_string();
    assert!(e.contains("nothing-here.bin") && e.contains(setup), "{e}");

    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.join("cut.bin");
    for cut in [bytes.len() - 1, bytes.len() / 2, 60, 3] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let e = load("tiny.en", &bad).err().unwrap().to_string();
        assert!(e.contains("cut.bin") && e.contains(setup), "cut at {cut}: {e}");
        assert!(e.contains("truncated") || e.contains("missing"), "cut at {cut}: {e}");
    }
    // Garbage in place of a tensor header.
    let mut corrupt = bytes.clone();
    let name = b"encoder.conv1.bias";
    let at = corrupt.windows(name.len()).position(|w| w == name).unwrap();
    corrupt[at - 20..at].fill(0xff);
    std::fs::write(&bad, &corrupt).unwrap();
    let e = load("tiny.en", &bad).err().unwrap().to_string();
    assert!(e.contains("cut.bin") && e.contains(setup), "{e}");
    // Another file type altogether.
    std::fs::write(&bad, b"RIFF....WAVEfmt ").unwrap();
    let e = load("tiny.en", &bad).err().unwrap().to_string();
    assert!(e.contains("not a whisper.cpp model"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
