//! Synthetic episodes for tests and benchmarks: deterministic, shaped like a
//! MimicGen Stack demo (7-D actions, upright RGB frames, robomimic low-dim
//! keys), but not physically meaningful. Real data comes from `vela datagen`.

use std::collections::BTreeMap;

use crate::{Episode, Frame, LowDim};

/// splitmix64: enough randomness for test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Episode `index` of a synthetic dataset: `steps` steps, one `size`×`size`
/// frame per step for each camera. Frames are smooth gradients with a moving
/// square (so JPEG sizes resemble rendered scenes rather than noise).
pub fn episode(index: usize, steps: usize, cameras: &[&str], size: u32) -> Episode {
    let mut rng = Rng(index as u64 * 7919 + 17);
    let actions: Vec<[f32; 7]> = (0..steps)
        .map(|t| {
            let mut a = [0f32; 7];
            for v in a.iter_mut().take(6) {
                *v = (rng.unit() * 0.5) as f32;
            }
            a[6] = if t < steps / 2 { -1.0 } else { 1.0 };
            a
        })
        .collect();
    let mut low_dim = BTreeMap::new();
    for (key, dim) in [("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2), ("object", 23)] {
        let data = (0..steps * dim).map(|_| rng.unit() * 0.3).collect();
        low_dim.insert(key.to_string(), LowDim { dim, data });
    }
    let images = cameras
        .iter()
        .map(|cam| (cam.to_string(), (0..steps).map(|t| frame(size, index + t)).collect()))
        .collect();
    let states = LowDim { dim: 10, data: (0..steps * 10).map(|_| rng.unit()).collect() };
    let instruction = if index % 2 == 0 { "stack the red block on the green block" } else { "put the red cube on top of the green cube" };
    Episode {
        name: format!("demo_{index}"),
        actions,
        images,
        low_dim,
        states,
        rewards: (0..steps).map(|t| if t + 1 == steps { 1.0 } else { 0.0 }).collect(),
        dones: (0..steps).map(|t| t + 1 == steps).collect(),
        instructions: vec![instruction.to_string(); steps],
        attrs: BTreeMap::from([("num_samples".to_string(), serde_json::json!(steps))]),
    }
}

fn frame(size: u32, phase: usize) -> Frame {
    let s = size as usize;
    let mut rgb = vec![0u8; s * s * 3];
    let (cx, cy) = ((phase * 3) % s, (phase * 5 / 2) % s);
    for y in 0..s {
        for x in 0..s {
            let p = (y * s + x) * 3;
            let inside = x.abs_diff(cx) < s / 8 && y.abs_diff(cy) < s / 8;
            rgb[p] = if inside { 220 } else { (x * 255 / s) as u8 };
            rgb[p + 1] = if inside { 30 } else { (y * 255 / s) as u8 };
            rgb[p + 2] = ((x + y) * 127 / s) as u8;
        }
    }
    Frame { width: size, height: size, rgb }
}
