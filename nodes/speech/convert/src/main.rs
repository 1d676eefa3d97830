//! `vela-speech-convert`: writes whisper.cpp's model file from an installed CTranslate2
//! Whisper model. scripts/setup-speech.sh runs it for tiny.en and base.
//!
//!     vela-speech-convert MODEL_DIR MEL_FILTERS [OUT]
//!     vela-speech-convert --check FILE
//!
//! MODEL_DIR holds `model.bin` and `tokenizer.json`; OUT defaults to MODEL_DIR/ggml-f16.bin.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use vela_speech_convert::ggml::{self, Sources};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: vela-speech-convert MODEL_DIR MEL_FILTERS [OUT] | --check FILE";
    match args.as_slice() {
        [flag, file] if flag == "--check" => {
            let s = ggml::inspect(file.as_ref()).context("checking the converted model")?;
            println!(
                "{file}: whisper.cpp model, {} tensors, {} tokens, {:?}",
                s.tensors.len(),
                s.tokens,
                s.hparams
            );
        }
        [dir, mel] | [dir, mel, _] if !dir.starts_with('-') => {
            let dir = PathBuf::from(dir);
            let out = args
                .get(2)
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join(ggml::FILE_NAME));
            let src = Sources {
                model_bin: dir.join("model.bin"),
                tokenizer_json: dir.join("tokenizer.json"),
                mel_filters: PathBuf::from(mel),
            };
            let t0 = std::time::Instant::now();
            let s = ggml::convert(&src, &out)
                .with_context(|| format!("converting {} to {}", src.model_bin.display(), out.display()))?;
            // Read back what was written: a converter bug shows here, not in whisper.cpp.
            ggml::inspect(&out).context("checking the converted model")?;
            println!(
                "{}: {} tensors, {} tokens, {:.1} MB in {:.1} s",
                out.display(),
                s.tensors.len(),
                s.tokens,
                s.bytes as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            );
        }
        _ => bail!("{usage}"),
    }
    Ok(())
}
