//! Source demonstrations: scripted-expert rollouts annotated with what
//! MimicGen's `prepare_src_dataset` stores per step (`datagen_info`).
use std::ops::Range;

use crate::datagen::pose::Transform;
use crate::datagen::seeds;
use crate::env::{Cube, EnvConfig, StackEnv};
use crate::error::{Result, SimError};
use crate::expert::{Expert, Phase};
use crate::variant::{StackOrder, Variant};

/// The per-step record, taken before the step's action.
#[derive(Clone, Debug)]
pub struct SourceStep {
    /// Pose of the OSC control site.
    pub eef: Transform,
    /// The controller goal the action asked for (`p + a·0.05`, `R(a·0.5)·R`).
    pub target: Transform,
    /// Root-body poses of cube A and cube B (index with `Cube as usize`).
    pub objects: [Transform; 2],
    pub gripper: f32,
    /// Subtask signal 1: the cube to move is held by both finger pads.
    pub grasped: bool,
    /// Subtask signal 2: that cube rests on the other one, released (task success).
    pub placed: bool,
}

/// One successful expert demonstration.
#[derive(Clone, Debug)]
pub struct SourceDemo {
    /// Scene seed (`StackEnv::reset`) that reproduces it.
    pub seed: u64,
    pub order: StackOrder,
    pub steps: Vec<SourceStep>,
}

/// The cube each subtask is defined relative to: first the one to pick up,
/// then the one to place it on.
pub fn subtask_object(order: StackOrder, subtask: usize) -> Cube {
    let top = match order {
        StackOrder::SmallOnBig => Cube::A,
        StackOrder::BigOnSmall => Cube::B,
    };
    if subtask == 0 {
        top
    } else {
        top.other()
    }
}

/// Steps the second subtask must keep after the largest boundary offset, so a
/// segment never ends up empty.
const MIN_PLACE_STEPS: usize = 10;

impl SourceDemo {
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Index of the first step at which the grasp signal turns on.
    pub fn grasp_index(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.grasped)
    }

    /// The two object-centric subtask segments (MimicGen `parse_source_dataset`):
    /// subtask 1 ("grasp") runs to one step past the grasp signal's first
    /// 0→1 edge, moved later by `offset` steps (MimicGen's randomised
    /// boundary); subtask 2 ("place") runs from there to the end.
    pub fn segments(&self, offset: usize) -> [Range<usize>; 2] {
        let g = self.grasp_index().expect("source demos are validated on recording");
        let end = (g + 1 + offset).min(self.len() - 1);
        [0..end, end..self.len()]
    }

    fn validate(&self, max_offset: usize) -> std::result::Result<(), &'static str> {
        let g = self.grasp_index().ok_or("never grasped the cube")?;
        if g == 0 {
            return Err("grasped at the first step");
        }
        if self.len() < g + 1 + max_offset + MIN_PLACE_STEPS {
            return Err("too few steps after the grasp");
        }
        if !self.steps.last().is_some_and(|s| s.placed) {
            return Err("not stacked at the end");
        }
        Ok(())
    }
}

/// Source demos for one variant, plus how many expert rollouts it took.
#[derive(Clone, Debug)]
pub struct SourceSet {
    pub variant: Variant,
    pub demos: Vec<SourceDemo>,
    pub tried: usize,
}

/// Rollouts longer than this are dropped; the expert needs about 100-150 steps.
const SOURCE_HORIZON: u32 = 400;

/// Records `n` clean demonstrations with the scripted expert (physics only).
///
/// Only rollouts that succeed and in which the expert never had to start
/// over (dropped cube) are kept: a restart would put a second grasp inside
/// the "place" segment, which is expressed relative to the wrong cube. In
/// Stack_Lang both stacking orders are needed, so half of the demos (rounded
/// up) stack small on big and the rest big on small.
pub fn record_source_demos(variant: Variant, n: usize, seed: u64, max_offset: usize) -> Result<SourceSet> {
    let need_reverse = if variant == Variant::Lang { n / 2 } else { 0 };
    if n == 0 || (variant == Variant::Lang && n < 2) {
        return Err(SimError::InvalidParam {
            name: "source demos",
            reason: format!("{n} is too few for {variant} (need at least {})", if variant == Variant::Lang { 2 } else { 1 }),
        });
    }
    let need = |order: StackOrder| match order {
        StackOrder::SmallOnBig => n - need_reverse,
        StackOrder::BigOnSmall => need_reverse,
    };
    let mut env = StackEnv::new(EnvConfig {
        variant,
        render: false,
        horizon: SOURCE_HORIZON,
        seed: seeds::derive(seed, seeds::SOURCE, 0),
        ..Default::default()
    })?;
    let mut expert = Expert::default();
    let mut demos: Vec<SourceDemo> = Vec::with_capacity(n);
    let max_tries = 20 * n;
    let mut tried = 0;
    while demos.len() < n {
        if tried == max_tries {
            return Err(SimError::InvalidParam {
                name: "source demos",
                reason: format!("the expert produced only {} usable demos of {variant} in {tried} tries", demos.len()),
            });
        }
        let scene = seeds::derive(seed, seeds::SOURCE, tried as u64);
        tried += 1;
        env.reset(scene)?;
        let order = env.order();
        if demos.iter().filter(|d| d.order == order).count() >= need(order) {
            continue;
        }
        match record_one(&mut env, &mut expert)? {
            Some(demo) => match demo.validate(max_offset) {
                Ok(()) => demos.push(demo),
                Err(why) => tracing::debug!(scene, why, "source demo dropped"),
            },
            None => tracing::debug!(scene, "expert failed; source demo dropped"),
        }
    }
    Ok(SourceSet { variant, demos, tried })
}

/// Expert steps kept after the first success: the hand opens fully and backs
/// off, so the "placed" signal is on at the end and generated trajectories
/// do not stop with the fingers still brushing the cube.
const STEPS_AFTER_SUCCESS: usize = 3;

/// One expert rollout from the env's current reset; `None` when it fails,
/// restarts, or the stack does not survive the retreat.
fn record_one(env: &mut StackEnv, expert: &mut Expert) -> Result<Option<SourceDemo>> {
    let top = env.top_cube();
    let mut steps = Vec::new();
    let mut lifted = false;
    let mut success_steps = 0;
    loop {
        let action = expert.act(env);
        match expert.phase() {
            Phase::Lift | Phase::Transport | Phase::Lower | Phase::Release | Phase::Unwind => lifted = true,
            Phase::Approach | Phase::Descend | Phase::Grasp if lifted => return Ok(None),
            _ => {}
        }
        let mut step = SourceStep {
            eef: Transform::from_pose(&env.eef_pose()),
            target: Transform::IDENTITY,
            objects: [Cube::A, Cube::B].map(|c| Transform::from_pose(&env.cube_pose(c))),
            gripper: action[6],
            grasped: env.is_grasped(top),
            placed: env.check_success(),
        };
        let r = env.step(&action)?;
        step.target = Transform::from_pose(&env.target_pose());
        steps.push(step);
        if r.success {
            success_steps += 1;
        } else if success_steps > 0 || r.done {
            return Ok(None);
        }
        if success_steps > STEPS_AFTER_SUCCESS {
            return Ok(Some(SourceDemo {
                seed: env.episode_seed(),
                order: env.order(),
                steps,
            }));
        }
    }
}
