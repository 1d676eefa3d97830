//! Benchmarks started from the browser: N episodes of a MimicGen node of the live graph,
//! counted from the node's own episode results and ending in the same stats file and HTML
//! report as `vela bench` (whose code writes them).
//!
//! The graph belongs to the user, so a run borrows it: it starts the graph only if it was
//! stopped (and stops it again afterwards) and puts back the simulator parameters it
//! changes. Seeds are handed out one episode at a time (`auto_reset` off), as `vela bench`
//! does, so a studio run of seed S is the same episodes as `vela bench --seed S`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use vela_runtime::protocol::{BenchEpisode, BenchRun, ServerMsg};
use vela_runtime::{AlertLevel, EngineEvent, NodeStatus};

use super::{encode, Studio};
use crate::bench::{report, BenchStats, EpisodeRecord, RunConfig};

/// Most episodes one run may ask for.
const MAX_EPISODES: u64 = 100_000;
/// How often a run checks that its node is still in the graph and running.
const CHECK_PERIOD: Duration = Duration::from_millis(500);
/// Consecutive checks that must find the node not running before the run gives up; one
/// alone may be a restart in progress.
const NOT_RUNNING_CHECKS: u32 = 3;

/// What a run changed in the user's graph, to put back when it ends.
#[derive(Default)]
struct Borrowed {
    auto_reset: Option<Value>,
    framerate: Option<Value>,
    started_graph: bool,
}

/// A run in progress: the wire view the tabs see and the records the report is made of.
struct Run {
    studio: Arc<Studio>,
    run: BenchRun,
    records: Vec<EpisodeRecord>,
    config: RunConfig,
    borrowed: Borrowed,
    t0: Instant,
}

impl Studio {
    pub(super) async fn bench_start(self: &Arc<Self>, node: String, episodes: u64, seed: u64, fast: bool) -> Result<(), String> {
        if episodes == 0 || episodes > MAX_EPISODES {
            return Err(format!("a benchmark runs 1 to {MAX_EPISODES} episodes, not {episodes}"));
        }
        let graph = self.engine.graph().await;
        let spec = graph.node(&node).ok_or_else(|| format!("no node named '{node}' in the graph to benchmark"))?;
        if spec.type_name != "MimicGen" {
            return Err(format!("'{node}' is a {} node; a benchmark counts the episodes of a MimicGen node", spec.type_name));
        }
        let stop = {
            let mut slot = self.bench.lock().unwrap();
            if slot.is_some() {
                return Err("a benchmark is already running; stop it first".into());
            }
            let (tx, rx) = watch::channel(false);
            *slot = Some(tx);
            rx
        };
        let mut borrowed = Borrowed::default();
        let setup = self.bench_setup(&node, seed, fast, &mut borrowed).await;
        let max_steps = match setup {
            Ok(m) => m,
            Err(e) => {
                self.give_back(&node, &borrowed).await;
                *self.bench.lock().unwrap() = None;
                return Err(e);
            }
        };
        // Subscribed only now: results of episodes from before the reset are not this run's.
        let events = self.engine.subscribe();
        let (model, quantization, variant) = crate::bench::describe_run(&self.registry, &graph, &node);
        let preset = self.preset.lock().unwrap().clone();
        let config = RunConfig {
            preset: preset.clone().unwrap_or_else(|| "(unsaved graph)".into()),
            variant,
            episodes,
            max_steps,
            seed,
            parallel: 1,
            model,
            quantization,
        };
        let run = BenchRun { node, preset, episodes, seed, max_steps, results: vec![], running: true, elapsed_s: 0.0 };
        let run = Run { studio: self.clone(), run, records: vec![], config, borrowed, t0: Instant::now() };
        run.studio.bench_broadcast(ServerMsg::BenchProgress { run: run.run.clone() });
        tokio::spawn(run.drive(events, stop));
        Ok(())
    }

    pub(super) fn bench_stop(&self) -> Result<(), String> {
        match self.bench.lock().unwrap().as_ref() {
            Some(tx) => {
                let _ = tx.send(true);
                Ok(())
            }
            None => Err("no benchmark is running".into()),
        }
    }

