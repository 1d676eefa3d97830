//! Where weights come from. The model code asks for tensors by their checkpoint name; a store
//! answers from safetensors shards, a GGUF file, or (for layout checks) just records the request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor};

use crate::{Result, VlaError};

/// One tensor request: name, shape and the dtype the checkpoint is expected to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

pub trait Store: Send + Sync {
    /// A dense tensor in the compute dtype, shape-checked.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// A quantized matmul weight if the store holds one for `name`; dense stores say `None`.
    fn qmatmul(&self, _name: &str, _shape: &[usize]) -> Result<Option<QMatMul>> {
        Ok(None)
    }
    /// A low-rank adapter to put on the linear layer whose weight is `name` (training only).
    fn lora(&self, _name: &str) -> Result<Option<LoraAdapter>> {
        Ok(None)
    }
    fn device(&self) -> &Device;
}

/// Wraps a store and reports `(tensors loaded, tensors expected)` after every request, so a
/// graph node can show load progress for a 15 GB checkpoint.
pub struct ProgressStore<S: Store> {
    inner: S,
    done: std::sync::atomic::AtomicUsize,
    total: usize,
    callback: Box<dyn Fn(usize, usize) + Send + Sync>,
}

impl<S: Store> ProgressStore<S> {
    pub fn new(inner: S, total: usize, callback: Box<dyn Fn(usize, usize) + Send + Sync>) -> Self {
        Self { inner, done: std::sync::atomic::AtomicUsize::new(0), total, callback }
    }
    fn tick(&self) {
        let d = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        (self.callback)(d, self.total);
    }
}

impl<S: Store> Store for ProgressStore<S> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.inner.tensor(name, shape);
        self.tick();
        t
    }
    fn qmatmul(&self, name: &str, shape: &[usize]) -> Result<Option<QMatMul>> {
        let q = self.inner.qmatmul(name, shape)?;
        if q.is_some() {
            self.tick();
        }
        Ok(q)
    }
    fn lora(&self, name: &str) -> Result<Option<LoraAdapter>> {
        self.inner.lora(name)
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
}

/// A prefixed view on a store, in the spirit of candle's `VarBuilder::pp`.
#[derive(Clone)]
pub struct Weights {
    store: Arc<dyn Store>,
    prefix: String,
}

impl Weights {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, prefix: String::new() }
    }
    pub fn pp(&self, s: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { s.to_string() } else { format!("{}.{s}", self.prefix) };
        Self { store: self.store.clone(), prefix }
    }
    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.store.tensor(&self.full(name), shape)
    }
    pub fn device(&self) -> &Device {
        self.store.device()
    }
    /// `nn.Linear(in, out)` stored as `{name}.weight [out, in]` (+ `{name}.bias [out]`).
    /// Uses a quantized weight when the store has one.
    pub fn linear(&self, name: &str, inp: usize, out: usize, bias: bool) -> Result<Lin> {
        let wname = self.full(&format!("{name}.weight"));
        let b = if bias { Some(self.get(&[out], &format!("{name}.bias"))?) } else { None };
        let lin = match self.store.qmatmul(&wname, &[out, inp])? {
            Some(q) => Lin::Quant { w: q, b },
            None => Lin::Dense(candle_nn::Linear::new(self.store.tensor(&wname, &[out, inp])?, b)),
        };
        Ok(match self.store.lora(&wname)? {
            Some(lora) => Lin::Lora { base: Box::new(lin), lora },
            None => lin,
        })
    }
}

/// LoRA on one linear layer: `y = base(x) + scale · dropout(x) · Aᵀ · Bᵀ`, with `A: [r, in]`,
/// `B: [out, r]` (peft's layout, so merging is `W + scale · B · A`).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// Dropout probability as f32 bits, shared by every adapter of a model so the trainer can
    /// switch it off for validation.
    pub dropout: Arc<std::sync::atomic::AtomicU32>,
}

impl LoraAdapter {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = f32::from_bits(self.dropout.load(std::sync::atomic::Ordering::Relaxed));
        let x = if p > 0.0 { candle_nn::ops::dropout(x, p)? } else { x.clone() };
        let y = x.broadcast_matmul(&self.a.t()?)?.broadcast_matmul(&self.b.t()?)?;
        y * self.scale
    }
}

