//! The Stack environment: reset, OSC_POSE stepping, success, observations.
use mujoco_rs::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::debug;

use crate::error::{Result, SimError};
use crate::math::{self, Mat3, Vec3};
use crate::scene::{self, CUBE_A_HALF, CUBE_B_HALF, TABLE_TOP_Z};
use crate::variant::{self, Camera, CubeColor, StackOrder, Variant};

/// Physics substeps per control step: 20 Hz control over a 2 ms timestep.
pub const SUBSTEPS: usize = 25;
/// OSC_POSE output scaling: action 1.0 = 5 cm / 0.5 rad.
pub const MAX_DPOS: f64 = 0.05;
pub const MAX_DROT: f64 = 0.5;
const KP: f64 = 150.0;
/// Critically damped: kd = 2 sqrt(kp) * damping_ratio(1).
const KD: f64 = 24.494_897_427_831_78;
const NULLSPACE_KP: f64 = 10.0;
/// Gripper command change per physics substep (robosuite 1.4 PandaGripper).
const GRIPPER_SPEED: f64 = 0.01;
/// robosuite's "lifted" threshold above the table for `_check_success`.
pub const LIFT_THRESHOLD: f64 = 0.04;

/// What to build. `Default` is Stack_D0, agentview, 224x224, horizon 200.
#[derive(Clone, Debug)]
pub struct EnvConfig {
    pub variant: Variant,
    pub camera: Camera,
    pub width: u32,
    pub height: u32,
    /// Control steps before an episode times out (the presets use 200).
    pub horizon: u32,
    /// Seed of the first episode when `reset` is called without one.
    pub seed: u64,
    /// Render a frame on every reset/step. Off gives a physics-only env, which
    /// is what expert rollouts for success statistics want.
    pub render: bool,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            variant: Variant::D0,
            camera: Camera::Agentview,
            width: 224,
            height: 224,
            horizon: 200,
            seed: 0,
            render: true,
        }
    }
}

