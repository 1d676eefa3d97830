//! `vela bench --dora`: the preset's graph as a dora-rs dataflow instead of on the in-process
//! engine, e.g. the simulator on one machine and the policy on another.
//!
//! dora has no channel for a driver to hand out seeds episode by episode, so the simulator
//! runs a contiguous seed range by itself (`auto_reset`, `seed`, `episodes`): the same
//! episodes `--parallel 1` runs in-process. The simulator publishes each episode's figures;
//! its runner writes them to the events file the launcher tails, and this side turns them
//! into the same records, stats file and report as the in-process bench. The final-frame grid
//! is missing from the report, because frames stay inside the dataflow.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use vela_dora::launch::{self, LaunchOptions};

use super::{progress_bar, record, update_bar, BenchStats, EpisodeRecord, Plan, RunArgs};

/// The simulator's latest `sent` count (from the stats its runner writes about once a second),
/// when it last changed, and whether it ever did: the watchdog's start-up and stall limits
/// are measured from these.
struct Progress {
    sent: u64,
    since: Instant,
    stepped: bool,
}

pub(super) fn run(plan: &Plan, args: &RunArgs, todo: VecDeque<u64>, done: &mut Vec<EpisodeRecord>, wall_before: f64, t0: Instant) -> Result<()> {
    let Some(&first) = todo.front() else { return Ok(()) };
    let count = todo.len() as u64;
    if todo.iter().copied().ne(first..first + count) {
        bail!("--dora runs a contiguous range of episodes; this --resume would leave gaps (finish it without --dora)");
    }
    let mut graph = plan.graph.clone();
    let sim = graph.nodes.iter_mut().find(|n| n.name == plan.sim).expect("plan found the simulator");
    sim.params.insert("seed".into(), json!(args.seed + first));
    sim.params.insert("auto_reset".into(), json!(true));
    sim.params.insert("episodes".into(), json!(count));
    let name = format!("bench-{}", plan.config.preset);
    let df = args.placement.export(&name, &graph).with_context(|| format!("exporting preset '{}' for dora", plan.config.preset))?;
    let yaml = std::env::temp_dir().join(format!("vela-{name}-{}.yml", std::process::id()));
    std::fs::write(&yaml, df.to_yaml()).with_context(|| format!("writing {}", yaml.display()))?;
    let opts = LaunchOptions {
        cli: launch::find_cli()?,
        via: args.dora_via,
        timeout: None,
        name: format!("vela-bench-{}", std::process::id()),
        verbose: std::env::var_os("VELA_DORA_VERBOSE").is_some(),
        coordinator_port: None,
    };
    tracing::info!("benchmarking on dora: {} dora nodes, episodes {first}..{} ({})", df.nodes.len(), first + count, yaml.display());

    // Ctrl-C ends the dataflow the way a timeout does; the finished episodes stay saved.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    flag.store(true, Ordering::SeqCst);
                }
            })
        });
    }

    let bar = progress_bar(args, done);
    let stall = (args.stall_timeout > 0).then(|| Duration::from_secs(args.stall_timeout));
    let startup = (args.startup_timeout > 0).then(|| Duration::from_secs(args.startup_timeout));
    let started = Instant::now();
    let mut seen = 0usize;
    let mut progress = Progress { sent: 0, since: Instant::now(), stepped: false };
    let mut failure: Option<anyhow::Error> = None;
    let report = launch::run_watched(&yaml, &opts, |r| {
        if let Some(values) = r.outputs.get(&plan.sim) {
            for v in &values[seen..] {
                let Some(seed) = v.get("seed").and_then(|s| s.as_u64()) else { continue };
                let index = seed.wrapping_sub(args.seed);
                match record(v, index, &plan.config.variant) {
                    Ok(rec) => done.push(rec),
                    Err(e) => {
                        failure = Some(e);
                        return Some("an unreadable episode record".into());
                    }
                }
                if let Some(p) = &args.save_stats {
                    let s = BenchStats::new(plan.config.clone(), done.clone(), wall_before + t0.elapsed().as_secs_f64(), vela_runtime::bench::machine_description());
                    if let Err(e) = s.save(p) {
                        failure = Some(e);
                        return Some("the stats file could not be written".into());
                    }
                }
                update_bar(&bar, done);
            }
            seen = values.len();
        }
        if !r.failed.is_empty() {
            let detail: Vec<String> = r.failed.iter().map(|(n, e)| format!("{n}: {e}")).collect();
            failure = Some(anyhow::anyhow!("nodes failed on dora: {}", detail.join("; ")));
            return Some("a node failed".into());
        }
        if interrupted.load(Ordering::SeqCst) {
            bar.println("interrupted: keeping the finished episodes");
            return Some("interrupted".into());
        }
        // The simulator sends a frame per step: its sent count moving means the episode moves.
        if let Some(s) = r.nodes.get(&plan.sim) {
            if s.sent != progress.sent {
                progress.stepped |= progress.sent > 0;
                progress = Progress { sent: s.sent, since: Instant::now(), stepped: progress.stepped };
            }
        }
        if !progress.stepped && startup.is_some_and(|l| started.elapsed() > l) {
            failure = Some(anyhow::anyhow!(
                "the dataflow has made no step {:.0} s after the start: a node never came up or the policy never answered \
                 (finished episodes are saved; --resume continues, --startup-timeout changes the limit)",
                started.elapsed().as_secs_f64()
            ));
            return Some("no step since the start".into());
        }
        if progress.stepped && stall.is_some_and(|l| progress.since.elapsed() > l) {
            failure = Some(anyhow::anyhow!(
                "the simulator made no step for {:.0} s: the policy stopped answering \
                 (finished episodes are saved; --resume continues, --stall-timeout changes the limit)",
                progress.since.elapsed().as_secs_f64()
            ));
            return Some("stalled".into());
        }
        None
    });
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&yaml);
    let report = report.context("running the dataflow on dora")?;
    tracing::info!("dataflow ended: {}", report.ended);
    if let Some(e) = failure {
        return Err(e);
    }
    if !report.failed.is_empty() {
        let detail: Vec<String> = report.failed.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        bail!("nodes failed on dora: {}", detail.join("; "));
    }
    if report.ended != "interrupted" && (done.len() as u64) < first + count {
        let missing = (first + count) - done.len() as u64;
        tracing::warn!("the dataflow ended ({}) with {missing} episodes not run", report.ended);
    }
    Ok(())
}
