//! Predictions replayed from recorded CUDA graphs.
//!
//! On a GPU one `predict_action` of the 7B model is about 3 300 small kernel launches (two
//! vision towers, the projector, a prefill and six single-position decode passes). candle
//! spends microseconds of host time on each, so the card waits on the host: the vision towers
//! took 15 ms for half a millisecond of arithmetic. Recording each stage once per prompt as a
//! CUDA graph and replaying it leaves the host nine launches per action.
//!
//! A recorded graph replays the exact addresses it was recorded with, so everything one stage
//! hands to the next lives in [`StaticPlan`]'s buffers: the camera frame's bytes (resized and
//! scaled on the card inside the vision stage), tower features, projected patches, a preallocated KV cache and the decoded token ids. Each stage reads and writes only
//! those, and the greedy token of one step feeds the next on the device (no host round trip
//! between tokens). The plan also runs eagerly, on any device: the CPU tests check it against
//! the ordinary decoding path, and on CUDA the eager run is the warm-up before recording.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use image::RgbImage;

use super::{ActionPrediction, OpenVla, PartialAction, StageTimes};
use crate::action::unnormalize;
use crate::llama::KvCache;
use crate::{Result, VlaError};

/// Bumped by every eager forward pass and every recording. candle keeps grow-only scratch
/// buffers per device (the quantized matmuls' activation workspace); an eager pass of another
/// shape may reallocate one that a recorded graph still points at, so a plan recorded before
/// the latest bump is recorded again before it is replayed.
static EAGER_EPOCH: AtomicU64 = AtomicU64::new(0);

