//! Builds robosuite's Stack scene from robosuite's own MJCF files with mjSpec:
//! the table arena, the Panda on its Rethink mount with the Panda gripper, and
//! two free cubes. Names match robosuite's (`robot0_joint1`,
//! `gripper0_right_grip_site`, `cubeA_g0`, ...) so states and logs line up.
use std::path::Path;

use mujoco_rs::prelude::*;
use tracing::debug;

use crate::error::{Result, SimError};
use crate::variant::Variant;

/// Table top height (robosuite Stack `table_offset` z).
pub const TABLE_TOP_Z: f64 = 0.8;
/// Cube half sizes (robosuite `BoxObject` sizes are half extents).
pub const CUBE_A_HALF: f64 = 0.02;
pub const CUBE_B_HALF: f64 = 0.025;
/// Panda `init_qpos` in robosuite.
pub const INIT_QPOS: [f64; 7] = [
    0.0,
    std::f64::consts::PI / 16.0,
    0.0,
    -std::f64::consts::PI / 2.0 - std::f64::consts::PI / 3.0,
    0.0,
    std::f64::consts::PI - 0.2,
    std::f64::consts::PI / 4.0,
];
/// Gripper finger `init_qpos` in robosuite's PandaGripper.
pub const GRIPPER_INIT_QPOS: [f64; 2] = [0.020833, -0.020833];

/// The largest offscreen image the model supports (512 is what the presets use).
pub const MAX_IMAGE_SIZE: u32 = 1024;

fn xml_escape_path(p: &Path) -> Result<String> {
    let s = p.to_str().ok_or_else(|| SimError::InvalidParam {
        name: "asset path",
        reason: format!("{} is not valid UTF-8", p.display()),
    })?;
    if s.contains('"') || s.contains('<') || s.contains('&') {
        return Err(SimError::InvalidParam {
            name: "asset path",
            reason: format!("{s} contains characters that cannot go into MJCF"),
        });
    }
    Ok(s.to_string())
}

fn cube_xml(name: &str, half: f64, x: f64) -> String {
    // Same physical parameters as robosuite's BoxObject defaults: density 1000,
    // friction (1, 0.005, 0.0001), solref (0.02, 1), solimp (0.9, 0.95, 0.001).
    format!(
        r#"<body name="{name}_main" pos="{x} 0 {z}">
      <freejoint name="{name}_joint0"/>
      <geom name="{name}_g0" type="box" size="{h} {h} {h}" group="0" density="1000"
            friction="1 0.005 0.0001" solref="0.02 1" solimp="0.9 0.95 0.001" rgba="0.5 0 0 1"/>
      <geom name="{name}_g0_vis" type="box" size="{h} {h} {h}" group="1" contype="0" conaffinity="0"
            mass="0" material="{name}_mat"/>
    </body>"#,
        z = TABLE_TOP_Z + half,
        h = half
    )
}

fn base_xml(assets: &Path) -> Result<String> {
    let a = xml_escape_path(assets)?;
    // robosuite's D1+ "agentview" is the fork's wider `agentview_full` pose.
    let agentview_full = r#"<camera mode="fixed" name="agentview_full" pos="0.753078462147161 2.062036796036723e-08 1.5194726087166726" quat="0.6432409286499023 0.293668270111084 0.2936684489250183 0.6432408690452576"/>"#;
    Ok(format!(
        r#"<mujoco model="stack">
  <compiler angle="radian" texturedir="{a}/arenas" inertiagrouprange="0 0" autolimits="true"/>
  <option timestep="0.002" impratio="20" cone="elliptic" density="1.2" viscosity="0.00002"/>
  <size memory="64M"/>
  <visual>
    <map znear="0.001"/>
    <global offwidth="{max}" offheight="{max}"/>
    <quality offsamples="0"/>
  </visual>
  <include file="{a}/arenas/table_arena.xml"/>
  <asset>
    <texture name="cube_wood" type="cube" file="{a}/textures/light-wood.png"/>
    <material name="cubeA_mat" texture="cube_wood" texrepeat="1 1" specular="0.4" shininess="0.1" rgba="0.85 0.12 0.1 1"/>
    <material name="cubeB_mat" texture="cube_wood" texrepeat="1 1" specular="0.4" shininess="0.1" rgba="0.15 0.7 0.2 1"/>
  </asset>
  <worldbody>
    <body name="robot0_root" pos="-0.56 0 0.912"/>
    {cube_a}
    {cube_b}
    {agentview_full}
  </worldbody>
</mujoco>"#,
        max = MAX_IMAGE_SIZE,
        cube_a = cube_xml("cubeA", CUBE_A_HALF, 0.0),
        cube_b = cube_xml("cubeB", CUBE_B_HALF, 0.1),
    ))
}

fn edit_err(what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Model(format!("{what}: {e}"))
}

