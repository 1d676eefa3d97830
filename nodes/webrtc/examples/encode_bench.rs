//! H.264 encode time per frame, as VideoOutput's viewer threads do it (RGB8 → I420 →
//! OpenH264, one thread per encoder).
//!
//!   cargo run --release -p vela-webrtc --example encode_bench [FRAMES]
//!
//! Two kinds of content per size: the TestPattern's scrolling bars (easy), and a
//! "camera-like" frame (smooth moving gradients plus per-frame noise, which H.264 cannot
//! predict away: a pessimistic stand-in for a simulator or camera view).

use std::time::Instant;

use vela_runtime::builtin::TestPattern;
use vela_runtime::Image;
use vela_webrtc::h264::H264Encoder;

fn camera_like(w: u32, h: u32, n: u64, seed: &mut u64) -> Vec<u8> {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let noise = (*seed % 17) as i32 - 8;
            let r = ((x as u64 + n * 2) % 256) as i32 + noise;
            let g = ((y as u64 + n) % 256) as i32 + noise;
            let b = (((x + y) as u64 / 2 + n * 3) % 256) as i32 + noise;
            px.extend_from_slice(&[r.clamp(0, 255) as u8, g.clamp(0, 255) as u8, b.clamp(0, 255) as u8]);
        }
    }
    px
}

fn main() {
    let frames: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    println!("{frames} frames per case, 30 fps target, keyframe every 60 frames, one encoder thread");
    println!("{:>5} {:>12} {:>6} {:>9} {:>9} {:>9} {:>9}", "size", "content", "kbps", "mean_ms", "p50_ms", "p90_ms", "KB/frame");
    for size in [224u32, 512] {
        for content in ["test-pattern", "camera-like"] {
            let kbps = if size == 224 { 1000 } else { 2000 };
            let mut enc = H264Encoder::new(kbps * 1000, 30.0, 60);
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let inputs: Vec<Image> = (0..frames as u64)
                .map(|n| {
                    let data = if content == "test-pattern" { TestPattern::render(size, size, n) } else { camera_like(size, size, n, &mut seed) };
                    Image::rgb8(size, size, data).unwrap()
                })
                .collect();
            // Warm up (first frame allocates and emits SPS/PPS/IDR).
            enc.encode(&inputs[0]).unwrap();
            let mut times = Vec::with_capacity(frames);
            let mut bytes = 0usize;
            for img in &inputs[1..] {
                let t0 = Instant::now();
                let out = enc.encode(img).unwrap();
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                bytes += out.map(|f| f.data.len()).unwrap_or(0);
            }
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
            println!(
                "{:>5} {:>12} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
                format!("{size}²"),
                content,
                kbps,
                mean,
                pct(0.5),
                pct(0.9),
                bytes as f64 / times.len() as f64 / 1024.0
            );
        }
    }
}