pub(crate) fn note_eager_pass() {
    EAGER_EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// Stage indices: 0 vision towers, 1 projector, 2 prefill (and the first token), then one per
/// further token.
const VISION: usize = 0;
const PROJECTOR: usize = 1;
const PREFILL: usize = 2;

/// The buffers of one prompt's prediction, at fixed device addresses.
pub(crate) struct StaticPlan {
    ids: Vec<u32>,
    dims: usize,
    prefill_len: usize,
    /// `[1, 1]` and `[1, L-1]` prompt ids: BOS goes before the patches, the rest after.
    head: Tensor,
    tail: Option<Tensor>,
    /// The camera frame, `[H, W, 3]` u8, as it arrives (after the centre crop of augmented
    /// models).
    frame: Tensor,
    /// How the frame becomes each distinct tower size.
    sizes: Vec<(usize, Resizer)>,
    feats: Tensor,
    patches: Tensor,
    /// `[dims]` u32, written one greedy token per stage.
    tokens: Tensor,
    cache: KvCache,
}

impl StaticPlan {
    /// Allocates the buffers for prompt `ids` and frames shaped like `frame`; runs the towers
    /// once to learn the feature shapes.
    fn new(m: &OpenVla, frame: &RgbImage, ids: &[u32], dims: usize) -> Result<Self> {
        if ids.is_empty() {
            return Err(VlaError::Input("empty prompt".into()));
        }
        if dims == 0 {
            return Err(VlaError::Input("an action needs at least one dimension".into()));
        }
        let dev = &m.device;
        let mut sizes: Vec<(usize, Resizer)> = Vec::new();
        for t in &m.towers {
            if !sizes.iter().any(|(s, _)| *s == t.image_size) {
                sizes.push((t.image_size, Resizer::new(frame, t.image_size, dev)?));
            }
        }
        let frame = upload(frame, dev)?;
        let px = pixels(&frame, &sizes, m)?;
        let feats = m.backbone.forward(&px)?.contiguous()?;
        let patches = m.projector.forward(&feats)?.contiguous()?;
        let prefill_len = ids.len() + patches.dim(1)?;
        let tc = &m.config.text_config;
        let cache = KvCache::preallocated(tc, 1, prefill_len + dims - 1, patches.dtype(), dev)?;
        Ok(Self {
            ids: ids.to_vec(),
            dims,
            prefill_len,
            head: Tensor::new(&ids[..1], dev)?.unsqueeze(0)?,
            tail: if ids.len() > 1 { Some(Tensor::new(&ids[1..], dev)?.unsqueeze(0)?) } else { None },
            frame,
            sizes,
            feats,
            patches,
            tokens: Tensor::zeros(dims, DType::U32, dev)?,
            cache,
        })
    }

    fn n_stages(&self) -> usize {
        PREFILL + self.dims
    }

    fn matches(&self, frame: &RgbImage, ids: &[u32], dims: usize) -> bool {
        self.ids == ids && self.dims == dims && self.frame.dims() == [frame.height() as usize, frame.width() as usize, 3]
    }

    fn load_frame(&self, frame: &RgbImage) -> Result<()> {
        Ok(self.frame.slice_set(&upload(frame, self.frame.device())?, 0, 0)?)
    }

    /// Runs stage `s` eagerly (or, inside a capture, records it).
    fn stage(&mut self, m: &OpenVla, s: usize) -> Result<()> {
        match s {
            VISION => {
                let px = pixels(&self.frame, &self.sizes, m)?;
                let f = m.backbone.forward(&px)?;
                self.feats.slice_set(&f.contiguous()?, 0, 0)?;
            }
            PROJECTOR => {
                let p = m.projector.forward(&self.feats)?;
                self.patches.slice_set(&p.contiguous()?, 0, 0)?;
            }
            PREFILL => {
                self.cache.pos = 0;
                let mut parts = vec![m.llm.embed_batch(&self.head)?, self.patches.clone()];
                if let Some(tail) = &self.tail {
                    parts.push(m.llm.embed_batch(tail)?);
                }
                let logits = m.llm.forward_embeds(&Tensor::cat(&parts, 1)?, &mut self.cache)?;
                self.put_token(&logits, 0)?;
            }
            s if s < self.n_stages() => {
                let i = s - PREFILL;
                self.cache.pos = self.prefill_len + i - 1;
                let prev = self.tokens.narrow(0, i - 1, 1)?.unsqueeze(0)?;
                let logits = m.llm.forward_embeds(&m.llm.embed_batch(&prev)?, &mut self.cache)?;
                self.put_token(&logits, i)?;
            }
            s => return Err(VlaError::Input(format!("no stage {s} in a plan of {}", self.n_stages()))),
        }
        Ok(())
    }

    /// Greedy token of `logits` (`[V]`) into slot `i`, on the device.
    fn put_token(&self, logits: &Tensor, i: usize) -> Result<()> {
        Ok(self.tokens.slice_set(&logits.argmax_keepdim(D::Minus1)?, 0, i)?)
    }

    fn read_tokens(&self) -> Result<Vec<u32>> {
        Ok(self.tokens.to_vec1::<u32>()?)
    }
}

/// A plan and, on CUDA, its recorded stages.
pub(crate) struct Replay {
    plan: StaticPlan,
    epoch: u64,
    #[cfg(feature = "cuda")]
    graphs: Option<cuda::Graphs>,
}

impl Replay {
    fn build(m: &OpenVla, frame: &RgbImage, ids: &[u32], dims: usize) -> Result<Self> {
        let t = Instant::now();
        #[allow(unused_mut)]
        let mut plan = StaticPlan::new(m, frame, ids, dims)?;
        #[cfg(feature = "cuda")]
        let graphs = match &m.device {
            candle_core::Device::Cuda(d) => Some(cuda::record(d, &mut plan, m)?),
            _ => None,
        };
        let epoch = EAGER_EPOCH.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(stages = plan.n_stages(), prefill = plan.prefill_len, ms = t.elapsed().as_secs_f64() * 1e3, "recorded prediction plan");
        Ok(Self {
            plan,
            epoch,
            #[cfg(feature = "cuda")]
            graphs,
        })
    }

    fn stage(&mut self, m: &OpenVla, s: usize) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.graphs {
            return g.launch(s);
        }
        self.plan.stage(m, s)
    }
}