/// robosuite's TableArena resizes the stock 0.8 m table block in Python to a
/// 5 cm top at `table_offset` on four legs. Only the look below the top
/// changes, but the legs and floor show in the wide D1+ agentview.
fn shape_table(scene: &mut MjSpec) -> Result<()> {
    let half = [0.4, 0.4, 0.025];
    let missing = |what: &str| edit_err("table_arena.xml", format!("no {what}"));
    scene
        .body_mut("table")
        .ok_or_else(|| missing("table body"))?
        .with_pos([0.0, 0.0, TABLE_TOP_Z - half[2]]);
    for g in ["table_collision", "table_visual"] {
        scene.geom_mut(g).ok_or_else(|| missing(g))?.with_size(half);
    }
    scene
        .site_mut("table_top")
        .ok_or_else(|| missing("table_top site"))?
        .with_pos([0.0, 0.0, half[2]]);
    // Legs 10 cm in from each corner, reaching the floor.
    let leg_half_len = (TABLE_TOP_Z - half[2]) / 2.0;
    let corners = [(1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, -1.0)];
    for (i, (sx, sy)) in corners.iter().enumerate() {
        let name = format!("table_leg{}_visual", i + 1);
        scene
            .geom_mut(&name)
            .ok_or_else(|| missing(&name))?
            .with_pos([sx * (half[0] - 0.1), sy * (half[1] - 0.1), -leg_half_len])
            .with_size([0.025, leg_half_len, 0.0]);
    }
    Ok(())
}

/// Composes and compiles the Stack model for `variant`.
pub fn build_model(assets: &Path, variant: Variant) -> Result<MjModel> {
    let t0 = std::time::Instant::now();
    let xml = base_xml(assets)?;
    let mut scene = MjSpec::from_xml_string(&xml).map_err(|e| edit_err("scene", e))?;
    let mut robot = MjSpec::from_xml(assets.join("robots/panda/robot.xml"))
        .map_err(|e| edit_err("robots/panda/robot.xml", e))?;
    let mut gripper = MjSpec::from_xml(assets.join("grippers/panda_gripper.xml"))
        .map_err(|e| edit_err("grippers/panda_gripper.xml", e))?;
    let mut mount = MjSpec::from_xml(assets.join("bases/rethink_mount.xml"))
        .map_err(|e| edit_err("bases/rethink_mount.xml", e))?;

    shape_table(&mut scene)?;

    // Arm first, then the gripper into the arm's copy inside the scene, so the
    // prefixes do not compound (robot0_gripper0_...).
    scene
        .body_mut("robot0_root")
        .ok_or_else(|| edit_err("scene", "no robot0_root body"))?
        .attach_by_deep_copy(&mut robot, "robot0_", "")
        .map_err(|e| edit_err("attach panda", e))?;
    scene
        .body_mut("robot0_right_hand")
        .ok_or_else(|| edit_err("panda", "no right_hand body"))?
        .attach_by_deep_copy(&mut gripper, "gripper0_right_", "")
        .map_err(|e| edit_err("attach gripper", e))?;
    // robosuite places the mount's top 1 cm above the robot base.
    scene
        .body_mut("robot0_base")
        .ok_or_else(|| edit_err("panda", "no base body"))?
        .add_frame()
        .with_pos([0.0, 0.0, 0.932])
        .attach_by_deep_copy(&mut mount, "mount0_", "")
        .map_err(|e| edit_err("attach mount", e))?;

    let mut model = scene.compile().map_err(|e| edit_err("compile", e))?;

    // Joint attributes robosuite sets in Python (RobotModel + Panda):
    // armature 5/(i+1), frictionloss 0.1, damping 0.1 (0.01 for the wrist).
    let damping = [0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01];
    for (i, &damp) in damping.iter().enumerate() {
        let name = format!("robot0_joint{}", i + 1);
        let j = model
            .name_to_id(MjtObjBase::mjOBJ_JOINT, &name)
            .ok_or_else(|| edit_err("panda", format!("no joint {name}")))?;
        let dof = model.jnt_dofadr()[j] as usize;
        model.dof_armature_mut()[dof] = 5.0 / (i as f64 + 1.0);
        model.dof_frictionloss_mut()[dof] = 0.1;
        model.dof_damping_mut()[dof] = damp;
    }
    // robosuite gives free joints a little damping so resting cubes settle.
    for name in ["cubeA_joint0", "cubeB_joint0"] {
        let j = model
            .name_to_id(MjtObjBase::mjOBJ_JOINT, name)
            .ok_or_else(|| edit_err("scene", format!("no joint {name}")))?;
        let dof = model.jnt_dofadr()[j] as usize;
        for d in dof..dof + 6 {
            model.dof_damping_mut()[d] = 0.0005;
        }
    }
    // Reflections double the render cost on CPU and are barely visible here.
    for r in model.mat_reflectance_mut().iter_mut() {
        *r = 0.0;
    }
    if variant.wide_camera() {
        let av = model
            .name_to_id(MjtObjBase::mjOBJ_CAMERA, "agentview")
            .unwrap();
        let full = model
            .name_to_id(MjtObjBase::mjOBJ_CAMERA, "agentview_full")
            .unwrap();
        let (p, q) = (model.cam_pos()[full], model.cam_quat()[full]);
        model.cam_pos_mut()[av] = p;
        model.cam_quat_mut()[av] = q;
    }
    debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        nq = model.ffi().nq,
        "stack model compiled"
    );
    Ok(model)
}
