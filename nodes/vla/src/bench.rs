//! `vela vla bench`: where the time of one `predict_action` goes, and how far that is from what
//! the card could do at best.
//!
//! The floor is measured, not taken from a datasheet: the same command times a large
//! device-to-device copy (bytes read + written per second) and a large matmul in the compute
//! dtype, then charges the 7 decode passes with the weight bytes each must stream and the
//! prompt-side work (vision towers, projector, LLM prefill) with its FLOPs.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Serialize;

use crate::config::{OpenVlaConfig, VitConfig};
use crate::device::{device_name, memory_in_use};
use crate::model::{LoadOptions, OpenVla, StageTimes};
use crate::quantize::Quantization;
use crate::rng::SplitMix64;
use crate::vision::Projector;
use crate::{Result, VlaError};

/// OpenVLA always decodes one token per action dimension.
pub const ACTION_TOKENS: usize = 7;

/// Instructions of the fixed input set (paired with [`bench_image`]`(i)`).
pub const INSTRUCTIONS: [&str; 4] = [
    "put the red block on the green block",
    "pick up the cube",
    "stack the blocks",
    "move the gripper to the left of the bowl",
];

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub quantization: Option<Quantization>,
    pub device: Device,
    pub dtype: DType,
    pub iters: usize,
    pub warmup: usize,
    /// Also write the fixed input set's intermediate values here ([`dump_reference`]).
    pub dump: Option<std::path::PathBuf>,
    /// Replay recorded CUDA graphs (model/replay.rs) where the device has them.
    pub replay: bool,
}

