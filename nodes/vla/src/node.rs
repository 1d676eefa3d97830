//! The OpenVLA node: prompts (instruction + image) in, 7-D actions out (a chunk of several
//! for models trained with `--action-chunk`; the simulator executes them in turn).
//!
//! Loading a model can take seconds (minutes for 7B), so it happens on a loader
//! thread; until it is ready the node keeps the graph responsive, shows progress in
//! its summary, and drops inputs (a stale frame is worth nothing to a policy).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;
use vela_runtime::{
    Actions, AlertLevel, Context, DataType, Image, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind,
    ParamSpec, Payload, Registry,
};

use crate::batcher::Client;
use crate::{LoadOptions, OpenVla, Quantization};

/// The node's own model, or its seat in a batch shared with other nodes.
enum Policy {
    Own(Arc<OpenVla>),
    Batched(Client),
}

impl Policy {
    fn model(&self) -> &Arc<OpenVla> {
        match self {
            Policy::Own(m) => m,
            Policy::Batched(c) => c.model(),
        }
    }
}

enum Loading {
    InProgress { rx: mpsc::Receiver<crate::Result<Policy>>, done: Arc<AtomicUsize>, total: Arc<AtomicUsize> },
    Ready(Arc<Policy>),
}

pub struct OpenVlaNode {
    model_dir: PathBuf,
    quantization: Option<Quantization>,
    action_space: String,
    partial: bool,
    /// Actions of a chunked model's prediction to send (0 = all of them).
    execute: usize,
    /// Bins either side of the most likely one that each action value averages (0: argmax).
    decode_window: usize,
    loading: Loading,
    /// Latest instruction from the `instruction` port (when images come separately).
    instruction: Option<String>,
    dropped_while_loading: u64,
    /// The newest frame that came while loading, answered once the model is ready (a
    /// lock-stepped simulator waits for exactly that answer).
    pending: Option<(Image, String)>,
    batch: usize,
    predictions: u64,
    last_ms: f64,
    started: Instant,
}

