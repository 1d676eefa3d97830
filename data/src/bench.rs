//! HDF5 -> RLDS conversion speed, behind `vela dataset bench` and
//! `cargo run --release -p vela-data --example convert_bench` (the latter
//! builds in a minute, where a release `vela` builds the whole studio).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::rlds::{RldsOptions, RldsReader, RldsWriter};
use crate::robomimic::{RobomimicReader, RobomimicWriter};
use crate::{convert, synthetic, DatasetMeta, EpisodeReader, EpisodeWriter, Result};

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub episodes: usize,
    pub steps: usize,
    pub size: u32,
    /// Convert this robomimic file instead of writing a synthetic one.
    pub source: Option<PathBuf>,
    /// Where the synthetic source and the RLDS output go.
    pub work_dir: PathBuf,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub episodes: usize,
    pub steps: usize,
    pub frames: usize,
    pub image_size: u32,
    pub hdf5_bytes: u64,
    pub rlds_bytes: u64,
    /// Bytes the decoded frames take (T × H × W × 3 per camera).
    pub raw_frame_bytes: u64,
    pub convert_seconds: f64,
    pub convert_hdf5_mb_per_s: f64,
    pub convert_raw_mb_per_s: f64,
    pub convert_steps_per_s: f64,
    /// Reading the RLDS output back with every frame decoded, as a loader would.
    pub read_seconds: f64,
    pub read_steps_per_s: f64,
    pub threads: usize,
}

/// Stages reported to `progress(stage, done, total)`.
pub fn run(cfg: &BenchConfig, mut progress: impl FnMut(&str, usize, usize)) -> Result<BenchReport> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| crate::DataError::Io { path: cfg.work_dir.clone(), source: e })?;
    let src = match &cfg.source {
        Some(p) => p.clone(),
        None => {
            let p = cfg.work_dir.join("synthetic.hdf5");
            let meta = DatasetMeta { name: "stack_synthetic".into(), env_args: serde_json::json!({"env_name": "Stack_D0"}) };
            let mut w: Box<dyn EpisodeWriter> = Box::new(RobomimicWriter::create(&p, &meta)?);
            for i in 0..cfg.episodes {
                w.append(&synthetic::episode(i, cfg.steps, &["agentview"], cfg.size))?;
                progress("synthesise", i + 1, cfg.episodes);
            }
            w.finish()?;
            p
        }
    };
    let out = cfg.work_dir.join("rlds");
    let _ = std::fs::remove_dir_all(&out);

    let t0 = Instant::now();
    let mut r = RobomimicReader::open(&src)?;
    let total = r.len();
    let meta = crate::DatasetMeta { name: crate::rlds::tfds_name(&r.meta().name), ..r.meta().clone() };
    let w = Box::new(RldsWriter::create(&out, &meta, RldsOptions::default())?);
    let remap = convert::parse_remap("agentview:image")?;
    let done = convert::convert(&mut r, w, &remap, |i, _| progress("convert", i, total))?;
    let convert_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut back = RldsReader::open(&out)?;
    let (mut frames, mut raw) = (0usize, 0u64);
    for i in 0..back.len() {
        for f in back.read(i)?.images.values().flatten() {
            frames += 1;
            raw += f.rgb.len() as u64;
        }
        progress("read back", i + 1, total);
    }
    let read_seconds = t1.elapsed().as_secs_f64();

    let hdf5_bytes = disk_size(&src);
    let mb = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs;
    Ok(BenchReport {
        episodes: done.episodes,
        steps: done.steps,
        frames,
        image_size: cfg.size,
        hdf5_bytes,
        rlds_bytes: disk_size(&out),
        raw_frame_bytes: raw,
        convert_seconds,
        convert_hdf5_mb_per_s: mb(hdf5_bytes, convert_seconds),
        convert_raw_mb_per_s: mb(raw, convert_seconds),
        convert_steps_per_s: done.steps as f64 / convert_seconds,
        read_seconds,
        read_steps_per_s: done.steps as f64 / read_seconds,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

impl BenchReport {
    /// The JSON a benchmark file holds: these numbers plus where they were measured.
    pub fn to_json(&self, machine: String) -> serde_json::Value {
        let mut doc = serde_json::to_value(self).unwrap_or_default();
        doc["benchmark"] = "dataset-convert".into();
        doc["machine"] = machine.into();
        doc
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HDF5 -> RLDS: {} episodes, {} steps, {} frames in {:.1} s = {:.1} MB/s of HDF5 ({:.1} MB/s of raw frames, {:.0} steps/s); \
             HDF5 {:.1} MB -> RLDS {:.1} MB; reading RLDS back with JPEG decoding: {:.0} steps/s",
            self.episodes,
            self.steps,
            self.frames,
            self.convert_seconds,
            self.convert_hdf5_mb_per_s,
            self.convert_raw_mb_per_s,
            self.convert_steps_per_s,
            self.hdf5_bytes as f64 / 1e6,
            self.rlds_bytes as f64 / 1e6,
            self.read_steps_per_s
        )
    }
}

/// Bytes under `path` (a file or a folder tree).
pub fn disk_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path).map(|rd| rd.flatten().map(|e| disk_size(&e.path())).sum()).unwrap_or(0)
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
