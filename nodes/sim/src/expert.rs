//! A scripted waypoint expert that drives the env through the same 7-D action
//! interface a policy uses (no privileged control), so its rollouts are valid
//! demonstrations for the data pipeline.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::env::{Cube, StackEnv, MAX_DPOS, MAX_DROT};
use crate::math::{self, Mat3, Vec3};
use crate::scene::TABLE_TOP_Z;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Approach,
    Descend,
    Grasp,
    Lift,
    Transport,
    Lower,
    Release,
    Retreat,
    /// Recovery when the arm stalls near full extension (joint 4 at its
    /// limit): pull the hand back towards the robot base, then carry on.
    Unwind,
}

/// Tunables, exposed so the data pipeline can vary demonstrations.
#[derive(Clone, Debug)]
pub struct ExpertConfig {
    /// Proportional gain from pose error to action (errors are divided by the
    /// action scale first, so 1.0 asks for exactly the remaining distance).
    pub pos_gain: f64,
    pub rot_gain: f64,
    /// Height above the cube at which the gripper lines up before descending.
    pub hover: f64,
    /// Clearance between the carried cube's bottom and the target's top when carried.
    pub carry_clearance: f64,
    /// Standard deviation of Gaussian noise added to the six arm dimensions
    /// (MimicGen uses 0.05 for Stack). Seeded by the episode seed, so noisy
    /// rollouts are still reproducible.
    pub action_noise: f64,
}

impl Default for ExpertConfig {
    fn default() -> Self {
        Self {
            pos_gain: 2.5,
            rot_gain: 2.0,
            hover: 0.06,
            carry_clearance: 0.06,
            action_noise: 0.0,
        }
    }
}

pub struct Expert {
    cfg: ExpertConfig,
    phase: Phase,
    phase_steps: u32,
    episode: Option<(u64, u32)>,
    /// Gripper orientation at episode start (pointing down); targets are yaw
    /// rotations of it so tilt errors never accumulate.
    base_ori: Mat3,
    base_yaw: f64,
    rng: ChaCha8Rng,
}

impl Default for Expert {
    fn default() -> Self {
        Self::new(ExpertConfig::default())
    }
}

fn cube_yaw(env: &StackEnv, c: Cube) -> f64 {
    math::yaw_of(&env.cube_pose(c).mat())
}

/// Maps an angle to the equivalent one in [-pi/4, pi/4] modulo quarter turns
/// (a cube looks the same every 90 degrees).
fn wrap_quarter(a: f64) -> f64 {
    let q = std::f64::consts::FRAC_PI_2;
    a - q * (a / q).round()
}

