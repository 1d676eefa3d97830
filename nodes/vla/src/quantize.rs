//! `vela vla quantize`: HF safetensors → one GGUF file with the Llama weights quantized.
//!
//! Mode names follow the reference (NanoLLM / Agent Studio) so users can map them, but what
//! they are here is plain GGUF:
//! - `q4f16` ("INT4"): Llama matmul weights and embeddings as Q4_K (256-wide super-blocks,
//!   4.5 bits/weight), or Q4_0 (32-wide blocks) where a row length is not a multiple of 256.
//! - `q8f16` (the reference calls it "FP8"): Q8_0, i.e. 8-bit **integers** in blocks of 32 with
//!   one f16 scale. It is not a float8 format.
//! - Vision towers and projector are stored as F16, norms as F32 (the reference also keeps the
//!   vision encoder in half precision). Activations stay F32 on CPU.
//!
//! "FP16" in the reference corresponds to loading the safetensors shards without quantization.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};

use crate::{Result, VlaError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantization {
    Q4F16,
    Q8F16,
}

impl Quantization {
    pub fn file_name(&self) -> String {
        format!("model-{self}.gguf")
    }
    /// Parses a CLI value; `fp16`/`none` mean "no quantization".
    pub fn parse_opt(s: &str) -> Result<Option<Self>> {
        match s.to_ascii_lowercase().as_str() {
            "fp16" | "bf16" | "none" | "" => Ok(None),
            other => other.parse().map(Some),
        }
    }
    fn weight_type(&self, row_len: usize) -> GgmlDType {
        match self {
            Self::Q4F16 if row_len.is_multiple_of(256) => GgmlDType::Q4K,
            Self::Q4F16 if row_len.is_multiple_of(32) => GgmlDType::Q4_0,
            Self::Q8F16 if row_len.is_multiple_of(32) => GgmlDType::Q8_0,
            _ => GgmlDType::F16,
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Q4F16 => "q4f16",
            Self::Q8F16 => "q8f16",
        })
    }
}

impl std::str::FromStr for Quantization {
    type Err = VlaError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q4f16" | "int4" | "q4" => Ok(Self::Q4F16),
            "q8f16" | "fp8" | "int8" | "q8" => Ok(Self::Q8F16),
            _ => Err(VlaError::Config(format!("unknown quantization `{s}` (q4f16|q8f16|fp16)"))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct QuantizeReport {
    pub out_file: std::path::PathBuf,
    pub bytes: u64,
    /// Number of tensors per storage type, e.g. {"Q4K": 14, "F16": 40}.
    pub types: std::collections::BTreeMap<String, usize>,
}

/// Writes `out_dir/model-<mode>.gguf` (every checkpoint tensor under its HF name) and copies
/// the json side files, so `OpenVla::load(out_dir, quantization=Some(mode))` works.
pub fn quantize(model_dir: &Path, mode: Quantization, out_dir: &Path) -> Result<QuantizeReport> {
    std::fs::create_dir_all(out_dir).map_err(|e| VlaError::io(out_dir, e))?;
    let files = crate::weights::shard_files(model_dir)?;
    // SAFETY: read-only mapping of checkpoint files, see SafetensorsStore::open.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files)? };
    let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    let mut qts: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut types = std::collections::BTreeMap::new();
    let one = |name: &String| -> Result<(GgmlDType, QTensor)> {
        let t = st.load(name, &Device::Cpu)?.to_dtype(DType::F32)?;
        let dt = if name.starts_with("language_model.") && t.rank() == 2 {
            mode.weight_type(t.dim(1)?)
        } else if t.rank() == 1 && name.contains("norm") {
            GgmlDType::F32
        } else {
            GgmlDType::F16
        };
        Ok((dt, QTensor::quantize(&t, dt)?))
    };
    // Quantizing a 7B model tensor by tensor on one core takes minutes; one tensor per core.
    for window in names.chunks(crate::checkpoint::par_width()) {
        for (name, r) in window.iter().zip(crate::checkpoint::par_map(window, one)) {
            let (dt, q) = r?;
            *types.entry(format!("{dt:?}")).or_insert(0) += 1;
            qts.push((name.clone(), q));
        }
    }
    let out_file = out_dir.join(mode.file_name());
    let arch = gguf_file::Value::String("openvla".into());
    let qmode = gguf_file::Value::String(mode.to_string());
    let meta = [("general.architecture", &arch), ("vela.quantization", &qmode)];
    let refs: Vec<(&str, &QTensor)> = qts.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut f = std::fs::File::create(&out_file).map_err(|e| VlaError::io(&out_file, e))?;
    gguf_file::write(&mut f, &meta, &refs)?;
    drop(f);
    for side in ["config.json", "tokenizer.json", "dataset_statistics.json", "generation_config.json", "preprocessor_config.json"] {
        let src = model_dir.join(side);
        if src.exists() && model_dir != out_dir {
            std::fs::copy(&src, out_dir.join(side)).map_err(|e| VlaError::io(&src, e))?;
        }
    }
    let bytes = std::fs::metadata(&out_file).map_err(|e| VlaError::io(&out_file, e))?.len();
    tracing::info!(file = %out_file.display(), bytes, ?types, "quantized");
    Ok(QuantizeReport { out_file, bytes, types })
}
