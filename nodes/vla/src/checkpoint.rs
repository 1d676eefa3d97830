//! Random-initialised checkpoints in the exact HF layout of openvla-7b (names, shapes, dtype,
//! sharding), and the list of tensors the loader asks for, so the two can be compared for the
//! 7B shape without materialising it.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::DType;

use crate::config::{OpenVlaConfig, TowerKind, VitConfig};
use crate::rng::{tensor_seed, SplitMix64};
use crate::vision::{tower_prefix, Projector};
use crate::weights::{parse_torch_dtype, RecordingStore, TensorSpec, Weights};
use crate::{Result, VlaError};

/// HF `save_pretrained(max_shard_size="7GB")`.
pub const HF_SHARD_BYTES: u64 = 7_000_000_000;

fn spec(name: String, shape: &[usize], dtype: DType) -> TensorSpec {
    TensorSpec { name, shape: shape.to_vec(), dtype }
}

fn tower_plan(p: &str, c: &VitConfig, dt: DType, out: &mut Vec<TensorSpec>) {
    let d = c.embed_dim;
    let m = c.mlp_hidden;
    let mut push = |n: &str, s: &[usize]| out.push(spec(format!("{p}.{n}"), s, dt));
    if c.class_token {
        push("cls_token", &[1, 1, d]);
    }
    if c.num_reg_tokens > 0 {
        push("reg_token", &[1, c.num_reg_tokens, d]);
    }
    push("pos_embed", &[1, c.num_patches(), d]);
    push("patch_embed.proj.weight", &[d, 3, c.patch_size, c.patch_size]);
    push("patch_embed.proj.bias", &[d]);
    for i in 0..c.depth {
        let b = format!("blocks.{i}");
        push(&format!("{b}.norm1.weight"), &[d]);
        push(&format!("{b}.norm1.bias"), &[d]);
        push(&format!("{b}.attn.qkv.weight"), &[3 * d, d]);
        push(&format!("{b}.attn.qkv.bias"), &[3 * d]);
        push(&format!("{b}.attn.proj.weight"), &[d, d]);
        push(&format!("{b}.attn.proj.bias"), &[d]);
        if c.layer_scale {
            push(&format!("{b}.ls1.scale_factor"), &[d]);
        }
        push(&format!("{b}.norm2.weight"), &[d]);
        push(&format!("{b}.norm2.bias"), &[d]);
        push(&format!("{b}.mlp.fc1.weight"), &[m, d]);
        push(&format!("{b}.mlp.fc1.bias"), &[m]);
        push(&format!("{b}.mlp.fc2.weight"), &[d, m]);
        push(&format!("{b}.mlp.fc2.bias"), &[d]);
        if c.layer_scale {
            push(&format!("{b}.ls2.scale_factor"), &[d]);
        }
    }
    push("norm.weight", &[d]);
    push("norm.bias", &[d]);
    if c.attn_pool && c.kind == TowerKind::Siglip {
        push("attn_pool.latent", &[1, 1, d]);
        push("attn_pool.q.weight", &[d, d]);
        push("attn_pool.q.bias", &[d]);
        push("attn_pool.kv.weight", &[2 * d, d]);
        push("attn_pool.kv.bias", &[2 * d]);
        push("attn_pool.proj.weight", &[d, d]);
        push("attn_pool.proj.bias", &[d]);
        push("attn_pool.norm.weight", &[d]);
        push("attn_pool.norm.bias", &[d]);
        push("attn_pool.mlp.fc1.weight", &[m, d]);
        push("attn_pool.mlp.fc1.bias", &[m]);
        push("attn_pool.mlp.fc2.weight", &[d, m]);
        push("attn_pool.mlp.fc2.bias", &[d]);
    }
}

