//! Action (and proprio) statistics in the layout OpenVLA keeps as `norm_stats`.
//!
//! Training normalises actions with q01/q99 and inference un-normalises the
//! model's output with the same numbers, so both must come from one place:
//! this module. The layout matches OpenVLA's `dataset_statistics.json`:
//! `{name: {action: {mean,std,max,min,q01,q99,mask}, proprio: {...},
//! num_transitions, num_trajectories}}`.
//!
//! Episodes are read one at a time (without camera frames); only the action
//! and proprio rows are kept, so memory is `transitions × dims × 4` bytes
//! (about 60 MB for two million transitions) and the quantiles are exact.

use serde::{Deserialize, Serialize};

use crate::{EpisodeReader, Result};

/// Gripper dimension of the 7-D action.
pub const GRIPPER_DIM: usize = 6;

/// Maps the simulator's gripper command (-1 = open, +1 = close) to OpenVLA's
/// training convention (1 = open, 0 = closed), as its LIBERO transform does:
/// clip to [0, 1], then invert.
pub fn remap_gripper(g: f32) -> f32 {
    1.0 - g.clamp(0.0, 1.0)
}

/// The inverse of [`remap_gripper`] for executing a model's output: anything
/// above one half is open (-1), the rest closed (+1).
pub fn unmap_gripper(g: f32) -> f32 {
    if g > 0.5 { -1.0 } else { 1.0 }
}

/// An action as training sees it: arm deltas unchanged, gripper remapped.
pub fn training_action(a: &[f32; 7]) -> [f32; 7] {
    let mut out = *a;
    out[GRIPPER_DIM] = remap_gripper(a[GRIPPER_DIM]);
    out
}

/// Per-dimension statistics of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DimStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub max: Vec<f32>,
    pub min: Vec<f32>,
    pub q01: Vec<f32>,
    pub q99: Vec<f32>,
    /// Which dimensions training normalises (actions only; the gripper is
    /// left as 0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Vec<bool>>,
}

/// Statistics of a whole dataset, one entry of OpenVLA's `norm_stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub action: DimStats,
    pub proprio: DimStats,
    pub num_transitions: u64,
    pub num_trajectories: u64,
}

impl DatasetStats {
    /// `{name: self}`, the shape of OpenVLA's `norm_stats` / `dataset_statistics.json`.
    pub fn to_norm_stats(&self, name: &str) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert(name.to_string(), serde_json::to_value(self).expect("stats serialise"));
        serde_json::Value::Object(map)
    }
}

/// Collects rows of a fixed width; [`Accumulator::finish`] summarises them.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    dim: usize,
    /// Column-major: one vector per dimension, so quantiles sort in place.
    cols: Vec<Vec<f32>>,
}

impl Accumulator {
    pub fn new(dim: usize) -> Self {
        Self { dim, cols: vec![Vec::new(); dim] }
    }

    pub fn rows(&self) -> usize {
        self.cols.first().map_or(0, Vec::len)
    }

    pub fn push(&mut self, row: &[f32]) {
        debug_assert_eq!(row.len(), self.dim);
        for (col, &v) in self.cols.iter_mut().zip(row) {
            col.push(v);
        }
    }

    /// Mean and population std (numpy's default) in f64, quantiles with
    /// numpy's default linear interpolation, so numbers match what OpenVLA's
    /// own statistics code would compute on the same actions.
    pub fn finish(mut self, mask: Option<Vec<bool>>) -> DimStats {
        let dim = self.dim;
        let mut s = DimStats {
            mean: vec![0.0; dim],
            std: vec![0.0; dim],
            max: vec![0.0; dim],
            min: vec![0.0; dim],
            q01: vec![0.0; dim],
            q99: vec![0.0; dim],
            mask,
        };
        for (d, col) in self.cols.iter_mut().enumerate() {
            if col.is_empty() {
                continue;
            }
            let n = col.len() as f64;
            let mean = col.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = col.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            col.sort_unstable_by(f32::total_cmp);
            s.mean[d] = mean as f32;
            s.std[d] = var.sqrt() as f32;
            s.min[d] = col[0];
            s.max[d] = col[col.len() - 1];
            s.q01[d] = quantile_sorted(col, 0.01);
            s.q99[d] = quantile_sorted(col, 0.99);
        }
        s
    }
}

/// numpy's `quantile(..., method="linear")` on sorted data.
pub fn quantile_sorted(sorted: &[f32], q: f64) -> f32 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    (sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac) as f32
}

