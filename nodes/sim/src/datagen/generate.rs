//! One MimicGen trial: select source segments, transform them to the new
//! scene, execute them through OSC_POSE with action noise, and record the
//! result as a `vela_data::Episode`.
use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use vela_data::{Episode, Frame, LowDim, INTENDED_ACTION_KEY};

use crate::datagen::pose::{self, Transform};
use crate::datagen::seeds;
use crate::datagen::source::{subtask_object, SourceSet};
use crate::env::{EnvConfig, StackEnv, MAX_DPOS, MAX_DROT};
use crate::error::{Result, SimError};
use crate::math;
use crate::variant::{Camera, Variant};

/// Generation settings; the defaults are MimicGen's Stack settings.
#[derive(Clone, Debug)]
pub struct GenConfig {
    pub variant: Variant,
    pub camera: Camera,
    pub width: u32,
    pub height: u32,
    /// Record camera frames. Off gives low-dim episodes (fast tests, rate studies).
    pub images: bool,
    /// Std of Gaussian noise on the six arm action dims (MimicGen: 0.05).
    pub action_noise: f64,
    /// Poses inserted between the current pose and a segment's start (MimicGen: 5).
    pub interpolation_steps: usize,
    /// Source segments are drawn uniformly from the k with the nearest object pose (MimicGen: 3).
    pub nearest_k: usize,
    /// Random delay, in steps, of the grasp subtask's end (MimicGen: 10..=20).
    pub subtask_offset: (usize, usize),
    /// Hold-still steps after the last waypoint before success is judged.
    pub settle_steps: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            variant: Variant::D0,
            camera: Camera::Agentview,
            width: 224,
            height: 224,
            images: true,
            action_noise: 0.05,
            interpolation_steps: 5,
            nearest_k: 3,
            subtask_offset: (10, 20),
            settle_steps: 5,
        }
    }
}

/// `Ok` when `v` is a probability-like number in 0..=1.
pub(crate) fn unit_interval(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(SimError::InvalidParam { name, reason: format!("{v} is outside 0..=1") })
    }
}

impl GenConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(SimError::InvalidParam { name, reason });
        unit_interval("action noise", self.action_noise)?;
        if self.nearest_k == 0 {
            return bad("nearest k", "must be at least 1".into());
        }
        if self.subtask_offset.0 > self.subtask_offset.1 {
            return bad("subtask offset", format!("{:?} is not a range", self.subtask_offset));
        }
        EnvConfig {
            width: self.width,
            height: self.height,
            ..Default::default()
        }
        .validate()
    }
}

impl GenConfig {
    /// robomimic's `data.attrs["env_args"]` for datasets made with this
    /// config: the robosuite keys robomimic reads (env name, type 1 =
    /// robosuite, OSC_POSE controller, cameras) plus the generation settings.
    pub fn env_args(&self, sources: &SourceSet) -> serde_json::Value {
        self.env_args_with(json!({
            "source_demos": sources.demos.len(),
            "source_demo_seeds": sources.demos.iter().map(|d| d.seed).collect::<Vec<_>>(),
            "action_noise": self.action_noise,
            "num_interpolation_steps": self.interpolation_steps,
            "nn_k": self.nearest_k,
            "subtask_term_offset_range": [self.subtask_offset.0, self.subtask_offset.1],
            "settle_steps": self.settle_steps,
            "select_src_per_subtask": true,
            "cube_symmetric_frames": true,
        }))
    }