/// Every tensor of the checkpoint in HF state-dict order, including the ones inference never
/// reads (last ViT blocks, final norms, SigLIP attn_pool).
pub fn checkpoint_plan(cfg: &OpenVlaConfig) -> Result<Vec<TensorSpec>> {
    let dt = parse_torch_dtype(&cfg.torch_dtype)?;
    let towers = cfg.vision_towers()?;
    let mut out = Vec::new();
    for (i, t) in towers.iter().enumerate() {
        tower_plan(tower_prefix(i), t, dt, &mut out);
    }
    let vis: usize = towers.iter().map(|t| t.embed_dim).sum();
    for (i, (a, b)) in Projector::dims(cfg, vis).into_iter().enumerate() {
        out.push(spec(format!("projector.fc{}.weight", i + 1), &[b, a], dt));
        out.push(spec(format!("projector.fc{}.bias", i + 1), &[b], dt));
    }
    let t = &cfg.text_config;
    let (h, it, v) = (t.hidden_size, t.intermediate_size, t.vocab_size);
    let kv = t.kv_heads() * t.head_dim();
    out.push(spec("language_model.model.embed_tokens.weight".into(), &[v, h], dt));
    for l in 0..t.num_hidden_layers {
        let p = format!("language_model.model.layers.{l}");
        out.push(spec(format!("{p}.self_attn.q_proj.weight"), &[h, h], dt));
        out.push(spec(format!("{p}.self_attn.k_proj.weight"), &[kv, h], dt));
        out.push(spec(format!("{p}.self_attn.v_proj.weight"), &[kv, h], dt));
        out.push(spec(format!("{p}.self_attn.o_proj.weight"), &[h, h], dt));
        out.push(spec(format!("{p}.mlp.gate_proj.weight"), &[it, h], dt));
        out.push(spec(format!("{p}.mlp.up_proj.weight"), &[it, h], dt));
        out.push(spec(format!("{p}.mlp.down_proj.weight"), &[h, it], dt));
        out.push(spec(format!("{p}.input_layernorm.weight"), &[h], dt));
        out.push(spec(format!("{p}.post_attention_layernorm.weight"), &[h], dt));
    }
    out.push(spec("language_model.model.norm.weight".into(), &[h], dt));
    if !t.tie_word_embeddings {
        out.push(spec("language_model.lm_head.weight".into(), &[v, h], dt));
    }
    Ok(out)
}

/// What the loader requests when building the model, recorded without touching any file.
pub fn loader_expectations(cfg: &OpenVlaConfig) -> Result<Vec<TensorSpec>> {
    let store = Arc::new(RecordingStore::new(parse_torch_dtype(&cfg.torch_dtype)?));
    let w = Weights::new(store.clone());
    let _model = crate::model::OpenVla::from_weights(cfg.clone(), &w, Box::new(crate::tokenizer::ByteTokenizer), DType::F32)?;
    Ok(store.take())
}

fn dtype_str(dt: DType) -> Result<&'static str> {
    match dt {
        DType::BF16 => Ok("BF16"),
        DType::F16 => Ok("F16"),
        DType::F32 => Ok("F32"),
        other => Err(VlaError::Config(format!("cannot write {other:?} checkpoints"))),
    }
}

/// Deterministic random values for one tensor, scaled so activations stay O(1) through the
/// stack. LayerScale starts at 0.1 rather than timm's 1e-5 so the random blocks actually move
/// the features; rows of the action tokens in `lm_head` are scaled up so a random model emits
/// action tokens and the full decode path gets exercised.
fn init_values(t: &TensorSpec, seed: u64, action_rows: std::ops::Range<usize>) -> Vec<f32> {
    let n: usize = t.shape.iter().product();
    let name = t.name.as_str();
    let mut rng = SplitMix64::new(tensor_seed(seed, name));
    let is_norm = name.contains("norm");
    if name.ends_with("scale_factor") {
        return vec![0.1; n];
    }
    if is_norm && name.ends_with(".weight") {
        return (0..n).map(|_| 1.0 + 0.02 * rng.normal()).collect();
    }
    if is_norm && name.ends_with(".bias") {
        return vec![0.0; n];
    }
    if name.ends_with(".bias") {
        return (0..n).map(|_| 0.02 * rng.normal()).collect();
    }
    if t.shape.len() == 2 && name.ends_with(".weight") && !name.contains("embed_tokens") {
        let fan_in = t.shape[1];
        let std = 1.0 / (fan_in as f32).sqrt();
        let mut v: Vec<f32> = (0..n).map(|_| std * rng.normal()).collect();
        if name == "language_model.lm_head.weight" {
            for r in action_rows {
                for x in &mut v[r * fan_in..(r + 1) * fan_in] {
                    *x *= 4.0;
                }
            }
        }
        return v;
    }
    if name.ends_with("patch_embed.proj.weight") {
        let fan_in: usize = t.shape[1..].iter().product();
        let std = 1.0 / (fan_in as f32).sqrt();
        return (0..n).map(|_| std * rng.normal()).collect();
    }
    // embeddings, cls/reg tokens, pos_embed, attn_pool latent
    (0..n).map(|_| 0.5 * rng.normal()).collect()
}

/// The deterministic random value of one tensor of a fresh `cfg` model (what
/// `make-checkpoint` writes, and where from-scratch training starts).
pub fn init_tensor(cfg: &OpenVlaConfig, t: &TensorSpec, seed: u64) -> Vec<f32> {
    let base = cfg.base_vocab();
    init_values(t, seed, base.saturating_sub(cfg.n_action_bins)..base)
}