    /// Starts the graph if needed and puts the simulator at the first seed; returns its horizon.
    async fn bench_setup(&self, node: &str, seed: u64, fast: bool, borrowed: &mut Borrowed) -> Result<u32, String> {
        let e = |e: vela_runtime::EngineError| e.to_string();
        let params = self.engine.params(node).await.ok_or_else(|| format!("no node named '{node}'"))?;
        let horizon = params.u64("horizon").map_err(|e| e.to_string())? as u32;
        if !self.engine.is_running().await {
            self.engine.start().await;
            borrowed.started_graph = true;
            self.push_state().await;
        }
        match self.engine.status(node).await {
            Some(NodeStatus::Running) => {}
            Some(NodeStatus::Failed { error }) => return Err(format!("node '{node}' cannot run: {error}")),
            _ => return Err(format!("node '{node}' is not running")),
        }
        borrowed.auto_reset = params.get("auto_reset").ok().cloned();
        self.engine.set_param(node, "auto_reset", json!(false)).await.map_err(e)?;
        let framerate = params.get("framerate").ok().cloned();
        if fast && framerate.as_ref().and_then(Value::as_f64) != Some(0.0) {
            borrowed.framerate = framerate;
            self.engine.set_param(node, "framerate", json!(0.0)).await.map_err(e)?;
        }
        // Fresh counters in the node's own summary, then the first seed.
        self.engine.command(node, "reset_stats", json!({})).await.map_err(e)?;
        self.engine.command(node, "reset_episode", json!({ "seed": seed })).await.map_err(e)?;
        Ok(horizon)
    }

    /// Puts back what a run changed (best effort). Parameters stay as they are on a node
    /// that is gone or failed: setting one would rebuild a failed node and hide its error.
    async fn give_back(&self, node: &str, borrowed: &Borrowed) {
        let restore = !matches!(self.engine.status(node).await, None | Some(NodeStatus::Failed { .. }));
        let params = [("auto_reset", &borrowed.auto_reset), ("framerate", &borrowed.framerate)];
        for (param, value) in params.into_iter().filter(|_| restore) {
            if let Some(v) = value {
                if let Err(e) = self.engine.set_param(node, param, v.clone()).await {
                    tracing::debug!("benchmark could not restore {node}.{param}: {e}");
                }
            }
        }
        if borrowed.started_graph && self.engine.is_running().await {
            self.engine.stop().await;
            self.push_state().await;
            // Stats are pushed only while running: one last time, so the nodes' summaries
            // count the run's final episode.
            self.broadcast(&ServerMsg::Stats { nodes: self.engine.stats().await });
        }
    }

    /// Sends to every tab and keeps it for tabs that connect later.
    fn bench_broadcast(&self, msg: ServerMsg) {
        let text = encode(&msg);
        *self.last_bench.lock().unwrap() = Some(text.clone());
        let _ = self.to_all.send(text);
    }
}

