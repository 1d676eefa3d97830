//! The runtime benchmark behind `vela bench-runtime`: messages through a chain of
//! real nodes on the real executor, measuring hop latency and throughput.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::engine::{Engine, EngineEvent};
use crate::graph::{EdgeSpec, GraphSpec, NodeSpec};
use crate::message::{now_ns, Image, Message, Payload};
use crate::node::{Context, Node, NodeError};
use crate::registry::Registry;
use crate::types::{DataType, NodeDescriptor, ParamKind, ParamSpec};

/// What travels through the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchPayload {
    /// A JSON number: the engine's own overhead.
    Small,
    /// An RGB8 frame of this size, shared (never copied) along the chain.
    Image { width: u32, height: u32 },
}

impl BenchPayload {
    fn label(&self) -> String {
        match self {
            BenchPayload::Small => "small (json number)".into(),
            BenchPayload::Image { width, height } => format!("image {width}x{height} rgb8"),
        }
    }
    fn data_type(&self) -> DataType {
        match self {
            BenchPayload::Small => DataType::Json,
            BenchPayload::Image { .. } => DataType::Image,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    pub payload: BenchPayload,
    /// Nodes in the chain (source and sink included); hops = nodes − 1.
    pub nodes: usize,
    pub messages: usize,
    /// `Some(rate)` paces the source (latency); `None` floods it (throughput).
    pub rate_hz: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub payload: String,
    pub mode: &'static str,
    pub nodes: usize,
    pub hops: usize,
    pub messages: usize,
    pub rate_hz: Option<f64>,
    /// Per-hop latency: each message's end-to-end latency divided by the hop count.
    pub hop_p50_us: f64,
    pub hop_p99_us: f64,
    pub e2e_p50_us: f64,
    pub e2e_p99_us: f64,
    pub e2e_max_us: f64,
    pub throughput_msgs_per_s: f64,
    pub throughput_mb_per_s: f64,
    /// Every frame the sink got shared its buffer with the source's frame.
    pub zero_copy: bool,
}

#[derive(Default)]
struct Probe {
    latencies_ns: Vec<u64>,
    source_ptr: usize,
    copies: usize,
    first_send: Option<Instant>,
    last_recv: Option<Instant>,
}

struct Source {
    payload: BenchPayload,
    frame: Option<Bytes>,
    remaining: usize,
    interval: Duration,
    probe: Arc<Mutex<Probe>>,
}

impl Node for Source {
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }
    fn tick_interval(&self) -> Option<Duration> {
        Some(if self.remaining == 0 { Duration::from_secs(3600) } else { self.interval })
    }
    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.remaining == 0 {
            return Ok(());
        }
        self.remaining -= 1;
        self.probe.lock().unwrap().first_send.get_or_insert_with(Instant::now);
        match self.payload {
            BenchPayload::Small => ctx.send("out", json!(self.remaining)),
            BenchPayload::Image { width, height } => {
                let data = self.frame.clone().expect("frame allocated");
                ctx.send("out", Image { width, height, data, timestamp: now_ns() })
            }
        }
    }
}

struct Relay;

impl Node for Relay {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        ctx.forward("out", msg)
    }
}

struct Sink {
    expect: usize,
    got: usize,
    probe: Arc<Mutex<Probe>>,
}

impl Node for Sink {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        let lat = now_ns().saturating_sub(msg.timestamp);
        let mut p = self.probe.lock().unwrap();
        p.latencies_ns.push(lat);
        if let Payload::Image(img) = &msg.payload {
            if img.data.as_ptr() as usize != p.source_ptr {
                p.copies += 1;
            }
        }
        p.last_recv = Some(Instant::now());
        drop(p);
        self.got += 1;
        if self.got == self.expect {
            ctx.finish("done");
        }
        Ok(())
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx] as f64
}

