//! `vela datagen`: MimicGen-style generation of Stack demonstrations into
//! robomimic HDF5, with flags named after `mimicgen.generate`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vela_data::robomimic::RobomimicWriter;
use vela_data::{DatasetMeta, EpisodeWriter};
use vela_sim::datagen::{self, GenConfig, GenReport};
use vela_sim::{Camera, Variant};

#[derive(clap::Args)]
pub struct DatagenArgs {
    /// Stack variants to generate (comma-separated): Stack_D0..Stack_D4, Stack_Lang.
    #[arg(long, value_delimiter = ',', default_value = "Stack_D4")]
    tasks: Vec<String>,
    /// Successful demos to keep per task.
    #[arg(long, default_value_t = 1000)]
    episodes: u64,
    /// Folder for `<task>.hdf5` and `datagen_report.json` (created if missing).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Camera to record (one of agentview, frontview, birdview, agentview_hand), or `none` for low-dim only.
    #[arg(long, value_delimiter = ',', default_value = "agentview")]
    cameras: Vec<String>,
    #[arg(long, default_value_t = 224)]
    camera_width: u32,
    #[arg(long, default_value_t = 224)]
    camera_height: u32,
    /// Same seed, same dataset (for any number of workers).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads, each with its own simulator (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Scripted-expert demonstrations MimicGen starts from.
    #[arg(long, default_value_t = 10)]
    source_demos: usize,
    /// Std of the Gaussian noise on the six arm action dims.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    action_noise: f64,
    /// Stop a task after this many trials even if too few succeeded (default 10 x episodes + 100).
    #[arg(long)]
    max_trials: Option<u64>,
    /// gzip level for camera frames in the HDF5 file (0 = uncompressed: larger but
    /// fastest to write and to read back when training).
    #[arg(long, default_value_t = vela_data::robomimic::DEFAULT_GZIP_LEVEL, value_parser = clap::value_parser!(u8).range(0..=9))]
    gzip_level: u8,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    /// Spread the workers over this many processes, merged into one file per task at the end.
    /// With NVIDIA's EGL one process renders at about the same rate whatever its thread count
    /// (measured: 16 workers in one process 129 demos/min, 8 processes of 2 workers ten times
    /// that). Each process draws its own trials, so the dataset depends on the process count.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Internal: this process is shard K of N of a `--processes N` run (K/N).
    #[arg(long, hide = true, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N")?;
    let (k, n): (usize, usize) = (k.parse().map_err(|e| format!("{e}"))?, n.parse().map_err(|e| format!("{e}"))?);
    if k >= n {
        return Err(format!("shard {k} of {n}"));
    }
    Ok((k, n))
}

/// Trials of shard `k` draw from their own stream; the source demos (and so `env_args`) stay
/// those of `--seed`, so the shards' files merge into one dataset.
fn shard_seed(seed: u64, k: usize) -> u64 {
    seed ^ ((k as u64 + 1) << 40)
}

