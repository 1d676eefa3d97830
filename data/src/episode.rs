use std::collections::BTreeMap;

/// On-disk dataset formats Vela reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// robomimic HDF5 (what MimicGen writes): one file, `data/demo_N/...`.
    Mimicgen,
    /// RLDS: TFDS-style folder of sharded TFRecord files of `tf.train.Example` episodes.
    Rlds,
}

/// Dataset-wide metadata.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetMeta {
    /// Dataset name; training stores action statistics under it, so it is
    /// the `action_space` used at inference.
    pub name: String,
    /// robomimic `data.attrs["env_args"]` (env name, type, kwargs), kept verbatim.
    pub env_args: serde_json::Value,
}

/// One RGB8 camera frame, row-major `height * width * 3` bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// A per-step low-dimensional series: `data.len() == steps * dim`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LowDim {
    pub dim: usize,
    pub data: Vec<f64>,
}

impl LowDim {
    pub fn steps(&self) -> usize {
        if self.dim == 0 { 0 } else { self.data.len() / self.dim }
    }
    pub fn row(&self, t: usize) -> &[f64] {
        &self.data[t * self.dim..(t + 1) * self.dim]
    }
}

/// One demonstration/episode, all series of equal length `T` (= `actions.len()`).
///
/// Actions are robosuite OSC_POSE deltas `[dx, dy, dz, dax, day, daz, gripper]`
/// with gripper -1 = open, +1 = close (the simulator's convention); the
/// remapping to 1 = open, 0 = closed that OpenVLA training uses happens in
/// statistics/training, never on disk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Episode {
    /// robomimic demo name (`demo_0`, ...); RLDS keeps it in `episode_metadata/file_path`.
    pub name: String,
    pub actions: Vec<[f32; 7]>,
    /// Camera name (robomimic `obs/<camera>_image` without the suffix, e.g.
    /// `agentview`) to frames.
    pub images: BTreeMap<String, Vec<Frame>>,
    /// Other observation keys (`robot0_eef_pos`, `robot0_eef_quat`,
    /// `robot0_gripper_qpos`, `object`, ...).
    pub low_dim: BTreeMap<String, LowDim>,
    /// Flattened simulator states (`[time, qpos.., qvel..]`), replayable with
    /// the simulator's `set_state`. Empty when the source had none (RLDS).
    pub states: LowDim,
    pub rewards: Vec<f32>,
    pub dones: Vec<bool>,
    /// Natural-language instruction per step (constant for most variants).
    pub instructions: Vec<String>,
    /// Per-episode attributes (robomimic demo attrs: `num_samples`, `seed`,
    /// `model_file`, MimicGen's source-segment provenance, ...).
    pub attrs: BTreeMap<String, serde_json::Value>,
}

impl Episode {
    pub fn len(&self) -> usize {
        self.actions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The robot's proprioceptive state per step: `low_dim["state"]` when the
    /// episode has one (RLDS), else the concatenation of [`PROPRIO_KEYS`] that
    /// are present (robomimic), or `None`. RLDS writes this as
    /// `steps/observation/state` and statistics summarise it as `proprio`.
    pub fn proprio_state(&self) -> Option<LowDim> {
        if let Some(s) = self.low_dim.get(STATE_KEY) {
            return Some(s.clone());
        }
        let parts: Vec<&LowDim> = PROPRIO_KEYS.iter().filter_map(|k| self.low_dim.get(*k)).collect();
        let steps = self.len();
        if parts.is_empty() || parts.iter().any(|p| p.steps() != steps) {
            return None;
        }
        let dim = parts.iter().map(|p| p.dim).sum();
        let mut data = Vec::with_capacity(steps * dim);
        for t in 0..steps {
            for p in &parts {
                data.extend_from_slice(p.row(t));
            }
        }
        Some(LowDim { dim, data })
    }
}

/// RLDS name of the concatenated proprio vector.
pub const STATE_KEY: &str = "state";

/// robomimic observation keys that make up the proprio state, in order
/// (end-effector position, quaternion xyzw, finger joint positions: 9-D).
pub const PROPRIO_KEYS: [&str; 3] = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"];
