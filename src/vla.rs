//! `vela vla ...`: make, quantize and query OpenVLA checkpoints.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum VlaCommand {
    /// Write a random-initialised checkpoint with the real OpenVLA layout (tensor names,
    /// shapes, dtypes, sharding, config.json, norm stats).
    MakeCheckpoint {
        /// tiny | tiny-single | small | 7b-shape (7b-shape writes about 15 GB).
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
    }
    Ok(())
}
