//! The candle model against a deliberately naive re-implementation (plain loops over f32
//! slices, nothing shared with the crate but the checkpoint files) on the tiny presets.
//! Catches transposes, head splits, prefix handling and RoPE layout in non-degenerate weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::config::VitConfig;
use vela_vla::{LoadOptions, OpenVla, OpenVlaConfig, Preset};

struct W(HashMap<String, Vec<f32>>);

impl W {
    fn load(dir: &Path) -> Self {
        let mut m = HashMap::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                for (k, t) in candle_core::safetensors::load(&p, &Device::Cpu).unwrap() {
                    m.insert(k, t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
            }
        }
        W(m)
    }
    fn g(&self, k: &str) -> &[f32] {
        self.0.get(k).unwrap_or_else(|| panic!("{k}"))
    }
}

/// rows × out = x (rows × inp) · Wᵀ + b
fn linear(x: &[f32], inp: usize, w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let out = w.len() / inp;
    let rows = x.len() / inp;
    let mut y = vec![0f32; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut s = 0f64;
            for i in 0..inp {
                s += x[r * inp + i] as f64 * w[o * inp + i] as f64;
            }
            y[r * out + o] = s as f32 + b.map_or(0.0, |b| b[o]);
        }
    }
    y
}

fn layer_norm(x: &[f32], d: usize, w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|r| {
            let m = r.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = r.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / d as f64;
            let s = 1.0 / (var + eps).sqrt();
            (0..d).map(move |i| ((r[i] as f64 - m) * s) as f32 * w[i] + b[i]).collect::<Vec<_>>()
        })
        .collect()
}

fn erf(x: f64) -> f64 {
    if x.abs() > 5.0 {
        return x.signum();
    }
    let (mut sum, mut term, mut n) = (0.0, x, 0);
    while n < 300 {
        sum += term / (2 * n + 1) as f64;
        n += 1;
        term *= -x * x / n as f64;
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}
fn gelu(v: &mut [f32]) {
    for x in v {
        let f = *x as f64;
        *x = (0.5 * f * (1.0 + erf(f / 2f64.sqrt()))) as f32;
    }
}

fn softmax(v: &mut [f64]) {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = v.iter_mut().map(|x| {
        *x = (*x - m).exp();
        *x
    }).sum();
    v.iter_mut().for_each(|x| *x /= s);
}

/// Multi-head attention on row-major q/k/v (n × heads·hd), causal if asked.
fn attention(q: &[f32], k: &[f32], v: &[f32], n: usize, heads: usize, hd: usize, causal: bool) -> Vec<f32> {
    let d = heads * hd;
    let mut out = vec![0f32; n * d];
    for h in 0..heads {
        for i in 0..n {
            let mut s: Vec<f64> = (0..n)
                .map(|j| {
                    if causal && j > i {
                        return f64::NEG_INFINITY;
                    }
                    (0..hd).map(|e| q[i * d + h * hd + e] as f64 * k[j * d + h * hd + e] as f64).sum::<f64>() / (hd as f64).sqrt()
                })
                .collect();
            softmax(&mut s);
            for e in 0..hd {
                out[i * d + h * hd + e] = (0..n).map(|j| s[j] * v[j * d + h * hd + e] as f64).sum::<f64>() as f32;
            }
        }
    }
    out
}

/// One tower on a `3 × S × S` image; returns `N × D` patch features.
fn vit(w: &W, p: &str, c: &VitConfig, img: &[f32]) -> Vec<f32> {
    let (s, ps, d) = (c.image_size, c.patch_size, c.embed_dim);
    let g = s / ps;
    let pw = w.g(&format!("{p}.patch_embed.proj.weight"));
    let pb = w.g(&format!("{p}.patch_embed.proj.bias"));
    let pos = w.g(&format!("{p}.pos_embed"));
    let mut tokens: Vec<f32> = Vec::new();
    if c.class_token {
        tokens.extend_from_slice(w.g(&format!("{p}.cls_token")));
    }
    if c.num_reg_tokens > 0 {
        tokens.extend_from_slice(w.g(&format!("{p}.reg_token")));
    }
    for gy in 0..g {
        for gx in 0..g {
            for o in 0..d {
                let mut acc = pb[o] as f64;
                for ch in 0..3 {
                    for ky in 0..ps {
                        for kx in 0..ps {
                            let px = img[ch * s * s + (gy * ps + ky) * s + gx * ps + kx] as f64;
                            acc += px * pw[((o * 3 + ch) * ps + ky) * ps + kx] as f64;
                        }
                    }
                }
                tokens.push(acc as f32 + pos[(gy * g + gx) * d + o]);
            }
        }
    }
    let n = tokens.len() / d;
    let mut x = tokens;
    for b in 0..c.depth - 1 {
        let q = |n: &str| format!("{p}.blocks.{b}.{n}");
        let h = layer_norm(&x, d, w.g(&q("norm1.weight")), w.g(&q("norm1.bias")), 1e-6);
        let qkv = linear(&h, d, w.g(&q("attn.qkv.weight")), Some(w.g(&q("attn.qkv.bias"))));
        let split = |part: usize| -> Vec<f32> { (0..n).flat_map(|r| qkv[r * 3 * d + part * d..r * 3 * d + (part + 1) * d].to_vec()).collect() };
        let a = attention(&split(0), &split(1), &split(2), n, c.num_heads, d / c.num_heads, false);
        let a = linear(&a, d, w.g(&q("attn.proj.weight")), Some(w.g(&q("attn.proj.bias"))));
        for i in 0..n * d {
            let ls = if c.layer_scale { w.g(&q("ls1.scale_factor"))[i % d] } else { 1.0 };
            x[i] += ls * a[i];
        }
        let h = layer_norm(&x, d, w.g(&q("norm2.weight")), w.g(&q("norm2.bias")), 1e-6);
        let mut h = linear(&h, d, w.g(&q("mlp.fc1.weight")), Some(w.g(&q("mlp.fc1.bias"))));
        gelu(&mut h);
        let m = linear(&h, c.mlp_hidden, w.g(&q("mlp.fc2.weight")), Some(w.g(&q("mlp.fc2.bias"))));
        for i in 0..n * d {
            let ls = if c.layer_scale { w.g(&q("ls2.scale_factor"))[i % d] } else { 1.0 };
            x[i] += ls * m[i];
        }
    }
    x[c.num_prefix_tokens() * d..].to_vec()
}

fn rms(x: &[f32], d: usize, w: &[f32], eps: f64) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|r| {
            let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
            let s = 1.0 / (ms + eps).sqrt();
            (0..d).map(move |i| (r[i] as f64 * s) as f32 * w[i]).collect::<Vec<_>>()
        })
        .collect()
}

