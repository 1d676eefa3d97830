//! Whisper speech recognition on candle, with weights read from a CTranslate2 file.
//!
//! The CT2 tensors are renamed (and the fused projections split) into the layout
//! candle-transformers' Whisper model loads, then decoded greedily without timestamps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{self as cw, model::Whisper};

use crate::ct2::{Ct2Error, Ct2Model};
use crate::mel::{MelError, MelFrontEnd, N_FRAMES, N_MELS, N_SAMPLES, SAMPLE_RATE};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error(transparent)]
    Ct2(#[from] Ct2Error),
    #[error(transparent)]
    Mel(#[from] MelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Model(String),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
}

/// Where the files of one model live.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub model_bin: PathBuf,
    pub config_json: PathBuf,
    pub tokenizer_json: PathBuf,
    pub mel_filters: PathBuf,
    /// The whisper.cpp file converted from `model_bin` by setup (`vela-speech-convert`).
    pub ggml: PathBuf,
}

/// The directory setup-speech.sh fills: `$VELA_WHISPER_DIR`, else `${VELA_CACHE:-$HOME/.cache/vela}/whisper`.
pub fn asset_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VELA_WHISPER_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("VELA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/vela")
        });
    cache.join("whisper")
}

/// Model names this build knows: English-only tiny.en (the default: small and fast) and the
/// multilingual base, which hears espeak's robotic voice better at about a third of the speed.
pub const MODELS: &[&str] = &["tiny.en", "base"];

impl ModelFiles {
    pub fn locate(model: &str) -> Self {
        let dir = asset_dir();
        let m = dir.join(model);
        ModelFiles {
            model_bin: m.join("model.bin"),
            config_json: m.join("config.json"),
            tokenizer_json: m.join("tokenizer.json"),
            mel_filters: dir.join("mel_80.f32"),
            ggml: m.join(vela_speech_convert::ggml::FILE_NAME),
        }
    }

    /// The first file the candle backend needs that is missing, if any.
    pub fn missing(&self) -> Option<&Path> {
        [
            &self.model_bin,
            &self.config_json,
            &self.tokenizer_json,
            &self.mel_filters,
        ]
        .into_iter()
        .find(|p| !p.is_file())
        .map(|p| p.as_path())
    }
}