impl EnvConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if !(16..=scene::MAX_IMAGE_SIZE).contains(&v) {
                return Err(SimError::InvalidParam {
                    name,
                    reason: format!("{v} is outside 16..={}", scene::MAX_IMAGE_SIZE),
                });
            }
        }
        if self.horizon == 0 {
            return Err(SimError::InvalidParam {
                name: "horizon",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// An upright RGB8 image, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Position and orientation (quaternion w, x, y, z) in the world frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub pos: [f64; 3],
    pub quat: [f64; 4],
}

impl Pose {
    pub fn mat(&self) -> Mat3 {
        math::quat_to_mat(self.quat)
    }
    /// 4x4 homogeneous matrix, row-major (the layout MimicGen's datagen_info stores).
    pub fn to_matrix4(&self) -> [[f64; 4]; 4] {
        let r = self.mat();
        [
            [r[0], r[1], r[2], self.pos[0]],
            [r[3], r[4], r[5], self.pos[1]],
            [r[6], r[7], r[8], self.pos[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }
}

/// The two cubes: A is robosuite's small one (half size 0.02), B the big one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cube {
    A,
    B,
}

impl Cube {
    pub fn half_size(self) -> f64 {
        match self {
            Cube::A => CUBE_A_HALF,
            Cube::B => CUBE_B_HALF,
        }
    }
    pub fn other(self) -> Cube {
        match self {
            Cube::A => Cube::B,
            Cube::B => Cube::A,
        }
    }
}

/// One observation, taken after a reset or a step.
#[derive(Clone, Debug)]
pub struct Observation {
    /// None when the env was built with `render: false`.
    pub image: Option<RgbImage>,
    pub instruction: String,
    pub eef: Pose,
    /// Finger joint positions (robosuite `robot0_gripper_qpos`).
    pub gripper_qpos: [f64; 2],
    pub cube_a: Pose,
    pub cube_b: Pose,
    /// Colours of cube A (small) and cube B (big).
    pub colours: (CubeColor, CubeColor),
    /// Control steps taken in this episode.
    pub step: u32,
}

#[derive(Clone, Debug)]
pub struct StepResult {
    pub obs: Observation,
    /// robosuite `_check_success` (generalised to the instructed order in Stack_Lang).
    pub success: bool,
    /// Horizon reached without success.
    pub timeout: bool,
    /// success || timeout: the plugin resets on either.
    pub done: bool,
    /// Sparse reward as robosuite Stack (1 on success, else 0; reward_scale 1).
    pub reward: f64,
    /// The episode's progress up to and including this step.
    pub progress: Progress,
}

/// How far an episode got towards the stack. A success rate alone cannot tell a policy that
/// never reaches the cube from one that drops it over the target; bench reports count
/// episodes by the furthest stage they reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Nothing below.
    #[default]
    Start,
    /// The gripper stood around the cube to move (centred over it within its half width,
    /// within 3 cm of its centre height).
    Reached,
    /// Both finger pads touched that cube (robosuite's grasp test).
    Grasped,
    /// Held with its bottom face above the other cube's top face.
    Lifted,
    /// Centred over the other cube (within that cube's half width), bottom face at most 5 mm
    /// below the other's top face, but not (yet) a stack.
    Aligned,
    /// The task's success predicate.
    Stacked,
}

impl Stage {
    pub const ALL: [Stage; 6] = [Stage::Start, Stage::Reached, Stage::Grasped, Stage::Lifted, Stage::Aligned, Stage::Stacked];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Start => "start",
            Stage::Reached => "reached",
            Stage::Grasped => "grasped",
            Stage::Lifted => "lifted",
            Stage::Aligned => "aligned",
            Stage::Stacked => "stacked",
        }
    }

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// An episode's progress so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The furthest stage reached at any step (it may have been lost again, e.g. a drop).
    pub furthest: Stage,
    /// The gripper held the cube that should have stayed put, at some step: in Stack_Lang,
    /// the sign of a policy that ignores which cube it was told to move.
    pub grasped_other: bool,
}

/// Model indices resolved once by name.
struct Ids {
    arm_qpos: [usize; 7],
    arm_dof: [usize; 7],
    arm_act: [usize; 7],
    arm_ctrl_range: [[f64; 2]; 7],
    finger_qpos: [usize; 2],
    grip_act: [usize; 2],
    grip_ctrl_range: [[f64; 2]; 2],
    grip_site: usize,
    cube_qpos: [usize; 2],
    cube_geom: [usize; 2],
    cube_mat: [usize; 2],
    left_pad: usize,
    right_pad: usize,
    left_finger: usize,
    right_finger: usize,
    camera: usize,
    inset_camera: Option<usize>,
}

fn id(model: &MjModel, kind: MjtObjBase, name: &str) -> Result<usize> {
    model
        .name_to_id(kind, name)
        .ok_or_else(|| SimError::Model(format!("model has no {kind:?} named {name}")))
}

impl Ids {
    fn resolve(model: &MjModel, camera: Camera) -> Result<Self> {
        let mut arm_qpos = [0; 7];
        let mut arm_dof = [0; 7];
        let mut arm_act = [0; 7];
        let mut arm_ctrl_range = [[0.0; 2]; 7];
        for i in 0..7 {
            let j = id(
                model,
                MjtObjBase::mjOBJ_JOINT,
                &format!("robot0_joint{}", i + 1),
            )?;
            arm_qpos[i] = model.jnt_qposadr()[j] as usize;
            arm_dof[i] = model.jnt_dofadr()[j] as usize;
            arm_act[i] = id(
                model,
                MjtObjBase::mjOBJ_ACTUATOR,
                &format!("robot0_torq_j{}", i + 1),
            )?;
            arm_ctrl_range[i] = model.actuator_ctrlrange()[arm_act[i]];
        }
        let mut finger_qpos = [0; 2];
        let mut grip_act = [0; 2];
        let mut grip_ctrl_range = [[0.0; 2]; 2];
        for i in 0..2 {
            let j = id(
                model,
                MjtObjBase::mjOBJ_JOINT,
                &format!("gripper0_right_finger_joint{}", i + 1),
            )?;
            finger_qpos[i] = model.jnt_qposadr()[j] as usize;
            grip_act[i] = id(
                model,
                MjtObjBase::mjOBJ_ACTUATOR,
                &format!("gripper0_right_gripper_finger_joint{}", i + 1),
            )?;
            grip_ctrl_range[i] = model.actuator_ctrlrange()[grip_act[i]];
        }
        let cube_qpos = [
            model.jnt_qposadr()[id(model, MjtObjBase::mjOBJ_JOINT, "cubeA_joint0")?] as usize,
            model.jnt_qposadr()[id(model, MjtObjBase::mjOBJ_JOINT, "cubeB_joint0")?] as usize,
        ];
        Ok(Self {
            arm_qpos,
            arm_dof,
            arm_act,
            arm_ctrl_range,
            finger_qpos,
            grip_act,
            grip_ctrl_range,
            grip_site: id(model, MjtObjBase::mjOBJ_SITE, "gripper0_right_grip_site")?,
            cube_qpos,
            cube_geom: [
                id(model, MjtObjBase::mjOBJ_GEOM, "cubeA_g0")?,
                id(model, MjtObjBase::mjOBJ_GEOM, "cubeB_g0")?,
            ],
            cube_mat: [
                id(model, MjtObjBase::mjOBJ_MATERIAL, "cubeA_mat")?,
                id(model, MjtObjBase::mjOBJ_MATERIAL, "cubeB_mat")?,
            ],
            left_pad: id(
                model,
                MjtObjBase::mjOBJ_GEOM,
                "gripper0_right_finger1_pad_collision",
            )?,
            right_pad: id(
                model,
                MjtObjBase::mjOBJ_GEOM,
                "gripper0_right_finger2_pad_collision",
            )?,
            left_finger: id(
                model,
                MjtObjBase::mjOBJ_GEOM,
                "gripper0_right_finger1_collision",
            )?,
            right_finger: id(
                model,
                MjtObjBase::mjOBJ_GEOM,
                "gripper0_right_finger2_collision",
            )?,
            camera: id(model, MjtObjBase::mjOBJ_CAMERA, camera.mj_name())?,
            inset_camera: camera
                .inset()
                .map(|name| id(model, MjtObjBase::mjOBJ_CAMERA, name))
                .transpose()?,
        })
    }
}

/// Scratch buffers for the controller, reused every substep.
struct OscScratch {
    full_m: Vec<f64>,
}

/// robosuite's Stack task on MuJoCo with an OSC_POSE controller.
///
/// Not `Send` when built with a renderer: the EGL context belongs to the
/// thread that created it, so create the env on the thread that steps it
/// (as the reference plugin does on its own thread).
pub struct StackEnv {
    cfg: EnvConfig,
    data: MjData<Box<MjModel>>,
    ids: Ids,
    rng: ChaCha8Rng,
    #[cfg(feature = "render")]
    renderer: Option<mujoco_rs::renderer::MjRenderer>,
    scratch: OscScratch,
    // Episode state.
    episode_seed: u64,
    steps: u32,
    gripper_cmd: [f64; 2],
    goal_pos: Vec3,
    goal_ori: Mat3,
    colours: (CubeColor, CubeColor),
    order: StackOrder,
    instruction: String,
    /// Set by `instruct`: the given text stays for the rest of the episode.
    instruction_given: bool,
    progress: Progress,
    last_image: Option<RgbImage>,
}

impl StackEnv {
    /// Builds the model (about 0.3-1.5 s) and, if asked, the EGL renderer; then resets with `cfg.seed`.
    pub fn new(cfg: EnvConfig) -> Result<Self> {
        cfg.validate()?;
        let assets = crate::assets::asset_dir()?;
        let model = scene::build_model(&assets, cfg.variant)?;
        let ids = Ids::resolve(&model, cfg.camera)?;
        let nv = model.ffi().nv as usize;
        let data = MjData::new(Box::new(model));
        let mut env = Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            #[cfg(feature = "render")]
            renderer: None,
            scratch: OscScratch {
                full_m: vec![0.0; nv * nv],
            },
            episode_seed: cfg.seed,
            steps: 0,
            gripper_cmd: [0.0; 2],
            goal_pos: [0.0; 3],
            goal_ori: math::IDENTITY,
            colours: (CubeColor::Red, CubeColor::Green),
            order: StackOrder::SmallOnBig,
            instruction: String::new(),
            instruction_given: false,
            progress: Progress::default(),
            last_image: None,
            data,
            ids,
            cfg,
        };
        if env.cfg.render {
            env.init_renderer()?;
        }
        env.reset(env.cfg.seed)?;
        Ok(env)
    }

    #[cfg(feature = "render")]
    fn init_renderer(&mut self) -> Result<()> {
        use mujoco_rs::renderer::MjRenderer;
        let t0 = std::time::Instant::now();
        let mut r = MjRenderer::builder()
            .width(self.cfg.width)
            .height(self.cfg.height)
            .rgb(true)
            .depth(false)
            .build(self.data.model())
            .map_err(|e| SimError::Render(e.to_string()))?;
        r.set_camera(MjvCamera::new_fixed(self.ids.camera));
        // robosuite's camera settings: collision geoms (group 0) and sites hidden.
        let o = r.opts_mut();
        o.geomgroup = [0, 1, 1, 0, 0, 0];
        o.sitegroup = [0; 6];
        debug!(ms = t0.elapsed().as_millis() as u64, "renderer ready");
        self.renderer = Some(r);
        Ok(())
    }

    #[cfg(not(feature = "render"))]
    fn init_renderer(&mut self) -> Result<()> {
        Err(SimError::RenderUnavailable)
    }

    pub fn config(&self) -> &EnvConfig {
        &self.cfg
    }
    pub fn variant(&self) -> Variant {
        self.cfg.variant
    }
    /// Seed of the current episode (`reset(seed)` reproduces it).
    pub fn episode_seed(&self) -> u64 {
        self.episode_seed
    }
    pub fn steps(&self) -> u32 {
        self.steps
    }
    pub fn instruction(&self) -> &str {
        &self.instruction
    }
    /// Colours of cube A (small) and cube B (big).
    pub fn colours(&self) -> (CubeColor, CubeColor) {
        self.colours
    }
    /// Which cube the task asks to move onto which.
    pub fn order(&self) -> StackOrder {
        self.order
    }
    /// The cube to pick up in this episode.
    pub fn top_cube(&self) -> Cube {
        match self.order {
            StackOrder::SmallOnBig => Cube::A,
            StackOrder::BigOnSmall => Cube::B,
        }
    }
    /// Physics time in seconds.
    pub fn time(&self) -> f64 {
        self.data.time()
    }
    pub fn model(&self) -> &MjModel {
        self.data.model()
    }
    pub fn data(&self) -> &MjData<Box<MjModel>> {
        &self.data
    }

    /// Starts a new episode. The same seed gives the same cube poses, colours,
    /// instruction and (for the same actions) the same trajectory.
    pub fn reset(&mut self, seed: u64) -> Result<Observation> {
        self.episode_seed = seed;
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        self.steps = 0;
        self.progress = Progress::default();
        self.data.reset();
        let placements = self.sample_placements()?;
        let ids = &self.ids;
        {
            let qpos = self.data.qpos_mut();
            for i in 0..7 {
                qpos[ids.arm_qpos[i]] = scene::INIT_QPOS[i];
            }
            for i in 0..2 {
                qpos[ids.finger_qpos[i]] = scene::GRIPPER_INIT_QPOS[i];
            }
        }
        {
            let qpos = self.data.qpos_mut();
            for (k, (x, y, z, yaw)) in placements.iter().enumerate() {
                let a = ids.cube_qpos[k];
                qpos[a..a + 7].copy_from_slice(&[
                    *x,
                    *y,
                    *z,
                    (yaw / 2.0).cos(),
                    0.0,
                    0.0,
                    (yaw / 2.0).sin(),
                ]);
            }
        }
        self.gripper_cmd = [0.0; 2];
        self.order = StackOrder::SmallOnBig;
        self.colours = (CubeColor::Red, CubeColor::Green);
        if self.cfg.variant.colours_per_episode() {
            self.colours = variant::draw_colours(&mut self.rng);
        }
        if self.cfg.variant == Variant::Lang && self.rng.random_bool(0.5) {
            self.order = StackOrder::BigOnSmall;
        }
        self.instruction_given = false;
        self.redraw_instruction();
        self.apply_colours();
        self.data.forward();
        self.apply_gripper_ctrl();
        let (p, r) = self.eef_pos_mat();
        self.goal_pos = p;
        self.goal_ori = r;
        debug!(seed, variant = %self.cfg.variant, instruction = %self.instruction, "reset");
        self.render_if_enabled()?;
        Ok(self.observation())
    }

    /// robosuite's UniformRandomSampler: cube A then cube B, uniform x, y in
    /// the variant's range and yaw in [0, 2pi), rejecting overlapping
    /// footprints, dropped from 1 cm above the table.
    fn sample_placements(&mut self) -> Result<[(f64, f64, f64, f64); 2]> {
        let r = self.cfg.variant.spawn_range();
        let halves = [CUBE_A_HALF, CUBE_B_HALF];
        let radius = |h: f64| (2.0 * h * h).sqrt();
        let mut out = [(0.0, 0.0, 0.0, 0.0); 2];
        for k in 0..2 {
            let mut placed = false;
            for _ in 0..5000 {
                let x = self.rng.random_range(-r..r);
                let y = self.rng.random_range(-r..r);
                if k == 1 {
                    let (px, py, _, _) = out[0];
                    if ((x - px).powi(2) + (y - py).powi(2)).sqrt()
                        <= radius(halves[0]) + radius(halves[1])
                    {
                        continue;
                    }
                }
                let yaw = self.rng.random_range(0.0..std::f64::consts::TAU);
                out[k] = (x, y, TABLE_TOP_Z + 0.01 + halves[k], yaw);
                placed = true;
                break;
            }
            if !placed {
                return Err(SimError::Placement(5000));
            }
        }
        Ok(out)
    }

    fn redraw_instruction(&mut self) {
        let (a, b) = self.colours;
        let (top, bottom) = match self.order {
            StackOrder::SmallOnBig => (a, b),
            StackOrder::BigOnSmall => (b, a),
        };
        self.instruction = if self.cfg.variant.instruction_per_episode() {
            variant::draw_instruction(&mut self.rng, top, bottom, self.order)
        } else {
            variant::default_instruction(top, bottom)
        };
    }

    /// Replaces the episode's instruction with one given from outside (a
    /// spoken command) until the next reset. In Stack_Lang the text decides
    /// which cube must go on which, so success is judged against what was
    /// said; the other variants only ever stack small on big.
    pub fn instruct(&mut self, text: &str) -> Result<StackOrder> {
        let (a, b) = self.colours;
        let order = variant::parse_instruction(text, a, b).ok_or_else(|| SimError::InvalidParam {
            name: "instruction",
            reason: format!("cannot tell which cube to move from {text:?} (the small cube is {a}, the big one {b})"),
        })?;
        if order != StackOrder::SmallOnBig && self.cfg.variant != Variant::Lang {
            return Err(SimError::InvalidParam {
                name: "instruction",
                reason: format!("{text:?} asks for the big cube on the small one, which only Stack_Lang supports"),
            });
        }
        if order != self.order {
            // Another cube to move: progress on the old task does not count for the new one.
            self.progress = Progress::default();
        }
        self.order = order;
        self.instruction = variant::clean_instruction(text);
        self.instruction_given = true;
        Ok(order)
    }

    fn apply_colours(&mut self) {
        let (a, b) = self.colours;
        let mats = self.ids.cube_mat;
        // SAFETY: only material colours change; no sizes or addresses. The
        // renderer reads colours from the model on every scene update.
        let model = unsafe { self.data.model_mut() };
        model.mat_rgba_mut()[mats[0]] = a.rgba();
        model.mat_rgba_mut()[mats[1]] = b.rgba();
    }

    /// One control step (25 physics substeps). Action: [dx, dy, dz, ax, ay, az, gripper]
    /// in [-1, 1]; values outside are clipped, non-finite values are an error.
    pub fn step(&mut self, action: &[f32; 7]) -> Result<StepResult> {
        if let Some(i) = action.iter().position(|v| !v.is_finite()) {
            return Err(SimError::InvalidParam {
                name: "action",
                reason: format!("component {i} is {}", action[i]),
            });
        }
        let a: [f64; 7] = std::array::from_fn(|i| (action[i] as f64).clamp(-1.0, 1.0));
        let (p, r) = self.eef_pos_mat();
        self.goal_pos = math::add(p, [a[0] * MAX_DPOS, a[1] * MAX_DPOS, a[2] * MAX_DPOS]);
        let drot = [a[3] * MAX_DROT, a[4] * MAX_DROT, a[5] * MAX_DROT];
        // Left-multiplied: the rotation is expressed in the world frame.
        self.goal_ori = math::matmul(&math::axis_angle_to_mat(drot), &r);
        // sign(a): 0 leaves the fingers where they are commanded now.
        let g = if a[6] > 0.0 {
            1.0
        } else if a[6] < 0.0 {
            -1.0
        } else {
            0.0
        };
        for _ in 0..SUBSTEPS {
            // robosuite's PandaGripper: the command ramps by `speed` per substep
            // towards closed (+1) or open (-1), fingers mirrored.
            self.gripper_cmd[0] = (self.gripper_cmd[0] - GRIPPER_SPEED * g).clamp(-1.0, 1.0);
            self.gripper_cmd[1] = (self.gripper_cmd[1] + GRIPPER_SPEED * g).clamp(-1.0, 1.0);
            self.substep();
        }
        // Observations then see kinematics of the final state, matching `set_state`.
        self.data.forward();
        self.steps += 1;
        if self.cfg.variant.colours_per_step() {
            self.colours = variant::draw_colours(&mut self.rng);
            self.apply_colours();
        }
        if self.cfg.variant.instruction_per_step() && !self.instruction_given {
            self.redraw_instruction();
        }
        let success = self.check_success();
        let timeout = !success && self.steps >= self.cfg.horizon;
        self.progress.furthest = self.progress.furthest.max(self.stage_now(success));
        self.progress.grasped_other |= self.is_grasped(self.top_cube().other());
        self.render_if_enabled()?;
        Ok(StepResult {
            obs: self.observation(),
            success,
            timeout,
            done: success || timeout,
            reward: if success { 1.0 } else { 0.0 },
            progress: self.progress,
        })
    }

    fn apply_gripper_ctrl(&mut self) {
        let ids = &self.ids;
        let ctrl = self.data.ctrl_mut();
        for i in 0..2 {
            let [lo, hi] = ids.grip_ctrl_range[i];
            ctrl[ids.grip_act[i]] = 0.5 * (lo + hi) + 0.5 * (hi - lo) * self.gripper_cmd[i];
        }
    }

    /// Operational-space control on MuJoCo's Jacobian and mass matrix, with
    /// decoupled position/orientation inertia, a nullspace pull to the initial
    /// joint pose and gravity/Coriolis compensation (robosuite OSC_POSE, kp 150,
    /// damping ratio 1).
    fn apply_osc_torques(&mut self) {
        let ids = &self.ids;
        let (jp, jr) = self.data.jac_site(true, true, ids.grip_site);
        let nv = self.data.model().ffi().nv as usize;
        self.data
            .full_m(&mut self.scratch.full_m)
            .expect("buffer sized to nv*nv");
        let n = 7;
        let mut j = vec![0.0; 6 * n];
        for (c, &d) in ids.arm_dof.iter().enumerate() {
            for r in 0..3 {
                j[r * n + c] = jp[r * nv + d];
                j[(r + 3) * n + c] = jr[r * nv + d];
            }
        }
        let mut m = vec![0.0; n * n];
        for (r, &dr) in ids.arm_dof.iter().enumerate() {
            for (c, &dc) in ids.arm_dof.iter().enumerate() {
                m[r * n + c] = self.scratch.full_m[dr * nv + dc];
            }
        }
        let qvel = self.data.qvel();
        let qpos = self.data.qpos();
        let dq: Vec<f64> = ids.arm_dof.iter().map(|&d| qvel[d]).collect();
        let q: Vec<f64> = ids.arm_qpos.iter().map(|&a| qpos[a]).collect();
        let bias: Vec<f64> = ids
            .arm_dof
            .iter()
            .map(|&d| self.data.qfrc_bias()[d])
            .collect();

        let m_inv = math::inverse(&m, n);
        let jt = math::transpose_n(&j, 6, n);
        let lambda_inv = math::mul(&math::mul(&j, &m_inv, 6, n, n), &jt, 6, n, 6);
        let lambda = math::inverse(&lambda_inv, 6);
        let block = |r0: usize| {
            let mut b = vec![0.0; 9];
            for r in 0..3 {
                for c in 0..3 {
                    b[r * 3 + c] = lambda_inv[(r0 + r) * 6 + r0 + c];
                }
            }
            math::inverse(&b, 3)
        };
        let lambda_pos = block(0);
        let lambda_ori = block(3);

        let v = math::mul(&j, &dq, 6, n, 1);
        let site = ids.grip_site;
        let ee_pos = self.data.site_xpos()[site];
        let ee_ori = self.data.site_xmat()[site];
        let pos_err = math::sub(self.goal_pos, ee_pos);
        let ori_err = math::orientation_error(&self.goal_ori, &ee_ori);
        let f: Vec<f64> = (0..3).map(|i| KP * pos_err[i] - KD * v[i]).collect();
        let t: Vec<f64> = (0..3).map(|i| KP * ori_err[i] - KD * v[3 + i]).collect();
        let fw = math::mul(&lambda_pos, &f, 3, 3, 1);
        let tw = math::mul(&lambda_ori, &t, 3, 3, 1);
        let wrench = [fw[0], fw[1], fw[2], tw[0], tw[1], tw[2]];
        let mut tau = math::mul(&jt, &wrench, n, 6, 1);

        // Nullspace: pull towards the initial joint pose without disturbing the task.
        let j_bar = math::mul(&math::mul(&m_inv, &jt, n, n, 6), &lambda, n, 6, 6);
        let jbar_j = math::mul(&j_bar, &j, n, 6, n);
        let mut null = vec![0.0; n * n];
        for r in 0..n {
            for c in 0..n {
                null[r * n + c] = if r == c { 1.0 } else { 0.0 } - jbar_j[r * n + c];
            }
        }
        let kv = NULLSPACE_KP.sqrt() * 2.0;
        let qerr: Vec<f64> = (0..n)
            .map(|i| NULLSPACE_KP * (scene::INIT_QPOS[i] - q[i]) - kv * dq[i])
            .collect();
        let pose_torque = math::mul(&m, &qerr, n, n, 1);
        let null_t = math::mul(&math::transpose_n(&null, n, n), &pose_torque, n, n, 1);

        let ctrl = self.data.ctrl_mut();
        for i in 0..n {
            tau[i] += null_t[i] + bias[i];
            let [lo, hi] = ids.arm_ctrl_range[i];
            ctrl[ids.arm_act[i]] = tau[i].clamp(lo, hi);
        }
    }

    fn eef_pos_mat(&self) -> (Vec3, Mat3) {
        let s = self.ids.grip_site;
        (self.data.site_xpos()[s], self.data.site_xmat()[s])
    }

    /// Pose of robosuite's OSC control site (`gripper0_right_grip_site`).
    pub fn eef_pose(&self) -> Pose {
        let (p, r) = self.eef_pos_mat();
        Pose {
            pos: p,
            quat: math::mat_to_quat(&r),
        }
    }

    pub fn cube_pose(&self, cube: Cube) -> Pose {
        let a = self.ids.cube_qpos[cube as usize];
        let q = &self.data.qpos()[a..a + 7];
        Pose {
            pos: [q[0], q[1], q[2]],
            quat: [q[3], q[4], q[5], q[6]],
        }
    }

    /// Finger joint positions; about 0.04/-0.04 open and 0/0 closed.
    pub fn gripper_qpos(&self) -> [f64; 2] {
        let q = self.data.qpos();
        [q[self.ids.finger_qpos[0]], q[self.ids.finger_qpos[1]]]
    }

    /// Current gripper command in robosuite's [-1 open, 1 closed] convention.
    pub fn gripper_command(&self) -> f64 {
        self.gripper_cmd[1]
    }

    fn geoms_touch(&self, a: &[usize], b: &[usize]) -> bool {
        self.data.contact().iter().any(|c| {
            let (g1, g2) = (c.geom1 as usize, c.geom2 as usize);
            (a.contains(&g1) && b.contains(&g2)) || (a.contains(&g2) && b.contains(&g1))
        })
    }

    /// robosuite `_check_grasp`: both finger pads touch the cube.
    pub fn is_grasped(&self, cube: Cube) -> bool {
        let g = [self.ids.cube_geom[cube as usize]];
        self.geoms_touch(&[self.ids.left_pad], &g) && self.geoms_touch(&[self.ids.right_pad], &g)
    }

    /// Whether any finger geom touches the cube (a looser test used by the expert).
    pub fn fingers_touch(&self, cube: Cube) -> bool {
        let g = [self.ids.cube_geom[cube as usize]];
        let f = [
            self.ids.left_pad,
            self.ids.right_pad,
            self.ids.left_finger,
            self.ids.right_finger,
        ];
        self.geoms_touch(&f, &g)
    }

    pub fn cubes_touch(&self) -> bool {
        self.geoms_touch(&[self.ids.cube_geom[0]], &[self.ids.cube_geom[1]])
    }

    /// robosuite Stack `_check_success`: the moved cube is lifted more than
    /// 4 cm above the table (centre height), is not grasped, and touches the
    /// other cube. For D0-D4 the moved cube is A; in Stack_Lang it is the
    /// instructed one.
    pub fn check_success(&self) -> bool {
        let top = self.top_cube();
        let lifted = self.cube_pose(top).pos[2] > TABLE_TOP_Z + LIFT_THRESHOLD;
        lifted && !self.is_grasped(top) && self.cubes_touch()
    }

    /// The episode's progress so far (see [`Stage`]).
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The stage the scene is in now (not the furthest one).
    fn stage_now(&self, success: bool) -> Stage {
        if success {
            return Stage::Stacked;
        }
        let (top, base) = (self.top_cube(), self.top_cube().other());
        let (t, b) = (self.cube_pose(top).pos, self.cube_pose(base).pos);
        let xy = |p: Vec3, q: Vec3| (p[0] - q[0]).hypot(p[1] - q[1]);
        let bottom = t[2] - top.half_size();
        let base_top = b[2] + base.half_size();
        if xy(t, b) < base.half_size() && bottom > base_top - 0.005 {
            return Stage::Aligned;
        }
        let grasped = self.is_grasped(top);
        if grasped && bottom > base_top {
            return Stage::Lifted;
        }
        if grasped {
            return Stage::Grasped;
        }
        let e = self.eef_pose().pos;
        if xy(e, t) < top.half_size() && (e[2] - t[2]).abs() < 0.03 {
            return Stage::Reached;
        }
        Stage::Start
    }

    /// Places a cube directly (tests and scripted scenes). Velocities are zeroed.
    pub fn set_cube_pose(&mut self, cube: Cube, pose: Pose) {
        let a = self.ids.cube_qpos[cube as usize];
        let qpos = self.data.qpos_mut();
        qpos[a..a + 3].copy_from_slice(&pose.pos);
        qpos[a + 3..a + 7].copy_from_slice(&pose.quat);
        let m = self.data.model();
        let j = m.name_to_id(
            MjtObjBase::mjOBJ_JOINT,
            if cube == Cube::A {
                "cubeA_joint0"
            } else {
                "cubeB_joint0"
            },
        );
        if let Some(j) = j {
            let d = self.data.model().jnt_dofadr()[j] as usize;
            self.data.qvel_mut()[d..d + 6].fill(0.0);
        }
        self.data.forward();
    }

    /// Advances physics without touching the arm goal (holds the current goal).
    pub fn settle(&mut self, substeps: usize) {
        for _ in 0..substeps {
            self.substep();
        }
        self.data.forward();
    }

    /// One physics step with the controller evaluated on the current state:
    /// `mj_step1` computes kinematics, mass matrix and bias forces, the
    /// controls are set from them, then `mj_step2` integrates.
    fn substep(&mut self) {
        self.data.step1();
        self.apply_gripper_ctrl();
        self.apply_osc_torques();
        self.data.step2();
    }

    /// The OSC goal set by the last action (MimicGen's `target_pose`).
    pub fn target_pose(&self) -> Pose {
        Pose {
            pos: self.goal_pos,
            quat: math::mat_to_quat(&self.goal_ori),
        }
    }

    /// robosuite 1.5.2's 23-D `object` observation: cubeA pos, cubeA quat
    /// (xyzw), cubeB pos, cubeB quat (xyzw), cubeB - cubeA, cubeA - eef,
    /// cubeB - eef.
    pub fn object_obs(&self) -> [f64; 23] {
        let (a, b, e) = (
            self.cube_pose(Cube::A),
            self.cube_pose(Cube::B),
            self.eef_pose().pos,
        );
        let mut o = [0.0; 23];
        o[0..3].copy_from_slice(&a.pos);
        o[3..7].copy_from_slice(&a.quat_xyzw());
        o[7..10].copy_from_slice(&b.pos);
        o[10..14].copy_from_slice(&b.quat_xyzw());
        o[14..17].copy_from_slice(&math::sub(b.pos, a.pos));
        o[17..20].copy_from_slice(&math::sub(a.pos, e));
        o[20..23].copy_from_slice(&math::sub(b.pos, e));
        o
    }

    /// Flattened simulator state `[time, qpos.., qvel..]`, the layout of
    /// robomimic's `states` dataset; `set_state` restores it.
    pub fn get_state(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(1 + self.data.qpos().len() + self.data.qvel().len());
        v.push(self.data.time());
        v.extend_from_slice(self.data.qpos());
        v.extend_from_slice(self.data.qvel());
        v
    }

    /// Restores a state from `get_state` (same variant). The controller goal
    /// is reset to the restored hand pose; the gripper command keeps its value.
    pub fn set_state(&mut self, state: &[f64]) -> Result<()> {
        let (nq, nv) = (self.data.qpos().len(), self.data.qvel().len());
        if state.len() != 1 + nq + nv {
            return Err(SimError::InvalidParam {
                name: "state",
                reason: format!("expected {} values, got {}", 1 + nq + nv, state.len()),
            });
        }
        self.data.set_time(state[0]);
        self.data.qpos_mut().copy_from_slice(&state[1..1 + nq]);
        self.data.qvel_mut().copy_from_slice(&state[1 + nq..]);
        self.data.forward();
        let (p, r) = self.eef_pos_mat();
        self.goal_pos = p;
        self.goal_ori = r;
        Ok(())
    }

    /// Plain `mj_step` calls with the controls left as they are (benchmarks).
    pub fn step_physics_raw(&mut self, n: usize) {
        for _ in 0..n {
            self.data.step();
        }
    }

    fn observation(&self) -> Observation {
        Observation {
            image: self.last_image.clone(),
            instruction: self.instruction.clone(),
            eef: self.eef_pose(),
            gripper_qpos: self.gripper_qpos(),
            cube_a: self.cube_pose(Cube::A),
            cube_b: self.cube_pose(Cube::B),
            colours: self.colours,
            step: self.steps,
        }
    }

    fn render_if_enabled(&mut self) -> Result<()> {
        if self.cfg.render {
            self.last_image = Some(self.render()?);
        }
        Ok(())
    }

    /// Renders the configured camera now. Errors if the env was built without a renderer.
    #[cfg(feature = "render")]
    pub fn render(&mut self) -> Result<RgbImage> {
        if self.renderer.is_none() {
            self.init_renderer()?;
        }
        let r = self.renderer.as_mut().expect("renderer initialised above");
        r.sync_data(&mut self.data)
            .map_err(|e| SimError::Render(e.to_string()))?;
        r.render().map_err(|e| SimError::Render(e.to_string()))?;
        let rgb = r
            .rgb_flat()
            .ok_or_else(|| SimError::Render("no RGB buffer".into()))?;
        let mut img = RgbImage {
            width: self.cfg.width,
            height: self.cfg.height,
            data: rgb.to_vec(),
        };
        if let Some(inset_cam) = self.ids.inset_camera {
            // Same renderer, second camera: one GL context per env, as the notes advise.
            // The scene is built from the camera in `sync_data`, so sync again after switching.
            r.set_camera(MjvCamera::new_fixed(inset_cam));
            let drawn = r
                .sync_data(&mut self.data)
                .and_then(|_| r.render())
                .map_err(|e| SimError::Render(e.to_string()));
            r.set_camera(MjvCamera::new_fixed(self.ids.camera));
            drawn?;
            let hand = RgbImage {
                width: self.cfg.width,
                height: self.cfg.height,
                data: r
                    .rgb_flat()
                    .ok_or_else(|| SimError::Render("no RGB buffer".into()))?
                    .to_vec(),
            };
            paste_inset(&mut img, &hand);
        }
        Ok(img)
    }

    #[cfg(not(feature = "render"))]
    pub fn render(&mut self) -> Result<RgbImage> {
        Err(SimError::RenderUnavailable)
    }
}

