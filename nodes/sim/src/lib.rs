//! MimicGen's Stack task rebuilt on MuJoCo 3.17 (through mujoco-rs): robosuite's
//! Panda, gripper, mount and table arena, an OSC_POSE controller at 20 Hz,
//! the D0-D4 variants plus a language variant, headless EGL rendering and a
//! scripted expert.
//!
//! Setup: `scripts/setup-mujoco.sh` fetches libmujoco and the assets into a
//! cache; build with `MUJOCO_DYNAMIC_LINK_DIR` set to the folder it prints.

pub mod assets;
pub mod datagen;
pub mod env;
pub mod error;
pub mod expert;
pub mod image_io;
pub mod math;
pub mod node;
pub mod scene;
pub mod tools;
pub mod variant;

pub use env::{Cube, EnvConfig, Observation, Pose, Progress, RgbImage, StackEnv, Stage, StepResult, INSET_FRACTION};
pub use error::{Result, SimError};
pub use expert::{Expert, ExpertConfig, Phase};
pub use image_io::write_png;
pub use tools::{
    action_from_model, bench, info, render_to_png, run_expert, BenchReport, ExpertReport,
};
pub use variant::{Camera, CubeColor, StackOrder, Variant};
pub use node::{register, MimicGenNode, Motion};
