//! Per-block checks against values worked out by hand on tiny shapes.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use vela_vla::action::{normalize, unnormalize, ActionTokenizer};
use vela_vla::config::{OpenVlaConfig, Preset, Stats, TextConfig, VitConfig};
use vela_vla::eval::{accuracy, nrmse};
use vela_vla::llama::{causal_mask, RmsNorm, Rotary};
use vela_vla::vision::{PatchEmbed, Projector, Vit, VitBlock};
use vela_vla::weights::{MemStore, Weights};

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}
fn ws(m: Vec<(&str, Tensor)>) -> Weights {
    Weights::new(Arc::new(MemStore::new(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<HashMap<_, _>>())))
}
fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}
fn flat(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn patch_embedding_is_a_strided_conv() {
    // 4x4 image, patch 2 → 4 patches in row-major order. D=2: filter 0 sums channel 0 of the
    // patch, filter 1 picks the top-left pixel of channel 2, plus biases 0.5 / -1.
    let img: Vec<f32> = (0..48).map(|i| i as f32).collect();
    let mut w = vec![0f32; 2 * 3 * 2 * 2];
    w[..4].fill(1.0); // filter 0, channel 0, all 4 taps
    w[12 + 8] = 1.0; // filter 1, channel 2, tap (0,0)
    let pe = PatchEmbed::load(&ws(vec![("patch_embed.proj.weight", t(&w, &[2, 3, 2, 2])), ("patch_embed.proj.bias", t(&[0.5, -1.0], &[2]))]), 2, 2).unwrap();
    let y = pe.forward(&t(&img, &[1, 3, 4, 4])).unwrap();
    assert_eq!(y.dims(), &[1, 4, 2]);
    // channel 0 pixels: row r, col c = 4r + c. Patch (0,0): 0+1+4+5=10; (0,1): 2+3+6+7=18;
    // (1,0): 8+9+12+13=42; (1,1): 10+11+14+15=50. Channel 2 top-left = 32 + that of channel 0.
    close(&flat(&y), &[10.5, 31.0, 18.5, 33.0, 42.5, 39.0, 50.5, 41.0], 1e-5);
}

fn tiny_vit(reg: usize, layer_scale: bool) -> VitConfig {
    let mut c = VitConfig::dino(2, 1, 2, 2, 1, 2, reg);
    c.layer_scale = layer_scale;
    c
}

/// Block weights that make attention output `b1` and the MLP output `b2` for every token.
fn const_block(p: &str, b1: [f32; 2], b2: [f32; 2], g1: [f32; 2], g2: [f32; 2]) -> Vec<(String, Tensor)> {
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    vec![
        (format!("{p}.norm1.weight"), t(&[1., 1.], &[2])),
        (format!("{p}.norm1.bias"), z(&[2])),
        (format!("{p}.attn.qkv.weight"), z(&[6, 2])),
        (format!("{p}.attn.qkv.bias"), z(&[6])),
        (format!("{p}.attn.proj.weight"), z(&[2, 2])),
        (format!("{p}.attn.proj.bias"), t(&b1, &[2])),
        (format!("{p}.ls1.scale_factor"), t(&g1, &[2])),
        (format!("{p}.norm2.weight"), t(&[1., 1.], &[2])),
        (format!("{p}.norm2.bias"), z(&[2])),
        (format!("{p}.mlp.fc1.weight"), z(&[2, 2])),
        (format!("{p}.mlp.fc1.bias"), z(&[2])),
        (format!("{p}.mlp.fc2.weight"), z(&[2, 2])),
        (format!("{p}.mlp.fc2.bias"), t(&b2, &[2])),
        (format!("{p}.ls2.scale_factor"), t(&g2, &[2])),
    ]
}

#[test]
fn layer_scale_multiplies_both_residual_branches() {
    let cfg = tiny_vit(0, true);
    let m = const_block("b", [1.0, 2.0], [10.0, 20.0], [0.5, 0.25], [0.1, 0.01]);
    let w = Weights::new(Arc::new(MemStore::new(m.into_iter().collect())));
    let blk = VitBlock::load(&w.pp("b"), &cfg).unwrap();
    let x = t(&[1.0, -1.0, 3.0, 4.0], &[1, 2, 2]);
    let y = blk.forward(&x).unwrap();
    // x + ls1*b1 + ls2*b2 = x + [0.5, 0.5] + [1.0, 0.2]
    close(&flat(&y), &[2.5, -0.3, 4.5, 4.7], 1e-5);
}

#[test]
fn register_tokens_are_prepended_after_position_embedding() {
    // 2x2 image with 1x1 patches, D=2, cls + 2 registers, blocks that add 0.
    let mut cfg = tiny_vit(2, true);
    cfg.depth = 2; // only block 0 runs (second-to-last output)
    let mut m: Vec<(String, Tensor)> = vec![
        ("cls_token".into(), t(&[100., 101.], &[1, 1, 2])),
        ("reg_token".into(), t(&[200., 201., 300., 301.], &[1, 2, 2])),
        ("pos_embed".into(), t(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], &[1, 4, 2])),
        // patch embedding copies channel 0 into both features
        ("patch_embed.proj.weight".into(), t(&[1., 0., 0., 1., 0., 0.], &[2, 3, 1, 1])),
        ("patch_embed.proj.bias".into(), t(&[0., 0.], &[2])),
    ];
    m.extend(const_block("blocks.0", [0., 0.], [0., 0.], [1., 1.], [1., 1.]));
    let w = Weights::new(Arc::new(MemStore::new(m.into_iter().collect())));
    let vit = Vit::load(&w, &cfg).unwrap();
    let img = t(&[1., 2., 3., 4., 0., 0., 0., 0., 0., 0., 0., 0.], &[1, 3, 2, 2]);
    let e = vit.embed(&img).unwrap();
    assert_eq!(e.dims(), &[1, 7, 2]);
    close(
        &flat(&e),
        &[100., 101., 200., 201., 300., 301., 1.1, 1.2, 2.3, 2.4, 3.5, 3.6, 4.7, 4.8],
        1e-5,
    );
    // forward strips the 3 prefix tokens and keeps the 4 patch tokens
    let f = vit.forward(&img).unwrap();
    close(&flat(&f), &[1.1, 1.2, 2.3, 2.4, 3.5, 3.6, 4.7, 4.8], 1e-5);
}