pub fn run(args: DatagenArgs) -> Result<()> {
    ensure!(args.episodes > 0, "--episodes must be at least 1");
    ensure!(args.source_demos > 0, "--source-demos must be at least 1");
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    ensure!(workers > 0, "--workers must be at least 1");
    ensure!(args.processes > 0, "--processes must be at least 1");
    let tasks: Vec<Variant> = args
        .tasks
        .iter()
        .map(|t| t.parse().with_context(|| format!("--tasks {t}")))
        .collect::<Result<_>>()?;
    ensure!(!tasks.is_empty(), "--tasks is empty");
    let camera = match args.cameras.as_slice() {
        [c] if c == "none" => None,
        [c] => Some(c.parse::<Camera>().with_context(|| format!("--cameras {c}"))?),
        many => bail!(
            "--cameras {}: one camera per dataset is supported (the simulator renders one view); \
             run once per camera or pass `none`",
            many.join(",")
        ),
    };
    let max_trials = args.max_trials.unwrap_or(10 * args.episodes + 100);
    let base = GenConfig {
        camera: camera.unwrap_or_default(),
        images: camera.is_some(),
        width: args.camera_width,
        height: args.camera_height,
        action_noise: args.action_noise,
        ..Default::default()
    };
    // Check every flag before minutes of work, and never clobber a dataset by accident.
    base.validate().context("invalid flags")?;
    let outputs = task_outputs(&tasks, &args.output, args.overwrite)?;

    let mut reports = Vec::new();
    for (&variant, path) in tasks.iter().zip(&outputs) {
        let cfg = GenConfig { variant, ..base.clone() };
        let r = if args.processes > 1 && args.shard.is_none() {
            generate_in_processes(&cfg, path, &args, workers, max_trials)?
        } else {
            generate_task(&cfg, path, &args, workers, max_trials)?
        };
        println!(
            "{}: kept {} of {} trials ({:.1} %), {} steps, {:.1} s, {:.1} demos/min -> {}",
            r.task,
            r.kept,
            r.tried,
            100.0 * r.success_rate,
            r.steps,
            r.wall_s,
            r.episodes_per_min,
            path.display()
        );
        reports.push(r);
    }
    let report_path = args.output.join("datagen_report.json");
    let doc = serde_json::json!({
        "benchmark": "datagen",
        "machine": vela_runtime::bench::machine_description(),
        "camera": camera.map(|c| c.name()),
        "camera_width": args.camera_width,
        "camera_height": args.camera_height,
        "processes": args.processes,
        "tasks": reports,
    });
    std::fs::write(&report_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("wrote {}", report_path.display());
    if let Some(r) = reports.iter().find(|r| r.kept < args.episodes) {
        bail!(
            "{}: only {} of {} demos succeeded within {} trials (--max-trials); the file holds those",
            r.task,
            r.kept,
            args.episodes,
            r.tried
        );
    }
    Ok(())
}

/// `<dir>/<task>.hdf5` for each task, refusing to replace an existing file unless `overwrite`
/// (checked before any work), with `dir` created.
pub(crate) fn task_outputs(tasks: &[Variant], dir: &std::path::Path, overwrite: bool) -> Result<Vec<PathBuf>> {
    let outputs: Vec<PathBuf> = tasks.iter().map(|t| dir.join(format!("{}.hdf5", t.name()))).collect();
    for p in &outputs {
        ensure!(overwrite || !p.exists(), "{} exists; pass --overwrite to replace it", p.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(outputs)
}

fn generate_task(
    cfg: &GenConfig,
    path: &std::path::Path,
    args: &DatagenArgs,
    workers: usize,
    max_trials: u64,
) -> Result<GenReport> {
    // A shard reports progress as lines on stdout for the parent's bar.
    let lines = args.shard.is_some();
    let spinner = if lines { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    let spinner = spinner.with_message(format!(
        "{}: recording {} source demos with the scripted expert",
        cfg.variant, args.source_demos
    ));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let t0 = Instant::now();
    let sources = datagen::record_source_demos(cfg.variant, args.source_demos, args.seed, cfg.subtask_offset.1)?;
    spinner.finish_and_clear();
    tracing::info!(
        task = %cfg.variant,
        demos = sources.demos.len(),
        rollouts = sources.tried,
        secs = format!("{:.1}", t0.elapsed().as_secs_f64()),
        "source demos recorded"
    );

    let meta = DatasetMeta { name: cfg.variant.name().to_string(), env_args: cfg.env_args(&sources) };
    let mut writer: Box<dyn EpisodeWriter> = Box::new(RobomimicWriter::create(path, &meta)?.with_gzip_level(args.gzip_level));
    let bar = if lines { ProgressBar::hidden() } else { ProgressBar::new(args.episodes) }.with_prefix(cfg.variant.name());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} demos  {msg}  ETA {eta}",
        )
        .expect("valid template"),
    );
    let seed = args.shard.map_or(args.seed, |(k, _)| shard_seed(args.seed, k));
    let report = datagen::generate(
        cfg,
        Arc::new(sources),
        seed,
        args.episodes,
        max_trials,
        workers,
        |ep| Ok(writer.append(&ep)?),
        |p| {
            if lines {
                println!("progress {} {}", p.kept, p.tried);
            }
            bar.set_position(p.kept);
            bar.set_message(format!(
                "kept {}/{} tried ({:.0} %)",
                p.kept,
                p.tried,
                100.0 * p.kept as f64 / p.tried.max(1) as f64
            ));
        },
    );
    bar.finish_and_clear();
    let report = report?;
    writer.finish()?;
    Ok(report)
}

/// `--processes N`: runs N copies of this command as shards (each with its share of episodes,
/// trials and workers, writing into a hidden folder next to the output), shows their combined
/// progress, then merges their files into `path` in shard order and sums their reports.
fn generate_in_processes(cfg: &GenConfig, path: &std::path::Path, args: &DatagenArgs, workers: usize, max_trials: u64) -> Result<GenReport> {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    use vela_data::EpisodeReader as _;

    let n = args.processes;
    let task = cfg.variant.name();
    let parts = args.output.join(format!(".{task}-parts"));
    let _ = std::fs::remove_dir_all(&parts);
    std::fs::create_dir_all(&parts).with_context(|| format!("creating {}", parts.display()))?;
    let exe = std::env::current_exe().context("finding the vela executable")?;
    let share = |total: u64, k: usize| total / n as u64 + u64::from((k as u64) < total % n as u64);
    let t0 = Instant::now();
    let bar = ProgressBar::new(args.episodes).with_prefix(task);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} demos  {msg}  ETA {eta}")
            .expect("valid template"),
    );
    bar.set_message(format!("{n} processes recording source demos"));
    let progress = Arc::new(std::sync::Mutex::new(vec![(0u64, 0u64); n]));
    let mut children = Vec::new();
    for k in 0..n {
        let episodes = share(args.episodes, k);
        if episodes == 0 {
            continue;
        }
        let dir = parts.join(k.to_string());
        let log = std::fs::File::create(parts.join(format!("{k}.log")))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("datagen")
            .args(["--tasks", task, "--output"])
            .arg(&dir)
            .args(["--episodes", &episodes.to_string(), "--seed", &args.seed.to_string(), "--shard", &format!("{k}/{n}")])
            .args(["--workers", &(workers / n).max(1).to_string(), "--source-demos", &args.source_demos.to_string()])
            .args(["--action-noise", &args.action_noise.to_string(), "--max-trials", &share(max_trials, k).max(1).to_string()])
            .args(["--camera-width", &args.camera_width.to_string(), "--camera-height", &args.camera_height.to_string()])
            .args(["--gzip-level", &args.gzip_level.to_string(), "--cameras", &args.cameras.join(",")])
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
        let out = child.stdout.take().expect("piped");
        let (progress, bar) = (progress.clone(), bar.clone());
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut it = line.split_whitespace();
                if it.next() != Some("progress") {
                    continue;
                }
                let (Some(kept), Some(tried)) = (it.next().and_then(|v| v.parse().ok()), it.next().and_then(|v| v.parse().ok())) else {
                    continue;
                };
                let mut p = progress.lock().expect("poisoned");
                p[k] = (kept, tried);
                let (kept, tried) = p.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                bar.set_position(kept);
                bar.set_message(format!("kept {kept}/{tried} tried ({:.0} %), {n} processes", 100.0 * kept as f64 / tried.max(1) as f64));
            }
        });
        children.push((k, dir, child, reader));
    }
    let mut failed = Vec::new();
    let mut dirs = Vec::new();
    for (k, dir, mut child, reader) in children {
        let status = child.wait()?;
        let _ = reader.join();
        if !status.success() {
            let log = std::fs::read_to_string(parts.join(format!("{k}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            failed.push(format!("process {k}: {status}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")));
        }
        dirs.push(dir);
    }
    bar.finish_and_clear();
    ensure!(failed.is_empty(), "{task}: {} of {n} datagen processes failed (logs in {}):\n{}", failed.len(), parts.display(), failed.join("\n"));

    // Merge in shard order; the shards share source demos, so their env_args agree.
    let mut writer: Option<Box<dyn EpisodeWriter>> = None;
    let mut total: Option<GenReport> = None;
    let spinner = ProgressBar::new_spinner().with_message(format!("{task}: merging {n} files into {}", path.display()));
    spinner.enable_steady_tick(Duration::from_millis(200));
    for dir in &dirs {
        let file = dir.join(format!("{task}.hdf5"));
        let mut reader = vela_data::robomimic::RobomimicReader::open(&file).with_context(|| format!("reading {}", file.display()))?;
        let report_path = dir.join("datagen_report.json");
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).with_context(|| format!("reading {}", report_path.display()))?)?;
        let r: GenReport = serde_json::from_value(doc["tasks"][0].clone()).with_context(|| format!("{}: no task report", report_path.display()))?;
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(Box::new(RobomimicWriter::create(path, reader.meta())?.with_gzip_level(args.gzip_level))),
        };
        for i in 0..reader.len() {
            w.append(&reader.read(i)?)?;
        }
        match &mut total {
            Some(t) => {
                t.kept += r.kept;
                t.tried += r.tried;
                t.steps += r.steps;
                t.workers += r.workers;
            }
            None => total = Some(r),
        }
    }
    spinner.finish_and_clear();
    writer.context("no datagen process ran")?.finish()?;
    let _ = std::fs::remove_dir_all(&parts);
    let mut report = total.context("no datagen process ran")?;
    report.episodes_requested = args.episodes;
    report.seed = args.seed;
    report.wall_s = t0.elapsed().as_secs_f64();
    report.success_rate = report.kept as f64 / report.tried.max(1) as f64;
    report.episodes_per_min = report.kept as f64 / report.wall_s.max(1e-9) * 60.0;
    Ok(report)
}
