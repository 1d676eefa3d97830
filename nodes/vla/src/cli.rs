//! Plain functions behind `vela vla make-checkpoint | predict | quantize | eval`, so the CLI crate only
//! parses arguments and prints.

use std::fmt::Write as _;
use std::path::Path;

use crate::checkpoint::CheckpointSummary;
use crate::quantize::QuantizeReport;
use crate::{LoadOptions, OpenVla, OpenVlaConfig, Preset, Quantization, Result};

/// `vela vla make-checkpoint --config tiny|tiny-single|small|small-112|small-168|small-tied|7b-shape --out DIR [--seed N]`.
pub fn make_checkpoint(preset: &str, out: &Path, seed: u64) -> Result<CheckpointSummary> {
    let p: Preset = preset.parse()?;
    crate::make_checkpoint(&OpenVlaConfig::preset(p), out, seed)
}

/// `vela vla quantize --model DIR --quantization q4f16|q8f16 --out DIR`.
pub fn quantize(model: &Path, quantization: &str, out: &Path) -> Result<QuantizeReport> {
    let q: Quantization = quantization.parse()?;
    crate::quantize(model, q, out)
}

/// Loads a checkpoint folder on the CPU: `quantization` fp16 (or none) reads the safetensors
/// shards, q8f16/q4f16 the GGUF file `vela vla quantize` wrote; `progress(loaded, total)` runs
/// after each tensor.
pub fn load(model: &Path, quantization: Option<&str>, progress: impl Fn(usize, usize) + Send + Sync + 'static) -> Result<OpenVla> {
    load_on(model, quantization, "cpu", progress)
}

/// [`load`] on `device` (`cpu`, `cuda`, `cuda:N`) in that device's default dtype.
pub fn load_on(model: &Path, quantization: Option<&str>, device: &str, progress: impl Fn(usize, usize) + Send + Sync + 'static) -> Result<OpenVla> {
    let q = match quantization {
        Some(s) => Quantization::parse_opt(s)?,
        None => None,
    };
    let device = crate::device::parse_device(device)?;
    let dtype = crate::device::default_dtype(&device);
    OpenVla::load_with_progress(model, &LoadOptions { quantization: q, device, dtype }, progress)
}

/// `vela vla predict --model DIR [--quantization q4f16|q8f16|fp16] --image FILE
/// --instruction TEXT [--action-space KEY] [--verbose]`: returns the text to print
/// (the action vector; with `verbose` also tokens, prompt ids and timings).
pub fn predict(
    model: &Path,
    quantization: Option<&str>,
    image: &Path,
    instruction: &str,
    action_space: Option<&str>,
    verbose: bool,
) -> Result<String> {
    let m = load(model, quantization, |_, _| {})?;
    let space = match action_space {
        Some(s) => s.to_string(),
        None => m.config.norm_stats.keys().next().cloned().unwrap_or_else(|| crate::model::NORMALIZED.to_string()),
    };
    let img = OpenVla::read_image(image)?;
    let p = m.predict_action_stream(&img, instruction, &space, |_| {})?;
    let mut s = String::new();
    let fmt = |v: &[f32]| v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(s, "[{}]", fmt(&p.action));
    if verbose {
        let _ = writeln!(s, "action_space: {space}  weights: {}  tokenizer: {}", m.weights_kind, m.tokenizer_name());
        let _ = writeln!(s, "tokens: {:?}", p.tokens);
        let _ = writeln!(s, "normalized: [{}]", fmt(&p.normalized));
        let _ = writeln!(s, "prompt_ids: {:?}", p.prompt_ids);
        let _ = writeln!(s, "time: vision {:.1} ms, prefill {:.1} ms, decode {:.1} ms", p.vision_ms, p.prefill_ms, p.decode_ms);
    }
    Ok(s)
}

/// `vela vla bench --model DIR --quantization q4f16|q8f16|fp16 --device cpu|cuda --iters N
/// [--dtype f32|bf16|f16] [--dump FILE] [--eager]`: times predictions and, with `dump`, writes the fixed
/// input set's intermediate values for benchmarks/openvla_torch.py to compare against.
#[allow(clippy::too_many_arguments)] // one per CLI flag
pub fn bench(
    model: &Path,
    quantization: &str,
    device: &str,
    dtype: Option<&str>,
    iters: usize,
    warmup: usize,
    dump: Option<&Path>,
    eager: bool,
) -> Result<crate::bench::BenchReport> {
    let device = crate::device::parse_device(device)?;
    let dtype = match dtype {
        Some(d) => crate::device::parse_dtype(d)?,
        None => crate::device::default_dtype(&device),
    };
    let quantization = Quantization::parse_opt(quantization)?;
    let opts = crate::bench::BenchOptions { quantization, device, dtype, iters, warmup, dump: dump.map(Path::to_path_buf), replay: !eager };
    crate::bench::run(model, &opts)
}
