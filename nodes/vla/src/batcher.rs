//! One model shared by several OpenVLA nodes, their requests batched.
//!
//! A success benchmark runs N simulators in lock-step with one policy each; answering them
//! one at a time leaves most of a wide CPU or GPU idle. Nodes asking for the same model
//! folder and quantization share one loaded model and one batching thread, which gathers a
//! request from every live node (or waits [`WINDOW`] for stragglers) and runs them together.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::{ActionPrediction, OpenVla, Quantization, Result, VlaError};

/// How long a batch waits by default for the remaining nodes once its first request is in.
/// Lock-step simulators answer within a physics step of each other; an idle node must not stall
/// the rest. Slow simulators (large frames, many on few cores) want more, fast ones less.
pub const WINDOW: Duration = Duration::from_millis(50);

struct Job {
    image: RgbImage,
    instruction: String,
    space: String,
    reply: mpsc::SyncSender<Result<ActionPrediction>>,
}

/// A handle on a shared model; dropping the last one stops its batching thread.
pub struct SharedModel {
    pub model: Arc<OpenVla>,
    jobs: Mutex<mpsc::Sender<Job>>,
    clients: Arc<AtomicUsize>,
    max_batch: usize,
}

type Key = (PathBuf, Option<Quantization>, String);

/// Models loaded for batching, by folder and quantization. Loading holds the lock so nodes
/// started together load the model once.
static SHARED: Mutex<Vec<(Key, Weak<SharedModel>)>> = Mutex::new(Vec::new());

/// A node's membership: counts towards the batch size it waits for.
pub struct Client {
    shared: Arc<SharedModel>,
    /// This member's name in `vela_runtime::diag` stages.
    who: String,
}

static CLIENTS: AtomicUsize = AtomicUsize::new(0);

impl Client {
    /// Joins (loading the model if no other node has) the batch for `dir` + `quantization`.
    pub fn join(dir: &Path, quantization: Option<Quantization>, max_batch: usize, load: impl FnOnce() -> Result<OpenVla> + Send + 'static) -> Result<Self> {
        Self::join_on(dir, quantization, "cpu", max_batch, WINDOW, load)
    }

    /// Like [`Client::join`], for a model on `device` (nodes on different devices never share),
    /// gathering each batch for up to `window` (the first node to join sets it). `load` runs on
    /// the batching thread (see [`SharedModel::start`]).
    pub fn join_on(
        dir: &Path,
        quantization: Option<Quantization>,
        device: &str,
        max_batch: usize,
        window: Duration,
        load: impl FnOnce() -> Result<OpenVla> + Send + 'static,
    ) -> Result<Self> {
        let who = format!("openvla client {}", CLIENTS.fetch_add(1, Ordering::Relaxed));
        vela_runtime::diag::stage(&who, "joining its shared model (loading it if first)");
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|(_, w)| w.strong_count() > 0);
        let key = (dir.to_path_buf(), quantization, device.to_string());
        let found = shared.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade());
        let s = match found {
            Some(s) => s,
            None => {
                let started = SharedModel::start(load, max_batch, window);
                let s = Arc::new(started.inspect_err(|_| vela_runtime::diag::clear(&who))?);
                shared.push((key, Arc::downgrade(&s)));
                s
            }
        };
        s.clients.fetch_add(1, Ordering::SeqCst);
        vela_runtime::diag::stage(&who, "ready, no request yet");
        Ok(Client { shared: s, who })
    }

    pub fn model(&self) -> &Arc<OpenVla> {
        &self.shared.model
    }

    /// Queues one request and waits for its batch to finish.
    pub fn predict(&self, image: RgbImage, instruction: &str, space: &str) -> Result<ActionPrediction> {
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job { image, instruction: instruction.to_string(), space: space.to_string(), reply };
        vela_runtime::diag::stage(&self.who, "waiting for its batch");
        let sent = self.shared.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job);
        sent.map_err(|_| VlaError::Input("the batching thread has stopped".into()))?;
        let answer = rx.recv().map_err(|_| VlaError::Input("the batching thread has stopped".into()))?;
        vela_runtime::diag::stage(&self.who, "answered");
        answer
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.clients.fetch_sub(1, Ordering::SeqCst);
        vela_runtime::diag::clear(&self.who);
    }
}

impl SharedModel {
    /// Loads the model on a new batching thread, which then serves the batches.
    ///
    /// All of a shared model's device work happens on that one thread, which lives as long as
    /// the model. Loading on the node's loader thread, which ends right after, left a thread
    /// tearing down while the batching thread made its first CUDA calls; that is where
    /// benches on the GPU hung at start-up (issue 9: the batching thread spinning at its
    /// first "pixel values", a loader thread spinning beside it).
    fn start(load: impl FnOnce() -> Result<OpenVla> + Send + 'static, max_batch: usize, window: Duration) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Arc<OpenVla>>>(1);
        let clients = Arc::new(AtomicUsize::new(0));
        let c = clients.clone();
        std::thread::Builder::new()
            .name("openvla-batch".into())
            .spawn(move || {
                crate::model::batch::mark("loading the model");
                let model = match load() {
                    Ok(m) => Arc::new(m),
                    Err(e) => {
                        crate::model::batch::mark("failed to load");
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(model.clone()));
                run_batches(&model, &rx, &c, max_batch.max(1), window)
            })
            .map_err(|e| VlaError::Input(format!("cannot start the batching thread: {e}")))?;
        let model = ready_rx.recv().map_err(|_| VlaError::Input("the batching thread died while loading the model".into()))??;
        Ok(SharedModel { model, jobs: Mutex::new(tx), clients, max_batch })
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

fn run_batches(model: &OpenVla, rx: &mpsc::Receiver<Job>, clients: &AtomicUsize, max_batch: usize, window: Duration) {
    use crate::model::batch::{mark, stage_key};
    loop {
        mark("waiting for requests");
        let Ok(first) = rx.recv() else { break };
        let mut jobs = vec![first];
        let deadline = Instant::now() + window;
        while jobs.len() < clients.load(Ordering::SeqCst).clamp(1, max_batch) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // One forward pass per action space (normally there is one).
        let mut by_space: HashMap<String, Vec<Job>> = HashMap::new();
        for j in jobs {
            by_space.entry(j.space.clone()).or_default().push(j);
        }
        for (space, jobs) in by_space {
            mark(&format!("predicting a batch of {}", jobs.len()));
            let requests: Vec<(&RgbImage, &str)> = jobs.iter().map(|j| (&j.image, j.instruction.as_str())).collect();
            match model.predict_actions_batch(&requests, &space) {
                Ok(preds) => {
                    mark("answering");
                    for (j, p) in jobs.iter().zip(preds) {
                        let _ = j.reply.send(Ok(p));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for j in &jobs {
                        let _ = j.reply.send(Err(VlaError::Input(format!("batched prediction: {msg}"))));
                    }
                }
            }
        }
    }
    vela_runtime::diag::clear(&stage_key());
}
