//! Where the robosuite assets and libmujoco live. They are fetched once by
//! `scripts/setup-mujoco.sh` into a cache outside git, never vendored.
use std::path::{Path, PathBuf};

use crate::error::{Result, SimError};

/// Resolves the asset folder: `VELA_MUJOCO_ASSETS`, else
/// `${VELA_CACHE:-$HOME/.cache/vela}/mujoco/assets` (the setup script's default).
pub fn asset_dir() -> Result<PathBuf> {
    let dir = if let Some(p) = std::env::var_os("VELA_MUJOCO_ASSETS") {
        PathBuf::from(p)
    } else {
        let cache = std::env::var_os("VELA_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vela")))
            .unwrap_or_else(|| PathBuf::from(".cache/vela"));
        cache.join("mujoco/assets")
    };
    check(&dir)?;
    Ok(dir)
}

/// A partial or stale cache gives a confusing MuJoCo parse error deep inside
/// compilation, so check the files we rely on up front.
fn check(dir: &Path) -> Result<()> {
    for rel in [
        ".stamp",
        "robots/panda/robot.xml",
        "grippers/panda_gripper.xml",
        "bases/rethink_mount.xml",
        "arenas/table_arena.xml",
        "textures/light-wood.png",
    ] {
        if !dir.join(rel).is_file() {
            return Err(SimError::AssetsMissing {
                path: dir.join(rel),
            });
        }
    }
    Ok(())
}

/// True when the visual meshes were decimated by the setup script (faster rendering).
pub fn meshes_decimated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(".stamp"))
        .map(|s| s.contains("full=0"))
        .unwrap_or(false)
}