    /// [`Self::env_args`] with `datagen` describing how the episodes were made.
    pub fn env_args_with(&self, datagen: serde_json::Value) -> serde_json::Value {
        let cameras: Vec<&str> = if self.images { vec![self.camera.name()] } else { vec![] };
        json!({
            "env_name": self.variant.name(),
            "type": 1,
            "env_version": concat!("vela-sim ", env!("CARGO_PKG_VERSION")),
            "env_kwargs": {
                "robots": ["Panda"],
                "controller_configs": {
                    "type": "OSC_POSE", "input_max": 1, "input_min": -1,
                    "output_max": [MAX_DPOS, MAX_DPOS, MAX_DPOS, MAX_DROT, MAX_DROT, MAX_DROT],
                    "output_min": [-MAX_DPOS, -MAX_DPOS, -MAX_DPOS, -MAX_DROT, -MAX_DROT, -MAX_DROT],
                    "kp": 150, "damping": 1, "impedance_mode": "fixed", "kp_limits": [0, 300],
                    "damping_limits": [0, 10], "position_limits": null, "orientation_limits": null,
                    "uncouple_pos_ori": true, "control_delta": true, "interpolation": null, "ramp_ratio": 0.2,
                },
                "control_freq": 20,
                "camera_names": cameras,
                "camera_heights": self.height,
                "camera_widths": self.width,
                "camera_depths": false,
                "has_renderer": false,
                "has_offscreen_renderer": self.images,
                "use_camera_obs": self.images,
                "use_object_obs": true,
                "reward_shaping": false,
                "ignore_done": true,
            },
            "datagen": datagen,
        })
    }
}

/// The outcome of one trial.
#[derive(Clone, Debug)]
pub struct Trial {
    pub index: u64,
    pub success: bool,
    /// The recorded episode; images only on successful trials (failed ones are
    /// not replayed with the renderer).
    pub episode: Episode,
}

/// A waypoint: where the controller should go next and what the gripper does.
#[derive(Clone, Copy, Debug)]
struct Waypoint {
    target: Transform,
    gripper: f32,
    noisy: bool,
}

/// Generates trials in one env (one per worker thread: the env is not `Send`).
pub struct Generator {
    cfg: GenConfig,
    env: StackEnv,
    sources: Arc<SourceSet>,
    seed: u64,
}

impl Generator {
    pub fn new(cfg: GenConfig, sources: Arc<SourceSet>, seed: u64) -> Result<Self> {
        cfg.validate()?;
        if sources.variant != cfg.variant {
            return Err(SimError::InvalidParam {
                name: "source demos",
                reason: format!("recorded in {}, generating {}", sources.variant, cfg.variant),
            });
        }
        // Physics only: frames are rendered in a replay of successful trials,
        // so failed trials cost no rendering.
        let env = StackEnv::new(EnvConfig {
            variant: cfg.variant,
            camera: cfg.camera,
            width: cfg.width,
            height: cfg.height,
            horizon: u32::MAX,
            seed: seeds::derive(seed, seeds::SCENE, 0),
            render: false,
        })?;
        Ok(Self { cfg, env, sources, seed })
    }

    pub fn env_mut(&mut self) -> &mut StackEnv {
        &mut self.env
    }