#[test]
fn rotary_rotates_pairs_half_apart() {
    // head_dim 4, theta 100: frequencies [1, 1/10]. Position 2.
    let r = Rotary::new(4, 8, 100.0, DType::F32, &Device::Cpu).unwrap();
    let x = t(&[1., 2., 3., 4.], &[1, 1, 1, 4]);
    let y = flat(&r.apply(&x, 2).unwrap());
    let (a0, a1) = (2.0f32, 0.2f32);
    let want = [
        1. * a0.cos() - 3. * a0.sin(),
        2. * a1.cos() - 4. * a1.sin(),
        3. * a0.cos() + 1. * a0.sin(),
        4. * a1.cos() + 2. * a1.sin(),
    ];
    close(&y, &want, 1e-5);
}

#[test]
fn rms_norm_uses_the_given_eps() {
    let x = t(&[1.0, 1.0], &[1, 1, 2]);
    let n = RmsNorm::new(t(&[1.0, 2.0], &[2]), 1.0);
    // mean(x²) = 1 → x / sqrt(1 + 1)
    let s = 1.0 / 2f32.sqrt();
    close(&flat(&n.forward(&x).unwrap()), &[s, 2.0 * s], 1e-6);
}

#[test]
fn text_config_eps_defaults_to_llama_config_not_llama2() {
    let c: TextConfig = serde_json::from_str(r#"{"model_type":"llama","vocab_size":32064,"pad_token_id":32000}"#).unwrap();
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.max_position_embeddings, 2048);
    assert_eq!(c.hidden_size, 4096);
    let c: TextConfig = serde_json::from_str(r#"{"rms_norm_eps":1e-5}"#).unwrap();
    assert_eq!(c.rms_norm_eps, 1e-5);
}

#[test]
fn causal_mask_with_offset() {
    let m = flat(&causal_mask(2, 1, DType::F32, &Device::Cpu).unwrap());
    assert_eq!(m[..3], [0.0, 0.0, f32::NEG_INFINITY]);
    assert_eq!(m[3..], [0.0, 0.0, 0.0]);
}

#[test]
fn fused_projector_is_three_linears_with_exact_gelu() {
    let mut cfg = OpenVlaConfig::preset(Preset::Tiny);
    cfg.text_config.hidden_size = 1;
    // vision dim 1 → fc1 1→4, fc2 4→1, fc3 1→1
    let dims = Projector::dims(&cfg, 1);
    assert_eq!(dims, vec![(1, 4), (4, 1), (1, 1)]);
    let w = ws(vec![
        ("projector.fc1.weight", t(&[1., -1., 2., 0.], &[4, 1])),
        ("projector.fc1.bias", t(&[0., 0., 0., 1.], &[4])),
        ("projector.fc2.weight", t(&[1., 1., 1., 1.], &[1, 4])),
        ("projector.fc2.bias", t(&[0.], &[1])),
        ("projector.fc3.weight", t(&[2.], &[1, 1])),
        ("projector.fc3.bias", t(&[1.], &[1])),
    ]);
    let p = Projector::load(&w, &cfg, 1).unwrap();
    let y = flat(&p.forward(&t(&[1.0], &[1, 1, 1])).unwrap())[0];
    // gelu(1)=0.841345, gelu(-1)=-0.158655, gelu(2)=1.954500, gelu(1)=0.841345 → sum 3.478535
    // gelu(3.478535)=3.477660 → 2*3.477660 + 1
    let gelu = |x: f64| 0.5 * x * (1.0 + erf(x / 2f64.sqrt()));
    let h = gelu(1.0) + gelu(-1.0) + gelu(2.0) + gelu(1.0);
    let want = 2.0 * gelu(h) + 1.0;
    assert!((y as f64 - want).abs() < 1e-4, "{y} vs {want}");
    assert!((want - 7.95532).abs() < 1e-3, "{want}");
}

/// Abramowitz-Stegun 7.1.26 is too coarse; use a series good to 1e-10 on |x| < 4.
fn erf(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x;
    let mut n = 0;
    while term.abs() > 1e-15 || n < 5 {
        sum += term / (2 * n + 1) as f64;
        n += 1;
        term *= -x * x / n as f64;
        if n > 200 {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

#[test]
fn single_tower_projector_has_two_layers() {
    let cfg = OpenVlaConfig::preset(Preset::Small);
    assert_eq!(Projector::dims(&cfg, 192), vec![(192, 256), (256, 256)]);
    let cfg = OpenVlaConfig::preset(Preset::SevenB);
    assert_eq!(Projector::dims(&cfg, 2176), vec![(2176, 8704), (8704, 4096), (4096, 4096)]);
}

#[test]
fn action_tokens_round_trip_to_bin_centres() {
    let at = ActionTokenizer::new(32000, 256);
    assert_eq!(at.first_action_id(), 31744);
    // edges: -1 → digitize 1 → 31999; 1.0 → 256 → 31744; 0 → bin 128 → 31872
    assert_eq!(at.encode(-1.0), 31999);
    assert_eq!(at.encode(1.0), 31744);
    assert_eq!(at.encode(5.0), 31744);
    assert_eq!(at.encode(0.0), 31872);
    assert_eq!(at.decode(31872), 0.0);
    assert!((at.decode(31999) - (-1.0 + 1.0 / 255.0)).abs() < 1e-6);
    assert!((at.decode(31744) - (1.0 - 1.0 / 255.0)).abs() < 1e-6);
    assert_eq!(at.decode(31745), at.decode(31744));
    assert_eq!(at.decode(100), at.decode(31744), "ids below the action range clip to the top bin");
    assert_eq!(at.decode(32010), at.decode(31999), "pad ids clip to the bottom bin");
    // Every value comes back within one bin width (2/255).
    for i in 0..=1000 {
        let a = -1.0 + 2.0 * i as f32 / 1000.0;
        let back = at.decode(at.encode(a));
        assert!((back - a).abs() <= 2.0 / 255.0 + 1e-6, "{a} → {back}");
    }
    // Every token decodes to a value that encodes back to a neighbouring token.
    for tok in 31745..=31999u32 {
        let v = at.decode(tok);
        let t2 = at.encode(v);
        assert!(t2 == tok || t2 + 1 == tok, "{tok} → {v} → {t2}");
    }
}

#[test]
fn unnormalisation_respects_the_mask() {
    let s = Stats {
        mean: vec![0.; 3],
        std: vec![1.; 3],
        max: vec![1.; 3],
        min: vec![-1.; 3],
        q01: vec![-2.0, 0.0, 0.0],
        q99: vec![2.0, 10.0, 1.0],
        mask: Some(vec![true, true, false]),
    };
    let a = unnormalize(&[0.5, -1.0, 0.7], &s);
    close(&a, &[1.0, 0.0, 0.7], 1e-6);
    let n = normalize(&a, &s);
    close(&n, &[0.5, -1.0, 0.7], 1e-6);
    // no mask → every dimension is un-normalised
    let s2 = Stats { mask: None, ..s };
    close(&unnormalize(&[0.5, -1.0, 0.0], &s2), &[1.0, 0.0, 0.5], 1e-6);
}

#[test]
fn nrmse_and_zero_range() {
    let q01 = [0.0, -1.0, 0.5];
    let q99 = [2.0, 1.0, 0.5]; // third dimension has zero range
    let gt = [1.0, 0.0, 0.5];
    let pred = [2.0, 1.0, 0.75];
    // errors / range: 0.5, 0.5, 0.25 (absolute) → sqrt((0.25+0.25+0.0625)/3)
    let want = ((0.25 + 0.25 + 0.0625) / 3.0f32).sqrt();
    assert!((nrmse(&gt, &pred, &q01, &q99) - want).abs() < 1e-6);
    assert!((accuracy(&gt, &pred, &q01, &q99) - (1.0 - want)).abs() < 1e-6);
    // NaN entries are skipped
    let gt = [f32::NAN, 0.0, 0.5];
    let want = ((0.25 + 0.0625) / 2.0f32).sqrt();
    assert!((nrmse(&gt, &pred, &q01, &q99) - want).abs() < 1e-6);
    assert!(nrmse(&gt, &gt, &q01, &q99).abs() < 1e-7);
}

#[test]
fn save_stats_shape_and_normalized_range() {
    use vela_vla::eval::{nrmse_normalized, ActionRange, EvalStats};
    // normalized: scalar range 2 → rmse / 2
    let e = nrmse_normalized(&[0.0, 1.0], &[1.0, 0.0]);
    assert!((e - 0.5).abs() < 1e-6);
    let r = ActionRange::Quantiles { q01: vec![0.0, 0.0], q99: vec![2.0, 2.0] };
    assert!((r.nrmse(&[0.0, 1.0], &[1.0, 0.0]) - 0.5).abs() < 1e-6);
    let mut s = EvalStats::default();
    s.push(0.5, 0.2);
    s.push(0.25, 0.4);
    assert_eq!(s.mean.timesteps, 2);
    assert!((s.mean.latency - 0.375).abs() < 1e-9);
    assert!((s.mean.error - 0.3).abs() < 1e-6);
    let j = serde_json::to_value(&s).unwrap();
    for k in ["latency", "eval_latency", "eval_error", "quant_error", "error", "mean"] {
        assert!(j.get(k).is_some(), "{k}");
    }
    assert!(j["mean"].get("quant_error").is_none(), "eval keys only when a second model ran");
    s.push_eval(1.0, 0.1, 0.05);
    assert!(serde_json::to_value(&s).unwrap()["mean"].get("quant_error").is_some());
    let line = s.step_line(1, &[0.1, -0.2]);
    assert!(line.starts_with("step 1  [+0.1000 -0.2000]  accuracy 0.6000 ~0.7000  time=250.0 ms"), "{line}");
    assert_eq!(EvalStats::gt_line(1, &[0.5]), "gt   1  [+0.5000]");
}

#[test]
fn center_crop_keeps_the_middle() {
    // 10x10 image whose centre 6x6 is white and border black: area 0.36 keeps only white.
    let img = image::RgbImage::from_fn(10, 10, |x, y| {
        if (2..8).contains(&x) && (2..8).contains(&y) { image::Rgb([255, 255, 255]) } else { image::Rgb([0, 0, 0]) }
    });
    let c = vela_vla::preprocess::center_crop(&img, 0.36);
    assert_eq!(c.dimensions(), (10, 10));
    assert!(c.pixels().all(|p| p.0 == [255, 255, 255]));
}
