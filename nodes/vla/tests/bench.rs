//! The pieces `vela vla bench` and the GPU path rest on: fused projections compute what the
//! separate layers compute, percentiles, FLOP counts, and a CPU bench of a tiny checkpoint.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use vela_vla::bench::{self, BenchOptions, Stat};
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::weights::Lin;
use vela_vla::{OpenVlaConfig, Preset};

fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    d / b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
}

fn parts(dt: Option<GgmlDType>, outs: &[usize], inp: usize) -> Vec<Lin> {
    outs.iter()
        .enumerate()
        .map(|(i, &o)| {
            let w = Tensor::randn(0f32, 1.0, (o, inp), &Device::Cpu).unwrap();
            match dt {
                None => {
                    let b = Tensor::randn(0f32, 1.0, o, &Device::Cpu).unwrap();
                    Lin::Dense(candle_nn::Linear::new(w, Some(b)))
                }
                Some(dt) => {
                    let q = QTensor::quantize(&w, dt).unwrap();
                    let _ = i;
                    Lin::Quant { w: QMatMul::from_qtensor(q).unwrap(), b: None }
                }
            }
        })
        .collect()
}

#[test]
fn fused_projections_equal_the_separate_ones() {
    let x = Tensor::randn(0f32, 1.0, (1, 3, 256), &Device::Cpu).unwrap();
    for dt in [None, Some(GgmlDType::Q8_0), Some(GgmlDType::Q4K)] {
        let ps = parts(dt, &[256, 64, 64], 256);
        let fused = Lin::fuse(&ps).unwrap();
        assert_eq!(fused.out_features().unwrap(), 384);
        let want: Vec<Tensor> = ps.iter().map(|p| p.forward(&x).unwrap()).collect();
        let want = Tensor::cat(&want, 2).unwrap();
        let got = fused.forward(&x).unwrap();
        assert_eq!(got.dims(), want.dims());
        // Same weights, same blocks: identical up to summation order.
        assert!(rel(&got, &want) < 1e-5, "{dt:?}: {}", rel(&got, &want));
        let sep: u64 = ps.iter().map(|p| p.weight_bytes()).sum();
        assert_eq!(fused.weight_bytes(), sep, "{dt:?}");
    }
    // Mixed block types cannot be joined.
    let mut mixed = parts(Some(GgmlDType::Q8_0), &[32], 256);
    mixed.extend(parts(Some(GgmlDType::Q4K), &[32], 256));
    assert!(Lin::fuse(&mixed).is_err());
}

#[test]
fn percentiles_are_order_statistics() {
    let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    let s = Stat::of(&v);
    assert_eq!((s.p50, s.p95, s.min, s.n), (51.0, 95.0, 1.0, 100));
    assert!((s.mean - 50.5).abs() < 1e-9);
}

#[test]
fn flop_counts_match_the_7b_shape() {
    let cfg = OpenVlaConfig::preset(Preset::SevenB);
    // Llama-2-7B: 6.5 G matrix parameters in the decoder, 2 FLOPs each per position.
    let one = bench::llm_prefill_flops(&cfg, 1);
    assert!((one / 2.0 - 6.61e9).abs() < 0.1e9, "{one:e}");
    // Both towers over 23 and 26 blocks: roughly 2 × 0.7 G params × 257 tokens.
    let v: f64 = cfg.vision_towers().unwrap().iter().map(bench::vit_flops).sum();
    assert!(v > 3.0e11 && v < 4.5e11, "{v:e}");
}

#[test]
fn cpu_bench_of_a_tiny_checkpoint_reports_every_stage() {
    let dir = std::env::temp_dir().join(format!("vela-vla-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = OpenVlaConfig::preset(Preset::Tiny);
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 5, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    let opts = BenchOptions { quantization: None, device: Device::Cpu, dtype: DType::F32, iters: 3, warmup: 1, dump: Some(dir.join("dump.safetensors")), replay: false };
    let r = bench::run(&dir, &opts).unwrap();
    assert_eq!(r.tokens.len(), 7);
    assert_eq!(r.decode_token_ms.n, 3 * 6);
    assert!(r.total_ms.p50 > 0.0 && r.floor.total_ms > 0.0 && r.ratio > 0.0);
    assert!(r.ceilings.copy_gb_s > 0.0 && r.ceilings.matmul_tflop_s > 0.0);
    // Decode streams every decoder matrix: 2 layers of (4·64² + 3·64·128) f32 plus lm_head.
    let mats = 2 * (4 * 64 * 64 + 3 * 64 * 128) + 32064 * 64;
    assert!(r.floor.decode_bytes_per_token >= 4 * mats as u64, "{}", r.floor.decode_bytes_per_token);
    assert!(r.gpu_memory.is_none());
    // The reference dump holds every input's values under the names openvla_torch.py reads.
    let d = candle_core::safetensors::load(dir.join("dump.safetensors"), &Device::Cpu).unwrap();
    for k in 0..bench::INSTRUCTIONS.len() {
        assert_eq!(d[&format!("tokens.{k}")].dims(), &[7]);
        assert_eq!(d[&format!("logits.{k}")].dims(), &[32064]);
        assert_eq!(d[&format!("pixel_values.{k}")].dims(), &[1, 6, 28, 28]);
        assert_eq!(d[&format!("projector.{k}")].dims(), &[1, 4, 64]);
    }
    assert_eq!(d["tokens.0"].to_vec1::<i64>().unwrap(), r.tokens.iter().map(|&t| t as i64).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}