    /// Runs trial `index`. Everything random in it (scene, source choice,
    /// boundaries, noise) comes from `(seed, index)`, so a trial is the same
    /// whichever worker runs it.
    pub fn run(&mut self, index: u64) -> Result<Trial> {
        let scene_seed = seeds::derive(self.seed, seeds::SCENE, index);
        let mut rng = ChaCha8Rng::seed_from_u64(seeds::derive(self.seed, seeds::TRIAL, index));
        self.env.reset(scene_seed)?;
        let order = self.env.order();
        let sources = Arc::clone(&self.sources);
        let demos = &sources.demos;
        let candidates: Vec<usize> = (0..demos.len()).filter(|&i| demos[i].order == order).collect();
        if candidates.is_empty() {
            return Err(SimError::InvalidParam {
                name: "source demos",
                reason: format!("none stacks in the order {order:?} that scene {scene_seed} asks for"),
            });
        }
        let (lo, hi) = self.cfg.subtask_offset;
        let offsets: Vec<usize> = candidates.iter().map(|_| rng.random_range(lo..=hi)).collect();

        let mut rec = Recorder::default();
        let mut src_inds = Vec::new();
        let mut last_target: Option<Transform> = None;
        let mut gripper = -1.0;
        for subtask in 0..2 {
            let cube = subtask_object(order, subtask);
            let obj_now = Transform::from_pose(&self.env.cube_pose(cube));
            // Nearest-neighbour selection on the object pose at each segment's start.
            let mut ranked: Vec<(f64, usize)> = candidates
                .iter()
                .zip(&offsets)
                .enumerate()
                .map(|(i, (&d, &off))| {
                    let d = &demos[d];
                    let start = d.segments(off)[subtask].start;
                    let src = &d.steps[start].objects[cube as usize];
                    let sym = pose::closest_cube_frame(&obj_now, src);
                    (math::norm(math::sub(src.pos, obj_now.pos)) + pose::rotation_angle(&sym.rot, &src.rot), i)
                })
                .collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
            let k = self.cfg.nearest_k.min(ranked.len());
            let pick = ranked[rng.random_range(0..k)].1;
            let demo = &demos[candidates[pick]];
            src_inds.push(candidates[pick]);
            let seg = demo.segments(offsets[pick])[subtask].clone();
            let obj_src = demo.steps[seg.start].objects[cube as usize];
            let obj_frame = pose::closest_cube_frame(&obj_now, &obj_src);

            // The segment's target poses, led by the pose it starts from
            // (the hand itself for the first subtask), in the new object frame.
            let first = &demo.steps[seg.start];
            let lead = if subtask == 0 { first.eef } else { first.target };
            let src_poses: Vec<Transform> =
                std::iter::once(lead).chain(demo.steps[seg.clone()].iter().map(|s| s.target)).collect();
            let poses = pose::transform_segment(&src_poses, &obj_src, &obj_frame);
            let grippers: Vec<f32> =
                std::iter::once(first.gripper).chain(demo.steps[seg].iter().map(|s| s.gripper)).collect();

            let from = last_target.unwrap_or_else(|| Transform::from_pose(&self.env.eef_pose()));
            let interp = pose::interpolate(&from, &poses[0], self.cfg.interpolation_steps);
            let n = interp.len();
            let waypoints = interp
                .into_iter()
                .enumerate()
                .map(|(i, target)| Waypoint { target, gripper: grippers[0], noisy: i + 1 == n })
                .chain(poses[1..].iter().zip(&grippers[1..]).map(|(&target, &gripper)| Waypoint {
                    target,
                    gripper,
                    noisy: true,
                }));
            for w in waypoints {
                let (action, intended) = self.action_towards(&w, &mut rng);
                self.step(&mut rec, action, intended)?;
                gripper = w.gripper;
            }
            last_target = poses.last().copied();
        }
        for _ in 0..self.cfg.settle_steps {
            let still = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, gripper];
            self.step(&mut rec, still, still)?;
        }
        let success = self.env.check_success();
        let mut episode = rec.finish();
        episode.attrs = BTreeMap::from([
            ("seed".into(), json!(scene_seed)),
            ("trial".into(), json!(index)),
            ("variant".into(), json!(self.cfg.variant.name())),
            ("src_demo_inds".into(), json!(src_inds)),
            ("src_demo_seeds".into(), json!(src_inds.iter().map(|&i| demos[i].seed).collect::<Vec<_>>())),
            ("action_noise".into(), json!(self.cfg.action_noise)),
        ]);
        if success && self.cfg.images {
            self.render_replay(scene_seed, &mut episode)?;
        }
        Ok(Trial { index, success, episode })
    }

    /// MimicGen's `target_pose_to_action`: the delta from the measured hand
    /// pose to the target in OSC_POSE units, plus noise on the arm dims.
    /// Also returns the action before the noise: the intended action is a cleaner training label
    /// for the state the noisy rollout reached (DART-style noise injection).
    fn action_towards(&self, w: &Waypoint, rng: &mut ChaCha8Rng) -> ([f32; 7], [f32; 7]) {
        let eef = Transform::from_pose(&self.env.eef_pose());
        let dp = math::sub(w.target.pos, eef.pos);
        let dr = math::mat_to_axis_angle(&math::matmul(&w.target.rot, &math::transpose(&eef.rot)));
        let mut a = [0.0f32; 7];
        let mut clean = [0.0f32; 7];
        for i in 0..3 {
            let mut p = (dp[i] / MAX_DPOS).clamp(-1.0, 1.0);
            let mut r = (dr[i] / MAX_DROT).clamp(-1.0, 1.0);
            clean[i] = p as f32;
            clean[3 + i] = r as f32;
            if w.noisy && self.cfg.action_noise > 0.0 {
                p = (p + self.cfg.action_noise * math::gaussian(rng)).clamp(-1.0, 1.0);
                r = (r + self.cfg.action_noise * math::gaussian(rng)).clamp(-1.0, 1.0);
            }
            a[i] = p as f32;
            a[3 + i] = r as f32;
        }
        a[6] = w.gripper;
        clean[6] = w.gripper;
        (a, clean)
    }

    fn step(&mut self, rec: &mut Recorder, action: [f32; 7], intended: [f32; 7]) -> Result<()> {
        rec.observe(&self.env);
        let r = self.env.step(&action)?;
        rec.after(action, intended, r.success);
        Ok(())
    }

    /// Re-runs a successful trial from the same reset with the renderer on,
    /// capturing the frame observed before each action. Physics is
    /// deterministic, so the states must match the trial's exactly.
    fn render_replay(&mut self, scene_seed: u64, ep: &mut Episode) -> Result<()> {
        self.env.reset(scene_seed)?;
        let mut frames = Vec::with_capacity(ep.len());
        for (t, action) in ep.actions.iter().enumerate() {
            if self.env.get_state() != ep.states.row(t) {
                return Err(SimError::Model(format!(
                    "replay of scene {scene_seed} diverged at step {t}: the simulation is not deterministic"
                )));
            }
            let img = self.env.render()?;
            frames.push(Frame { width: img.width, height: img.height, rgb: img.data });
            self.env.step(action)?;
        }
        ep.images.insert(self.cfg.camera.name().to_string(), frames);
        Ok(())
    }
}