/// Statistics of every episode of `reader`: actions with the gripper
/// remapped, proprio from [`crate::Episode::proprio_state`] (zeros of the
/// action's width when the dataset has none, as OpenVLA stores for datasets
/// trained without proprio). `progress` is called after each episode.
pub fn compute(reader: &mut dyn EpisodeReader, mut progress: impl FnMut(usize)) -> Result<DatasetStats> {
    let mut actions = Accumulator::new(7);
    let mut proprio: Option<Accumulator> = None;
    for i in 0..reader.len() {
        let ep = reader.read_lowdim(i)?;
        for a in &ep.actions {
            actions.push(&training_action(a));
        }
        if let Some(state) = ep.proprio_state() {
            let acc = proprio.get_or_insert_with(|| Accumulator::new(state.dim));
            if acc.dim == state.dim {
                for t in 0..state.steps() {
                    let row: Vec<f32> = state.row(t).iter().map(|&v| v as f32).collect();
                    acc.push(&row);
                }
            }
        }
        progress(i + 1);
    }
    let num_transitions = actions.rows() as u64;
    let mut mask = vec![true; 7];
    mask[GRIPPER_DIM] = false;
    let proprio = match proprio {
        Some(p) => p.finish(None),
        None => Accumulator::new(7).finish(None),
    };
    Ok(DatasetStats {
        action: actions.finish(Some(mask)),
        proprio,
        num_transitions,
        num_trajectories: reader.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        // np.quantile(np.arange(101), [0.01, 0.99]) == [1, 99]
        let v: Vec<f32> = (0..=100).map(|x| x as f32).collect();
        assert_eq!(quantile_sorted(&v, 0.01), 1.0);
        assert_eq!(quantile_sorted(&v, 0.99), 99.0);
        // np.quantile([0, 10], 0.01) == 0.1
        assert!((quantile_sorted(&[0.0, 10.0], 0.01) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn gripper_remap_follows_openvla() {
        assert_eq!(remap_gripper(-1.0), 1.0);
        assert_eq!(remap_gripper(1.0), 0.0);
        assert_eq!(unmap_gripper(remap_gripper(-1.0)), -1.0);
        assert_eq!(unmap_gripper(remap_gripper(1.0)), 1.0);
    }

    #[test]
    fn accumulator_mean_std_min_max() {
        let mut acc = Accumulator::new(2);
        for r in [[1.0, -2.0], [3.0, -2.0], [5.0, -2.0]] {
            acc.push(&r);
        }
        let s = acc.finish(None);
        assert_eq!(s.mean, vec![3.0, -2.0]);
        assert!((s.std[0] - (8.0f32 / 3.0).sqrt()).abs() < 1e-6);
        assert_eq!(s.std[1], 0.0);
        assert_eq!((s.min[0], s.max[0]), (1.0, 5.0));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("mask").is_none());
    }

    struct VecReader(Vec<crate::Episode>, crate::DatasetMeta);
    impl EpisodeReader for VecReader {
        fn meta(&self) -> &crate::DatasetMeta {
            &self.1
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn read(&mut self, i: usize) -> Result<crate::Episode> {
            Ok(self.0[i].clone())
        }
    }

    #[test]
    fn dataset_stats_in_norm_stats_layout() {
        let eps = (0..3).map(|i| crate::synthetic::episode(i, 10, &[], 8)).collect();
        let mut r = VecReader(eps, Default::default());
        let mut seen = 0;
        let s = compute(&mut r, |n| seen = n).unwrap();
        assert_eq!(seen, 3);
        assert_eq!((s.num_trajectories, s.num_transitions), (3, 30));
        // Half of each synthetic episode is open (-1 -> 1), half closed (1 -> 0).
        assert_eq!(s.action.mean[GRIPPER_DIM], 0.5);
        assert_eq!((s.action.min[GRIPPER_DIM], s.action.max[GRIPPER_DIM]), (0.0, 1.0));
        assert_eq!(s.proprio.mean.len(), 9);
        let v = s.to_norm_stats("stack_d0");
        let mask = &v["stack_d0"]["action"]["mask"];
        assert_eq!(mask, &serde_json::json!([true, true, true, true, true, true, false]));
        assert_eq!(v["stack_d0"]["num_trajectories"], 3);
        assert!(v["stack_d0"]["proprio"]["q99"].is_array());
        let back: DatasetStats = serde_json::from_value(v["stack_d0"].clone()).unwrap();
        assert_eq!(back, s);
    }
}
