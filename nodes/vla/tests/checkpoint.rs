//! Checkpoint layout, loading and end-to-end prediction on the tiny presets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use image::RgbImage;
use vela_vla::checkpoint::{make_checkpoint_with, read_headers, MakeOptions, TokenizerSource};
use vela_vla::weights::TensorSpec;
use vela_vla::{checkpoint_plan, loader_expectations, LoadOptions, OpenVla, OpenVlaConfig, Preset};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-vla-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn make(preset: Preset, name: &str) -> (OpenVlaConfig, PathBuf) {
    let cfg = OpenVlaConfig::preset(preset);
    let dir = tmp(name);
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 7, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    (cfg, dir)
}

fn test_image(seed: u8) -> RgbImage {
    RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8 ^ seed, (y * 5) as u8, (x + y) as u8 ^ seed.rotate_left(3)]))
}

/// Tensors present in the checkpoint that inference never reads.
fn is_unused(name: &str, cfg: &OpenVlaConfig) -> bool {
    let towers = cfg.vision_towers().unwrap();
    let last = |i: usize| format!("blocks.{}.", towers[i].depth - 1);
    let (tower, rest) = if let Some(r) = name.strip_prefix("vision_backbone.featurizer.") {
        (0, r)
    } else if let Some(r) = name.strip_prefix("vision_backbone.fused_featurizer.") {
        (1, r)
    } else {
        return false;
    };
    rest.starts_with(&last(tower)) || rest.starts_with("norm.") || rest.starts_with("attn_pool.")
}

fn as_map(v: &[TensorSpec]) -> BTreeMap<String, (Vec<usize>, String)> {
    v.iter().map(|t| (t.name.clone(), (t.shape.clone(), vela_vla::checkpoint::dtype_label(t.dtype).to_string()))).collect()
}

fn check_plan_matches_loader(preset: Preset) {
    let cfg = OpenVlaConfig::preset(preset);
    let plan = as_map(&checkpoint_plan(&cfg).unwrap());
    let want = loader_expectations(&cfg).unwrap();
    let want_map = as_map(&want);
    // Tied embeddings: the output layer reads the input embedding matrix a second time.
    let tied = usize::from(cfg.text_config.tie_word_embeddings);
    assert_eq!(want.len(), want_map.len() + tied, "loader asked for a tensor twice");
    for (name, spec) in &want_map {
        assert_eq!(plan.get(name), Some(spec), "loader expects {name} {spec:?}");
    }
    let unread: BTreeSet<_> = plan.keys().filter(|k| !want_map.contains_key(*k)).collect();
    for k in &unread {
        assert!(is_unused(k, &cfg), "writer wrote {k} but the loader never reads it");
    }
    assert!(plan.keys().all(|k| want_map.contains_key(k) || is_unused(k, &cfg)));
}

#[test]
fn seven_b_layout_agrees_without_materialising() {
    let cfg = OpenVlaConfig::preset(Preset::SevenB);
    let plan = checkpoint_plan(&cfg).unwrap();
    let params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
    // openvla-7b: 7.54 B parameters (incl. unused tower tail and attn_pool)
    assert!((7_400_000_000..7_700_000_000).contains(&params), "{params}");
    let m = as_map(&plan);
    let get = |n: &str| m.get(n).unwrap_or_else(|| panic!("missing {n}")).0.clone();
    assert_eq!(get("vision_backbone.featurizer.reg_token"), vec![1, 4, 1024]);
    assert_eq!(get("vision_backbone.featurizer.pos_embed"), vec![1, 256, 1024]);
    assert_eq!(get("vision_backbone.featurizer.blocks.23.ls2.scale_factor"), vec![1024]);
    assert_eq!(get("vision_backbone.fused_featurizer.blocks.26.mlp.fc1.weight"), vec![4304, 1152]);
    assert_eq!(get("vision_backbone.fused_featurizer.attn_pool.kv.weight"), vec![2304, 1152]);
    assert_eq!(get("projector.fc1.weight"), vec![8704, 2176]);
    assert_eq!(get("language_model.model.embed_tokens.weight"), vec![32064, 4096]);
    assert_eq!(get("language_model.model.layers.31.mlp.down_proj.weight"), vec![4096, 11008]);
    assert_eq!(get("language_model.lm_head.weight"), vec![32064, 4096]);
    assert!(m.values().all(|(_, d)| d == "BF16"));
    // 15.1 GB of bf16 in 7 GB shards: three files, like the released model-0000X-of-00003.
    let shards = vela_vla::checkpoint::shard_plan(&plan, None);
    assert_eq!(shards.len(), 3);
    let total: usize = plan.iter().map(|t| t.shape.iter().product::<usize>() * 2).sum();
    assert!((15_000_000_000..15_200_000_000).contains(&total), "{total}");
    check_plan_matches_loader(Preset::SevenB);
}

