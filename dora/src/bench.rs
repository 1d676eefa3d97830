//! Frame latency and throughput through the in-process engine and through dora, on
//! the same machine in the same run: `BenchFrames → LatencyProbe`, once at a fixed
//! rate (latency) and once as fast as the transport takes frames (throughput).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vela_runtime::{EdgeSpec, Engine, EngineEvent, GraphSpec, NodeSpec, Registry};

use crate::launch::{self, LaunchOptions, Via};
use crate::{export, ExportOptions};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Export(#[from] crate::ExportError),
    #[error("{0}")]
    Launch(#[from] launch::LaunchError),
    #[error("{0}")]
    Engine(#[from] vela_runtime::EngineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{transport}: the probe did not report ({detail}); were frames lost?")]
    NoReport { transport: &'static str, detail: String },
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub frames: u64,
    /// Rate of the latency run; the throughput run sends as fast as it can.
    pub rate_hz: f64,
    /// Square RGB8 frames of this side.
    pub size: u32,
    pub via: Via,
    pub runner: PathBuf,
    pub runner_args: Option<String>,
}

/// The measured graph. The edge is lossless, so every frame is counted.
pub fn graph(size: u32, rate_hz: f64, frames: u64) -> GraphSpec {
    GraphSpec {
        nodes: vec![
            NodeSpec::new("frames", "BenchFrames")
                .param("width", size)
                .param("height", size)
                .param("rate_hz", rate_hz)
                .param("count", frames),
            NodeSpec::new("probe", "LatencyProbe").param("expect", frames),
        ],
        edges: vec![EdgeSpec::new("frames.image", "probe.in")],
    }
}

/// Runs `graph` on the in-process engine; returns what the probe published.
pub fn in_process(graph: &GraphSpec, registry: &Registry) -> Result<Value, BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let engine = Engine::new(Arc::new(registry.clone()));
        engine.load(graph).await?;
        let mut events = engine.subscribe();
        engine.start().await;
        let found = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                match events.recv().await {
                    Ok(EngineEvent::Output { node, value }) if node == "probe" => return Some(value),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    _ => {}
                }
            }
        })
        .await;
        engine.stop().await;
        found.ok().flatten().ok_or(BenchError::NoReport { transport: "in-process", detail: "120 s passed".into() })
    })
}

/// Runs `graph` on dora through the CLI; returns what the probe published.
pub fn on_dora(graph: &GraphSpec, registry: &Registry, cfg: &BenchConfig, cli: &std::path::Path) -> Result<Value, BenchError> {
    let opts = ExportOptions { runner: cfg.runner.clone(), runner_args: cfg.runner_args.clone(), ..Default::default() };
    let df = export("dora-bench", graph, registry, &opts)?;
    let yaml = std::env::temp_dir().join(format!("vela-dora-bench-{}.yml", std::process::id()));
    std::fs::write(&yaml, df.to_yaml())?;
    let lo = LaunchOptions {
        cli: cli.into(),
        via: cfg.via,
        timeout: Some(Duration::from_secs(120)),
        name: "vela-dora-bench".into(),
        verbose: false,
        coordinator_port: None,
    };
    let report = launch::run(&yaml, &lo);
    let _ = std::fs::remove_file(&yaml);
    let report = report?;
    report
        .outputs
        .get("probe")
        .and_then(|v| v.first())
        .cloned()
        .ok_or(BenchError::NoReport { transport: "dora", detail: report.ended })
}

fn row(transport: &str, mode: &str, cfg: &BenchConfig, rate_hz: f64, figures: Value) -> Value {
    let bytes = cfg.size as u64 * cfg.size as u64 * 3;
    let mut row = json!({ "transport": transport, "mode": mode, "rate_hz": rate_hz, "frames": cfg.frames,
        "payload": format!("image {0}x{0} rgb8", cfg.size), "payload_bytes": bytes });
    if let (Some(row), Some(f)) = (row.as_object_mut(), figures.as_object()) {
        row.extend(f.clone());
    }
    row
}

/// Both modes, both transports; `registry` must know `BenchFrames` and `LatencyProbe`.
pub fn run(cfg: &BenchConfig, registry: &Registry, cli: &std::path::Path) -> Result<Vec<Value>, BenchError> {
    let mut rows = Vec::new();
    for (mode, hz) in [("latency", cfg.rate_hz), ("throughput", 0.0)] {
        let g = graph(cfg.size, hz, cfg.frames);
        tracing::info!("{mode}: in-process");
        rows.push(row("in-process", mode, cfg, hz, in_process(&g, registry)?));
        tracing::info!("{mode}: dora");
        rows.push(row("dora", mode, cfg, hz, on_dora(&g, registry, cfg, cli)?));
    }
    Ok(rows)
}

/// CPU model and core count, for benchmark files (`vela` passes its own, same format).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores, {}", std::env::consts::ARCH)
}

pub fn print(rows: &[Value]) {
    for r in rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let l = |k: &str| r["latency_us"][k].as_f64().unwrap_or(0.0);
        println!(
            "{:<11} {:<10} {:>5} frames  p50 {:>8.1} µs  p99 {:>8.1} µs  {:>7.0} msg/s {:>8.1} MB/s",
            r["transport"].as_str().unwrap_or(""),
            r["mode"].as_str().unwrap_or(""),
            r["messages"].as_u64().unwrap_or(0),
            l("p50"),
            l("p99"),
            f("msgs_per_s"),
            f("mb_per_s"),
        );
    }
}