/// A linear layer whose weight is either dense or GGUF-quantized, optionally with a LoRA
/// adapter on top (training).
#[derive(Clone, Debug)]
pub enum Lin {
    Dense(candle_nn::Linear),
    Quant { w: QMatMul, b: Option<Tensor> },
    Lora { base: Box<Lin>, lora: LoraAdapter },
}

impl Lin {
    /// Whether training updates this layer in place (a `Var` weight or a LoRA adapter). Such
    /// layers must never be fused: the fused copy would keep the values of the moment it was
    /// made while the optimiser changes the originals.
    pub fn is_trainable(&self) -> bool {
        match self {
            Lin::Dense(l) => l.weight().is_variable() || l.bias().is_some_and(|b| b.is_variable()),
            Lin::Quant { .. } => false,
            Lin::Lora { .. } => true,
        }
    }

    /// One layer computing `parts` side by side (outputs concatenated on the last axis), so a
    /// decode step makes one launch instead of several over the same input. Quantized parts
    /// are joined block-wise: rows of a GGUF matrix are independent, so the bytes concatenate.
    pub fn fuse(parts: &[Lin]) -> Result<Lin> {
        let dense: Option<Vec<&candle_nn::Linear>> =
            parts.iter().map(|p| if let Lin::Dense(l) = p { Some(l) } else { None }).collect();
        if let Some(ls) = dense {
            let w = Tensor::cat(&ls.iter().map(|l| l.weight()).collect::<Vec<_>>(), 0)?;
            let b = match ls.iter().map(|l| l.bias()).collect::<Option<Vec<_>>>() {
                Some(bs) => Some(Tensor::cat(&bs, 0)?),
                None if ls.iter().all(|l| l.bias().is_none()) => None,
                None => return Err(VlaError::Weights("cannot fuse layers with and without bias".into())),
            };
            return Ok(Lin::Dense(candle_nn::Linear::new(w, b)));
        }
        let mut qs = Vec::new();
        for p in parts {
            match p {
                Lin::Quant { w: QMatMul::QTensor(q), b: None } => qs.push(q.clone()),
                _ => return Err(VlaError::Weights("can only fuse bias-free quantized layers of one kind".into())),
            }
        }
        let (dtype, cols) = (qs[0].dtype(), qs[0].shape().dims()[1]);
        let mut raw = Vec::new();
        let mut rows = 0;
        for q in &qs {
            let (r, c) = q.shape().dims2()?;
            if q.dtype() != dtype || c != cols {
                return Err(VlaError::Weights(format!("cannot fuse {:?} [{r}, {c}] with {dtype:?} [_, {cols}]", q.dtype())));
            }
            raw.extend_from_slice(&q.data()?);
            rows += r;
        }
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, &raw, vec![rows, cols], &qs[0].device())?;
        Ok(Lin::Quant { w: QMatMul::from_qtensor(q)?, b: None })
    }

    /// Rows of the weight (`out` of `nn.Linear(in, out)`).
    pub fn out_features(&self) -> Result<usize> {
        Ok(match self {
            Lin::Dense(l) => l.weight().dim(0)?,
            Lin::Quant { w: QMatMul::QTensor(q), .. } => q.shape().dims2()?.0,
            Lin::Quant { w: QMatMul::Tensor(x) | QMatMul::TensorF16(x), .. } => x.dim(0)?,
            Lin::Lora { base, .. } => base.out_features()?,
        })
    }

    /// Size of the weight (and bias) as stored on the device.
    pub fn weight_bytes(&self) -> u64 {
        let t = |x: &Tensor| (x.elem_count() * x.dtype().size_in_bytes()) as u64;
        match self {
            Lin::Dense(l) => t(l.weight()) + l.bias().map(t).unwrap_or(0),
            Lin::Quant { w, b } => {
                let w = match w {
                    QMatMul::QTensor(q) => q.storage_size_in_bytes() as u64,
                    QMatMul::Tensor(x) | QMatMul::TensorF16(x) => t(x),
                };
                w + b.as_ref().map(t).unwrap_or(0)
            }
            Lin::Lora { base, lora } => base.weight_bytes() + t(&lora.a) + t(&lora.b),
        }
    }
}