/// The one plan kept per model (see [`EAGER_EPOCH`] for why not more), and whether to use it.
pub(crate) struct ReplayCache {
    pub(crate) enabled: bool,
    current: Option<Replay>,
}

impl ReplayCache {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, current: None }
    }

    fn get(&mut self, m: &OpenVla, frame: &RgbImage, ids: &[u32], dims: usize) -> Result<&mut Replay> {
        let epoch = EAGER_EPOCH.load(Ordering::SeqCst);
        let fresh = self.current.as_ref().is_some_and(|r| r.epoch == epoch && r.plan.matches(frame, ids, dims));
        if !fresh {
            // Free the old plan's buffers (and graphs) before allocating the new ones.
            self.current = None;
            self.current = Some(Replay::build(m, frame, ids, dims)?);
        }
        Ok(self.current.as_mut().expect("set above"))
    }
}

/// How the plan's frame becomes one tower size: as it is, on the card (the image crate's
/// resize replayed by `fused::resize`), or on the host for eager CPU plans.
enum Resizer {
    Same,
    Host(usize),
    #[cfg(feature = "cuda")]
    Device(crate::fused::AxisTensors, crate::fused::AxisTensors),
}

impl Resizer {
    fn new(frame: &RgbImage, size: usize, dev: &Device) -> Result<Self> {
        let (w, h) = frame.dimensions();
        if (w as usize, h as usize) == (size, size) {
            return Ok(Self::Same);
        }
        #[cfg(feature = "cuda")]
        if dev.is_cuda() {
            use crate::preprocess::resize_axis;
            let rows = crate::fused::AxisTensors::new(&resize_axis(h, size as u32), dev)?;
            let cols = crate::fused::AxisTensors::new(&resize_axis(w, size as u32), dev)?;
            return Ok(Self::Device(rows, cols));
        }
        let _ = dev;
        Ok(Self::Host(size))
    }

    fn apply(&self, frame: &Tensor) -> Result<Tensor> {
        match self {
            Self::Same => Ok(frame.clone()),
            Self::Host(size) => {
                let (h, w, _) = frame.dims3()?;
                let img = RgbImage::from_raw(w as u32, h as u32, frame.flatten_all()?.to_vec1::<u8>()?)
                    .ok_or_else(|| VlaError::Input("frame buffer of the wrong size".into()))?;
                upload(&crate::preprocess::resize_replayed(&img, *size), frame.device())
            }
            #[cfg(feature = "cuda")]
            Self::Device(rows, cols) => Ok(crate::fused::resize(frame, rows, cols)?),
        }
    }
}

/// The frame → every tower's pixel values, `[1, 3·T, S, S]`.
fn pixels(frame: &Tensor, sizes: &[(usize, Resizer)], m: &OpenVla) -> Result<Tensor> {
    let frames = sizes.iter().map(|(s, r)| Ok((*s, r.apply(frame)?))).collect::<Result<Vec<_>>>()?;
    crate::preprocess::normalize_on_device(&frames, &m.towers, m.dtype)
}

/// `[S, S, 3]` u8 on `dev`.
fn upload(f: &RgbImage, dev: &Device) -> Result<Tensor> {
    let (w, h) = (f.width() as usize, f.height() as usize);
    Ok(Tensor::from_slice(f.as_raw(), (h, w, 3), dev)?)
}

/// Whether replays are on by default: on CUDA unless `VELA_CUDA_GRAPHS=0`; never on the CPU
/// (there is no launch cost to save, and the eager path is the reference there).
pub(crate) fn default_enabled(dev: &candle_core::Device) -> bool {
    dev.is_cuda() && std::env::var("VELA_CUDA_GRAPHS").map_or(true, |v| v != "0")
}

