//! `vela train`: fine-tune (LoRA) or train (full) an OpenVLA-family model on a dataset.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use vela_data::DatasetKind;
use vela_vla::train::{self, Mode, ModelSource, TrainOptions};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("base").required(true).args(["model", "config"])))]
pub struct TrainArgs {
    /// Dataset: a robomimic HDF5 file (mimicgen) or an RLDS folder (rlds). Several
    /// (comma-separated or repeated) train on their mixture, with statistics over all.
    #[arg(long, required = true, value_delimiter = ',')]
    pub dataset: Vec<PathBuf>,
    #[arg(long, value_enum)]
    pub dataset_type: DatasetType,
    /// Start from this HF-layout model folder.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Start from a fresh model of this size (tiny | tiny-single | small | small-112 | small-168 | small-tied).
    #[arg(long)]
    pub config: Option<String>,
    /// Train every weight instead of LoRA adapters.
    #[arg(long)]
    pub full: bool,
    #[arg(long, default_value_t = 32)]
    pub lora_rank: usize,
    /// LoRA alpha (scale = alpha / rank); OpenVLA uses min(rank, 16).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f32,
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Stop after this many optimizer steps in total (across resumes).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Train for about this many minutes: the run measures its pace after a few dozen steps
    /// and fixes the step count (and the cosine schedule) to finish in time. Set --epochs high.
    #[arg(long, value_name = "MINUTES")]
    pub time_budget: Option<f64>,
    /// Also export the model after every epoch to OUT/epochs/epoch-NN.
    #[arg(long)]
    pub keep_epochs: bool,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Linear warmup steps (0 = constant rate, as finetune.py).
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Decay the rate along a cosine to a tenth of --lr by the last step (after warmup).
    #[arg(long)]
    pub cosine: bool,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Random resized crop (90 % area) + colour jitter, as OpenVLA.
    #[arg(long)]
    pub image_aug: bool,
    /// Mixed precision: bf16 compute with f32 master weights and optimizer (full training only).
    #[arg(long)]
    pub bf16: bool,
    /// With --image-aug: random crops only, no colour jitter (for instructions that name colours).
    #[arg(long, requires = "image_aug")]
    pub no_colour_jitter: bool,
    /// Fraction of training samples asked "point at the <cube>" instead of an action, with
    /// the cube's position as the answer (needs the `object` observations `vela datagen`
    /// writes). Teaches the model to read which cube an instruction names; 0 = off.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub pointing: f64,
    /// With --model --full: tensors whose names start with these prefixes (comma-separated,
    /// e.g. `language_model,projector`) restart from a fresh initialisation; the rest keep the
    /// checkpoint's values.
    #[arg(long, value_delimiter = ',', requires = "model")]
    pub reinit: Vec<String>,
    /// Actions per prediction: each label holds this step's action and the next K - 1, and
    /// the simulator executes all K before it asks again (action chunking, as OpenVLA-OFT and
    /// ACT). Default: the starting model's own (1 for OpenVLA).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub action_chunk: Option<u64>,
    /// Learning-rate factor for tensors whose names start with PREFIX, as PREFIX=FACTOR
    /// (comma-separated; 0 freezes them), e.g. `vision_backbone=0.25` to keep a trained vision
    /// tower while a restarted language model learns.
    #[arg(long, value_delimiter = ',', value_parser = parse_lr_scale)]
    pub lr_scale: Vec<(String, f64)>,
    /// Fraction of episodes held out for validation.
    #[arg(long, default_value_t = 0.05)]
    pub val_split: f64,
    #[arg(long, default_value_t = 512)]
    pub val_max_samples: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// cpu | cuda | cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 1000)]
    pub save_every: u64,
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Continue the run saved in --out.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Episodes decoded and shuffled together (memory: their frames at model size, uint8, two
    /// chunks at a time). Batches mix only the steps of these episodes: too few and each batch
    /// sees a handful of scenes (OpenVLA shuffles over 100k steps, about a thousand episodes).
    #[arg(long, default_value_t = 64)]
    pub shuffle_episodes: usize,
    /// Camera to train on (default: agentview, else the first).
    #[arg(long)]
    pub camera: Option<String>,
    /// Instruction for episodes that carry none.
    #[arg(long)]
    pub instruction: Option<String>,
    /// Key for the action statistics in norm_stats (default: the dataset's name).
    #[arg(long)]
    pub dataset_name: Option<String>,
    /// Train on the executed actions (with MimicGen's noise, as recorded in `actions`) or on the
    /// actions `vela datagen` intended before the noise (`obs/intended_action`).
    #[arg(long, value_enum, default_value = "executed")]
    pub action_labels: ActionLabels,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionLabels {
    Executed,
    Intended,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DatasetType {
    Rlds,
    Mimicgen,
}

impl From<DatasetType> for DatasetKind {
    fn from(t: DatasetType) -> Self {
        match t {
            DatasetType::Rlds => DatasetKind::Rlds,
            DatasetType::Mimicgen => DatasetKind::Mimicgen,
        }
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let mode = if a.full {
        Mode::Full
    } else {
        Mode::Lora { rank: a.lora_rank, alpha: a.lora_alpha.unwrap_or(a.lora_rank.min(16) as f64), dropout: a.lora_dropout }
    };
    let source = match (a.model, a.config) {
        (Some(m), None) => ModelSource::Dir(m),
        (None, Some(c)) => ModelSource::Config(c),
        _ => bail!("pass exactly one of --model DIR and --config NAME"),
    };
    let device = train::parse_device(&a.device)?;
    let reader = vela_data::convert::open_many(&a.dataset, Some(a.dataset_type.into()))
        .with_context(|| format!("opening {}", a.dataset.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")))?;
    let opts = TrainOptions {
        out: a.out,
        epochs: a.epochs,
        max_steps: a.max_steps,
        time_budget_secs: a.time_budget.map(|m| m * 60.0),
        keep_epochs: a.keep_epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        warmup_steps: a.warmup_steps,
        cosine: a.cosine,
        max_grad_norm: (a.grad_clip > 0.0).then_some(a.grad_clip),
        weight_decay: a.weight_decay,
        image_aug: a.image_aug,
        no_colour_jitter: a.no_colour_jitter,
        pointing: a.pointing,
        reinit: a.reinit,
        action_chunk: a.action_chunk.map(|k| k as usize),
        lr_scale: a.lr_scale,
        bf16: a.bf16,
        val_split: a.val_split,
        val_max_samples: a.val_max_samples,
        log_every: a.log_every,
        save_every: a.save_every,
        resume: a.resume,
        seed: a.seed,
        shuffle_episodes: a.shuffle_episodes,
        camera: a.camera,
        instruction: a.instruction,
        dataset_name: a.dataset_name,
        action_labels: (a.action_labels == ActionLabels::Intended).then(|| vela_data::INTENDED_ACTION_KEY.to_string()),
        progress: true,
    };
    let s = train::train(reader, &source, mode, &opts, &device)?;
    let fmt = |m: &Option<train::Metrics>| match m {
        Some(m) => {
            let text = match (m.text_sensitivity, m.image_sensitivity) {
                (Some(t), Some(i)) => format!(", text sensitivity {t:.3} (image {i:.3})"),
                _ => String::new(),
            };
            format!("loss {:.4}, accuracy {:.3}, L1 {:.5}{text}", m.loss, m.accuracy, m.l1)
        }
        None => "-".into(),
    };
    println!("wrote {} ({} steps, {:.1} samples/s)", s.out.display(), s.steps, s.samples_per_sec);
    println!("last step: {}", fmt(&s.last));
    println!("validation: {}", fmt(&s.validation));
    Ok(())
}

/// A number in [0, 1).
fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside [0, 1)"))
    }
}

fn parse_lr_scale(s: &str) -> Result<(String, f64), String> {
    let (prefix, factor) = s.split_once('=').ok_or_else(|| format!("expected PREFIX=FACTOR, got {s:?}"))?;
    let factor: f64 = factor.trim().parse().map_err(|_| format!("{factor:?} is not a number"))?;
    if prefix.trim().is_empty() || !(factor >= 0.0 && factor.is_finite()) {
        return Err(format!("expected a tensor-name prefix and a factor >= 0, got {s:?}"));
    }
    Ok((prefix.trim().to_string(), factor))
}