impl OpenVlaNode {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("OpenVLA", "LLM", "OpenVLA")
            .describe("OpenVLA vision-language-action model (candle): instruction + camera image -> 7-D robot action.")
            .input("prompt", &[DataType::Prompt], "instruction and image, e.g. from AutoPrompt <text><image>")
            .input("image", &[DataType::Image], "camera frames (with the instruction port instead of prompt)")
            .input("instruction", &[DataType::Text], "instruction for the image port")
            .output("actions", DataType::Actions, "un-normalised 7-D actions (partial vectors while decoding if enabled)")
            .param(ParamSpec::new("model", ParamKind::Path, "", "checkpoint folder (HF layout: config.json + safetensors)").startup_only())
            .param(
                ParamSpec::new(
                    "quantization",
                    ParamKind::Choice { options: vec!["fp16".into(), "q8f16".into(), "q4f16".into()] },
                    "fp16",
                    "fp16 = the checkpoint's weights; q8f16 (\"FP8\") = 8-bit integer LLM; q4f16 (\"INT4\") = 4-bit k-quants LLM",
                )
                .startup_only(),
            )
            .param(
                ParamSpec::new(
                    "device",
                    ParamKind::Choice { options: vec!["cpu".into(), "cuda".into()] },
                    "cpu",
                    "where the model runs: cuda needs a CUDA build of vela (scripts/build-cuda.sh) and computes in bf16",
                )
                .startup_only(),
            )
            .param(ParamSpec::new("action_space", ParamKind::String, "", "norm_stats key to un-normalise with (empty = the first; `normalized` = raw [-1, 1])"))
            .param(ParamSpec::new("partial", ParamKind::Bool, false, "emit the partial action vector after every decoded token"))
            .param(ParamSpec::new(
                "execute",
                ParamKind::Int { min: Some(0), max: Some(64) },
                0,
                "for models that predict a chunk of actions per frame: how many of them to send for execution before the next frame (0 = all)",
            ))
            .param(ParamSpec::new(
                "decode_window",
                ParamKind::Int { min: Some(0), max: Some(255) },
                0,
                "0 = each action value is its most likely bin (OpenVLA); N = the probability-weighted mean of the bins within N of it",
            ))
            .param(
                ParamSpec::new(
                    "batch",
                    ParamKind::Int { min: Some(1), max: Some(256) },
                    1,
                    "above 1: share the model with other nodes on the same checkpoint and batch their frames (up to this many; no partials)",
                )
                .startup_only(),
            )
            .param(
                ParamSpec::new(
                    "batch_wait_ms",
                    ParamKind::Int { min: Some(0), max: Some(10_000) },
                    crate::batcher::WINDOW.as_millis() as i64,
                    "with batch > 1: how long a batch waits for the other nodes' frames once the first is in",
                )
                .startup_only(),
            )
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let p = init.params;
        let model = p.str("model")?;
        if model.trim().is_empty() {
            return Err(NodeError::param("model", "no model folder set"));
        }
        let model_dir = PathBuf::from(model);
        if !model_dir.join("config.json").is_file() {
            return Err(NodeError::param(
                "model",
                format!("{} has no config.json (train one with `vela train`, make a random one with `vela vla make-checkpoint`; models/README.md says where the shipped model stands)", model_dir.display()),
            ));
        }
        let quantization = Quantization::parse_opt(p.str("quantization")?).map_err(|e| NodeError::param("quantization", e))?;
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let (d, t, dir) = (done.clone(), total.clone(), model_dir.clone());
        let batch = p.u64("batch")? as usize;
        let batch_wait = std::time::Duration::from_millis(p.u64("batch_wait_ms")?);
        let device_name = p.str("device")?.to_string();
        // Fails here, at graph start, with the build's own explanation when CUDA is missing.
        // The device itself is opened only by the loader that loads the model (see
        // `device::check_device` for why).
        crate::device::check_device(&device_name).map_err(|e| NodeError::param("device", e.to_string()))?;
        let dtype = crate::device::default_dtype_for(&device_name).map_err(|e| NodeError::param("device", e.to_string()))?;
        std::thread::Builder::new()
            .name(format!("load-{}", init.name))
            .spawn(move || {
                let (dev, from) = (device_name.clone(), dir.clone());
                let load = move || {
                    let device = crate::device::parse_device(&dev)?;
                    let opts = LoadOptions { quantization, device, dtype };
                    OpenVla::load_with_progress(&from, &opts, move |n, of| {
                        d.store(n, Ordering::Relaxed);
                        t.store(of, Ordering::Relaxed);
                    })
                };
                let r = if batch > 1 {
                    Client::join_on(&dir, quantization, &device_name, batch, batch_wait, load).map(Policy::Batched)
                } else {
                    load().map(|m| Policy::Own(Arc::new(m)))
                };
                let _ = tx.send(r);
            })
            .map_err(NodeError::msg)?;
        Ok(OpenVlaNode {
            model_dir,
            quantization,
            action_space: p.str("action_space")?.to_string(),
            partial: p.bool("partial")?,
            execute: p.u64("execute")? as usize,
            decode_window: p.u64("decode_window")? as usize,
            loading: Loading::InProgress { rx, done, total },
            instruction: None,
            dropped_while_loading: 0,
            pending: None,
            batch,
            predictions: 0,
            last_ms: 0.0,
            started: Instant::now(),
        })
    }

    /// The model if loaded; a load failure becomes the node's error.
    fn model(&mut self, ctx: &mut Context) -> Result<Option<Arc<Policy>>, NodeError> {
        if let Loading::InProgress { rx, .. } = &self.loading {
            match rx.try_recv() {
                Ok(Ok(policy)) => {
                    let policy = Arc::new(policy);
                    let m = policy.model();
                    if !self.action_space.is_empty() && !m.action_spaces().contains(&self.action_space) {
                        return Err(NodeError::param(
                            "action_space",
                            format!("'{}' is not in the model's norm_stats (has: {})", self.action_space, m.action_spaces().join(", ")),
                        ));
                    }
                    ctx.alert(
                        AlertLevel::Info,
                        format!(
                            "OpenVLA loaded from {} ({}) in {:.1} s",
                            self.model_dir.display(),
                            m.weights_kind,
                            self.started.elapsed().as_secs_f64()
                        ),
                    );
                    self.loading = Loading::Ready(policy);
                }
                Ok(Err(e)) => return Err(NodeError::msg(format!("loading {}: {e}", self.model_dir.display()))),
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::TryRecvError::Disconnected) => return Err(NodeError::msg("the model loader thread died")),
            }
        }
        match &self.loading {
            Loading::Ready(m) => Ok(Some(m.clone())),
            Loading::InProgress { .. } => Ok(None),
        }
    }

    fn space(&self, m: &OpenVla) -> String {
        if self.action_space.is_empty() {
            m.action_spaces().into_iter().next().unwrap_or_else(|| crate::model::NORMALIZED.to_string())
        } else {
            self.action_space.clone()
        }
    }

    fn predict(&mut self, image: &Image, instruction: &str, ctx: &mut Context) -> Result<(), NodeError> {
        let Some(policy) = self.model(ctx)? else {
            if self.pending.replace((image.clone(), instruction.to_string())).is_some() {
                self.dropped_while_loading += 1;
            }
            return Ok(());
        };
        let img = image::RgbImage::from_raw(image.width, image.height, image.data.to_vec())
            .ok_or_else(|| NodeError::msg("image buffer does not match its size"))?;
        let space = self.space(policy.model());
        let t0 = Instant::now();
        let mut partials = Vec::new();
        let partial = self.partial;
        // Decode only what will be sent. A batched model is shared by every node of the
        // graph; they come from one preset and share `execute` and `decode_window`, and if
        // not, the last setting wins and a node may get fewer actions than it asked for, never more work.
        policy.model().set_decoded_actions(self.execute);
        policy.model().set_decode_window(self.decode_window);
        let dims = policy.model().action_tokens();
        let p = match &*policy {
            Policy::Own(m) => m.predict_action_stream(&img, instruction, &space, |pa| {
                if partial && pa.index + 1 < dims {
                    partials.push(pa.values.clone());
                }
            }),
            Policy::Batched(c) => c.predict(img, instruction, &space),
        }
        .map_err(|e| NodeError::msg(e.to_string()))?;
        self.last_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.predictions += 1;
        // Stamped with the frame's time so the simulator can drop answers to an old episode.
        for v in partials {
            ctx.send_stamped("actions", Actions { values: v, partial: true, space: space.clone() }, image.timestamp)?;
        }
        let mut action = p.action;
        if self.execute > 0 {
            action.truncate(7 * self.execute);
        }
        ctx.send_stamped("actions", Actions::new(action, space), image.timestamp)
    }
}

