//! The trainable model's parameters: every checkpoint tensor under its HF name, the trainable
//! ones as candle `Var`s, and LoRA adapters on every linear layer the model builds.
//!
//! The model code asks a [`Store`] for tensors by name, so the same `VisionBackbone`,
//! `Projector` and `Llama` that run inference are built on top of [`ParamStore`]: training
//! and inference cannot drift apart.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};

use crate::checkpoint::{checkpoint_plan, init_tensor, loader_expectations};
use crate::config::OpenVlaConfig;
use crate::rng::{tensor_seed, SplitMix64};
use crate::weights::{parse_torch_dtype, LoraAdapter, SafetensorsStore, Store, TensorSpec};
use crate::{Result, VlaError};

/// What gets trained.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Mode {
    /// Every tensor the model reads.
    Full,
    /// Only low-rank adapters on all linear layers (OpenVLA's `target_modules="all-linear"`).
    Lora { rank: usize, alpha: f64, dropout: f32 },
}

/// Where the starting weights come from.
#[derive(Clone, Debug)]
pub enum Source<'a> {
    /// A fresh model of this config, initialised like `make-checkpoint --seed`.
    Init { config: OpenVlaConfig, seed: u64 },
    /// An HF-layout model folder.
    Checkpoint(&'a Path),
}

/// Names of the LoRA tensors of the linear layer with weight `w` (peft's naming).
pub fn lora_names(weight: &str) -> (String, String) {
    let base = weight.trim_end_matches(".weight");
    (format!("{base}.lora_A.weight"), format!("{base}.lora_B.weight"))
}

pub struct Params {
    pub config: OpenVlaConfig,
    pub mode: Mode,
    plan: Vec<TensorSpec>,
    /// Every checkpoint tensor (the `Var`'s tensor for trainable ones in full mode).
    tensors: HashMap<String, Tensor>,
    /// Trainable variables by name, in a fixed order (optimizer state follows it).
    vars: Mutex<BTreeMap<String, Var>>,
    /// LoRA adapters by the weight name they sit on.
    adapters: Mutex<BTreeMap<String, LoraAdapter>>,
    dropout: Arc<AtomicU32>,
    seed: u64,
    device: Device,
}

impl Params {
    pub fn new(source: Source, mode: Mode, seed: u64, device: &Device) -> Result<Arc<Self>> {
        let config = match &source {
            Source::Init { config, .. } => config.clone(),
            Source::Checkpoint(dir) => OpenVlaConfig::from_file(&dir.join("config.json"))?,
        };
        if let Mode::Lora { rank, .. } = mode {
            if rank == 0 {
                return Err(VlaError::Config("LoRA rank must be at least 1".into()));
            }
        }
        let plan = checkpoint_plan(&config)?;
        let load = match &source {
            Source::Init { .. } => None,
            Source::Checkpoint(dir) => {
                Some(SafetensorsStore::open(dir, parse_torch_dtype(&config.torch_dtype)?, DType::F32, device)?)
            }
        };
        let used: std::collections::HashSet<String> = loader_expectations(&config)?.into_iter().map(|t| t.name).collect();
        let mut tensors = HashMap::new();
        let mut vars = BTreeMap::new();
        for spec in &plan {
            let t = match (&load, &source) {
                (Some(st), Source::Checkpoint(dir)) => st.tensor(&spec.name, &spec.shape).map_err(|e| {
                    VlaError::Weights(format!("{}: does not match its config.json: {e}", dir.display()))
                })?,
                (_, Source::Init { config, seed }) => {
                    Tensor::from_vec(init_tensor(config, spec, *seed), spec.shape.as_slice(), device)?
                }
                _ => unreachable!("a checkpoint source always has a store"),
            };
            let t = if mode == Mode::Full && used.contains(&spec.name) {
                let v = Var::from_tensor(&t)?;
                let t = v.as_tensor().clone();
                vars.insert(spec.name.clone(), v);
                t
            } else {
                t
            };
            tensors.insert(spec.name.clone(), t);
        }
        let dropout = match mode {
            Mode::Lora { dropout, .. } => dropout,
            Mode::Full => 0.0,
        };
        Ok(Arc::new(Self {
            config,
            mode,
            plan,
            tensors,
            vars: Mutex::new(vars),
            adapters: Mutex::new(BTreeMap::new()),
            dropout: Arc::new(AtomicU32::new(dropout.to_bits())),
            seed,
            device: device.clone(),
        }))
    }

