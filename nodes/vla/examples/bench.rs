//! predict_action latency on CPU for a random-init preset, dense and quantized.
//!
//!   cargo run --release --example bench -- [tiny|small] [iterations]
//!
//! Builds the checkpoint in a temp folder (with the Llama tokenizer when the setup cache has
//! it), quantizes it to q8f16 and q4f16, then times `predict_action` end to end (preprocess,
//! both towers, projector, prefill, 7 decode steps). Prints medians in ms.

use std::time::Instant;

use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::{quantize, LoadOptions, OpenVla, OpenVlaConfig, Preset, Quantization};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let preset: Preset = args.get(1).map(|s| s.as_str()).unwrap_or("tiny").parse()?;
    let iters: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let cfg = OpenVlaConfig::preset(preset);
    let dir = std::env::temp_dir().join(format!("vela-bench-{}", std::process::id()));
    let t = Instant::now();
    let sum = make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 0, max_shard_bytes: None, tokenizer: TokenizerSource::Auto })?;
    println!(
        "preset {:?}: {} tensors, {:.1} MB bf16, tokenizer {}, written in {:.2}s",
        preset,
        sum.n_tensors,
        sum.total_bytes as f64 / 1e6,
        if sum.tokenizer.is_some() { "llama-spm" } else { "byte-fallback" },
        t.elapsed().as_secs_f64()
    );
    let img = image::RgbImage::from_fn(256, 256, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
    let instruction = "pick up the red block and place it on the green block";
    let mut reference: Option<Vec<f32>> = None;
    for mode in [None, Some(Quantization::Q8F16), Some(Quantization::Q4F16)] {
        let mdir = match mode {
            None => dir.clone(),
            Some(q) => {
                let out = dir.join(q.to_string());
                let t = Instant::now();
                let rep = quantize(&dir, q, &out)?;
                println!("  quantize {q}: {:.1} MB in {:.2}s {:?}", rep.bytes as f64 / 1e6, t.elapsed().as_secs_f64(), rep.types);
                out
            }
        };
        let t = Instant::now();
        let m = OpenVla::load(&mdir, &LoadOptions { quantization: mode, ..Default::default() })?;
        let load_s = t.elapsed().as_secs_f64();
        let warm = m.predict_action_stream(&img, instruction, "normalized", |_| {})?;
        let (mut tot, mut vis, mut pre, mut dec) = (vec![], vec![], vec![], vec![]);
        for _ in 0..iters {
            let t = Instant::now();
            let p = m.predict_action_stream(&img, instruction, "bridge_orig", |_| {})?;
            tot.push(t.elapsed().as_secs_f64() * 1e3);
            vis.push(p.vision_ms);
            pre.push(p.prefill_ms);
            dec.push(p.decode_ms);
        }
        let diff = match &reference {
            None => {
                reference = Some(warm.normalized.clone());
                String::new()
            }
            Some(r) => {
                let d: f32 = r.iter().zip(&warm.normalized).map(|(a, b)| (a - b).abs()).sum::<f32>() / r.len() as f32;
                format!(", mean |Δ normalized action| vs dense {d:.4}")
            }
        };
        println!(
            "  {:>6}: load {:.2}s, predict_action median {:.1} ms (vision {:.1}, prefill {:.1} over {} tokens, decode 7 tok {:.1}) over {iters} runs{diff}",
            mode.map(|q| q.to_string()).unwrap_or_else(|| "dense".into()),
            load_s,
            median(tot),
            median(vis),
            median(pre),
            1 + warm.prompt_ids.len() - 1 + m.config.vision_towers()?[0].num_patches(),
            median(dec),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
