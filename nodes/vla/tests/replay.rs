//! The static-buffer plan that CUDA graphs record (model/replay.rs), run eagerly on the CPU
//! against the ordinary decoding path: same tokens, same actions, streamed partials, and a
//! fresh plan when the prompt changes.

use std::path::PathBuf;

use image::RgbImage;
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::{LoadOptions, OpenVla, OpenVlaConfig, Preset};

fn tiny(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vela-vla-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = OpenVlaConfig::preset(Preset::Tiny);
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 5, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    dir
}

fn frame(seed: u8) -> RgbImage {
    RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 5) as u8 ^ seed, (y * 3) as u8, (x * y) as u8 ^ seed.rotate_left(3)]))
}

#[test]
fn the_replay_plan_decodes_what_the_eager_path_decodes() {
    let dir = tiny("same");
    let m = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    assert!(!m.replay_enabled(), "replays are a CUDA feature, off on the CPU by default");
    let space = m.action_spaces()[0].clone();
    let cases = [
        (frame(1), "stack the red cube on the green cube"),
        (frame(2), "stack the red cube on the green cube"),
        (frame(3), "pick up the cube"),
        (frame(1), "stack the red cube on the green cube"),
    ];
    let eager: Vec<_> = cases.iter().map(|(img, text)| m.predict_action_stream(img, text, &space, |_| {}).unwrap()).collect();
    m.set_replay(true);
    let mut distinct = std::collections::BTreeSet::new();
    for ((img, text), want) in cases.iter().zip(&eager) {
        let mut partials = Vec::new();
        let got = m.predict_action_stream(img, text, &space, |p| partials.push(p.clone())).unwrap();
        assert_eq!(got.tokens, want.tokens, "{text}");
        assert_eq!(got.action, want.action);
        assert_eq!(got.prompt_ids, want.prompt_ids);
        assert_eq!(partials.len(), 7);
        assert_eq!(partials.last().unwrap().values, got.action);
        assert!(partials.iter().enumerate().all(|(i, p)| p.index == i && p.token == got.tokens[i] && p.values.len() == i + 1));
        distinct.extend(got.tokens.iter().copied());
    }
    assert!(distinct.len() > 3, "random weights should decode varied tokens, got {distinct:?}");
    // The stage-by-stage timing path runs the same plan.
    let timed = m.predict_timed(&cases[2].0, cases[2].1).unwrap();
    let plain = m.predict_action_stream(&cases[2].0, cases[2].1, vela_vla::model::NORMALIZED, |_| {}).unwrap();
    assert_eq!(timed.tokens, plain.tokens);
    assert_eq!(timed.token_ms.len(), 6);
    assert!(timed.prefill_len > plain.prompt_ids.len());
    // Errors in the request stay errors and leave replays on.
    assert!(m.predict_action_stream(&cases[0].0, cases[0].1, "no-such-space", |_| {}).is_err());
    assert!(m.replay_enabled());
}

#[test]
fn pixels_scaled_on_the_device_equal_the_host_preprocessing() {
    use candle_core::{DType, Device, Tensor};
    use vela_vla::preprocess::{normalize_on_device, pixel_values, resized_per_size};
    let towers = OpenVlaConfig::preset(Preset::SevenB).vision_towers().unwrap();
    let img = vela_vla::bench::bench_image(1);
    let resized = resized_per_size(&img, &towers);
    assert_eq!(resized.len(), 1, "both 7B towers read 224 px: one resize");
    let frames: Vec<(usize, Tensor)> = resized
        .iter()
        .map(|(s, f)| (*s, Tensor::from_slice(f.as_raw(), (*s, *s, 3), &Device::Cpu).unwrap()))
        .collect();
    for dtype in [DType::F32, DType::BF16] {
        let host = pixel_values(&img, &towers, dtype, &Device::Cpu).unwrap();
        let dev = normalize_on_device(&frames, &towers, dtype).unwrap();
        assert_eq!(host.dims(), dev.dims());
        let diff = (host.to_dtype(DType::F32).unwrap() - dev.to_dtype(DType::F32).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{dtype:?}");
    }
}

#[test]
fn the_replayed_resize_matches_the_image_crate_bit_for_bit() {
    use vela_vla::preprocess::{resize, resize_replayed};
    let mut rng = 0x1234_5678u64;
    let mut byte = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 24) as u8
    };
    // Shrinking (a 256 px camera, a wide frame), enlarging, and the sim's own size.
    for (w, h, size) in [(256u32, 256u32, 224usize), (320, 240, 224), (100, 90, 224), (224, 224, 224), (640, 480, 112)] {
        // Noise plus a smooth ramp: both flat and busy areas, and values near 0 and 255.
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([byte(), ((x * 255) / w) as u8, if (x + y) % 7 == 0 { 255 } else { (y % 256) as u8 }]));
        assert_eq!(resize_replayed(&img, size).as_raw(), resize(&img, size).as_raw(), "{w}x{h} -> {size}");
    }
}