/// Median, 95th percentile, mean and minimum of a set of timings (ms).
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    pub p50: f64,
    pub p95: f64,
    pub mean: f64,
    pub min: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Self {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| if s.is_empty() { f64::NAN } else { s[((s.len() - 1) as f64 * p).round() as usize] };
        let mean = if s.is_empty() { f64::NAN } else { s.iter().sum::<f64>() / s.len() as f64 };
        Self { p50: q(0.5), p95: q(0.95), mean, min: q(0.0), n: s.len() }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Ceilings {
    /// Device-to-device copy (the copy engine on CUDA, a tensor copy on CPU),
    /// (read + written bytes) / s.
    pub copy_gb_s: f64,
    pub copy_bytes: u64,
    /// Square matmul in the compute dtype.
    pub matmul_tflop_s: f64,
    pub matmul_n: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    /// Weight bytes one decode pass streams (LLM matrices, norms, lm_head; stored form).
    pub decode_bytes_per_token: u64,
    pub vision_flops: f64,
    pub projector_flops: f64,
    pub prefill_flops: f64,
    /// 7 × bytes / copy bandwidth.
    pub decode_ms: f64,
    /// (vision + projector + prefill FLOPs) / matmul rate.
    pub prompt_ms: f64,
    pub total_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuMemory {
    pub total_bytes: u64,
    pub before_load_bytes: u64,
    /// Device memory in use right after loading, minus what was in use before.
    pub weights_bytes: u64,
    /// Largest in-use reading (after load and after every stage of the first timed run),
    /// minus what was in use before loading.
    pub peak_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub card: String,
    pub device: String,
    /// fp16 (unquantized checkpoint weights), q8f16 or q4f16.
    pub mode: String,
    pub dtype: String,
    pub model: String,
    pub weights: String,
    pub llm_layers: usize,
    pub hidden_size: usize,
    pub prefill_len: usize,
    pub iters: usize,
    pub warmup: usize,
    pub load_s: f64,
    /// Host-side crop and resize plus the upload (the PyTorch reference is handed finished
    /// pixel values, so its times have no such stage).
    pub preprocess_ms: Stat,
    pub vision_ms: Stat,
    pub projector_ms: Stat,
    pub prefill_ms: Stat,
    /// Each of the 6 tokens after the first (the first comes out of the prefill).
    pub decode_token_ms: Stat,
    /// Sum of the stages of one instrumented run.
    pub staged_total_ms: Stat,
    /// `predict_action` end to end, no extra synchronisation.
    pub total_ms: Stat,
    pub tokens_per_s: f64,
    pub actions_per_s: f64,
    pub ceilings: Ceilings,
    pub floor: Floor,
    /// total_ms.p50 / floor.total_ms.
    pub ratio: f64,
    pub gpu_memory: Option<GpuMemory>,
    pub tokens: Vec<u32>,
    /// Whether the timed predictions replayed recorded CUDA graphs (false on the CPU, with
    /// `--eager`, or if recording failed; the log says why then).
    pub cuda_graphs: bool,
    /// Whether the decoder ran the fused kernels (fused.rs; CUDA with replays).
    pub fused_kernels: bool,
    /// With replays: on how many of the fixed inputs ([`INSTRUCTIONS`] with [`bench_image`])
    /// the replayed prediction decoded the same 7 tokens as the eager, unfused path.
    pub replay_matches_eager: Option<(usize, usize)>,
    /// With `VELA_PROFILE_DECODE=1`: (op, total ms over six decode steps, calls) from
    /// [`OpenVla::profile_decode`].
    pub decode_profile: Option<Vec<(String, f64, usize)>>,
}

/// Deterministic test image `i` (smooth gradients plus noise, so no two patches match).
pub fn bench_image(i: usize) -> RgbImage {
    let mut rng = SplitMix64::new(0x5eed + i as u64);
    let phase = i as f32 * 0.7;
    RgbImage::from_fn(256, 256, |x, y| {
        let (fx, fy) = (x as f32 / 255.0, y as f32 / 255.0);
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().enumerate() {
            let base = 0.5 + 0.4 * ((fx * (3.0 + c as f32) + fy * 2.0 + phase).sin());
            *v = ((base + 0.1 * (rng.uniform() - 0.5)).clamp(0.0, 1.0) * 255.0) as u8;
        }
        image::Rgb(px)
    })
}

/// Loads the model and times `iters` predictions after `warmup` untimed ones.
pub fn run(model_dir: &Path, opts: &BenchOptions) -> Result<BenchReport> {
    if opts.iters == 0 {
        return Err(VlaError::Input("--iters must be at least 1".into()));
    }
    let dev = &opts.device;
    let before = memory_in_use(dev)?;
    let t = Instant::now();
    let load = LoadOptions { quantization: opts.quantization, device: dev.clone(), dtype: opts.dtype };
    let m = OpenVla::load(model_dir, &load)?;
    m.set_replay(opts.replay && dev.is_cuda());
    dev.synchronize()?;
    let load_s = t.elapsed().as_secs_f64();
    let after_load = memory_in_use(dev)?;
    let mut peak = after_load.map(|m| m.0).unwrap_or(0);
    let sample = |peak: &mut u64| -> Result<()> {
        if let Some((used, _)) = memory_in_use(dev)? {
            *peak = (*peak).max(used);
        }
        Ok(())
    };

    let img = bench_image(0);
    let instruction = INSTRUCTIONS[0];
    for i in 0..opts.warmup {
        let s = m.predict_timed(&img, instruction)?;
        if i == 0 {
            sample(&mut peak)?;
        }
        tracing::debug!(?s, "warm-up");
    }
    let mut runs: Vec<StageTimes> = Vec::with_capacity(opts.iters);
    let mut total = Vec::with_capacity(opts.iters);
    for i in 0..opts.iters {
        let s = m.predict_timed(&img, instruction)?;
        sample(&mut peak)?;
        dev.synchronize()?;
        let t = Instant::now();
        let p = m.predict_action_stream(&img, instruction, crate::model::NORMALIZED, |_| {})?;
        total.push(t.elapsed().as_secs_f64() * 1e3);
        if p.tokens != s.tokens {
            return Err(VlaError::Input(format!("instrumented run decoded {:?}, plain run {:?}", s.tokens, p.tokens)));
        }
        if (i + 1) % 10 == 0 || i + 1 == opts.iters {
            tracing::info!(done = i + 1, of = opts.iters, total_ms = total[i], "bench");
        }
        runs.push(s);
    }
    let col = |f: &dyn Fn(&StageTimes) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
    let decode_tokens: Vec<f64> = runs.iter().flat_map(|r| r.token_ms.iter().copied()).collect();
    let total_ms = Stat::of(&total);

    let cuda_graphs = m.replay_enabled();
    let replay_matches_eager = if cuda_graphs { Some(replay_agreement(&m)?) } else { None };
    let decode_profile = if std::env::var("VELA_PROFILE_DECODE").is_ok_and(|v| v == "1") {
        let rows = m.profile_decode(&img, instruction)?;
        for (op, ms, n) in &rows {
            tracing::info!(op = %op, ms = format!("{ms:.3}"), calls = n, "decode profile");
        }
        Some(rows)
    } else {
        None
    };
    let ceilings = measure_ceilings(dev, opts.dtype)?;
    let cfg = &m.config;
    let prefill_len = runs[0].prefill_len;
    let vision_flops = cfg.vision_towers()?.iter().map(vit_flops).sum::<f64>();
    let projector_flops = projector_flops(cfg)?;
    let prefill_flops = llm_prefill_flops(cfg, prefill_len);
    let bytes = m.decode_weight_bytes();
    let decode_ms = ACTION_TOKENS as f64 * bytes as f64 / (ceilings.copy_gb_s * 1e9) * 1e3;
    let prompt_ms = (vision_flops + projector_flops + prefill_flops) / (ceilings.matmul_tflop_s * 1e12) * 1e3;
    let floor = Floor {
        decode_bytes_per_token: bytes,
        vision_flops,
        projector_flops,
        prefill_flops,
        decode_ms,
        prompt_ms,
        total_ms: decode_ms + prompt_ms,
    };
    let gpu_memory = match (before, after_load) {
        (Some((b, total)), Some((a, _))) => Some(GpuMemory {
            total_bytes: total,
            before_load_bytes: b,
            weights_bytes: a.saturating_sub(b),
            peak_bytes: peak.saturating_sub(b),
        }),
        _ => None,
    };
    let report = BenchReport {
        card: device_name(dev),
        device: format!("{dev:?}"),
        mode: opts.quantization.map(|q| q.to_string()).unwrap_or_else(|| "fp16".into()),
        dtype: format!("{:?}", opts.dtype).to_lowercase(),
        model: model_dir.display().to_string(),
        weights: m.weights_kind.clone(),
        llm_layers: cfg.text_config.num_hidden_layers,
        hidden_size: cfg.text_config.hidden_size,
        prefill_len,
        iters: opts.iters,
        warmup: opts.warmup,
        load_s,
        preprocess_ms: col(&|r| r.preprocess_ms),
        vision_ms: col(&|r| r.vision_ms),
        projector_ms: col(&|r| r.projector_ms),
        prefill_ms: col(&|r| r.prefill_ms),
        decode_token_ms: Stat::of(&decode_tokens),
        staged_total_ms: col(&|r| r.preprocess_ms + r.vision_ms + r.projector_ms + r.prefill_ms + r.token_ms.iter().sum::<f64>()),
        tokens_per_s: ACTION_TOKENS as f64 / total_ms.p50 * 1e3,
        actions_per_s: 1e3 / total_ms.p50,
        ratio: total_ms.p50 / floor.total_ms,
        total_ms,
        ceilings,
        floor,
        gpu_memory,
        tokens: runs[0].tokens.clone(),
        cuda_graphs,
        fused_kernels: cuda_graphs && crate::fused::enabled(),
        replay_matches_eager,
        decode_profile,
    };
    if let Some(path) = &opts.dump {
        dump_reference(&m, path)?;
    }
    Ok(report)
}

/// Replayed vs eager greedy tokens on the fixed input set: (equal, inputs).
fn replay_agreement(m: &OpenVla) -> Result<(usize, usize)> {
    let mut equal = 0;
    for (k, instruction) in INSTRUCTIONS.iter().enumerate() {
        let img = bench_image(k);
        let replayed = m.predict_action_stream(&img, instruction, crate::model::NORMALIZED, |_| {})?.tokens;
        m.set_replay(false);
        let eager = m.predict_action_stream(&img, instruction, crate::model::NORMALIZED, |_| {});
        m.set_replay(true);
        if replayed == eager?.tokens {
            equal += 1;
        } else {
            tracing::warn!(input = k, "replayed tokens differ from the eager path's");
        }
    }
    Ok((equal, INSTRUCTIONS.len()))
}

fn median_ms(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Stat::of(&v).p50)
}

/// Copy bandwidth and matmul rate of this device, on random data (never zeros: they can run
/// faster than real data).
pub fn measure_ceilings(dev: &Device, dtype: DType) -> Result<Ceilings> {
    let (copy_elems, n) = if dev.is_cpu() { (4 << 20, 256) } else { (512 << 20, 8192) };
    let x = Tensor::randn(0f32, 1.0, copy_elems, dev)?.to_dtype(dtype)?;
    // Into a preallocated buffer: the copy alone, not an allocation of its size.
    let y = x.zeros_like()?;
    let copy_bytes = 2 * (copy_elems * dtype.size_in_bytes()) as u64;
    let copy = match crate::device::dtod_copy_ms(dev, copy_bytes as usize / 2, 10)? {
        Some(ms) => ms,
        None => median_ms(dev, 10, || Ok(y.slice_set(&x, 0, 0)?))?,
    };
    drop((x, y));
    let a = Tensor::randn(0f32, 1.0, (n, n), dev)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), dev)?.to_dtype(dtype)?;
    let mm = median_ms(dev, 10, || {
        let _c = a.matmul(&b)?;
        Ok(())
    })?;
    drop((a, b));
    Ok(Ceilings {
        copy_gb_s: copy_bytes as f64 / (copy * 1e-3) / 1e9,
        copy_bytes,
        matmul_tflop_s: 2.0 * (n as f64).powi(3) / (mm * 1e-3) / 1e12,
        matmul_n: n,
    })
}