/// Maps CT2 Whisper tensors to the names candle-transformers expects.
fn convert_weights(
    ct2: &Ct2Model,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, cw::Config), WhisperError> {
    let t = |name: &str| -> Result<Tensor, WhisperError> {
        let v = ct2.get(name)?;
        Ok(Tensor::from_vec(v.to_f32(), v.shape.clone(), device)?)
    };
    let count_layers = |prefix: &str| {
        (0..)
            .take_while(|i| {
                ct2.variables
                    .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    };
    let emb = ct2.get("decoder/embeddings/weight")?;
    let (vocab, d) = (emb.shape[0], emb.shape[1]);
    let enc_pos = ct2.get("encoder/position_encodings/encodings")?.shape[0];
    let dec_pos = ct2.get("decoder/position_encodings/encodings")?.shape[0];
    let n_mels = ct2.get("encoder/conv1/weight")?.shape[1];
    let config = cw::Config {
        num_mel_bins: n_mels,
        max_source_positions: enc_pos,
        d_model: d,
        encoder_attention_heads: ct2.scalar("encoder/num_heads")? as usize,
        encoder_layers: count_layers("encoder"),
        vocab_size: vocab,
        max_target_positions: dec_pos,
        decoder_attention_heads: ct2.scalar("decoder/num_heads")? as usize,
        decoder_layers: count_layers("decoder"),
        suppress_tokens: vec![],
    };
    if n_mels != N_MELS {
        return Err(WhisperError::Model(format!(
            "model expects {n_mels} mel bands; only {N_MELS} are supported"
        )));
    }
    let mut w = HashMap::new();
    let ln = |w: &mut HashMap<String, Tensor>, to: &str, from: &str| -> Result<(), WhisperError> {
        w.insert(format!("{to}.weight"), t(&format!("{from}/gamma"))?);
        w.insert(format!("{to}.bias"), t(&format!("{from}/beta"))?);
        Ok(())
    };
    let lin = |w: &mut HashMap<String, Tensor>, to: &str, from: &str| -> Result<(), WhisperError> {
        w.insert(format!("{to}.weight"), t(&format!("{from}/weight"))?);
        w.insert(format!("{to}.bias"), t(&format!("{from}/bias"))?);
        Ok(())
    };
    // Fused projections: rows are [q; k; v] (self) or [k; v] (cross). K has no bias in Whisper.
    let split = |w: &mut HashMap<String, Tensor>,
                 to: &str,
                 from: &str,
                 names: &[&str]|
     -> Result<(), WhisperError> {
        let weight = t(&format!("{from}/weight"))?;
        let bias = t(&format!("{from}/bias"))?;
        for (i, n) in names.iter().enumerate() {
            w.insert(
                format!("{to}.{n}.weight"),
                weight.narrow(0, i * d, d)?.contiguous()?,
            );
            if *n != "k_proj" {
                w.insert(
                    format!("{to}.{n}.bias"),
                    bias.narrow(0, i * d, d)?.contiguous()?,
                );
            }
        }
        Ok(())
    };
    for side in ["encoder", "decoder"] {
        let hf = format!("model.{side}");
        let layers = if side == "encoder" {
            config.encoder_layers
        } else {
            config.decoder_layers
        };
        for i in 0..layers {
            let (to, from) = (format!("{hf}.layers.{i}"), format!("{side}/layer_{i}"));
            split(
                &mut w,
                &format!("{to}.self_attn"),
                &format!("{from}/self_attention/linear_0"),
                &["q_proj", "k_proj", "v_proj"],
            )?;
            lin(
                &mut w,
                &format!("{to}.self_attn.out_proj"),
                &format!("{from}/self_attention/linear_1"),
            )?;
            ln(
                &mut w,
                &format!("{to}.self_attn_layer_norm"),
                &format!("{from}/self_attention/layer_norm"),
            )?;
            if side == "decoder" {
                lin(
                    &mut w,
                    &format!("{to}.encoder_attn.q_proj"),
                    &format!("{from}/attention/linear_0"),
                )?;
                let kv_from = format!("{from}/attention/linear_1");
                let kv_w = t(&format!("{kv_from}/weight"))?;
                let kv_b = t(&format!("{kv_from}/bias"))?;
                w.insert(
                    format!("{to}.encoder_attn.k_proj.weight"),
                    kv_w.narrow(0, 0, d)?.contiguous()?,
                );
                w.insert(
                    format!("{to}.encoder_attn.v_proj.weight"),
                    kv_w.narrow(0, d, d)?.contiguous()?,
                );
                w.insert(
                    format!("{to}.encoder_attn.v_proj.bias"),
                    kv_b.narrow(0, d, d)?.contiguous()?,
                );
                lin(
                    &mut w,
                    &format!("{to}.encoder_attn.out_proj"),
                    &format!("{from}/attention/linear_2"),
                )?;
                ln(
                    &mut w,
                    &format!("{to}.encoder_attn_layer_norm"),
                    &format!("{from}/attention/layer_norm"),
                )?;
            }
            lin(
                &mut w,
                &format!("{to}.fc1"),
                &format!("{from}/ffn/linear_0"),
            )?;
            lin(
                &mut w,
                &format!("{to}.fc2"),
                &format!("{from}/ffn/linear_1"),
            )?;
            ln(
                &mut w,
                &format!("{to}.final_layer_norm"),
                &format!("{from}/ffn/layer_norm"),
            )?;
        }
        ln(
            &mut w,
            &format!("{hf}.layer_norm"),
            &format!("{side}/layer_norm"),
        )?;
    }
    lin(&mut w, "model.encoder.conv1", "encoder/conv1")?;
    lin(&mut w, "model.encoder.conv2", "encoder/conv2")?;
    w.insert(
        "model.decoder.embed_tokens.weight".into(),
        t("decoder/embeddings/weight")?,
    );
    w.insert(
        "model.decoder.embed_positions.weight".into(),
        t("decoder/position_encodings/encodings")?,
    );
    Ok((w, config))
}

/// Tokens the CT2 `config.json` says a transcript never holds (`suppress_ids`: symbols and
/// the like) and those never first (`suppress_ids_begin`: a blank, end of text). Both backends
/// suppress the same ones, so they decode alike.
pub fn read_suppress_ids(config_json: &Path) -> Result<(Vec<u32>, Vec<u32>), WhisperError> {
    let read_err = |message: String| WhisperError::Read {
        path: config_json.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(config_json).map_err(|e| read_err(e.to_string()))?;
    let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
    let ids = |key: &str| -> Vec<u32> {
        cfg.get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect())
            .unwrap_or_default()
    };
    Ok((ids("suppress_ids"), ids("suppress_ids_begin")))
}

/// The result of one transcription.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Seconds of audio transcribed.
    pub audio_s: f64,
    /// Seconds of compute it took.
    pub compute_s: f64,
}

impl Transcript {
    /// Real-time factor: audio seconds per compute second.
    pub fn rtfx(&self) -> f64 {
        if self.compute_s > 0.0 {
            self.audio_s / self.compute_s
        } else {
            0.0
        }
    }
}

pub struct WhisperModel {
    model: Whisper,
    mel: MelFrontEnd,
    tokenizer: Tokenizer,
    device: Device,
    /// The decoder's prompt: start of transcript, then for a multilingual model the language
    /// (English) and the task (transcribe), then "no timestamps".
    prompt: Vec<u32>,
    eot: u32,
    /// Logit mask added at every step (−∞ on suppressed tokens).
    suppress: Tensor,
    /// Extra mask for the first sampled token.
    suppress_begin: Tensor,
    pub name: String,
}

impl WhisperModel {
    pub fn load(name: &str, files: &ModelFiles, device: &Device) -> Result<Self, WhisperError> {
        let ct2 = Ct2Model::load(&files.model_bin)?;
        if ct2.spec != "WhisperSpec" {
            return Err(WhisperError::Model(format!(
                "{} holds a {}, not a Whisper model",
                files.model_bin.display(),
                ct2.spec
            )));
        }
        let (weights, config) = convert_weights(&ct2, device)?;
        drop(ct2);
        let vb = VarBuilder::from_tensors(weights, DType::F32, device);
        let model = Whisper::load(&vb, config.clone())?;
        let mel = MelFrontEnd::load(&files.mel_filters)?;
        let tokenizer = Tokenizer::load(&files.tokenizer_json)?;
        let special = |t: &str| {
            tokenizer
                .special(t)
                .ok_or_else(|| WhisperError::Model(format!("tokenizer has no {t}")))
        };
        let sot = special(cw::SOT_TOKEN)?;
        let eot = special(cw::EOT_TOKEN)?;
        let no_timestamps = special(cw::NO_TIMESTAMPS_TOKEN)?;
        // A multilingual model left without a language token guesses the language (and may
        // translate) from the first words. The `.en` tokenizers list the language tokens too,
        // so the vocabulary size tells the two apart, as in OpenAI's code (51865 and up).
        let mut prompt = vec![sot];
        if config.vocab_size >= 51865 {
            prompt.extend([special("<|en|>")?, special(cw::TRANSCRIBE_TOKEN)?]);
        }
        prompt.push(no_timestamps);
        let (suppress_ids, suppress_begin_ids) = read_suppress_ids(&files.config_json)?;
        let vocab = config.vocab_size;
        let mut mask = vec![0f32; vocab];
        for id in suppress_ids {
            if (id as usize) < vocab {
                mask[id as usize] = f32::NEG_INFINITY;
            }
        }
        // Without timestamps, nothing special may be produced except the end of text.
        for (id, m) in mask.iter_mut().enumerate() {
            if id as u32 != eot && tokenizer.is_special(id as u32) {
                *m = f32::NEG_INFINITY;
            }
        }
        let mut begin = vec![0f32; vocab];
        for id in suppress_begin_ids {
            if (id as usize) < vocab {
                begin[id as usize] = f32::NEG_INFINITY;
            }
        }
        Ok(WhisperModel {
            model,
            mel,
            tokenizer,
            device: device.clone(),
            prompt,
            eot,
            suppress: Tensor::from_vec(mask, vocab, device)?,
            suppress_begin: Tensor::from_vec(begin, vocab, device)?,
            name: name.to_string(),
        })
    }

    pub fn mel(&self) -> &MelFrontEnd {
        &self.mel
    }

    /// Encoder output for up to 30 s of audio: (1, 1500, d).
    pub fn encode(&mut self, audio: &[f32]) -> Result<Tensor, WhisperError> {
        let mel = self.mel.log_mel(audio);
        let mel = Tensor::from_vec(mel, (1, N_MELS, N_FRAMES), &self.device)?;
        Ok(self.model.encoder.forward(&mel, true)?)
    }

    /// Greedy decoding of one 30 s window's encoder output.
    pub fn decode(
        &mut self,
        features: &Tensor,
        max_tokens: usize,
    ) -> Result<Vec<u32>, WhisperError> {
        let mut tokens = self.prompt.clone();
        let prompt = tokens.len();
        let limit = max_tokens.min(self.model.config.max_target_positions / 2);
        for step in 0..limit {
            let input = Tensor::new(tokens.as_slice(), &self.device)?.unsqueeze(0)?;
            let hidden = self.model.decoder.forward(&input, features, step == 0)?;
            let len = hidden.dim(1)?;
            let logits = self
                .model
                .decoder
                .final_linear(&hidden.i((..1, len - 1..))?)?
                .i(0)?
                .i(0)?;
            let mut logits = logits.broadcast_add(&self.suppress)?;
            if step == 0 {
                logits = logits.broadcast_add(&self.suppress_begin)?;
            }
            let next = logits.argmax(D::Minus1)?.to_scalar::<u32>()?;
            if next == self.eot {
                break;
            }
            tokens.push(next);
        }
        Ok(tokens[prompt..].to_vec())
    }

    /// Transcribes 16 kHz mono audio of any length, 30 s at a time.
    pub fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript, WhisperError> {
        let t0 = Instant::now();
        let mut tokens = Vec::new();
        let mut text = String::new();
        for window in audio.chunks(N_SAMPLES) {
            // Speech runs at a few tokens per second; a cap stops greedy loops on noise.
            let secs = window.len() as f64 / SAMPLE_RATE as f64;
            let max_tokens = (secs * 10.0) as usize + 16;
            let features = self.encode(window)?;
            let ids = self.decode(&features, max_tokens)?;
            text.push_str(&self.tokenizer.decode(&ids));
            tokens.extend(ids);
        }
        Ok(Transcript {
            text: text.trim().to_string(),
            tokens,
            audio_s: audio.len() as f64 / SAMPLE_RATE as f64,
            compute_s: t0.elapsed().as_secs_f64(),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Whether the model takes a language token (base, tiny, ...), unlike the `.en` models.
    pub fn multilingual(&self) -> bool {
        self.prompt.len() > 2
    }
}