impl OpenVla {
    /// Turns replayed predictions on or off (see the module docs). On the CPU they run the
    /// same static-buffer plan eagerly, which tests use to check it.
    pub fn set_replay(&self, on: bool) {
        let mut c = self.replays.lock().unwrap_or_else(|e| e.into_inner());
        c.enabled = on;
        if !on {
            c.current = None;
        }
    }

    /// A plan that cannot be recorded or replayed is a bug in an op's capture support, not in
    /// the input: say so once and carry on eagerly.
    pub(crate) fn replay_failed(&self, e: VlaError) {
        tracing::warn!(error = %e, "replayed prediction failed; predicting eagerly from now on");
        self.set_replay(false);
    }

    pub fn replay_enabled(&self) -> bool {
        self.replays.lock().unwrap_or_else(|e| e.into_inner()).enabled
    }

    /// [`OpenVla::predict_action_stream`] through the plan. The tokens arrive together, so
    /// `on_token` is called for each after the replay; `vision_ms` is the host-side
    /// preprocessing and `decode_ms` the whole replay (vision towers to last token).
    pub(crate) fn predict_replayed(
        &self,
        img: &RgbImage,
        instruction: &str,
        action_space: &str,
        mut on_token: impl FnMut(&PartialAction),
    ) -> Result<ActionPrediction> {
        let (stats, dims) = self.space_stats(action_space)?;
        let t0 = Instant::now();
        let frame = self.framed(img);
        let ids = self.prompt_ids(instruction);
        let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let mut cache = self.replays.lock().unwrap_or_else(|e| e.into_inner());
        let r = cache.get(self, &frame, &ids, dims)?;
        r.plan.load_frame(&frame)?;
        for s in 0..r.plan.n_stages() {
            r.stage(self, s)?;
        }
        let tokens = r.plan.read_tokens()?;
        let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        let mut normalized = Vec::with_capacity(dims);
        let values = |n: &[f32]| match &stats {
            Some(s) => unnormalize(n, s),
            None => n.to_vec(),
        };
        for (index, &token) in tokens.iter().enumerate() {
            normalized.push(self.actions.decode(token));
            on_token(&PartialAction { index, token, values: values(&normalized) });
        }
        Ok(ActionPrediction {
            action: values(&normalized),
            normalized,
            tokens,
            prompt_ids: ids,
            vision_ms,
            prefill_ms: 0.0,
            decode_ms,
        })
    }

    /// Where a decode step's GPU time goes: builds the plan for this prompt without recording
    /// it, runs the prompt stages, then the six decode steps eagerly with the device waited
    /// for around every op of the fused decoder (`fused::profile`). Rows: op, total ms over
    /// the six steps, calls; then the steps' total and what lies outside the layers (final
    /// norm, `lm_head`, argmax, embedding). Sync overhead inflates small ops by a few µs each.
    pub fn profile_decode(&self, img: &RgbImage, instruction: &str) -> Result<Vec<(String, f64, usize)>> {
        let frame = self.framed(img);
        let ids = self.prompt_ids(instruction);
        let mut plan = StaticPlan::new(self, &frame, &ids, 7)?;
        plan.load_frame(&frame)?;
        for s in 0..=PREFILL {
            plan.stage(self, s)?;
        }
        self.device.synchronize()?;
        crate::fused::profile::start();
        let mut steps_ms = 0.0;
        let run = (|| -> Result<()> {
            for s in PREFILL + 1..plan.n_stages() {
                let t = Instant::now();
                plan.stage(self, s)?;
                self.device.synchronize()?;
                steps_ms += t.elapsed().as_secs_f64() * 1e3;
            }
            Ok(())
        })();
        let ops = crate::fused::profile::finish();
        run?;
        let inside: f64 = ops.iter().map(|o| o.1).sum();
        let mut rows: Vec<(String, f64, usize)> = ops.into_iter().map(|(k, ms, n)| (k.to_string(), ms, n)).collect();
        rows.push(("decode steps (total)".into(), steps_ms, plan.n_stages() - PREFILL - 1));
        rows.push(("outside the layers".into(), steps_ms - inside, plan.n_stages() - PREFILL - 1));
        Ok(rows)
    }

