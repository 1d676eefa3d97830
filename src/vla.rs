//! `vela vla ...`: make, quantize, query and evaluate OpenVLA checkpoints.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Subcommand)]
pub enum VlaCommand {
    /// Write a random-initialised checkpoint with the real OpenVLA layout (tensor names,
    /// shapes, dtypes, sharding, config.json, norm stats).
    MakeCheckpoint {
        /// tiny | tiny-single | small | small-112 | small-168 | small-tied | 7b-shape (7b-shape writes about 15 GB).
        #[arg(long)]
        config: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Predict one action from an image and an instruction.
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// fp16 (the checkpoint's weights), q8f16 or q4f16 (needs `vela vla quantize` first).
        #[arg(long)]
        quantization: Option<String>,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        instruction: String,
        /// norm_stats key (default: the first one), or `normalized`.
        #[arg(long)]
        action_space: Option<String>,
        /// Also print the raw tokens, prompt ids and timings.
        #[arg(long)]
        verbose: bool,
    },
    /// Quantize the language model to GGUF (q4f16 = 4-bit k-quants, q8f16 = 8-bit).
    Quantize {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        quantization: String,
        /// Output folder (default: next to the weights in the model folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Offline evaluation against recorded actions (nano_llm.vision.vla): accuracy = 1 − NRMSE
    /// per step over the action space's q01..q99 range, latency, and with --eval-model the
    /// error between two models' predictions (e.g. INT4 vs FP16).
    Eval(Box<EvalArgs>),
    /// Check every fused CUDA kernel against the candle ops it replaces, on random inputs at
    /// the 7B decoder's shapes (needs a CUDA build; CI has no GPU). Exits non-zero on a miss.
    CheckFused {
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Write the results as JSON here.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Time predict_action stage by stage (vision, projector, prefill, per token) and compare
    /// with the floor the device allows (measured copy bandwidth and matmul rate).
    Bench {
        #[arg(long)]
        model: PathBuf,
        /// fp16 (the checkpoint's weights), q8f16 or q4f16 (needs `vela vla quantize` first).
        #[arg(long, default_value = "fp16")]
        quantization: String,
        /// cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Compute dtype (default: f32 on cpu, bf16 on cuda).
        #[arg(long)]
        dtype: Option<String>,
        #[arg(long, default_value_t = 20)]
        iters: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Write the report as JSON here.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Also write intermediate values of a fixed input set (safetensors) for the PyTorch
        /// reference in benchmarks/openvla_torch.py.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Launch every op from the host as plain candle does, instead of replaying each stage
        /// as a recorded CUDA graph (the default on CUDA), to measure what recording saves.
        #[arg(long)]
        eager: bool,
    },
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// fp16 (the checkpoint's weights), q8f16 or q4f16 (needs `vela vla quantize` first).
    #[arg(long)]
    quantization: Option<String>,
    /// robomimic/MimicGen HDF5 file or RLDS folder.
    #[arg(long)]
    dataset: PathBuf,
    /// mimicgen or rlds (default: a folder is rlds, a file mimicgen).
    #[arg(long, value_parser = crate::dataset::parse_kind)]
    dataset_type: Option<vela_data::DatasetKind>,
    #[arg(long)]
    max_episodes: Option<usize>,
    /// Cap on the total number of steps over all episodes.
    #[arg(long)]
    max_steps: Option<usize>,
    /// norm_stats key (default: the dataset's name if the model has it, else its only key).
    #[arg(long)]
    action_space: Option<String>,
    /// Compare in normalised [-1, 1] space (predictions not un-normalised, ground truth
    /// normalised with the action space's q01/q99).
    #[arg(long)]
    normalized: bool,
    /// Camera whose frames the model sees (default: agentview, else the first).
    #[arg(long)]
    camera: Option<String>,
    /// Instruction for steps whose episode has none.
    #[arg(long)]
    instruction: Option<String>,
    /// Rewrite per-step latency/error and the `mean` block to this JSON after every step.
    #[arg(long, value_name = "FILE.json")]
    save_stats: Option<PathBuf>,
    /// Second model to compare with (e.g. the FP16 original of a q4f16 run).
    #[arg(long)]
    eval_model: Option<PathBuf>,
    /// Quantization of --eval-model (default fp16).
    #[arg(long, requires = "eval_model")]
    eval_quantization: Option<String>,
    /// cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature; computes in bf16).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Each action value as the probability-weighted mean of the bins within N of the most
    /// likely one (0: the argmax bin, as OpenVLA; the OpenVLA node's `decode_window`). Applies
    /// to --model and --eval-model.
    #[arg(long, default_value_t = 0)]
    decode_window: usize,
}

pub fn run(cmd: VlaCommand) -> Result<()> {
    match cmd {
        VlaCommand::MakeCheckpoint { config, out, seed } => {
            let s = vela_vla::cli::make_checkpoint(&config, &out, seed)?;
            println!("wrote {} ({} tensors, {} bytes, {} shard(s))", out.display(), s.n_tensors, s.total_bytes, s.shards.len());
        }
        VlaCommand::Predict { model, quantization, image, instruction, action_space, verbose } => {
            let s = vela_vla::cli::predict(&model, quantization.as_deref(), &image, &instruction, action_space.as_deref(), verbose)?;
            print!("{s}");
        }
        VlaCommand::Quantize { model, quantization, out } => {
            let out = out.unwrap_or_else(|| model.clone());
            let r = vela_vla::cli::quantize(&model, &quantization, &out)?;
            println!("wrote {} ({} bytes)", r.out_file.display(), r.bytes);
        }
        VlaCommand::Eval(args) => eval(*args)?,
        VlaCommand::CheckFused { device, save } => check_fused(&device, save.as_deref())?,
        VlaCommand::Bench { model, quantization, device, dtype, iters, warmup, save, dump, eager } => {
            let r = vela_vla::cli::bench(&model, &quantization, &device, dtype.as_deref(), iters, warmup, dump.as_deref(), eager)?;
            println!("{}", vela_vla::bench::summary(&r));
            if let Some(path) = save {
                let json = serde_json::to_string_pretty(&r)?;
                std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// Progress for `vela vla eval`: step lines on stdout (above the bar), the bar on stderr only
/// when that is a terminal.
struct EvalBar {
    bar: ProgressBar,
}

impl vela_vla::eval::EvalProgress for EvalBar {
    fn start(&mut self, total_steps: usize) {
        self.bar.set_length(total_steps as u64);
    }
    fn step(&mut self, lines: &[String]) {
        self.bar.suspend(|| lines.iter().for_each(|l| println!("{l}")));
        self.bar.inc(1);
    }
}

fn bar(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(0).with_prefix(what.to_string());
    b.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

fn load(model: &Path, quantization: Option<&str>, device: &str) -> Result<vela_vla::OpenVla> {
    let b = bar("loading");
    let b2 = b.clone();
    let m = vela_vla::cli::load_on(model, quantization, device, move |done, total| {
        b2.set_length(total as u64);
        b2.set_position(done as u64);
    })
    .with_context(|| format!("loading model {}", model.display()))?;
    b.finish_and_clear();
    Ok(m)
}

fn eval(a: EvalArgs) -> Result<()> {
    if !a.dataset.exists() {
        anyhow::bail!("dataset {} not found", a.dataset.display());
    }
    let model = load(&a.model, a.quantization.as_deref(), &a.device)?;
    model.set_decode_window(a.decode_window);
    let eval_model = match &a.eval_model {
        Some(dir) => Some(load(dir, a.eval_quantization.as_deref(), &a.device)?),
        None => None,
    };
    if let Some(m) = &eval_model {
        m.set_decode_window(a.decode_window);
    }
    let mut reader = vela_data::convert::open(&a.dataset, a.dataset_type)
        .with_context(|| format!("opening dataset {}", a.dataset.display()))?;
    let opts = vela_vla::eval::DatasetOptions {
        action_space: a.action_space,
        normalized: a.normalized,
        camera: a.camera,
        instruction: a.instruction,
        max_episodes: a.max_episodes,
        max_steps: a.max_steps,
    };
    let mut progress = EvalBar { bar: bar("eval") };
    let stats = vela_vla::eval::evaluate_dataset(
        &model,
        eval_model.as_ref(),
        reader.as_mut(),
        &a.dataset,
        &opts,
        a.save_stats.as_deref(),
        &mut progress,
    )?;
    progress.bar.finish_and_clear();
    println!("{}", stats.summary());
    if let Some(p) = &a.save_stats {
        println!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn check_fused(device: &str, save: Option<&Path>) -> Result<()> {
    let dev = vela_vla::parse_device(device)?;
    let mut rows = vela_vla::fused::self_check(&dev)?;
    rows.extend(vela_vla::fused_train::self_check(&dev)?);
    println!("{:<22} {:<24} {:>10} {:>10}  ok", "kernel", "shape", "rel L2", "max abs");
    for r in &rows {
        println!("{:<22} {:<24} {:>10.2e} {:>10.2e}  {}", r.kernel, r.shape, r.rel_l2, r.max_abs, if r.passed { "yes" } else { "NO" });
    }
    if let Some(path) = save {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    anyhow::ensure!(failed == 0, "{failed} of {} fused-kernel checks above rel. L2 {}", rows.len(), vela_vla::fused::CHECK_TOLERANCE);
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn check_fused(device: &str, _save: Option<&Path>) -> Result<()> {
    vela_vla::parse_device(device)?;
    anyhow::bail!("the fused kernels are CUDA code: build vela with scripts/build-cuda.sh to check them")
}