impl Module for Lin {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            #[cfg(feature = "cuda")]
            Lin::Dense(l) if crate::fused::gemv_applies(x, l.weight()) => {
                let y = crate::fused::gemv(x, l.weight())?;
                match l.bias() {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            // A bias on CUDA: one contiguous kernel after the matmul instead of candle's
            // strided broadcast add (the vision towers' qkv and the projector).
            #[cfg(feature = "cuda")]
            Lin::Dense(l) if l.bias().is_some() && crate::fused::epilogue_applies(x) && crate::fused::bias_kernel_on() => {
                let y = candle_nn::Linear::new(l.weight().clone(), None).forward(x)?;
                crate::fused::bias_add(&y, l.bias().expect("checked"))
            }
            Lin::Dense(l) => l.forward(x),
            Lin::Quant { w, b } => {
                let rows = x.elem_count() / x.dim(candle_core::D::Minus1)?.max(1);
                let y = match w {
                    // A prompt's worth of rows: candle's quantized matmul (llama.cpp's MMQ)
                    // ran a 279-position 7B prefill in 34 ms on an H100; expanding the blocks
                    // to f16 and handing them to cuBLAS costs a pass over the weights but
                    // runs the arithmetic on the tensor cores at full rate.
                    // bf16 rows times a Q4_K matrix expanded straight to bf16: no casts
                    // (`VELA_Q4K_BF16=0`: through f16, to measure what this saves).
                    #[cfg(feature = "cuda")]
                    QMatMul::QTensor(q) if x.device().is_cuda() && rows > DEQUANTIZED_ROWS && x.dtype() == DType::BF16 && crate::fused::q4k_applies(q) && q4k_bf16() => {
                        x.broadcast_matmul(&crate::fused::dequantize_q4k_as(q, DType::BF16)?.t()?)?
                    }
                    QMatMul::QTensor(q) if x.device().is_cuda() && rows > DEQUANTIZED_ROWS => {
                        #[cfg(feature = "cuda")]
                        let wd = if crate::fused::q4k_applies(q) { crate::fused::dequantize_q4k(q)? } else { q.dequantize_f16(x.device())? };
                        #[cfg(not(feature = "cuda"))]
                        let wd = q.dequantize_f16(x.device())?;
                        x.to_dtype(DType::F16)?.broadcast_matmul(&wd.t()?)?.to_dtype(x.dtype())?
                    }
                    _ => w.forward(x)?,
                };
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Lin::Lora { base, lora } => base.forward(x)? + lora.forward(x)?,
        }
    }
}

/// Whether a bf16 prefill expands Q4_K weights to bf16 (default) rather than f16.
#[cfg(feature = "cuda")]
fn q4k_bf16() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VELA_Q4K_BF16").map_or(true, |v| v != "0"))
}

/// Above this many input rows a quantized layer on CUDA multiplies through dequantized f16
/// weights (prefill); at or below it, through the quantized kernels (decoding, small batches).
const DEQUANTIZED_ROWS: usize = 16;

fn check_shape(name: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.dims() != shape {
        return Err(VlaError::Weights(format!("{name}: expected shape {shape:?}, checkpoint has {:?}", t.dims())));
    }
    Ok(())
}

/// Parses `torch_dtype` strings from config.json.
pub fn parse_torch_dtype(s: &str) -> Result<DType> {
    match s.trim_start_matches("torch.") {
        "bfloat16" => Ok(DType::BF16),
        "float16" => Ok(DType::F16),
        "float32" => Ok(DType::F32),
        other => Err(VlaError::Config(format!("unsupported torch_dtype `{other}`"))),
    }
}

/// HF safetensors shards, memory-mapped.
pub struct SafetensorsStore {
    st: candle_core::safetensors::MmapedSafetensors,
    stored: DType,
    compute: DType,
    device: Device,
}

impl SafetensorsStore {
    /// Opens `model.safetensors` or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path, stored: DType, compute: DType, device: &Device) -> Result<Self> {
        let files = shard_files(dir)?;
        // SAFETY: the files are opened read-only; we rely on nobody truncating them while mapped,
        // the same contract as every mmap-based checkpoint loader.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files)? };
        Ok(Self { st, stored, compute, device: device.clone() })
    }
}