fn encode(vals: &[f32], dt: DType) -> Vec<u8> {
    match dt {
        DType::BF16 => vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        DType::F16 => vals.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        _ => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn nbytes(t: &TensorSpec) -> u64 {
    (t.shape.iter().product::<usize>() * t.dtype.size_in_bytes()) as u64
}

/// Gives the values of one tensor of the plan, as f32 (encoded to the spec's dtype on write).
pub type TensorValues<'a> = dyn Fn(&TensorSpec) -> Result<Vec<f32>> + Sync + 'a;

/// Writes one safetensors file, asking for each tensor just before its bytes are written so
/// memory stays at one tensor even for 7B shards.
fn write_safetensors(path: &Path, tensors: &[&TensorSpec], values: &TensorValues) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0u64;
    for t in tensors {
        let n = nbytes(t);
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype_str(t.dtype)?, "shape": t.shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut h = serde_json::to_vec(&header).map_err(|e| VlaError::Weights(e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let f = std::fs::File::create(path).map_err(|e| VlaError::io(path, e))?;
    let mut w = BufWriter::new(f);
    let io = |e| VlaError::io(path, e);
    w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&h).map_err(io)?;
    // Tensors are produced one per core and written in order, so a 7B shard takes seconds
    // per window and memory stays at one window of tensors.
    for window in tensors.chunks(par_width()) {
        let bytes = par_map(window, |t| -> Result<Vec<u8>> {
            let v = values(t)?;
            if v.len() != t.shape.iter().product::<usize>() {
                return Err(VlaError::Weights(format!("{}: {} values for shape {:?}", t.name, v.len(), t.shape)));
            }
            Ok(encode(&v, t.dtype))
        });
        for b in bytes {
            w.write_all(&b?).map_err(io)?;
        }
    }
    w.flush().map_err(io)?;
    Ok(())
}

/// How many tensors to work on at once: one per core (7B checkpoints take minutes otherwise).
pub(crate) fn par_width() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `items.map(f)` on one scoped thread per item, results in input order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|it| s.spawn(|| f(it))).collect();
        handles.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    })
}