impl Expert {
    pub fn new(cfg: ExpertConfig) -> Self {
        Self {
            cfg,
            phase: Phase::Approach,
            phase_steps: 0,
            episode: None,
            base_ori: math::IDENTITY,
            base_yaw: 0.0,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn set_phase(&mut self, p: Phase) {
        self.phase = p;
        self.phase_steps = 0;
    }

    /// Target orientation: the start orientation turned about world z so the
    /// fingers line up with `cube`'s faces, by the smallest turn.
    fn aligned(&self, env: &StackEnv, cube: Cube, turns: f64) -> Mat3 {
        // Relative to the start yaw, not the current one, so the chosen
        // quarter turn stays put while the hand rotates.
        let b = self.base_yaw;
        let target_yaw =
            b + wrap_quarter(cube_yaw(env, cube) - b) + turns * std::f64::consts::FRAC_PI_2;
        math::matmul(&math::rot_z(target_yaw - self.base_yaw), &self.base_ori)
    }

    fn action_to(&self, env: &StackEnv, pos: Vec3, ori: &Mat3, gripper: f32) -> [f32; 7] {
        let eef = env.eef_pose();
        let dp = math::sub(pos, eef.pos);
        let dr = math::mat_to_axis_angle(&math::matmul(ori, &math::transpose(&eef.mat())));
        let mut a = [0.0f32; 7];
        for i in 0..3 {
            a[i] = (self.cfg.pos_gain * dp[i] / MAX_DPOS).clamp(-1.0, 1.0) as f32;
            a[3 + i] = (self.cfg.rot_gain * dr[i] / MAX_DROT).clamp(-1.0, 1.0) as f32;
        }
        a[6] = gripper;
        a
    }

    /// The next action for the env's current state.
    pub fn act(&mut self, env: &StackEnv) -> [f32; 7] {
        self.act_labelled(env).0
    }

    /// The next action with its noise and without: the second is the label a learner should
    /// copy in this state (DAgger relabelling, DART-style noise injection).
    pub fn act_labelled(&mut self, env: &StackEnv) -> ([f32; 7], [f32; 7]) {
        let clean = self.act_clean(env);
        let mut a = clean;
        if self.cfg.action_noise > 0.0 {
            for v in a.iter_mut().take(6) {
                *v = (*v as f64 + self.cfg.action_noise * math::gaussian(&mut self.rng)).clamp(-1.0, 1.0) as f32;
            }
        }
        (a, clean)
    }


    fn act_clean(&mut self, env: &StackEnv) -> [f32; 7] {
        let key = (env.episode_seed(), env.steps());
        let new_episode = match self.episode {
            None => true,
            Some((seed, steps)) => seed != key.0 || key.1 < steps || env.steps() == 0,
        };
        if new_episode {
            self.set_phase(Phase::Approach);
            self.base_ori = env.eef_pose().mat();
            self.base_yaw = math::yaw_of(&self.base_ori);
            // Different stream from the env's, same reproducibility.
            self.rng = ChaCha8Rng::seed_from_u64(env.episode_seed() ^ 0x005e_ede4_be47_u64);
        }
        self.episode = Some(key);
        self.phase_steps += 1;

        let top = env.top_cube();
        let bottom = top.other();
        let eef = env.eef_pose().pos;
        let tp = env.cube_pose(top).pos;
        let bp = env.cube_pose(bottom).pos;
        let th = top.half_size();
        let bh = bottom.half_size();
        let xy_err = |t: Vec3| ((t[0] - eef[0]).powi(2) + (t[1] - eef[1]).powi(2)).sqrt();
        let carry_z = TABLE_TOP_Z + 2.0 * bh + 2.0 * th + self.cfg.carry_clearance;
        let grasp_ori = self.aligned(env, top, 0.0);

        // Lost the cube while carrying it: start over.
        if matches!(
            self.phase,
            Phase::Lift | Phase::Transport | Phase::Lower | Phase::Unwind
        ) && self.phase_steps > 4
            && (eef[2] - tp[2]) > th + 0.02
        {
            self.set_phase(Phase::Approach);
        }

        match self.phase {
            Phase::Approach => {
                let target = [
                    tp[0],
                    tp[1],
                    (tp[2] + self.cfg.hover).max(eef[2].min(carry_z)),
                ];
                let yaw_err = {
                    let r = math::matmul(&grasp_ori, &math::transpose(&env.eef_pose().mat()));
                    math::norm(math::mat_to_axis_angle(&r))
                };
                if xy_err(tp) < 0.01 && yaw_err < 0.08 {
                    self.set_phase(Phase::Descend);
                }
                self.action_to(env, target, &grasp_ori, -1.0)
            }
            Phase::Descend => {
                let target = [tp[0], tp[1], tp[2] - 0.003];
                if (eef[2] - target[2]).abs() < 0.008 || self.phase_steps > 30 {
                    self.set_phase(Phase::Grasp);
                }
                self.action_to(env, target, &grasp_ori, -1.0)
            }
            Phase::Grasp => {
                if self.phase_steps >= 8 {
                    self.set_phase(Phase::Lift);
                }
                let target = [tp[0], tp[1], tp[2] - 0.003];
                self.action_to(env, target, &grasp_ori, 1.0)
            }
            Phase::Lift => {
                let target = [eef[0], eef[1], carry_z + th];
                if eef[2] > carry_z + th - 0.015 {
                    self.set_phase(Phase::Transport);
                }
                self.action_to(env, target, &grasp_ori, 1.0)
            }
            Phase::Transport => {
                // Move the carried cube's centre, not the hand, over the target.
                let off = [tp[0] - eef[0], tp[1] - eef[1]];
                let target = [bp[0] - off[0], bp[1] - off[1], carry_z + th];
                let ori = self.aligned(env, bottom, 0.0);
                if xy_err([bp[0] - off[0], bp[1] - off[1], 0.0]) < 0.005 {
                    self.set_phase(Phase::Lower);
                } else if self.phase_steps > 35 {
                    self.set_phase(Phase::Unwind);
                }
                self.action_to(env, target, &ori, 1.0)
            }
            Phase::Lower => {
                let off = [tp[0] - eef[0], tp[1] - eef[1], tp[2] - eef[2]];
                let want_cube_z = bp[2] + bh + th + 0.004;
                let target = [bp[0] - off[0], bp[1] - off[1], want_cube_z - off[2]];
                let ori = self.aligned(env, bottom, 0.0);
                if (tp[2] - want_cube_z).abs() < 0.004 || self.phase_steps > 25 {
                    self.set_phase(Phase::Release);
                }
                self.action_to(env, target, &ori, 1.0)
            }
            Phase::Release => {
                if self.phase_steps >= 6 {
                    self.set_phase(Phase::Retreat);
                }
                self.action_to(env, eef, &env.eef_pose().mat(), -1.0)
            }
            Phase::Unwind => {
                // Robot base sits at (-0.56, 0); move 10 cm towards it.
                let d = [eef[0] + 0.56, eef[1]];
                let l = (d[0] * d[0] + d[1] * d[1]).sqrt().max(1e-6);
                let target = [
                    eef[0] - 0.1 * d[0] / l,
                    eef[1] - 0.1 * d[1] / l,
                    carry_z + th,
                ];
                if self.phase_steps >= 8 {
                    self.set_phase(Phase::Transport);
                }
                self.action_to(env, target, &grasp_ori, 1.0)
            }
            Phase::Retreat => {
                let target = [eef[0], eef[1], eef[2] + 0.05];
                self.action_to(env, target, &env.eef_pose().mat(), -1.0)
            }
        }
    }
}