#[test]
fn tiny_layouts_agree() {
    for p in [Preset::Tiny, Preset::TinySingle, Preset::Small, Preset::Small112, Preset::Small168, Preset::SmallTied] {
        check_plan_matches_loader(p);
    }
}

#[test]
fn written_headers_match_plan_and_index() {
    let (cfg, dir) = make(Preset::Tiny, "headers");
    let plan = as_map(&checkpoint_plan(&cfg).unwrap());
    let headers = read_headers(&dir).unwrap();
    assert_eq!(plan, headers);
    let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
    let files: BTreeSet<&str> = idx["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    let n = files.len();
    assert!(n >= 2, "small models are split so the index path is exercised");
    let want: BTreeSet<String> = (1..=n).map(|i| format!("model-{i:05}-of-{n:05}.safetensors")).collect();
    assert_eq!(files.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(), want);
    for f in &want {
        assert!(dir.join(f).exists());
    }
    let back = OpenVlaConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(back, cfg);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn real_config_json_shape_parses() {
    // A trimmed openvla-7b config.json: no tower dims, text_config with only non-defaults.
    let j = r#"{
      "arch_specifier": "no-align+fused-gelu-mlp", "architectures": ["OpenVLAForActionPrediction"],
      "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig"},
      "hf_llm_id": "meta-llama/Llama-2-7b-hf", "image_resize_strategy": "resize-naive",
      "image_sizes": [224, 224], "llm_backbone_id": "llama2-7b-pure", "llm_max_length": 2048,
      "model_type": "openvla", "n_action_bins": 256,
      "norm_stats": {"bridge_orig": {"action": {"mask": [true,true,true,true,true,true,false],
         "max": [1,1,1,1,1,1,1], "mean": [0,0,0,0,0,0,0], "min": [0,0,0,0,0,0,0],
         "q01": [0,0,0,0,0,0,0], "q99": [1,1,1,1,1,1,1], "std": [1,1,1,1,1,1,1]},
         "num_trajectories": 60064, "num_transitions": 2135463}},
      "output_projector_states": false, "pad_to_multiple_of": 64, "pad_token_id": 32000,
      "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
      "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
      "timm_override_act_layers": [null, null], "torch_dtype": "bfloat16", "transformers_version": "4.40.1",
      "use_fused_vision_backbone": true, "vision_backbone_id": "dinosiglip-vit-so-224px"}"#;
    let c: OpenVlaConfig = serde_json::from_str(j).unwrap();
    let towers = c.vision_towers().unwrap();
    assert_eq!(towers[0].embed_dim + towers[1].embed_dim, 2176);
    assert_eq!(towers[1].mlp_hidden, 4304);
    assert_eq!(c.text_config.rms_norm_eps, 1e-6);
    assert_eq!(c.base_vocab(), 32000);
    let plan = as_map(&checkpoint_plan(&c).unwrap());
    let seven = as_map(&checkpoint_plan(&OpenVlaConfig::preset(Preset::SevenB)).unwrap());
    assert_eq!(plan, seven);
    assert!(c.extra.contains_key("auto_map"));
}

