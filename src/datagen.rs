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
    /// Camera to record (one of agentview, frontview, birdview), or `none` for low-dim only.
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
}

pub fn run(args: DatagenArgs) -> Result<()> {
    ensure!(args.episodes > 0, "--episodes must be at least 1");
    ensure!(args.source_demos > 0, "--source-demos must be at least 1");
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    ensure!(workers > 0, "--workers must be at least 1");
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
    let outputs: Vec<PathBuf> = tasks.iter().map(|t| args.output.join(format!("{}.hdf5", t.name()))).collect();
    for p in &outputs {
        ensure!(args.overwrite || !p.exists(), "{} exists; pass --overwrite to replace it", p.display());
    }
    std::fs::create_dir_all(&args.output).with_context(|| format!("creating {}", args.output.display()))?;

    let mut reports = Vec::new();
    for (&variant, path) in tasks.iter().zip(&outputs) {
        let cfg = GenConfig { variant, ..base.clone() };
        let r = generate_task(&cfg, path, &args, workers, max_trials)?;
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

fn generate_task(
    cfg: &GenConfig,
    path: &std::path::Path,
    args: &DatagenArgs,
    workers: usize,
    max_trials: u64,
) -> Result<GenReport> {
    let spinner = ProgressBar::new_spinner().with_message(format!(
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
    let bar = ProgressBar::new(args.episodes).with_prefix(cfg.variant.name());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} demos  {msg}  ETA {eta}",
        )
        .expect("valid template"),
    );
    let report = datagen::generate(
        cfg,
        Arc::new(sources),
        args.seed,
        args.episodes,
        max_trials,
        workers,
        |ep| Ok(writer.append(&ep)?),
        |p| {
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
