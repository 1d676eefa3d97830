//! GGUF quantization of a tiny checkpoint, loading it back and comparing with the dense model.

use std::path::PathBuf;

use image::RgbImage;
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::weights::GgufStore;
use vela_vla::{quantize, LoadOptions, OpenVla, OpenVlaConfig, Preset, Quantization};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-vla-qtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quantized_models_load_and_track_the_dense_one() {
    let cfg = OpenVlaConfig::preset(Preset::Tiny);
    let dir = tmp("src");
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 11, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    let img = RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]));
    let dense = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    let pd = dense.predict_action_stream(&img, "open the drawer", "normalized", |_| {}).unwrap();
    let feats_d = dense.encode_image(&img).unwrap();
    for mode in [Quantization::Q8F16, Quantization::Q4F16] {
        let out = tmp(&mode.to_string());
        let rep = quantize(&dir, mode, &out).unwrap();
        assert!(rep.out_file.exists());
        let store = GgufStore::open(&rep.out_file, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let types = store.tensor_types();
        // hidden 64 is not a multiple of 256, so q4f16 falls back to Q4_0 blocks of 32
        let want = if mode == Quantization::Q8F16 { "Q8_0" } else { "Q4_0" };
        assert_eq!(types["language_model.model.layers.0.self_attn.q_proj.weight"], want);
        assert_eq!(types["language_model.model.norm.weight"], "F32");
        assert_eq!(types["vision_backbone.featurizer.blocks.0.attn.qkv.weight"], "F16");
        let q = OpenVla::load(&out, &LoadOptions { quantization: Some(mode), ..Default::default() }).unwrap();
        let pq = q.predict_action_stream(&img, "open the drawer", "normalized", |_| {}).unwrap();
        assert_eq!(pq.tokens.len(), 7);
        // Vision is F16 in both modes: features stay within f16 rounding of the dense ones.
        let feats_q = q.encode_image(&img).unwrap();
        let rel = ((&feats_q - &feats_d).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
            / feats_d.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
        .sqrt();
        assert!(rel < 1e-2, "{mode}: vision relative error {rel}");
        let diff: f32 = pq.normalized.iter().zip(&pd.normalized).map(|(a, b)| (a - b).abs()).sum::<f32>() / 7.0;
        eprintln!("{mode}: mean |Δ normalized action| vs dense = {diff:.4}, tokens {:?} vs {:?}", pq.tokens, pd.tokens);
        assert!(matches!(Quantization::parse_opt("fp16"), Ok(None)));
        let _ = std::fs::remove_dir_all(out);
    }
    assert!(OpenVla::load(&dir, &LoadOptions { quantization: Some(Quantization::Q4F16), ..Default::default() }).is_err());
    let _ = std::fs::remove_dir_all(dir);
}