/// Rotate-half RoPE on every head of row-major `n × heads·hd`.
fn rope(x: &mut [f32], n: usize, heads: usize, hd: usize, theta: f64) {
    let half = hd / 2;
    for pos in 0..n {
        for h in 0..heads {
            let base = pos * heads * hd + h * hd;
            for i in 0..half {
                let f = pos as f64 / theta.powf(2.0 * i as f64 / hd as f64);
                let (a, b) = (x[base + i] as f64, x[base + i + half] as f64);
                x[base + i] = (a * f.cos() - b * f.sin()) as f32;
                x[base + i + half] = (b * f.cos() + a * f.sin()) as f32;
            }
        }
    }
}

fn check(preset: Preset) {
    let cfg = OpenVlaConfig::preset(preset);
    let dir = std::env::temp_dir().join(format!("vela-vla-ref-{}-{preset:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 5, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    let w = W::load(&dir);
    let model = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    let towers = cfg.vision_towers().unwrap();
    let s = towers[0].image_size;
    let img = image::RgbImage::from_fn(s as u32, s as u32, |x, y| image::Rgb([(x * 9) as u8, (y * 7) as u8, ((x * y) % 251) as u8]));
    let px = vela_vla::preprocess::pixel_values(&img, &towers, DType::F32, &Device::Cpu).unwrap();
    // preprocessing: no resize at the native size, then (p/255 − mean)/std per tower
    let pxv = px.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (x, y) = (3usize, 5usize);
    for (t, c) in towers.iter().enumerate() {
        for ch in 0..3 {
            let raw = img.get_pixel(x as u32, y as u32).0[ch] as f32 / 255.0;
            let want = (raw - c.image_mean[ch]) / c.image_std[ch];
            assert!((pxv[(t * 3 + ch) * s * s + y * s + x] - want).abs() < 1e-6);
        }
    }
    // vision + projector
    let n = towers[0].num_patches();
    let feats: Vec<Vec<f32>> = towers
        .iter()
        .enumerate()
        .map(|(t, c)| vit(&w, vela_vla::vision::tower_prefix(t), c, &pxv[t * 3 * s * s..(t + 1) * 3 * s * s]))
        .collect();
    let vd: usize = towers.iter().map(|t| t.embed_dim).sum();
    let mut fused = Vec::with_capacity(n * vd);
    for r in 0..n {
        for (t, f) in feats.iter().enumerate() {
            let d = towers[t].embed_dim;
            fused.extend_from_slice(&f[r * d..(r + 1) * d]);
        }
    }
    let n_fc = if cfg.use_fused_vision_backbone { 3 } else { 2 };
    let mut h = fused;
    let mut inp = vd;
    for i in 1..=n_fc {
        let wt = w.g(&format!("projector.fc{i}.weight"));
        h = linear(&h, inp, wt, Some(w.g(&format!("projector.fc{i}.bias"))));
        inp = wt.len() / inp;
        if i < n_fc {
            gelu(&mut h);
        }
    }
    let patches = model.encode_pixels(&px).unwrap();
    let got = patches.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let max_err = got.iter().zip(&h).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = h.iter().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(max_err <= 1e-4 * scale.max(1.0), "{preset:?} vision: max err {max_err} (scale {scale})");
    // Llama prefill over [BOS] + patches + prompt
    let tc = &cfg.text_config;
    let (hd_, heads) = (tc.hidden_size, tc.num_attention_heads);
    let ids = model.prompt_ids("push the button");
    let emb = w.g("language_model.model.embed_tokens.weight");
    let mut x: Vec<f32> = emb[ids[0] as usize * hd_..(ids[0] as usize + 1) * hd_].to_vec();
    x.extend_from_slice(&h);
    for &id in &ids[1..] {
        x.extend_from_slice(&emb[id as usize * hd_..(id as usize + 1) * hd_]);
    }
    let len = x.len() / hd_;
    for l in 0..tc.num_hidden_layers {
        let q = |n: &str| format!("language_model.model.layers.{l}.{n}");
        let hn = rms(&x, hd_, w.g(&q("input_layernorm.weight")), tc.rms_norm_eps);
        let mut qq = linear(&hn, hd_, w.g(&q("self_attn.q_proj.weight")), None);
        let mut kk = linear(&hn, hd_, w.g(&q("self_attn.k_proj.weight")), None);
        let vv = linear(&hn, hd_, w.g(&q("self_attn.v_proj.weight")), None);
        rope(&mut qq, len, heads, hd_ / heads, tc.rope_theta);
        rope(&mut kk, len, heads, hd_ / heads, tc.rope_theta);
        let a = attention(&qq, &kk, &vv, len, heads, hd_ / heads, true);
        let a = linear(&a, hd_, w.g(&q("self_attn.o_proj.weight")), None);
        x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
        let hn = rms(&x, hd_, w.g(&q("post_attention_layernorm.weight")), tc.rms_norm_eps);
        let g = linear(&hn, hd_, w.g(&q("mlp.gate_proj.weight")), None);
        let u = linear(&hn, hd_, w.g(&q("mlp.up_proj.weight")), None);
        let m: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp())) as f32 * u).collect();
        let d = linear(&m, tc.intermediate_size, w.g(&q("mlp.down_proj.weight")), None);
        x.iter_mut().zip(&d).for_each(|(x, d)| *x += d);
    }
    let last = rms(&x[(len - 1) * hd_..], hd_, w.g("language_model.model.norm.weight"), tc.rms_norm_eps);
    let want = linear(&last, hd_, w.g("language_model.lm_head.weight"), None);
    let got = model.prefill_logits(&patches, &ids).unwrap().to_vec1::<f32>().unwrap();
    let max_err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(max_err <= 1e-3 * scale.max(1.0), "{preset:?} llm: max err {max_err} (scale {scale})");
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax(&got), argmax(&want));
    let _ = Tensor::zeros(1, DType::F32, &Device::Cpu);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fused_tiny_matches_naive_reference() {
    check(Preset::Tiny);
}

#[test]
fn single_tower_tiny_matches_naive_reference() {
    check(Preset::TinySingle);
}
