//! `vela run`: a preset's graph, headless.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::sync::broadcast::error::RecvError;
use vela_runtime::{AlertLevel, Engine, EngineEvent, NodeStatus, PresetStore};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Preset name (from the preset folder) or path to a preset file.
    #[arg(long)]
    preset: String,
    /// Print a stats table every this many seconds (0 = only at the end).
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    stats_every: f64,
    /// Stop after this many seconds even if no node ended the run.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Write the final per-node stats as JSON here.
    #[arg(long, value_name = "FILE.json")]
    stats_json: Option<PathBuf>,
}

pub fn run(store: &PresetStore, args: RunArgs) -> Result<()> {
    let registry = Arc::new(crate::registry::build());
    let (preset, path, warnings) = store.load(&args.preset)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    preset.validate(&registry, &path)?;
    if args.stats_every < 0.0 || !args.stats_every.is_finite() {
        bail!("--stats-every must be 0 or a positive number of seconds");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let engine = Engine::new(registry);
        engine.load(&preset.graph()).await?;
        let mut events = engine.subscribe();
        tracing::info!("running '{}' from {} ({} nodes)", preset.name, path.display(), preset.nodes.len());
        engine.start().await;

        let deadline = args.timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let every = (args.stats_every > 0.0).then(|| Duration::from_secs_f64(args.stats_every));
        let mut ticker = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        ticker.tick().await;
        let mut failed = BTreeSet::new();
        let reason = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break "interrupted".to_string(),
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                    break "timeout reached".to_string()
                }
                _ = ticker.tick(), if every.is_some() => print_stats(&engine).await,
                ev = events.recv() => match ev {
                    Ok(EngineEvent::Finished { node, reason }) => break format!("{node}: {reason}"),
                    Ok(EngineEvent::Status { node, status: NodeStatus::Failed { error } }) => {
                        tracing::error!("node '{node}' failed: {error} (the rest of the graph keeps running)");
                        failed.insert(node);
                    }
                    Ok(EngineEvent::Alert { node, level, text }) => {
                        let who = node.unwrap_or_default();
                        match level {
                            AlertLevel::Info => tracing::info!("{who}: {text}"),
                            AlertLevel::Warning => tracing::warn!("{who}: {text}"),
                            AlertLevel::Error => tracing::error!("{who}: {text}"),
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break "engine closed".to_string(),
                }
            }
        };
        engine.drain_and_stop(Duration::from_secs(2)).await;
        tracing::info!("run ended: {reason}");
        print_stats(&engine).await;
        if let Some(p) = &args.stats_json {
            let stats = engine.stats().await;
            let doc = serde_json::json!({ "preset": preset.name, "ended": reason, "nodes": stats });
            std::fs::write(p, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("writing {}", p.display()))?;
        }
        if !failed.is_empty() {
            bail!("nodes failed during the run: {}", failed.into_iter().collect::<Vec<_>>().join(", "));
        }
        Ok(())
    })
}

async fn print_stats(engine: &Engine) {
    let stats = engine.stats().await;
    println!("{:<16} {:>8} {:>9} {:>8} {:>7} {:>6}  summary", "node", "fps", "lat ms", "in", "queue", "drop");
    for (name, s) in stats {
        let status = match engine.status(&name).await {
            Some(NodeStatus::Failed { .. }) => " FAILED",
            _ => "",
        };
        println!(
            "{:<16} {:>8.1} {:>9.3} {:>8} {:>7} {:>6}  {}{}",
            name, s.fps, s.latency_ms, s.received, s.queue_depth, s.dropped, s.summary, status
        );
    }
}