    /// Trainable variables in name order (complete once a model has been built on the store).
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.vars.lock().expect("poisoned").iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn n_trainable(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    pub fn n_total(&self) -> usize {
        self.plan.iter().map(|t| t.shape.iter().product::<usize>()).sum()
    }

    /// Switches LoRA dropout (validation runs without it).
    pub fn set_training(&self, training: bool) {
        let p = match (&self.mode, training) {
            (Mode::Lora { dropout, .. }, true) => *dropout,
            _ => 0.0,
        };
        self.dropout.store(p.to_bits(), Ordering::Relaxed);
    }

    /// Overwrites trainable values from `saved` (a resume); every variable must be there.
    pub fn restore(&self, saved: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.vars() {
            let t = saved.get(&name).ok_or_else(|| VlaError::Train(format!("saved state has no tensor `{name}`")))?;
            if t.dims() != var.dims() {
                return Err(VlaError::Train(format!("saved `{name}` has shape {:?}, model wants {:?}", t.dims(), var.dims())));
            }
            var.set(&t.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// Replaces the starting values of every tensor whose name begins with one of `prefixes`
    /// by a fresh initialisation (the one `make-checkpoint --seed` writes); returns how many
    /// tensors changed. Full training only.
    ///
    /// Why: the shipped model's language model stopped reading its instruction in training
    /// (issue 8, session 24), while its vision tower finds the cubes well. Restarting the
    /// language model and projector on top of the trained tower keeps what the vision learned.
    pub fn reinit(&self, prefixes: &[String], seed: u64) -> Result<usize> {
        if self.mode != Mode::Full {
            return Err(VlaError::Train("--reinit restarts whole tensors: pass --full".into()));
        }
        let vars = self.vars.lock().expect("poisoned");
        let mut changed = 0;
        for prefix in prefixes {
            let mut hits = 0;
            for spec in self.plan.iter().filter(|t| t.name.starts_with(prefix.as_str())) {
                let Some(var) = vars.get(&spec.name) else { continue };
                var.set(&Tensor::from_vec(init_tensor(&self.config, spec, seed), spec.shape.as_slice(), &self.device)?)?;
                hits += 1;
            }
            if hits == 0 {
                return Err(no_tensor_under("--reinit", prefix, self.plan.iter().map(|t| t.name.as_str())));
            }
            changed += hits;
        }
        Ok(changed)
    }

    /// The value a checkpoint should hold for `name`: LoRA merged into the base weight
    /// (`W + scale · B · A`) where there is an adapter.
    pub fn merged(&self, name: &str) -> Result<Tensor> {
        let base = self.tensors.get(name).ok_or_else(|| VlaError::Weights(format!("missing tensor {name}")))?;
        match self.adapters.lock().expect("poisoned").get(name) {
            Some(a) => Ok((base + (a.b.matmul(&a.a)? * a.scale)?)?),
            None => Ok(base.clone()),
        }
    }

    /// The full checkpoint plan (names, shapes, dtypes) in HF order.
    pub fn plan(&self) -> &[TensorSpec] {
        &self.plan
    }
}

/// The error for an option (`--reinit`, `--lr-scale`) naming a prefix that no tensor has: it
/// lists the first parts of the names there are, so a typo is easy to see.
pub(crate) fn no_tensor_under<'a>(option: &str, prefix: &str, names: impl Iterator<Item = &'a str>) -> VlaError {
    let mut roots: Vec<&str> = names.map(|n| n.split('.').next().unwrap_or("")).collect();
    roots.dedup();
    VlaError::Train(format!("{option} {prefix}: no trained tensor starts with it (names start with {})", roots.join(", ")))
}

/// The [`Store`] the model is built from.
pub struct ParamStore(pub Arc<Params>);

impl Store for ParamStore {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.0.tensors.get(name).ok_or_else(|| VlaError::Weights(format!("missing tensor {name}")))?;
        if t.dims() != shape {
            return Err(VlaError::Weights(format!("{name}: expected shape {shape:?}, have {:?}", t.dims())));
        }
        Ok(t.clone())
    }

    /// A = N(0, 1/r) and B = 0 (peft's `init_lora_weights="gaussian"`), so training starts
    /// exactly at the base model. Seeded by name: independent of build order.
    fn lora(&self, name: &str) -> Result<Option<LoraAdapter>> {
        let p = &self.0;
        let Mode::Lora { rank, alpha, .. } = p.mode else { return Ok(None) };
        let mut adapters = p.adapters.lock().expect("poisoned");
        if let Some(a) = adapters.get(name) {
            return Ok(Some(a.clone()));
        }
        let w = p.tensors.get(name).ok_or_else(|| VlaError::Weights(format!("missing tensor {name}")))?;
        let (out, inp) = w.dims2()?;
        let mut rng = SplitMix64::new(tensor_seed(p.seed, name));
        let std = 1.0 / rank as f32;
        let a_vals: Vec<f32> = (0..rank * inp).map(|_| std * rng.normal()).collect();
        let a = Var::from_vec(a_vals, (rank, inp), &p.device)?;
        let b = Var::zeros((out, rank), DType::F32, &p.device)?;
        let (an, bn) = lora_names(name);
        let adapter = LoraAdapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: alpha / rank as f64,
            dropout: p.dropout.clone(),
        };
        {
            let mut vars = p.vars.lock().expect("poisoned");
            vars.insert(an, a);
            vars.insert(bn, b);
        }
        adapters.insert(name.to_string(), adapter.clone());
        Ok(Some(adapter))
    }

    fn device(&self) -> &Device {
        &self.0.device
    }
}