/// Which tokenizer a new checkpoint ships with.
#[derive(Clone, Debug, Default)]
pub enum TokenizerSource {
    /// The converted Llama-2 tokenizer from the setup cache if present, else none (byte fallback).
    #[default]
    Auto,
    /// No tokenizer.json: the model uses the byte-fallback tokenizer.
    None,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct MakeOptions {
    pub seed: u64,
    /// Shard size limit; `None` = HF's 7 GB, except small models are split in two so the
    /// index path is always exercised.
    pub max_shard_bytes: Option<u64>,
    pub tokenizer: TokenizerSource,
}

#[derive(Clone, Debug)]
pub struct CheckpointSummary {
    pub shards: Vec<PathBuf>,
    pub n_tensors: usize,
    pub total_bytes: u64,
    pub tokenizer: Option<PathBuf>,
}

/// Splits the plan into shards greedily in state-dict order, like transformers'
/// `shard_checkpoint`. `None` = HF's 7 GB, except models under 2 GB are split in two so the
/// index path is always exercised.
pub fn shard_plan(plan: &[TensorSpec], max_shard_bytes: Option<u64>) -> Vec<Vec<&TensorSpec>> {
    let total: u64 = plan.iter().map(nbytes).sum();
    let limit = max_shard_bytes.unwrap_or(if total < 2 * HF_SHARD_BYTES / 7 { total / 2 + 1 } else { HF_SHARD_BYTES });
    let mut shards: Vec<Vec<&TensorSpec>> = vec![vec![]];
    let mut cur = 0u64;
    for t in plan {
        let n = nbytes(t);
        if cur + n > limit && !shards.last().expect("non-empty").is_empty() {
            shards.push(vec![]);
            cur = 0;
        }
        shards.last_mut().expect("non-empty").push(t);
        cur += n;
    }
    shards
}

/// `vela vla make-checkpoint`: a random-initialised model folder with the real HF layout.
pub fn make_checkpoint(cfg: &OpenVlaConfig, out_dir: &Path, seed: u64) -> Result<CheckpointSummary> {
    make_checkpoint_with(cfg, out_dir, &MakeOptions { seed, max_shard_bytes: None, tokenizer: TokenizerSource::Auto })
}

pub fn make_checkpoint_with(cfg: &OpenVlaConfig, out_dir: &Path, opts: &MakeOptions) -> Result<CheckpointSummary> {
    write_checkpoint(cfg, out_dir, opts.max_shard_bytes, &opts.tokenizer, &|t| Ok(init_tensor(cfg, t, opts.seed)))
}

/// Writes a complete HF-layout model folder (shards, index, config, dataset statistics,
/// generation/preprocessor configs, tokenizer) with the tensor values `values` gives.
pub fn write_checkpoint(
    cfg: &OpenVlaConfig,
    out_dir: &Path,
    max_shard_bytes: Option<u64>,
    tokenizer: &TokenizerSource,
    values: &TensorValues,
) -> Result<CheckpointSummary> {
    std::fs::create_dir_all(out_dir).map_err(|e| VlaError::io(out_dir, e))?;
    let plan = checkpoint_plan(cfg)?;
    let total: u64 = plan.iter().map(nbytes).sum();
    let shards = shard_plan(&plan, max_shard_bytes);
    let n = shards.len();
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    for (i, s) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        let path = out_dir.join(&name);
        tracing::info!(shard = %name, tensors = s.len(), "writing shard");
        write_safetensors(&path, s, values)?;
        for t in s {
            weight_map.insert(t.name.clone(), name.clone().into());
        }
        files.push(path);
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    write_json(&out_dir.join("model.safetensors.index.json"), &index)?;
    write_json(&out_dir.join("config.json"), &serde_json::to_value(cfg).map_err(|e| VlaError::Config(e.to_string()))?)?;
    write_json(&out_dir.join("dataset_statistics.json"), &serde_json::to_value(&cfg.norm_stats).map_err(|e| VlaError::Config(e.to_string()))?)?;
    write_json(
        &out_dir.join("generation_config.json"),
        &serde_json::json!({"_from_model_config": true, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": cfg.pad_token_id, "transformers_version": "4.40.1"}),
    )?;
    let towers = cfg.vision_towers()?;
    write_json(
        &out_dir.join("preprocessor_config.json"),
        &serde_json::json!({
            "image_processor_type": "PrismaticImageProcessor",
            "use_fused_vision_backbone": cfg.use_fused_vision_backbone,
            "image_resize_strategy": cfg.image_resize_strategy,
            "input_sizes": towers.iter().map(|t| [3, t.image_size, t.image_size]).collect::<Vec<_>>(),
            "interpolations": towers.iter().map(|_| "bicubic").collect::<Vec<_>>(),
            "means": towers.iter().map(|t| t.image_mean).collect::<Vec<_>>(),
            "stds": towers.iter().map(|t| t.image_std).collect::<Vec<_>>(),
            "timm_model_ids": cfg.timm_model_ids,
            "tvf_resize_params": {"size": [towers[0].image_size, towers[0].image_size], "interpolation": 3, "antialias": true, "max_size": null},
        }),
    )?;
    let tok_src = match tokenizer {
        TokenizerSource::Auto => {
            let p = crate::tokenizer::cache_dir().join("tokenizer.json");
            p.exists().then_some(p)
        }
        TokenizerSource::None => None,
        TokenizerSource::File(p) => Some(p.clone()),
    };
    let tokenizer = match tok_src {
        Some(src) => {
            let dst = out_dir.join("tokenizer.json");
            std::fs::copy(&src, &dst).map_err(|e| VlaError::io(&src, e))?;
            Some(dst)
        }
        None => {
            let _ = std::fs::remove_file(out_dir.join("tokenizer.json"));
            None
        }
    };
    Ok(CheckpointSummary { shards: files, n_tensors: plan.len(), total_bytes: total, tokenizer })
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| VlaError::Config(e.to_string()))?;
    std::fs::write(path, s).map_err(|e| VlaError::io(path, e))
}

/// Reads (name → (shape, dtype)) from the safetensors headers of a folder, without the data.
pub fn read_headers(dir: &Path) -> Result<BTreeMap<String, (Vec<usize>, String)>> {
    let mut out = BTreeMap::new();
    for f in crate::weights::shard_files(dir)? {
        let mut file = std::fs::File::open(&f).map_err(|e| VlaError::io(&f, e))?;
        let mut len = [0u8; 8];
        std::io::Read::read_exact(&mut file, &mut len).map_err(|e| VlaError::io(&f, e))?;
        let mut h = vec![0u8; u64::from_le_bytes(len) as usize];
        std::io::Read::read_exact(&mut file, &mut h).map_err(|e| VlaError::io(&f, e))?;
        let v: serde_json::Value = serde_json::from_slice(&h).map_err(|e| VlaError::Weights(e.to_string()))?;
        for (k, t) in v.as_object().into_iter().flatten() {
            if k == "__metadata__" {
                continue;
            }
            let shape = t["shape"].as_array().into_iter().flatten().filter_map(|x| x.as_u64().map(|x| x as usize)).collect();
            out.insert(k.clone(), (shape, t["dtype"].as_str().unwrap_or("").to_string()));
        }
    }
    Ok(out)
}

pub fn dtype_label(dt: DType) -> &'static str {
    dtype_str(dt).unwrap_or("?")
}