    /// [`OpenVla::predict_timed`] through the plan: each recorded stage launched and waited
    /// for on its own. The first call for a prompt records the plan before timing.
    pub(crate) fn predict_timed_replayed(&self, img: &RgbImage, instruction: &str) -> Result<StageTimes> {
        let sync = || self.device.synchronize();
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let ids = self.prompt_ids(instruction);
        let dims = self.action_tokens();
        let mut cache = self.replays.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(self, &self.framed(img), &ids, dims)?;
        sync()?;
        let t = Instant::now();
        let frame = self.framed(img);
        let r = cache.get(self, &frame, &ids, dims)?;
        r.plan.load_frame(&frame)?;
        sync()?;
        let preprocess_ms = ms(t);
        let t = Instant::now();
        r.stage(self, VISION)?;
        sync()?;
        let vision_ms = ms(t);
        let mut timed = |s: usize| -> Result<f64> {
            let t = Instant::now();
            r.stage(self, s)?;
            sync()?;
            Ok(ms(t))
        };
        let projector_ms = timed(PROJECTOR)?;
        let prefill_ms = timed(PREFILL)?;
        let token_ms = (PREFILL + 1..PREFILL + dims).map(&mut timed).collect::<Result<Vec<_>>>()?;
        Ok(StageTimes {
            preprocess_ms,
            vision_ms,
            projector_ms,
            prefill_ms,
            token_ms,
            tokens: r.plan.read_tokens()?,
            prefill_len: r.plan.prefill_len,
        })
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph, DriverError};
    use candle_core::CudaDevice;

    use super::StaticPlan;
    use crate::model::OpenVla;
    use crate::{Result, VlaError};

    /// One executable graph per stage.
    pub(crate) struct Graphs(Vec<CudaGraph>);

    // SAFETY: cudarc leaves graphs !Send because CUDA does not synchronise access to a graph;
    // these live inside the model's replay mutex, so only one thread touches them at a time,
    // and each launch binds the context to the calling thread first.
    unsafe impl Send for Graphs {}

    fn err(what: &'static str) -> impl Fn(DriverError) -> VlaError {
        move |e| VlaError::Input(format!("CUDA graph {what}: {e}"))
    }

    impl Graphs {
        pub(crate) fn launch(&self, s: usize) -> Result<()> {
            self.0.get(s).ok_or_else(|| VlaError::Input(format!("no recorded stage {s}")))?.launch().map_err(err("launch"))
        }
    }

    /// Warms every stage up eagerly (loads kernels, sizes candle's scratch buffers, and fills
    /// candle's cache of small host-to-device uploads such as strides, which may not be
    /// uploaded during a capture), then records each stage into its own graph.
    pub(crate) fn record(d: &CudaDevice, plan: &mut StaticPlan, m: &OpenVla) -> Result<Graphs> {
        let _uploads = d.enable_cuda_graph_htod_cache();
        let stream = d.cuda_stream();
        for s in 0..plan.n_stages() {
            plan.stage(m, s)?;
        }
        stream.synchronize().map_err(err("warm-up"))?;
        let mut graphs = Vec::with_capacity(plan.n_stages());
        for s in 0..plan.n_stages() {
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(err("begin capture"))?;
            let body = plan.stage(m, s);
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            body.map_err(|e| VlaError::Input(format!("recording stage {s}: {e}")))?;
            let graph = graph.map_err(err("end capture"))?.ok_or_else(|| VlaError::Input(format!("stage {s} recorded nothing")))?;
            graph.upload().map_err(err("upload"))?;
            graphs.push(graph);
        }
        Ok(Graphs(graphs))
    }
}
