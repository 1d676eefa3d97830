//! Plain entry points for the `vela sim render|expert|info` subcommands and
//! for benchmarks, so the CLI stays a thin argument parser.
use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::env::{EnvConfig, StackEnv};
use crate::error::Result;
use crate::expert::Expert;
use crate::variant::{Camera, Variant};

/// Renders the first frame of episode `seed` (after `expert_steps` expert
/// steps, to show the arm in motion) and writes it as PNG.
pub fn render_to_png(
    variant: Variant,
    seed: u64,
    camera: Camera,
    width: u32,
    height: u32,
    expert_steps: u32,
    out: &Path,
) -> Result<()> {
    let mut env = StackEnv::new(EnvConfig {
        variant,
        camera,
        width,
        height,
        seed,
        render: false,
        horizon: expert_steps.max(1) + 1,
    })?;
    let mut expert = Expert::default();
    for _ in 0..expert_steps {
        let a = expert.act(&env);
        env.step(&a)?;
    }
    let img = env.render()?;
    crate::image_io::write_png(out, &img)
}

/// Outcome of scripted-expert rollouts.
#[derive(Clone, Debug)]
pub struct ExpertReport {
    pub variant: Variant,
    pub episodes: u32,
    pub successes: u32,
    /// Mean control steps of the successful episodes.
    pub mean_steps_success: f64,
    /// Seeds of the failed episodes, for reproducing them.
    pub failed_seeds: Vec<u64>,
    pub wall_s: f64,
    pub control_steps: u64,
}

impl ExpertReport {
    pub fn success_rate(&self) -> f64 {
        if self.episodes == 0 {
            0.0
        } else {
            self.successes as f64 / self.episodes as f64
        }
    }
}

impl fmt::Display for ExpertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}/{} ({:.1}%) successes, {:.1} steps per success, {} control steps in {:.1} s ({:.0}/s)",
            self.variant,
            self.successes,
            self.episodes,
            100.0 * self.success_rate(),
            self.mean_steps_success,
            self.control_steps,
            self.wall_s,
            self.control_steps as f64 / self.wall_s.max(1e-9)
        )?;
        if !self.failed_seeds.is_empty() {
            write!(f, "; failed seeds {:?}", self.failed_seeds)?;
        }
        Ok(())
    }
}

/// Runs the scripted expert for `episodes` episodes with seeds
/// `first_seed..first_seed+episodes`, physics only, each up to `horizon` steps.
pub fn run_expert(
    variant: Variant,
    episodes: u32,
    first_seed: u64,
    horizon: u32,
) -> Result<ExpertReport> {
    let mut env = StackEnv::new(EnvConfig {
        variant,
        horizon,
        seed: first_seed,
        render: false,
        ..Default::default()
    })?;
    let mut expert = Expert::default();
    let t0 = Instant::now();
    let mut successes = 0;
    let mut steps_ok = 0u64;
    let mut control_steps = 0u64;
    let mut failed_seeds = Vec::new();
    for seed in first_seed..first_seed + episodes as u64 {
        env.reset(seed)?;
        loop {
            let a = expert.act(&env);
            let r = env.step(&a)?;
            control_steps += 1;
            if r.success {
                successes += 1;
                steps_ok += r.obs.step as u64;
                break;
            }
            if r.done {
                failed_seeds.push(seed);
                break;
            }
        }
    }
    Ok(ExpertReport {
        variant,
        episodes,
        successes,
        mean_steps_success: steps_ok as f64 / successes.max(1) as f64,
        failed_seeds,
        wall_s: t0.elapsed().as_secs_f64(),
        control_steps,
    })
}

/// Throughput numbers for BENCHMARKS.md.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub variant: Variant,
    pub width: u32,
    pub height: u32,
    /// Raw `mj_step` calls per second with the arm holding still over resting cubes.
    pub physics_steps_per_s: f64,
    /// Expert-driven control steps (25 substeps + OSC) per second, no rendering.
    pub control_steps_per_s: f64,
    /// Same with one rendered frame per control step.
    pub control_steps_per_s_render: f64,
    /// Mean time of one frame (scene sync + render + readback).
    pub render_ms: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{}: physics {:.0} steps/s; control {:.1} steps/s without rendering, {:.1} steps/s with rendering; render {:.1} ms/frame",
            self.variant,
            self.width,
            self.height,
            self.physics_steps_per_s,
            self.control_steps_per_s,
            self.control_steps_per_s_render,
            self.render_ms
        )
    }
}