impl Run {
    async fn drive(mut self, mut events: broadcast::Receiver<EngineEvent>, mut stop: watch::Receiver<bool>) {
        let node = self.run.node.clone();
        let mut check = tokio::time::interval(CHECK_PERIOD);
        let mut not_running = 0;
        let ended: Result<String, String> = loop {
            let done = self.run.results.len() as u64;
            if done >= self.run.episodes {
                break Ok(format!("all {done} episodes done"));
            }
            tokio::select! {
                _ = stop.changed() => break Err(format!("stopped from the studio after {done} of {} episodes", self.run.episodes)),
                ev = events.recv() => match ev {
                    Ok(EngineEvent::Output { node: n, value }) if n == node => {
                        if let Err(e) = self.episode(&value).await {
                            break Err(e);
                        }
                    }
                    // The node was rebuilt (a restart, a start-up parameter): its episode began anew.
                    Ok(EngineEvent::Status { node: n, status: NodeStatus::Running }) if n == node => {
                        if let Err(e) = self.start_episode().await {
                            break Err(e);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // An episode's result may be among the lost events: run it again (same seed, same episode).
                        tracing::warn!("benchmark fell {n} engine events behind; repeating the current episode");
                        if let Err(e) = self.start_episode().await {
                            break Err(e);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break Err("the engine shut down".into()),
                },
                _ = check.tick() => match self.studio.engine.status(&node).await {
                    None => break Err(format!("node '{node}' was removed from the graph")),
                    Some(NodeStatus::Failed { error }) => break Err(format!("node '{node}' failed: {error}")),
                    Some(NodeStatus::Running) => not_running = 0,
                    Some(_) => {
                        not_running += 1;
                        if not_running >= NOT_RUNNING_CHECKS {
                            break Err("the graph was stopped".into());
                        }
                    }
                },
            }
        };
        self.finish(ended).await;
    }

    /// Counts one `episode_stats` output if it is the episode this run is waiting for.
    async fn episode(&mut self, value: &Value) -> Result<(), String> {
        let index = self.run.results.len() as u64;
        let want = self.run.seed + index;
        if value.get("seed").and_then(Value::as_u64) != Some(want) {
            tracing::debug!("benchmark waiting for seed {want} ignores {value}");
            return Ok(());
        }
        let rec = crate::bench::record(value, index, &self.config.variant).map_err(|e| format!("{e:#}"))?;
        self.run.results.push(BenchEpisode { seed: rec.seed, success: rec.success, steps: rec.steps });
        self.records.push(rec);
        self.run.elapsed_s = self.t0.elapsed().as_secs_f64();
        self.studio.bench_broadcast(ServerMsg::BenchProgress { run: self.run.clone() });
        if (self.run.results.len() as u64) < self.run.episodes {
            self.start_episode().await?;
        }
        Ok(())
    }

    /// (Re)starts the episode the run is waiting for.
    async fn start_episode(&self) -> Result<(), String> {
        let seed = self.run.seed + self.run.results.len() as u64;
        let node = &self.run.node;
        self.studio
            .engine
            .command(node, "reset_episode", json!({ "seed": seed }))
            .await
            .map_err(|e| format!("starting the episode of seed {seed}: {e}"))
    }

    async fn finish(mut self, ended: Result<String, String>) {
        let studio = self.studio.clone();
        studio.give_back(&self.run.node, &self.borrowed).await;
        self.run.running = false;
        self.run.elapsed_s = self.t0.elapsed().as_secs_f64();
        let complete = ended.is_ok();
        let reason = match ended {
            Ok(r) | Err(r) => r,
        };
        let (summary, report_url) = if self.records.is_empty() {
            (None, None)
        } else {
            let stats = BenchStats::new(self.config.clone(), std::mem::take(&mut self.records), self.run.elapsed_s, vela_runtime::bench::machine_description());
            let summary = stats.summary.clone();
            let dir = studio.reports.clone();
            let name = report_name(&self.config.preset);
            let url = match tokio::task::spawn_blocking(move || write_report(dir, &name, &stats)).await {
                Ok(Ok(url)) => Some(url),
                Ok(Err(e)) => {
                    studio.broadcast(&ServerMsg::Alert { level: AlertLevel::Error, node: Some(self.run.node.clone()), text: format!("benchmark report: {e:#}") });
                    None
                }
                Err(e) => {
                    studio.broadcast(&ServerMsg::Alert { level: AlertLevel::Error, node: None, text: format!("benchmark report: {e}") });
                    None
                }
            };
            (Some(Box::new(summary)), url)
        };
        let k = self.run.successes();
        let n = self.run.results.len();
        let level = if complete { AlertLevel::Info } else { AlertLevel::Warning };
        let rate = if n > 0 { format!(": {k}/{n} successes ({:.0}%)", 100.0 * k as f64 / n as f64) } else { String::new() };
        studio.broadcast(&ServerMsg::Alert { level, node: Some(self.run.node.clone()), text: format!("benchmark ended, {reason}{rate}") });
        // Free the slot before telling the tabs, so a Start right after the message works.
        *studio.bench.lock().unwrap() = None;
        studio.bench_broadcast(ServerMsg::BenchFinished { run: self.run, complete, reason, summary, report_url });
    }
}

/// `2026-11-26T10-15-00Z-mimicgen-expert`: sorts by time, says what ran.
fn report_name(preset: &str) -> String {
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
    let what: String = preset.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{when}-{}", what.trim_matches('_'))
}

/// Writes `stats.json` and the report into a new folder under `reports`; returns its URL.
fn write_report(reports: PathBuf, name: &str, stats: &BenchStats) -> anyhow::Result<String> {
    use anyhow::Context as _;
    // Two runs in one second get their own folders.
    let (dir, name) = (1..)
        .map(|i| if i == 1 { name.to_string() } else { format!("{name}-{i}") })
        .map(|n| (reports.join(&n), n))
        .find(|(d, _)| !d.exists())
        .expect("some name is free");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stats_file = dir.join("stats.json");
    stats.save(&stats_file)?;
    report::write(&dir, stats, Some(&stats_file))?;
    Ok(format!("/reports/{name}/index.html"))
}