/// Side of the inset as a fraction of the frame's shorter side.
pub const INSET_FRACTION: f64 = 0.3;

/// Shrinks `inset` (area average) into the bottom-right corner of `img`, with a one-pixel
/// dark frame so a viewer reads it as a picture-in-picture.
fn paste_inset(img: &mut RgbImage, inset: &RgbImage) {
    let side = ((img.width.min(img.height) as f64 * INSET_FRACTION).round() as u32).max(4);
    let (x0, y0) = (img.width - side, img.height - side);
    let (iw, ih) = (inset.width as usize, inset.height as usize);
    for oy in 0..side as usize {
        let (sy0, sy1) = (oy * ih / side as usize, ((oy + 1) * ih).div_ceil(side as usize));
        for ox in 0..side as usize {
            let (sx0, sx1) = (ox * iw / side as usize, ((ox + 1) * iw).div_ceil(side as usize));
            let mut acc = [0u32; 3];
            for sy in sy0..sy1 {
                for sx in sx0..sx1 {
                    let p = (sy * iw + sx) * 3;
                    for c in 0..3 {
                        acc[c] += inset.data[p + c] as u32;
                    }
                }
            }
            let n = ((sy1 - sy0) * (sx1 - sx0)) as u32;
            let edge = ox == 0 || oy == 0;
            let q = ((y0 as usize + oy) * img.width as usize + x0 as usize + ox) * 3;
            for c in 0..3 {
                img.data[q + c] = if edge { 40 } else { ((acc[c] + n / 2) / n) as u8 };
            }
        }
    }
}

impl Pose {
    /// Quaternion in robosuite/robomimic observation order (x, y, z, w).
    pub fn quat_xyzw(&self) -> [f64; 4] {
        [self.quat[1], self.quat[2], self.quat[3], self.quat[0]]
    }
}
