//! `vela vla ...`: make, quantize and query OpenVLA checkpoints.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Subcommand)]
pub enum VlaCommand {
    /// Write a random-initialised checkpoint with the real OpenVLA layout (tensor names,
    /// shapes, dtypes, sharding, config.json, norm stats).
    MakeCheckpoint {
        /// tiny | tiny-single | small | small-112 | 7b-shape (7b-shape writes about 15 GB).
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
    },
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
        VlaCommand::Bench { model, quantization, device, dtype, iters, warmup, save, dump } => {
            let r = vela_vla::cli::bench(&model, &quantization, &device, dtype.as_deref(), iters, warmup, dump.as_deref())?;
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
