use std::path::PathBuf;

/// Everything the simulator can fail with. Messages are written for the person
/// at the CLI: they say what to do, not only what broke.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "MuJoCo assets not found at {path}: run scripts/setup-mujoco.sh (or set VELA_MUJOCO_ASSETS \
         to the folder it prints)"
    )]
    AssetsMissing { path: PathBuf },

    #[error(
        "unknown environment '{0}': expected one of Stack_D0, Stack_D1, Stack_D2, Stack_D3, Stack_D4, Stack_Lang"
    )]
    UnknownVariant(String),

    #[error("unknown camera '{0}': expected one of agentview, frontview, birdview, agentview_hand")]
    UnknownCamera(String),

    #[error("invalid parameter {name}: {reason}")]
    InvalidParam { name: &'static str, reason: String },

    #[error("failed to build the MuJoCo model: {0}")]
    Model(String),

    #[error("rendering failed: {0} (headless rendering needs EGL + Mesa: Debian libegl1 libegl-mesa0 libgl1-mesa-dri)")]
    Render(String),

    #[error("this build of vela-sim has no renderer (enable the `render` feature)")]
    RenderUnavailable,

    #[error("could not place the cubes after {0} tries")]
    Placement(usize),

    #[error("writing the dataset failed: {0}")]
    Output(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, SimError>;