/// Forward FLOPs of one tower over the blocks OpenVLA uses (all but the last).
pub fn vit_flops(c: &VitConfig) -> f64 {
    let (d, m) = (c.embed_dim as f64, c.mlp_hidden as f64);
    let p = c.num_patches() as f64;
    let n = p + c.num_prefix_tokens() as f64;
    let patch = 2.0 * p * d * (3 * c.patch_size * c.patch_size) as f64;
    let block = 2.0 * n * (4.0 * d * d + 2.0 * d * m) + 4.0 * n * n * d;
    patch + c.depth.saturating_sub(1) as f64 * block
}

pub fn projector_flops(cfg: &OpenVlaConfig) -> Result<f64> {
    let towers = cfg.vision_towers()?;
    let vis: usize = towers.iter().map(|t| t.embed_dim).sum();
    let n = towers[0].num_patches() as f64;
    Ok(Projector::dims(cfg, vis).iter().map(|(a, b)| 2.0 * n * (*a * *b) as f64).sum())
}

/// LLM prompt pass over `t` positions: every matrix once per position, causal attention, and
/// `lm_head` for the last position only (as the model computes it).
pub fn llm_prefill_flops(cfg: &OpenVlaConfig, t: usize) -> f64 {
    let c = &cfg.text_config;
    let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let kv = (c.kv_heads() * c.head_dim()) as f64;
    let t = t as f64;
    let per_layer = 2.0 * t * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * i) + 2.0 * t * (t + 1.0) * h;
    c.num_hidden_layers as f64 * per_layer + 2.0 * h * c.vocab_size as f64
}