/// Runs one configuration. Needs a multi-threaded tokio runtime.
pub async fn run_chain(cfg: &BenchConfig) -> Result<BenchResult, String> {
    if cfg.nodes < 2 {
        return Err("a chain needs at least 2 nodes".into());
    }
    let probe = Arc::new(Mutex::new(Probe::default()));
    let frame = match cfg.payload {
        BenchPayload::Image { width, height } => {
            let b = Bytes::from(vec![127u8; width as usize * height as usize * 3]);
            probe.lock().unwrap().source_ptr = b.as_ptr() as usize;
            Some(b)
        }
        BenchPayload::Small => None,
    };
    let ty = cfg.payload.data_type();
    let mut reg = Registry::new();
    let (p1, p2) = (probe.clone(), probe.clone());
    let (payload, messages) = (cfg.payload, cfg.messages);
    let interval = cfg.rate_hz.map(|r| Duration::from_secs_f64(1.0 / r)).unwrap_or(Duration::ZERO);
    reg.register(
        NodeDescriptor::new("BenchSource", "Testing", "Bench source")
            .output("out", ty, "")
            .param(ParamSpec::new("unused", ParamKind::Bool, false, "")),
        move |_| {
            Ok(Box::new(Source {
                payload,
                frame: frame.clone(),
                remaining: messages,
                interval,
                probe: p1.clone(),
            }))
        },
    );
    reg.register(NodeDescriptor::new("BenchRelay", "Testing", "Bench relay").input("in", &[ty], "").output("out", ty, ""), |_| {
        Ok(Box::new(Relay))
    });
    reg.register(NodeDescriptor::new("BenchSink", "Testing", "Bench sink").input("in", &[ty], ""), move |_| {
        Ok(Box::new(Sink { expect: messages, got: 0, probe: p2.clone() }))
    });

    let names: Vec<String> = (0..cfg.nodes).map(|i| format!("n{i}")).collect();
    let mut graph = GraphSpec::default();
    for (i, name) in names.iter().enumerate() {
        let ty = if i == 0 {
            "BenchSource"
        } else if i + 1 == cfg.nodes {
            "BenchSink"
        } else {
            "BenchRelay"
        };
        graph.nodes.push(NodeSpec::new(name, ty));
        if i > 0 {
            graph.edges.push(EdgeSpec::new(&format!("{}.out", names[i - 1]), &format!("{name}.in")));
        }
    }
    let engine = Engine::new(Arc::new(reg));
    engine.load(&graph).await.map_err(|e| e.to_string())?;
    let mut events = engine.subscribe();
    engine.start().await;
    let budget = Duration::from_secs(120);
    let done = tokio::time::timeout(budget, async {
        loop {
            match events.recv().await {
                Ok(EngineEvent::Finished { .. }) => return Ok(()),
                Ok(EngineEvent::Status { node, status: crate::engine::NodeStatus::Failed { error } }) => {
                    return Err(format!("{node} failed: {error}"))
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    engine.stop().await;
    match done {
        Ok(r) => r?,
        Err(_) => return Err(format!("benchmark did not finish within {budget:?}")),
    }

    let p = probe.lock().unwrap();
    // The first messages include task start-up; leave them out.
    let skip = p.latencies_ns.len() / 20;
    let mut lat: Vec<u64> = p.latencies_ns[skip..].to_vec();
    lat.sort_unstable();
    let hops = cfg.nodes - 1;
    let secs = match (p.first_send, p.last_recv) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let tput = if secs > 0.0 { p.latencies_ns.len() as f64 / secs } else { 0.0 };
    let bytes_per_msg = match cfg.payload {
        BenchPayload::Small => 8.0,
        BenchPayload::Image { width, height } => (width * height * 3) as f64,
    };
    Ok(BenchResult {
        payload: cfg.payload.label(),
        mode: if cfg.rate_hz.is_some() { "latency (paced)" } else { "throughput (flood)" },
        nodes: cfg.nodes,
        hops,
        messages: cfg.messages,
        rate_hz: cfg.rate_hz,
        hop_p50_us: percentile(&lat, 0.5) / hops as f64 / 1e3,
        hop_p99_us: percentile(&lat, 0.99) / hops as f64 / 1e3,
        e2e_p50_us: percentile(&lat, 0.5) / 1e3,
        e2e_p99_us: percentile(&lat, 0.99) / 1e3,
        e2e_max_us: lat.last().copied().unwrap_or(0) as f64 / 1e3,
        throughput_msgs_per_s: tput,
        throughput_mb_per_s: tput * bytes_per_msg / 1e6,
        zero_copy: matches!(cfg.payload, BenchPayload::Small) || p.copies == 0,
    })
}

/// The standard set: small messages, 224² and 512² frames, each paced and flooded,
/// through a 5-node chain.
pub fn standard_suite(messages: usize) -> Vec<BenchConfig> {
    let payloads =
        [BenchPayload::Small, BenchPayload::Image { width: 224, height: 224 }, BenchPayload::Image { width: 512, height: 512 }];
    let mut v = Vec::new();
    for payload in payloads {
        v.push(BenchConfig { payload, nodes: 5, messages, rate_hz: Some(1000.0) });
        v.push(BenchConfig { payload, nodes: 5, messages, rate_hz: None });
    }
    v
}

/// CPU model and core count, so benchmark files say where they were measured.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores, {}", std::env::consts::ARCH)
}