/// Collects the per-step series of an episode (observations before each action).
#[derive(Default)]
pub(crate) struct Recorder {
    ep: Episode,
    eef_pos: Vec<f64>,
    eef_quat: Vec<f64>,
    gripper_qpos: Vec<f64>,
    object: Vec<f64>,
    intended: Vec<f64>,
    states: Vec<f64>,
    state_dim: usize,
}

impl Recorder {
    pub(crate) fn observe(&mut self, env: &StackEnv) {
        let eef = env.eef_pose();
        self.eef_pos.extend_from_slice(&eef.pos);
        self.eef_quat.extend_from_slice(&eef.quat_xyzw());
        self.gripper_qpos.extend_from_slice(&env.gripper_qpos());
        self.object.extend_from_slice(&env.object_obs());
        let s = env.get_state();
        self.state_dim = s.len();
        self.states.extend_from_slice(&s);
        self.ep.instructions.push(env.instruction().to_string());
    }

    pub(crate) fn after(&mut self, action: [f32; 7], intended: [f32; 7], success: bool) {
        self.ep.actions.push(action);
        self.intended.extend(intended.iter().map(|&x| x as f64));
        self.ep.rewards.push(if success { 1.0 } else { 0.0 });
        self.ep.dones.push(success);
    }

    /// robomimic `done_mode` 2: done on success and on the last step.
    pub(crate) fn finish(mut self) -> Episode {
        if let Some(d) = self.ep.dones.last_mut() {
            *d = true;
        }
        let series = [
            ("robot0_eef_pos", 3, self.eef_pos),
            ("robot0_eef_quat", 4, self.eef_quat),
            ("robot0_gripper_qpos", 2, self.gripper_qpos),
            ("object", 23, self.object),
            (INTENDED_ACTION_KEY, 7, self.intended),
        ];
        for (key, dim, data) in series {
            self.ep.low_dim.insert(key.to_string(), LowDim { dim, data });
        }
        self.ep.states = LowDim { dim: self.state_dim, data: self.states };
        self.ep
    }
}

/// Executes an episode's actions from its first recorded state (robomimic's
/// `reset_to(states[0])` then `step(actions)`), returning whether the task
/// ends in success. Works in any env of the same variant.
pub fn replay(env: &mut StackEnv, ep: &Episode) -> Result<bool> {
    if ep.states.steps() == 0 {
        return Err(SimError::InvalidParam { name: "episode", reason: format!("{} has no states", ep.name) });
    }
    env.reset(env.episode_seed())?;
    env.set_state(ep.states.row(0))?;
    for a in &ep.actions {
        env.step(a)?;
    }
    Ok(env.check_success())
}