#[test]
fn tiny_predicts_deterministically_and_streams() {
    let (_cfg, dir) = make(Preset::Tiny, "predict");
    let m = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(m.tokenizer_name(), "byte-fallback");
    let img = test_image(1);
    let a = m.predict_action(&img, "Pick up the red block", "bridge_orig").unwrap();
    let b = m.predict_action(&img, "Pick up the red block", "bridge_orig").unwrap();
    assert_eq!(a, b);
    assert!(a.iter().all(|v| v.is_finite()));
    // streaming: one partial per token, growing, and the last equals the final action
    let mut partials = Vec::new();
    let p = m.predict_action_stream(&img, "pick up the red block", "bridge_orig", |pa| partials.push(pa.clone())).unwrap();
    assert_eq!(partials.len(), 7);
    for (i, pa) in partials.iter().enumerate() {
        assert_eq!(pa.index, i);
        assert_eq!(pa.values.len(), i + 1);
        assert_eq!(pa.values[..], p.action[..i + 1]);
    }
    assert_eq!(p.action[..], a[..], "instruction is lower-cased like the reference");
    // prompt: BOS + bytes of the prompt + "▁"
    assert_eq!(p.prompt_ids[0], 1);
    assert_eq!(*p.prompt_ids.last().unwrap(), 29871);
    // un-normalisation: gripper (unmasked) passes through, the rest stay inside [q01, q99]
    let stats = m.config.action_stats("bridge_orig").unwrap();
    for (i, v) in a.iter().enumerate().take(6) {
        assert!(*v >= stats.q01[i] - 1e-6 && *v <= stats.q99[i] + 1e-6);
    }
    assert_eq!(p.action[6], p.normalized[6]);
    let n = m.predict_action_stream(&img, "pick up the red block", "normalized", |_| {}).unwrap();
    assert_eq!(n.action, n.normalized);
    assert!(m.predict_action(&img, "x", "no_such_space").is_err());
    // the image matters
    let other = m.predict_action_stream(&test_image(99), "pick up the red block", "normalized", |_| {}).unwrap();
    let feats_a = m.encode_image(&img).unwrap();
    let feats_b = m.encode_image(&test_image(99)).unwrap();
    let diff = (feats_a - feats_b).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff > 1e-3, "vision features ignore the image");
    let _ = other;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn kv_cache_decoding_equals_full_recompute() {
    let (_cfg, dir) = make(Preset::TinySingle, "kvcache");
    let m = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    let img = test_image(3);
    let p = m.predict_action_stream(&img, "stack the cubes", "normalized", |_| {}).unwrap();
    // Recompute each step from scratch (no cache reuse): feed prompt + tokens so far.
    let patches = m.encode_image(&img).unwrap();
    let mut ids = p.prompt_ids.clone();
    for (i, &tok) in p.tokens.iter().enumerate() {
        let q = m.generate(&patches, &ids, "normalized", |_| {}).unwrap();
        assert_eq!(q.tokens[0], tok, "step {i}");
        ids.push(tok);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn iterator_stream_matches_callback_stream() {
    let (_cfg, dir) = make(Preset::TinySingle, "iter");
    let m = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    let img = test_image(5);
    let full = m.predict_action_stream(&img, "wipe the table", "bridge_orig", |_| {}).unwrap();
    let parts: Vec<_> = m.stream(&img, "wipe the table", "bridge_orig").unwrap().map(|p| p.unwrap()).collect();
    assert_eq!(parts.len(), 7);
    assert_eq!(parts.last().unwrap().values, full.action);
    // taking two tokens and finishing gives the same result as decoding everything
    let mut s = m.stream(&img, "wipe the table", "bridge_orig").unwrap();
    let _ = s.next();
    let _ = s.next();
    let rest = s.finish().unwrap();
    assert_eq!(rest.tokens, full.tokens);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn half_precision_compute_runs() {
    // bf16 compute halves memory (a real 7B needs ~15 GB instead of ~30 GB in f32).
    let (_cfg, dir) = make(Preset::Tiny, "bf16");
    let m = OpenVla::load(&dir, &LoadOptions { dtype: candle_core::DType::BF16, ..Default::default() }).unwrap();
    let a = m.predict_action(&test_image(2), "close the gripper", "bridge_orig").unwrap();
    assert!(a.iter().all(|v| v.is_finite()));
    let _ = std::fs::remove_dir_all(dir);
}
