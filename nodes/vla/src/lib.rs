//! OpenVLA (fused DINOv2-reg + SigLIP vision, MLP projector, Llama-2 action decoder) on candle.
//!
//! Entry points for the CLI / graph node: [`make_checkpoint`], [`OpenVla::load`],
//! [`OpenVla::predict_action`], [`OpenVla::predict_action_stream`], [`quantize`], and the
//! offline metrics in [`eval`].

pub mod action;
pub mod batcher;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod cpu_ops;
pub mod device;
pub mod eval;
pub mod fused;
pub mod fused_train;
pub mod llama;
pub mod model;
pub mod node;
pub mod ops;
pub mod preprocess;
pub mod quantize;
pub mod rng;
pub mod tokenizer;
pub mod train;
pub mod vision;
pub mod weights;

pub use checkpoint::{checkpoint_plan, loader_expectations, make_checkpoint};
pub use config::{OpenVlaConfig, Preset};
pub use device::parse_device;
pub use model::{ActionPrediction, ActionStream, LoadOptions, OpenVla, PartialAction, StageTimes};
pub use node::{register, OpenVlaNode};
pub use quantize::{quantize, Quantization};

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum VlaError {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("config: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("input: {0}")]
    Input(String),
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    #[error("dataset: {0}")]
    Data(#[from] vela_data::DataError),
    #[error("training: {0}")]
    Train(String),
}

impl VlaError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, VlaError>;
