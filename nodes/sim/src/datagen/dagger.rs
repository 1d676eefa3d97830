//! DAgger rollouts: a policy drives the arm and the scripted expert labels every state it
//! reaches.
//!
//! A policy cloned from MimicGen data only ever saw states near successful trajectories; once
//! its own small errors take it elsewhere (hovering beside a cube, a grasp a centimetre off)
//! nothing in its data says how to recover. Here the policy's own actions are executed (or,
//! with probability `beta` per step, the expert's noisy one, so rollouts also reach the later
//! subtasks), while the expert, which tracks its phase from the state and runs alongside,
//! records what it would do as the episode's intended action. Training on these labels
//! (`vela train --action-labels intended`) is Ross et al.'s DAgger with a scripted expert.
//! The policy enters as a closure, so this crate stays free of the model code.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use vela_data::{Episode, Frame};

use crate::datagen::generate::{unit_interval, GenConfig, Recorder};
use crate::env::{EnvConfig, RgbImage, StackEnv};
use crate::error::{Result, SimError};
use crate::expert::{Expert, ExpertConfig};
use crate::variant::{Camera, Variant};

/// How rollouts are run.
#[derive(Clone, Debug)]
pub struct DaggerConfig {
    pub variant: Variant,
    pub camera: Camera,
    pub width: u32,
    pub height: u32,
    /// An episode ends on success or after this many steps.
    pub max_steps: u32,
    /// Per-step probability of executing the expert's action instead of the policy's.
    pub beta: f64,
    /// Noise on the expert's executed actions (never on its labels).
    pub action_noise: f64,
    /// The expert's position gain ([`ExpertConfig::pos_gain`]). Lower gains keep its labels
    /// proportional further from a target (2.5 saturates beyond 2 cm, 1 beyond 5 cm), where a
    /// full-speed label's sign hangs on an error a policy may not see (BENCHMARKS.md, session 22).
    pub expert_gain: f64,
}

impl Default for DaggerConfig {
    fn default() -> Self {
        Self {
            variant: Variant::D4,
            camera: Camera::Agentview,
            width: 224,
            height: 224,
            max_steps: 200,
            beta: 0.0,
            action_noise: 0.05,
            expert_gain: ExpertConfig::default().pos_gain,
        }
    }
}

impl DaggerConfig {
    pub fn validate(&self) -> Result<()> {
        unit_interval("beta", self.beta)?;
        unit_interval("action noise", self.action_noise)?;
        if !(self.expert_gain.is_finite() && self.expert_gain > 0.0 && self.expert_gain <= 10.0) {
            return Err(SimError::InvalidParam { name: "expert gain", reason: format!("{} is not in (0, 10]", self.expert_gain) });
        }
        if self.max_steps == 0 {
            return Err(SimError::InvalidParam { name: "max steps", reason: "must be at least 1".into() });
        }
        EnvConfig { width: self.width, height: self.height, ..Default::default() }.validate()
    }

    /// robomimic `env_args` for a dataset of these rollouts.
    pub fn env_args(&self, policy: &str) -> serde_json::Value {
        GenConfig { variant: self.variant, camera: self.camera, width: self.width, height: self.height, images: true, ..Default::default() }
            .env_args_with(json!({
                "method": "dagger",
                "policy": policy,
                "beta": self.beta,
                "action_noise": self.action_noise,
                "expert_gain": self.expert_gain,
                "max_steps": self.max_steps,
            }))
    }
}

/// One rollout: the episode (executed actions, expert labels, frames) and what happened.
pub struct DaggerEpisode {
    pub episode: Episode,
    pub success: bool,
    pub steps: u32,
    /// Steps that executed the expert's action (the `beta` share).
    pub expert_steps: u32,
    /// Per step: whether the expert's action was the one executed.
    pub by_expert: Vec<bool>,
}

/// One env and one expert (the env is not `Send`: one per worker thread).
pub struct DaggerRollout {
    cfg: DaggerConfig,
    env: StackEnv,
    expert: Expert,
}

impl DaggerRollout {
    pub fn new(cfg: DaggerConfig) -> Result<Self> {
        cfg.validate()?;
        let env = StackEnv::new(EnvConfig {
            variant: cfg.variant,
            camera: cfg.camera,
            width: cfg.width,
            height: cfg.height,
            horizon: u32::MAX,
            seed: 0,
            render: true,
        })?;
        let expert = Expert::new(ExpertConfig { action_noise: cfg.action_noise, pos_gain: cfg.expert_gain, ..Default::default() });
        Ok(Self { cfg, env, expert })
    }

    /// Runs the episode of `scene_seed`; `mix_seed` draws which steps the expert executes.
    /// `policy` maps the frame and instruction to an action in the env's convention
    /// (gripper -1 open, 1 closed).
    pub fn run<F>(&mut self, scene_seed: u64, mix_seed: u64, mut policy: F) -> Result<DaggerEpisode>
    where
        F: FnMut(&RgbImage, &str) -> std::result::Result<[f32; 7], String>,
    {
        let mut obs = self.env.reset(scene_seed)?;
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed);
        let mut rec = Recorder::default();
        let mut frames = Vec::with_capacity(self.cfg.max_steps as usize);
        let (mut success, mut expert_steps, mut steps) = (false, 0, 0);
        let mut by_expert = Vec::with_capacity(self.cfg.max_steps as usize);
        while steps < self.cfg.max_steps && !success {
            let img = obs.image.take().ok_or(SimError::RenderUnavailable)?;
            let (noisy, label) = self.expert.act_labelled(&self.env);
            let expert = self.cfg.beta > 0.0 && rng.random::<f64>() < self.cfg.beta;
            by_expert.push(expert);
            let action = if expert {
                expert_steps += 1;
                noisy
            } else {
                policy(&img, self.env.instruction()).map_err(|e| SimError::Output(format!("policy at step {steps}: {e}")))?
            };
            if action.iter().any(|v| !v.is_finite()) {
                return Err(SimError::Output(format!("policy at step {steps} gave a non-finite action {action:?}")));
            }
            frames.push(Frame { width: img.width, height: img.height, rgb: img.data });
            rec.observe(&self.env);
            let r = self.env.step(&action)?;
            rec.after(action, label, r.success);
            success = r.success;
            obs = r.obs;
            steps += 1;
        }
        let mut episode = rec.finish();
        episode.images.insert(self.cfg.camera.name().to_string(), frames);
        Ok(DaggerEpisode { episode, success, steps, expert_steps, by_expert })
    }
}

/// How the scripted expert's actions compare with an episode's labels on the episode's own
/// states: the episode is replayed from its first state with its executed actions while the
/// expert, tracking its phase as in a rollout, says what it would do at each step. This
/// measures how far apart two teachers are before their labels are mixed in one dataset.
pub fn expert_labels(env: &mut StackEnv, ep: &Episode) -> Result<Vec<([f32; 7], crate::expert::Phase)>> {
    if ep.states.steps() == 0 {
        return Err(SimError::InvalidParam { name: "episode", reason: format!("{} has no states", ep.name) });
    }
    env.reset(env.episode_seed())?;
    env.set_state(ep.states.row(0))?;
    let mut expert = Expert::default();
    let mut out = Vec::with_capacity(ep.len());
    for a in &ep.actions {
        let (_, clean) = expert.act_labelled(env);
        out.push((clean, expert.phase()));
        env.step(a)?;
    }
    Ok(out)
}
