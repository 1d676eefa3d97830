//! Batched prediction (many simulators, one model) against one-at-a-time prediction.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use vela_vla::batcher::Client;
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::{LoadOptions, OpenVla, OpenVlaConfig, Preset};

fn tiny(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vela-vla-batch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = OpenVlaConfig::preset(Preset::Tiny);
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 3, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    dir
}

fn frame(seed: u8) -> RgbImage {
    RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 3) as u8 ^ seed, (y * 7) as u8, (x + y) as u8 ^ seed.rotate_left(2)]))
}

#[test]
fn a_batch_decodes_what_single_requests_decode() {
    let dir = tiny("same");
    let m = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    let space = m.action_spaces()[0].clone();
    let imgs = [frame(1), frame(2), frame(3)];
    // Two prompt lengths: the longer instruction decodes in a group of its own.
    let instr = ["stack the red cube on the green cube", "stack the red cube on the green cube", "pick up the cube"];
    let reqs: Vec<(&RgbImage, &str)> = imgs.iter().zip(instr).collect();
    let batched = m.predict_actions_batch(&reqs, &space).unwrap();
    assert_eq!(batched.len(), 3);
    let mut differing = 0;
    for ((img, text), b) in reqs.iter().zip(&batched) {
        let single = m.predict_action_stream(img, text, &space, |_| {}).unwrap();
        assert_eq!(single.prompt_ids, b.prompt_ids);
        assert_eq!(b.action.len(), 7);
        differing += single.tokens.iter().zip(&b.tokens).filter(|(x, y)| x != y).count();
    }
    // Batched matmuls may round differently; on these inputs no token flips.
    assert_eq!(differing, 0, "batched tokens differ from single ones");
    assert!(m.predict_actions_batch(&[], &space).unwrap().is_empty());
}

#[test]
fn nodes_on_one_checkpoint_share_the_model_and_batch_across_threads() {
    let dir = tiny("shared");
    let from = dir.clone();
    let load = move || OpenVla::load(&from, &LoadOptions::default());
    let a = Client::join(&dir, None, 4, load).unwrap();
    let b = Client::join(&dir, None, 4, || panic!("the second node must not load again")).unwrap();
    assert!(Arc::ptr_eq(a.model(), b.model()));
    let space = a.model().action_spaces()[0].clone();
    let want: Vec<Vec<u32>> =
        [frame(5), frame(6)].iter().map(|i| a.model().predict_action_stream(i, "stack the cubes", &space, |_| {}).unwrap().tokens).collect();
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let ha = s.spawn(|| a.predict(frame(5), "stack the cubes", &space).unwrap().tokens);
        let hb = s.spawn(|| b.predict(frame(6), "stack the cubes", &space).unwrap().tokens);
        vec![ha.join().unwrap(), hb.join().unwrap()]
    });
    assert_eq!(got, want);
}

#[test]
fn a_decode_window_changes_values_not_tokens_and_batches_alike() {
    let dir = tiny("window");
    let m = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    let space = m.action_spaces()[0].clone();
    let imgs = [frame(4), frame(5)];
    let instr = "stack the red cube on the green cube";
    let first = vela_vla::action::ActionTokenizer::new(m.config.base_vocab() as u32, 256).first_action_id();
    m.set_decode_window(0);
    let argmax: Vec<_> = imgs.iter().map(|i| m.predict_action_stream(i, instr, &space, |_| {}).unwrap()).collect();
    m.set_decode_window(6);
    let windowed: Vec<_> = imgs.iter().map(|i| m.predict_action_stream(i, instr, &space, |_| {}).unwrap()).collect();
    let reqs: Vec<(&RgbImage, &str)> = imgs.iter().map(|i| (i, instr)).collect();
    let batched = m.predict_actions_batch(&reqs, &space).unwrap();
    m.set_decode_window(0);
    for ((a, w), b) in argmax.iter().zip(&windowed).zip(&batched) {
        // With a window the fed-back token is the most likely *action* token.
        assert!(w.tokens.iter().all(|&t| t >= first), "{:?}", w.tokens);
        for (i, (&ta, &tw)) in a.tokens.iter().zip(&w.tokens).enumerate() {
            if ta >= first && a.tokens[..i] == w.tokens[..i] {
                assert_eq!(ta, tw, "an action-token argmax is kept");
            }
        }
        assert!(w.normalized.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(w.tokens, b.tokens, "batched and single decoding pick the same tokens");
        for (x, y) in w.normalized.iter().zip(&b.normalized) {
            assert!((x - y).abs() < 1e-3, "{x} vs {y}");
        }
    }
    // A random model spreads its probability, so the window moves some values off the centres.
    let moved = argmax.iter().zip(&windowed).flat_map(|(a, w)| a.normalized.iter().zip(&w.normalized)).filter(|(x, y)| (*x - *y).abs() > 1e-6).count();
    assert!(moved > 0, "the window changed no value");
}