/// The shard list of an HF folder, from the index when there is one.
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| VlaError::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| VlaError::Weights(e.to_string()))?;
        let map = v["weight_map"].as_object().ok_or_else(|| VlaError::Weights("index has no weight_map".into()))?;
        let files: std::collections::BTreeSet<String> =
            map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        Ok(files.into_iter().map(|f| dir.join(f)).collect())
    } else {
        let single = dir.join("model.safetensors");
        if single.exists() {
            Ok(vec![single])
        } else {
            Err(VlaError::Weights(format!("no model.safetensors(.index.json) in {}", dir.display())))
        }
    }
}

impl Store for SafetensorsStore {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.st.load(name, &self.device)?;
        check_shape(name, &t, shape)?;
        if t.dtype() != self.stored {
            tracing::warn!(name, found = ?t.dtype(), expected = ?self.stored, "checkpoint dtype differs from config torch_dtype");
        }
        Ok(t.to_dtype(self.compute)?)
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// Answers every request with a zero-strided tensor and writes down what was asked, so the
/// loader's expectations can be listed without reading or allocating any weights.
pub struct RecordingStore {
    pub requests: Mutex<Vec<TensorSpec>>,
    stored: DType,
    device: Device,
}

impl RecordingStore {
    pub fn new(stored: DType) -> Self {
        Self { requests: Mutex::new(Vec::new()), stored, device: Device::Cpu }
    }
    pub fn take(&self) -> Vec<TensorSpec> {
        std::mem::take(&mut *self.requests.lock().expect("poisoned"))
    }
}

impl Store for RecordingStore {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.requests.lock().expect("poisoned").push(TensorSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype: self.stored,
        });
        Ok(Tensor::zeros(1, DType::F32, &self.device)?.broadcast_as(shape)?)
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// A single GGUF file holding every tensor under its HF name (see `quantize`).
pub struct GgufStore {
    content: gguf_file::Content,
    file: Mutex<std::fs::File>,
    compute: DType,
    device: Device,
}

impl GgufStore {
    pub fn open(path: &Path, compute: DType, device: &Device) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| VlaError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file)?;
        Ok(Self { content, file: Mutex::new(file), compute, device: device.clone() })
    }
    pub fn metadata(&self) -> &std::collections::HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }
    fn qtensor(&self, name: &str, shape: &[usize]) -> Result<candle_core::quantized::QTensor> {
        let mut f = self.file.lock().expect("poisoned");
        let q = self.content.tensor(&mut *f, name, &self.device)?;
        if q.shape().dims() != shape {
            return Err(VlaError::Weights(format!("{name}: expected shape {shape:?}, gguf has {:?}", q.shape().dims())));
        }
        Ok(q)
    }
    /// Storage type of every tensor, for reporting.
    pub fn tensor_types(&self) -> BTreeMap<String, String> {
        self.content.tensor_infos.iter().map(|(k, v)| (k.clone(), format!("{:?}", v.ggml_dtype))).collect()
    }
}

impl Store for GgufStore {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.qtensor(name, shape)?.dequantize(&self.device)?.to_dtype(self.compute)?)
    }
    fn qmatmul(&self, name: &str, shape: &[usize]) -> Result<Option<QMatMul>> {
        use candle_core::quantized::GgmlDType as G;
        match self.content.tensor_infos.get(name) {
            // Unquantized entries stay on the dense path so they get the compute dtype.
            None => return Ok(None),
            Some(i) if matches!(i.ggml_dtype, G::F32 | G::F16 | G::BF16) => return Ok(None),
            Some(_) => {}
        }
        Ok(Some(QMatMul::from_qtensor(self.qtensor(name, shape)?)?))
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// Tensors held in memory, by name (tests, and models built programmatically).
pub struct MemStore {
    tensors: std::collections::HashMap<String, Tensor>,
    device: Device,
}

impl MemStore {
    pub fn new(tensors: std::collections::HashMap<String, Tensor>) -> Self {
        Self { tensors, device: Device::Cpu }
    }
}

impl Store for MemStore {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| VlaError::Weights(format!("missing tensor {name}")))?;
        check_shape(name, t, shape)?;
        Ok(t.clone())
    }
    fn device(&self) -> &Device {
        &self.device
    }
}
