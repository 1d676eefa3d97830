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

/// Observation key (7-D, the `actions` layout) under which `vela datagen` stores each step's
/// action before MimicGen's action noise. `actions` keeps what was executed, so replays
/// reproduce the episode; training on the intended actions instead (`vela train
/// --action-labels intended`) teaches the corrections the noise made necessary without the
/// noise itself, which is what a small policy trained from scratch needs (DART-style).
pub const INTENDED_ACTION_KEY: &str = "intended_action";

impl Episode {
    /// Replaces `actions` with the series stored under `key` (7-D), for training on labels
    /// other than the executed actions.
    pub fn relabel_actions(&mut self, key: &str) -> std::result::Result<(), String> {
        let ld = self.low_dim.get(key).ok_or_else(|| format!("has no `{key}` series (made by an older vela datagen?)"))?;
        if ld.dim != 7 || ld.steps() != self.actions.len() {
            return Err(format!("`{key}` is {}x{}, expected {}x7", ld.steps(), ld.dim, self.actions.len()));
        }
        for (t, a) in self.actions.iter_mut().enumerate() {
            for (d, v) in ld.row(t).iter().enumerate() {
                a[d] = *v as f32;
            }
        }
        Ok(())
    }
}

/// An [`EpisodeReader`](crate::EpisodeReader) whose episodes carry the actions stored under
/// another key (see [`INTENDED_ACTION_KEY`]); statistics and training then see the same labels.
pub struct Relabel {
    pub inner: Box<dyn crate::EpisodeReader>,
    pub key: String,
}

impl Relabel {
    fn fix(&self, mut ep: Episode) -> crate::Result<Episode> {
        ep.relabel_actions(&self.key)
            .map_err(|msg| crate::DataError::Other(format!("dataset `{}`, episode {}: {msg}", self.inner.meta().name, ep.name)))?;
        Ok(ep)
    }
}

impl crate::EpisodeReader for Relabel {
    fn meta(&self) -> &DatasetMeta {
        self.inner.meta()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn read(&mut self, index: usize) -> crate::Result<Episode> {
        let ep = self.inner.read(index)?;
        self.fix(ep)
    }
    fn read_lowdim(&mut self, index: usize) -> crate::Result<Episode> {
        let ep = self.inner.read_lowdim(index)?;
        self.fix(ep)
    }
}

/// robomimic observation keys that make up the proprio state, in order
/// (end-effector position, quaternion xyzw, finger joint positions: 9-D).
pub const PROPRIO_KEYS: [&str; 3] = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"];
