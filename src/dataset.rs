//! `vela dataset ...`: convert robomimic HDF5 <-> RLDS, summarise, compute
//! action statistics, measure conversion speed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vela_data::rlds::{RldsOptions, RldsWriter};
use vela_data::robomimic::RobomimicWriter;
use vela_data::{convert, stats, DatasetKind, EpisodeReader, EpisodeWriter};

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Convert between robomimic HDF5 (mimicgen) and RLDS.
    Convert(ConvertArgs),
    /// Episodes, steps, observation keys with shapes, instructions, size.
    Info {
        /// An HDF5 file or an RLDS folder.
        path: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Per-dimension action statistics (mean/std/min/max/q01/q99, gripper 1 = open,
    /// 0 = closed) in OpenVLA's norm_stats layout.
    Stats {
        path: PathBuf,
        /// Write `{name: {action, proprio, num_transitions, num_trajectories}}` here.
        #[arg(long, value_name = "FILE.json")]
        out: Option<PathBuf>,
        /// Also draw per-dimension action histograms as SVG.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Measure HDF5 -> RLDS conversion speed on a synthetic robomimic file (or --dataset);
    /// camera `agentview` becomes RLDS `image`.
    Bench {
        #[arg(long, default_value_t = 50)]
        episodes: usize,
        #[arg(long, default_value_t = 150)]
        steps: usize,
        /// Square camera frames of this size.
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// Convert this robomimic file instead of a synthetic one.
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Work folder (default: a temporary one, removed afterwards).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        #[arg(long, value_name = "FILE.json")]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Source: an HDF5 file or an RLDS folder.
    #[arg(long)]
    dataset: PathBuf,
    /// Source format (default: a folder is rlds, a file mimicgen).
    #[arg(long, value_parser = parse_kind)]
    dataset_type: Option<DatasetKind>,
    /// Target format.
    #[arg(long, value_parser = parse_kind)]
    convert: DatasetKind,
    /// Rename observation keys, `old:new[,old:new]` (e.g. agentview:image).
    #[arg(long, default_value = "")]
    remap_keys: String,
    /// RLDS: the TFDS data_dir (the dataset goes to DIR/NAME/1.0.0). mimicgen: the .hdf5 file.
    #[arg(long)]
    output: PathBuf,
    /// Dataset name (default: the source's; for RLDS in the snake_case that `tfds.builder` looks up,
    /// e.g. Stack_D4 -> stack_d4).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value_t = vela_data::rlds::DEFAULT_JPEG_QUALITY)]
    jpeg_quality: u8,
    /// RLDS shard size in MB.
    #[arg(long, default_value_t = 256)]
    shard_mb: u64,
    #[arg(long, default_value_t = vela_data::robomimic::DEFAULT_GZIP_LEVEL)]
    gzip_level: u8,
}

pub(crate) fn parse_kind(s: &str) -> Result<DatasetKind, String> {
    match s {
        "mimicgen" | "robomimic" | "hdf5" => Ok(DatasetKind::Mimicgen),
        "rlds" => Ok(DatasetKind::Rlds),
        _ => Err(format!("unknown dataset type `{s}` (mimicgen or rlds)")),
    }
}

pub fn run(cmd: DatasetCommand) -> Result<()> {
    match cmd {
        DatasetCommand::Convert(args) => {
            let out = convert_cmd(&args, true)?;
            println!("wrote {} episodes, {} steps to {}", out.episodes, out.steps, out.path.display());
            Ok(())
        }
        DatasetCommand::Info { path, json } => info(&path, json),
        DatasetCommand::Stats { path, out, plot } => stats_cmd(&path, out, plot),
        DatasetCommand::Bench { episodes, steps, size, dataset, work_dir, out } => {
            bench(episodes, steps, size, dataset, work_dir, out)
        }
    }
}

fn bar(len: usize, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} episodes {{per_sec}} ETA {{eta}} {{msg}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb
}

struct Written {
    path: PathBuf,
    episodes: usize,
    steps: usize,
}

fn convert_cmd(a: &ConvertArgs, progress: bool) -> Result<Written> {
    let mut reader = convert::open(&a.dataset, a.dataset_type)?;
    let mut meta = reader.meta().clone();
    match &a.name {
        Some(n) => meta.name = n.clone(),
        None if a.convert == DatasetKind::Rlds && vela_data::rlds::tfds_name(&meta.name) != meta.name => {
            let name = vela_data::rlds::tfds_name(&meta.name);
            tracing::info!(source = %meta.name, rlds = %name, "RLDS dataset named in snake_case, as tfds.builder looks it up");
            meta.name = name;
        }
        None => {}
    }
    let remap = convert::parse_remap(&a.remap_keys)?;
    let (path, writer): (PathBuf, Box<dyn EpisodeWriter>) = match a.convert {
        DatasetKind::Rlds => {
            let dir = vela_data::rlds::dataset_dir(&a.output, &meta.name);
            if dir.join("dataset_info.json").exists() {
                bail!("{} already holds an RLDS dataset; remove it or choose another --output", dir.display());
            }
            let opts = RldsOptions { jpeg_quality: a.jpeg_quality, shard_bytes: a.shard_mb.max(1) << 20 };
            (dir.clone(), Box::new(RldsWriter::create(&dir, &meta, opts)?))
        }
        DatasetKind::Mimicgen => {
            let w = RobomimicWriter::create(&a.output, &meta)?.with_gzip_level(a.gzip_level);
            (a.output.clone(), Box::new(w))
        }
    };
    let pb = bar(reader.len(), "convert", progress);
    let done = convert::convert(reader.as_mut(), writer, &remap, |_, ep| {
        pb.inc(1);
        pb.set_message(ep.name.clone());
    })
    .with_context(|| format!("converting {} to {}", a.dataset.display(), path.display()))?;
    pb.finish_and_clear();
    Ok(Written { path, episodes: done.episodes, steps: done.steps })
}

fn info(path: &Path, json: bool) -> Result<()> {
    let kind = convert::detect(path)?;
    let mut r = convert::open(path, Some(kind))?;
    let n = r.len();
    let first = if n > 0 { Some(r.read(0)?) } else { None };
    let mut steps = Vec::with_capacity(n);
    let mut instructions: BTreeMap<String, usize> = BTreeMap::new();
    let pb = bar(n, "info", n > 200 && !json);
    for i in 0..n {
        let ep = r.read_lowdim(i)?;
        steps.push(ep.len());
        let mut seen: Vec<&String> = ep.instructions.iter().collect();
        seen.dedup();
        seen.sort();
        seen.dedup();
        for s in seen {
            *instructions.entry(s.clone()).or_default() += 1;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut keys = BTreeMap::new();
    if let Some(ep) = &first {
        keys.insert("actions".to_string(), vec![7]);
        for (cam, frames) in &ep.images {
            let (w, h) = frames.first().map_or((0, 0), |f| (f.width as usize, f.height as usize));
            keys.insert(format!("image/{cam}"), vec![h, w, 3]);
        }
        for (k, ld) in &ep.low_dim {
            keys.insert(format!("obs/{k}"), vec![ld.dim]);
        }
        if ep.states.dim > 0 {
            keys.insert("states".to_string(), vec![ep.states.dim]);
        }
    }
    let total: usize = steps.iter().sum();
    let kind_name = match kind {
        DatasetKind::Mimicgen => "mimicgen (robomimic HDF5)",
        DatasetKind::Rlds => "rlds (TFRecord)",
    };
    let size = vela_data::bench::disk_size(path);
    if json {
        let v = serde_json::json!({
            "path": path, "format": kind_name, "name": r.meta().name, "episodes": n, "steps": total,
            "steps_min": steps.iter().min(), "steps_max": steps.iter().max(), "keys": keys,
            "instructions": instructions, "bytes": size, "env_args": r.meta().env_args,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}: {kind_name}, name `{}`, {:.1} MB", path.display(), r.meta().name, size as f64 / 1e6);
    println!(
        "episodes: {n}  steps: {total} (per episode min {}, mean {:.1}, max {})",
        steps.iter().min().unwrap_or(&0),
        total as f64 / n.max(1) as f64,
        steps.iter().max().unwrap_or(&0)
    );
    println!("keys (per step):");
    for (k, shape) in &keys {
        println!("  {k:<28} {shape:?}");
    }
    println!("instructions: {} distinct", instructions.len());
    for (s, count) in &instructions {
        println!("  {count:>6} episodes  \"{s}\"");
    }
    if let Some(env) = r.meta().env_args.get("env_name") {
        println!("env: {env}");
    }
    Ok(())
}

fn stats_cmd(path: &Path, out: Option<PathBuf>, plot: Option<PathBuf>) -> Result<()> {
    let mut r = convert::open(path, None)?;
    let pb = bar(r.len(), "stats", true);
    let s = stats::compute(r.as_mut(), |_| pb.inc(1))?;
    pb.finish_and_clear();
    let name = r.meta().name.clone();
    println!("{name}: {} trajectories, {} transitions", s.num_trajectories, s.num_transitions);
    println!("{:<6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}", "dim", "mean", "std", "min", "q01", "q99", "max");
    let a = &s.action;
    for d in 0..a.mean.len() {
        let label = if d == stats::GRIPPER_DIM { "grip".to_string() } else { d.to_string() };
        println!(
            "{label:<6} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
            a.mean[d], a.std[d], a.min[d], a.q01[d], a.q99[d], a.max[d]
        );
    }
    if let Some(out) = out {
        std::fs::write(&out, serde_json::to_string_pretty(&s.to_norm_stats(&name))? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    if let Some(plot) = plot {
        let mut r = convert::open(path, None)?;
        let svg = histogram_svg(r.as_mut(), &s, &name)?;
        std::fs::write(&plot, svg).with_context(|| format!("writing {}", plot.display()))?;
        println!("wrote {}", plot.display());
    }
    Ok(())
}

/// Seven small histograms (one per action dimension, training convention)
/// with the q01/q99 normalisation bounds marked: shows at a glance whether
/// the bounds clip much of the data.
fn histogram_svg(r: &mut dyn EpisodeReader, s: &stats::DatasetStats, name: &str) -> Result<String> {
    const BINS: usize = 40;
    let a = &s.action;
    let mut counts = vec![[0u64; BINS]; 7];
    let bin = |d: usize, v: f32| {
        let (lo, hi) = (a.min[d], a.max[d]);
        if hi <= lo { 0 } else { (((v - lo) / (hi - lo)) * BINS as f32).clamp(0.0, BINS as f32 - 1.0) as usize }
    };
    for i in 0..r.len() {
        for act in &r.read_lowdim(i)?.actions {
            let t = stats::training_action(act);
            for d in 0..7 {
                counts[d][bin(d, t[d])] += 1;
            }
        }
    }
    let (w, h, pad) = (260.0, 140.0, 20.0);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='11'>\
         <text x='10' y='16' font-size='14'>{name}: action histograms ({} transitions), red = q01/q99</text>\n",
        4.0 * w,
        2.0 * h + 30.0,
        s.num_transitions
    );
    for d in 0..7 {
        let (x0, y0) = ((d % 4) as f64 * w, 30.0 + (d / 4) as f64 * h);
        let max = *counts[d].iter().max().unwrap_or(&1) as f64;
        let bw = (w - 2.0 * pad) / BINS as f64;
        let label = if d == stats::GRIPPER_DIM { "gripper (1 open)".to_string() } else { format!("dim {d}") };
        svg += &format!("<text x='{}' y='{}'>{label} [{:.3}, {:.3}]</text>\n", x0 + pad, y0 + 12.0, a.min[d], a.max[d]);
        for (b, &c) in counts[d].iter().enumerate() {
            let bh = if max > 0.0 { c as f64 / max * (h - 45.0) } else { 0.0 };
            svg += &format!(
                "<rect x='{:.1}' y='{:.1}' width='{:.1}' height='{bh:.1}' fill='#4a7fb5'/>\n",
                x0 + pad + b as f64 * bw,
                y0 + h - 20.0 - bh,
                bw.max(1.0) - 0.5
            );
        }
        for q in [a.q01[d], a.q99[d]] {
            let span = (a.max[d] - a.min[d]).max(f32::EPSILON);
            let x = x0 + pad + ((q - a.min[d]) / span) as f64 * (w - 2.0 * pad);
            svg += &format!("<line x1='{x:.1}' x2='{x:.1}' y1='{}' y2='{}' stroke='#c33'/>\n", y0 + 18.0, y0 + h - 20.0);
        }
    }
    Ok(svg + "</svg>\n")
}

fn bench(
    episodes: usize,
    steps: usize,
    size: u32,
    dataset: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    out: Option<PathBuf>,
) -> Result<()> {
    let (work_dir, remove_after) = match work_dir {
        Some(d) => (d, false),
        None => (std::env::temp_dir().join(format!("vela-dataset-bench-{}", std::process::id())), true),
    };
    let cfg = vela_data::bench::BenchConfig { episodes, steps, size, source: dataset, work_dir: work_dir.clone() };
    let pb = bar(episodes, "bench", true);
    let report = vela_data::bench::run(&cfg, |stage, done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        pb.set_message(stage.to_string());
    });
    pb.finish_and_clear();
    if remove_after {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let report = report?;
    println!("{report}");
    if let Some(out) = out {
        let doc = report.to_json(vela_runtime::bench::machine_description());
        std::fs::write(&out, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