/// Writes the fixed input set's intermediate values for an outside implementation to check
/// against (see benchmarks/openvla_torch.py): per input `k`, `pixel_values.k`, `input_ids.k`,
/// `projector.k` (`[1, N, H]`), `logits.k` (first token, `[V]`) and `tokens.k` (greedy, 7).
pub fn dump_reference(m: &OpenVla, path: &Path) -> Result<usize> {
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (k, instruction) in INSTRUCTIONS.iter().enumerate() {
        let img = bench_image(k);
        let (px, patches, ids, logits) = m.trace(&img, instruction)?;
        let tokens = m.predict_timed(&img, instruction)?.tokens;
        let f32 = |t: &Tensor| t.to_dtype(DType::F32)?.to_device(&Device::Cpu);
        let i64s = |v: &[u32]| Tensor::new(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), &Device::Cpu);
        out.insert(format!("pixel_values.{k}"), f32(&px)?);
        out.insert(format!("projector.{k}"), f32(&patches)?);
        out.insert(format!("logits.{k}"), f32(&logits)?);
        out.insert(format!("input_ids.{k}"), i64s(&ids)?);
        out.insert(format!("tokens.{k}"), i64s(&tokens)?);
    }
    candle_core::safetensors::save(&out, path)?;
    Ok(INSTRUCTIONS.len())
}

/// A short human summary of a report (the JSON has everything).
pub fn summary(r: &BenchReport) -> String {
    let mem = r
        .gpu_memory
        .as_ref()
        .map(|g| format!("{:.2} GiB peak", g.peak_bytes as f64 / (1u64 << 30) as f64))
        .unwrap_or_else(|| "-".into());
    format!(
        "{card} {mode} ({dtype}{graphs}): preprocess {pre:.2} ms, vision {v:.2} ms, projector {p:.2} ms, prefill {pf:.2} ms ({len} positions), \
         {tok:.2} ms/token, total p50 {t:.2} ms / p95 {t95:.2} ms ({aps:.1} actions/s, {tps:.0} tokens/s)\n\
         floor {fl:.2} ms (decode {fd:.2} ms at {bw:.0} GB/s, prompt {fp:.2} ms at {tf}): ratio {ratio:.2}; memory {mem}; tokens {tokens:?}{agree}",
        card = r.card,
        mode = r.mode,
        dtype = r.dtype,
        graphs = if r.cuda_graphs { ", CUDA graphs" } else { "" },
        pre = r.preprocess_ms.p50,
        v = r.vision_ms.p50,
        p = r.projector_ms.p50,
        pf = r.prefill_ms.p50,
        len = r.prefill_len,
        tok = r.decode_token_ms.p50,
        t = r.total_ms.p50,
        t95 = r.total_ms.p95,
        aps = r.actions_per_s,
        tps = r.tokens_per_s,
        fl = r.floor.total_ms,
        fd = r.floor.decode_ms,
        bw = r.ceilings.copy_gb_s,
        fp = r.floor.prompt_ms,
        // A CPU core's matmul rate is a fraction of a TFLOP/s.
        tf = match r.ceilings.matmul_tflop_s {
            t if t < 1.0 => format!("{:.0} GFLOP/s", t * 1e3),
            t => format!("{t:.0} TFLOP/s"),
        },
        ratio = r.ratio,
        tokens = r.tokens,
        agree = r.replay_matches_eager.map(|(a, n)| format!("; replay = eager on {a}/{n} inputs")).unwrap_or_default(),
    )
}