impl Node for OpenVlaNode {
    fn on_input(&mut self, port: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        match (port, msg.payload) {
            ("prompt", Payload::Prompt(p)) => {
                let image = p.last_image().cloned().ok_or_else(|| NodeError::msg("the prompt has no image"))?;
                let text = p.text();
                self.predict(&image, text.trim(), ctx)
            }
            ("instruction", Payload::Text(t)) => {
                if t.is_final {
                    self.instruction = Some(t.text);
                }
                Ok(())
            }
            ("image", Payload::Image(img)) => match self.instruction.clone() {
                Some(instr) => self.predict(&img, &instr, ctx),
                None => Ok(()),
            },
            (port, other) => Err(NodeError::msg(format!("unexpected {} on port {port}", other.describe()))),
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        // Poll the loader so a failed load shows up even when no input arrives.
        matches!(self.loading, Loading::InProgress { .. }).then_some(Duration::from_millis(200))
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.model(ctx)?.is_some() {
            if let Some((image, instruction)) = self.pending.take() {
                return self.predict(&image, &instruction, ctx);
            }
        }
        Ok(())
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "action_space" => {
                let s = value.as_str().unwrap_or_default().to_string();
                if let Loading::Ready(p) = &self.loading {
                    let spaces = p.model().action_spaces();
                    if !s.is_empty() && !spaces.contains(&s) {
                        return Err(NodeError::param(name, format!("'{s}' is not one of {}", spaces.join(", "))));
                    }
                }
                self.action_space = s;
            }
            "partial" => self.partial = value.as_bool().unwrap_or(false),
            "execute" => self.execute = value.as_u64().unwrap_or(0) as usize,
            "decode_window" => self.decode_window = value.as_u64().unwrap_or(0) as usize,
            _ => return Err(NodeError::param(name, "cannot change while running")),
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        let q = self.quantization.map(|q| q.to_string()).unwrap_or_else(|| "fp16".into());
        Some(match &self.loading {
            Loading::InProgress { done, total, .. } => {
                let (d, t) = (done.load(Ordering::Relaxed), total.load(Ordering::Relaxed).max(1));
                format!("loading {q} {}%", 100 * d / t)
            }
            Loading::Ready(_) if self.batch > 1 => {
                format!("{q} · batch ≤{} · {:.0} ms · {} actions", self.batch, self.last_ms, self.predictions)
            }
            Loading::Ready(_) => format!("{q} · {:.0} ms · {} actions", self.last_ms, self.predictions),
        })
    }

    fn blocking(&self) -> bool {
        true
    }
}

pub fn register(r: &mut Registry) {
    r.register(OpenVlaNode::descriptor(), |init| Ok(Box::new(OpenVlaNode::new(init)?)));
}