/// Measures physics and control throughput over `control_steps` expert steps.
pub fn bench(variant: Variant, control_steps: u32, width: u32, height: u32) -> Result<BenchReport> {
    let mut env = StackEnv::new(EnvConfig {
        variant,
        width,
        height,
        render: false,
        ..Default::default()
    })?;
    let mut expert = Expert::default();

    // Physics alone: plain mj_step with the last controls held.
    let n_phys = (control_steps as usize * 25).max(1000);
    let t = Instant::now();
    env.step_physics_raw(n_phys);
    let physics_steps_per_s = n_phys as f64 / t.elapsed().as_secs_f64();

    let mut run = |env: &mut StackEnv, render: bool| -> Result<(f64, f64)> {
        let mut seed = 1000;
        env.reset(seed)?;
        let mut render_s = 0.0;
        let t = Instant::now();
        for _ in 0..control_steps {
            let a = expert.act(env);
            let r = env.step(&a)?;
            if render {
                let tr = Instant::now();
                std::hint::black_box(env.render()?);
                render_s += tr.elapsed().as_secs_f64();
            }
            if r.done {
                seed += 1;
                env.reset(seed)?;
            }
        }
        Ok((
            control_steps as f64 / t.elapsed().as_secs_f64(),
            1000.0 * render_s / control_steps as f64,
        ))
    };
    let (control_steps_per_s, _) = run(&mut env, false)?;
    env.render()?; // warm up the renderer outside the timed loop
    let (control_steps_per_s_render, render_ms) = run(&mut env, true)?;
    Ok(BenchReport {
        variant,
        width,
        height,
        physics_steps_per_s,
        control_steps_per_s,
        control_steps_per_s_render,
        render_ms,
    })
}

/// Human-readable summary for `vela sim info`.
pub fn info() -> String {
    let mut s = String::new();
    s.push_str(&format!("vela-sim {}\n", env!("CARGO_PKG_VERSION")));
    s.push_str(&format!(
        "MuJoCo library: {}\n",
        mujoco_rs::mujoco_c::mjVERSION_HEADER
    ));
    match crate::assets::asset_dir() {
        Ok(dir) => s.push_str(&format!(
            "assets: {} (visual meshes {})\n",
            dir.display(),
            if crate::assets::meshes_decimated(&dir) {
                "decimated"
            } else {
                "full"
            }
        )),
        Err(e) => s.push_str(&format!("assets: MISSING: {e}\n")),
    }
    s.push_str(&format!(
        "renderer: {}\n",
        if cfg!(feature = "render") {
            "EGL headless (feature render)"
        } else {
            "not built"
        }
    ));
    s.push_str("environments: ");
    s.push_str(
        &Variant::ALL
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push_str("\ncameras: agentview (default), frontview, birdview, agentview_hand (agentview + wrist inset)\n");
    s.push_str(
        "control: OSC_POSE 20 Hz (25 x 2 ms substeps); action [dx dy dz ax ay az grip] in [-1,1], ",
    );
    s.push_str("x0.05 m / x0.5 rad, gripper -1 open / +1 close\n");
    s.push_str("defaults: 224x224, horizon 200\n");
    s
}

/// Converts an action in the VLA model's convention (gripper 1 = open,
/// 0 = closed) to the env's (gripper -1 = open, +1 = closed), scaling the
/// arm dimensions by `action_scale` as the reference plugin does.
pub fn action_from_model(a: &[f32; 7], action_scale: f32) -> [f32; 7] {
    let mut out = [0.0; 7];
    for i in 0..6 {
        out[i] = a[i] * action_scale;
    }
    out[6] = -(2.0 * a[6] - 1.0);
    out
}
