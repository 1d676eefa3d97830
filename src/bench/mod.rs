//! `vela bench`: success-rate benchmarks of a preset's policy, headless.
//!
//! The preset's own graph runs on the engine, as in the studio: the bench only sets the
//! simulator's episode parameters, adds a passive recorder on its outputs and hands out
//! episode seeds. `--parallel N` runs N copies of the graph whose OpenVLA nodes share one
//! model and batch their frames, so every seed is the same episode whatever N is.

mod dora;
pub mod report;
pub mod stats;
pub mod commanded;
pub mod voice;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vela_runtime::{
    Context, DataType, EdgePolicy, EdgeSpec, Engine, EngineEvent, Event, GraphSpec, Image, Message, Node, NodeDescriptor,
    NodeError, NodeStatus, ParamKind, ParamSpec, Payload, PortRef, PresetStore, Registry,
};

pub use stats::{wilson, BenchStats, EpisodeRecord, RunConfig};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// Side-by-side table of stats files (e.g. INT4 vs FP8 vs FP16), with the seeds whose
    /// outcome differs from the first file.
    Compare {
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
    },
    /// Spoken commands through a voice preset's graph: the time from the end of each command's
    /// speech to the first action computed with the new instruction (VAD, Whisper, simulator
    /// frame and policy shares).
    Voice(voice::VoiceArgs),
    /// Episodes of a voice preset's language variant, each started by a spoken (or typed)
    /// command that names which cube goes on which: the share stacked in the commanded order.
    Commanded(commanded::CommandedArgs),
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// Preset name (from the preset folder) or path to a preset file with a MimicGen node.
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub episodes: u64,
    /// Steps (counted from the policy's first action) before an episode fails.
    #[arg(long, default_value_t = 200)]
    pub max_steps: u32,
    /// Seed of the first episode; episode i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Environments run at once; their frames go through one batched model.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Stats file (JSON), rewritten after every episode.
    #[arg(long, value_name = "FILE.json")]
    pub save_stats: Option<PathBuf>,
    /// Write an HTML report with plots and final frames into this folder.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Continue the run saved in --save-stats (same preset, seed, steps and variant).
    #[arg(long)]
    pub resume: bool,
    /// Task variant instead of the preset's (Stack_D0..Stack_D4, Stack_Lang).
    #[arg(long)]
    pub variant: Option<String>,
    /// Hide the progress bar (logs still go to stderr).
    #[arg(long)]
    pub quiet: bool,
    /// Stop the run with an error when an environment makes no step for this many seconds once
    /// its policy has answered (a hung or dead policy); 0 waits forever. Finished episodes stay
    /// saved, and --resume continues.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub stall_timeout: u64,
    /// Stop the run with an error when an environment has not made its first step this many
    /// seconds after the start (a policy that never answers, a renderer that never comes up);
    /// 0 waits forever. Generous by default: a large model may load and compile for minutes.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub startup_timeout: u64,
    /// Run the preset's graph as a dora-rs dataflow (one environment; the same seeds, hence the
    /// same episodes, as in-process). Needs the dora CLI (scripts/setup-dora.sh) and a runner
    /// that knows the preset's nodes (see --runner).
    #[arg(long)]
    pub dora: bool,
    /// With --dora: a coordinator and daemon (`dora up/start`), or `dora run`.
    #[arg(long, default_value = "coordinator", value_name = "coordinator|run")]
    pub dora_via: vela_dora::launch::Via,
    #[command(flatten)]
    pub placement: crate::dora::Placement,
}

pub fn run(store: &PresetStore, args: BenchArgs) -> Result<()> {
    match args.command {
        Some(BenchCommand::Compare { files }) => {
            let runs = files.iter().map(|f| BenchStats::load(f).map(|s| (f.clone(), s))).collect::<Result<Vec<_>>>()?;
            print!("{}", compare_table(&runs));
            Ok(())
        }
        Some(BenchCommand::Voice(v)) => voice::run(store, v),
        Some(BenchCommand::Commanded(c)) => commanded::run(store, c),
        None => {
            let stats = run_bench(store, args.run)?;
            let s = &stats.summary;
            println!(
                "{}/{} successes ({:.1}%, 95% CI {:.1}-{:.1}%), mean steps {}, {:.1} steps/s, {:.1} s",
                s.successes,
                s.episodes,
                s.success_pct,
                s.wilson95_pct[0],
                s.wilson95_pct[1],
                s.mean_steps_all.map_or("-".into(), |v| format!("{v:.1}")),
                s.fps,
                s.wall_s
            );
            if let Some(line) = stats::stage_line(&stats.episodes) {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// The graph as the bench runs it, and what it needs to know about it.
struct Plan {
    graph: GraphSpec,
    sim: String,
    config: RunConfig,
}

const TAP: &str = "bench_recorder";

fn plan(store: &PresetStore, registry: &Registry, args: &RunArgs) -> Result<Plan> {
    let Some(name) = &args.preset else { bail!("--preset is required (a preset name or file with a MimicGen node)") };
    if args.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    if args.max_steps == 0 {
        bail!("--max-steps must be at least 1");
    }
    if args.parallel == 0 || args.parallel > 64 {
        bail!("--parallel must be between 1 and 64, got {}", args.parallel);
    }
    if args.resume && args.save_stats.is_none() {
        bail!("--resume needs --save-stats FILE.json (the run to continue)");
    }
    if args.dora && args.parallel > 1 {
        bail!("--dora runs one environment; run several benches with different --seed ranges instead of --parallel");
    }
    if !args.dora && !args.placement.is_empty() {
        bail!("--machine, --group and --runner place nodes on dora: add --dora");
    }
    let (mut preset, path, warnings) = store.load(name).with_context(|| format!("preset '{name}'"))?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let sims: Vec<String> = preset.nodes.iter().filter(|n| n.type_name == "MimicGen").map(|n| n.name.clone()).collect();
    let sim = match sims.as_slice() {
        [one] => one.clone(),
        [] => bail!("preset '{}' ({}) has no MimicGen node to benchmark", preset.name, path.display()),
        more => bail!("preset '{}' has {} MimicGen nodes ({}); vela bench drives one", preset.name, more.len(), more.join(", ")),
    };
    let parallel = args.parallel;
    for n in preset.nodes.iter_mut() {
        if n.name == sim {
            n.params.insert("horizon".into(), json!(args.max_steps));
            n.params.insert("auto_reset".into(), json!(false));
            // Lock-step agents wait for actions anyway; built-in motions run flat out.
            n.params.insert("framerate".into(), json!(0.0));
            if let Some(v) = &args.variant {
                n.params.insert("environment".into(), json!(v));
            }
        } else if n.type_name == "OpenVLA" && parallel > 1 {
            n.params.insert("batch".into(), json!(parallel));
        }
    }
    preset.validate(registry, &path)?;
    let graph = preset.graph();
    let (model, quantization, variant) = describe_run(registry, &graph, &sim);
    Ok(Plan {
        config: RunConfig {
            preset: preset.name.clone(),
            variant,
            episodes: args.episodes,
            max_steps: args.max_steps,
            seed: args.seed,
            parallel,
            model,
            quantization,
        },
        graph,
        sim,
    })
}

/// The policy driving simulator `sim` (model, quantization) and its task variant, as the
/// stats file records them; shared with the studio's benchmark panel.
pub(crate) fn describe_run(registry: &Registry, graph: &GraphSpec, sim: &str) -> (String, Option<String>, String) {
    let resolved = |node: &str, param: &str| -> Option<Value> {
        let spec = graph.node(node)?;
        let info = registry.get(&spec.type_name)?;
        vela_runtime::resolve_params(&info.descriptor, &spec.params).ok()?.0.get(param).cloned()
    };
    let variant = resolved(sim, "environment").and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let (model, quantization) = describe_policy(graph, sim, &resolved);
    (model, quantization, variant)
}

/// What drives the simulator: an OpenVLA checkpoint, another policy node, or a built-in motion.
fn describe_policy(graph: &GraphSpec, sim: &str, resolved: &dyn Fn(&str, &str) -> Option<Value>) -> (String, Option<String>) {
    let motion = resolved(sim, "motion").and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    if motion != "agent" {
        return (format!("MimicGen motion={motion}"), None);
    }
    let feeders: Vec<&str> = graph.edges.iter().filter(|e| e.to.node == sim && e.to.port == "actions").map(|e| e.from.node.as_str()).collect();
    for f in &feeders {
        let Some(spec) = graph.node(f) else { continue };
        let param = |p: &str| resolved(f, p).and_then(|v| v.as_str().map(String::from));
        match spec.type_name.as_str() {
            "OpenVLA" => return (param("model").unwrap_or_default(), param("quantization")),
            "ConstantPolicy" => return (format!("ConstantPolicy [{}]", param("values").unwrap_or_default()), None),
            other => return (format!("{other} '{f}'"), None),
        }
    }
    ("nothing wired to the actions input".into(), None)
}

/// What the recorder tells the bench.
enum TapMsg {
    Episode { env: usize, stats: Value, frame: Option<Image> },
    /// A new simulator frame: the environment stepped (or reset).
    Step { env: usize },
}

/// A passive sink on the simulator's events and frames: forwards each episode's stats with
/// its final frame. Part of the bench, not the preset, so it is registered here.
struct Recorder {
    env: usize,
    tx: mpsc::UnboundedSender<TapMsg>,
    latest: Option<Image>,
    /// Stats whose final frame has not come in yet (the two ports are separate queues).
    waiting: Option<Value>,
}

impl Recorder {
    fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("BenchRecorder", "Utility", "Bench recorder")
            .describe("Records MimicGen episode results and final frames for `vela bench`.")
            .input("events", &[DataType::Event], "simulator events")
            .input("image", &[DataType::Image], "simulator frames")
            .param(ParamSpec::new("env", ParamKind::Int { min: Some(0), max: None }, 0, "environment index"))
    }

    fn flush_if_ready(&mut self) {
        let Some(stats) = &self.waiting else { return };
        let want = stats.get("frame_ts").and_then(Value::as_u64).unwrap_or(0);
        let frame = self.latest.as_ref().filter(|i| i.timestamp == want).cloned();
        if frame.is_some() || want == 0 {
            let stats = self.waiting.take().expect("checked above");
            let _ = self.tx.send(TapMsg::Episode { env: self.env, stats, frame });
        }
    }
}

impl Node for Recorder {
    fn on_input(&mut self, _: &str, msg: Message, _: &mut Context) -> Result<(), NodeError> {
        match msg.payload {
            Payload::Image(i) => {
                self.latest = Some(i);
                let _ = self.tx.send(TapMsg::Step { env: self.env });
            }
            Payload::Event(Event::Custom { name, data }) if name == vela_sim::node::EPISODE_STATS => self.waiting = Some(data),
            _ => return Ok(()),
        }
        self.flush_if_ready();
        Ok(())
    }
}

fn registry_with_recorder(tx: mpsc::UnboundedSender<TapMsg>) -> Registry {
    let mut r = crate::registry::build();
    r.register(Recorder::descriptor(), move |init| {
        Ok(Box::new(Recorder { env: init.params.u64("env")? as usize, tx: tx.clone(), latest: None, waiting: None }))
    });
    r
}

/// The preset's graph for environment `env`, starting at `seed`, with the recorder attached.
fn env_graph(plan: &Plan, env: usize, seed: u64) -> GraphSpec {
    let mut g = plan.graph.clone();
    if let Some(n) = g.nodes.iter_mut().find(|n| n.name == plan.sim) {
        n.params.insert("seed".into(), json!(seed));
    }
    let mut params = serde_json::Map::new();
    params.insert("env".into(), json!(env));
    g.nodes.push(vela_runtime::NodeSpec { name: TAP.into(), type_name: "BenchRecorder".into(), params, position: None });
    g.edges.push(EdgeSpec { from: PortRef::new(&plan.sim, "events"), to: PortRef::new(TAP, "events"), policy: EdgePolicy::Queue });
    g.edges.push(EdgeSpec { from: PortRef::new(&plan.sim, "image"), to: PortRef::new(TAP, "image"), policy: EdgePolicy::Latest });
    g
}

/// One episode's record from the simulator's `episode_stats` (also the studio's benchmarks).
pub(crate) fn record(stats: &Value, index: u64, variant: &str) -> Result<EpisodeRecord> {
    let f = |k: &str| stats.get(k).and_then(Value::as_f64);
    Ok(EpisodeRecord {
        index,
        seed: stats.get("seed").and_then(Value::as_u64).context("episode stats without a seed")?,
        variant: variant.to_string(),
        instruction: stats.get("instruction").and_then(Value::as_str).unwrap_or_default().to_string(),
        colours: stats.get("colours").and_then(|c| serde_json::from_value(c.clone()).ok()),
        steps: stats.get("steps").and_then(Value::as_u64).unwrap_or(0) as u32,
        success: stats.get("success").and_then(Value::as_bool).unwrap_or(false),
        policy_ms_mean: f("policy_ms_mean"),
        policy_ms_p95: f("policy_ms_p95"),
        wall_s: f("wall_s").unwrap_or(0.0),
        final_positions: stats.get("final").and_then(|v| serde_json::from_value(v.clone()).ok()),
        stage: stats.get("stage").and_then(Value::as_str).map(str::to_string),
        grasped_other: stats.get("grasped_other").and_then(Value::as_bool),
    })
}

/// Runs (or resumes) a benchmark and writes its stats file and report.
pub fn run_bench(store: &PresetStore, args: RunArgs) -> Result<BenchStats> {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(registry_with_recorder(tx));
    let plan = plan(store, &registry, &args)?;
    let mut done: Vec<EpisodeRecord> = Vec::new();
    let mut wall_before = 0.0;
    if args.resume {
        let path = args.save_stats.as_ref().expect("checked in plan");
        let old = BenchStats::load(path)?;
        let (a, b) = (&old.config, &plan.config);
        if (&a.preset, &a.variant, a.max_steps, a.seed) != (&b.preset, &b.variant, b.max_steps, b.seed) {
            bail!(
                "{} is a run of preset '{}' ({}, {} steps, seed {}), not of '{}' ({}, {} steps, seed {}); resume with the same flags",
                path.display(),
                a.preset,
                a.variant,
                a.max_steps,
                a.seed,
                b.preset,
                b.variant,
                b.max_steps,
                b.seed
            );
        }
        wall_before = old.summary.wall_s;
        done = old.episodes;
        tracing::info!("resuming {}: {} episodes done", path.display(), done.len());
    } else if let Some(p) = &args.save_stats {
        if p.exists() {
            tracing::warn!("{} exists and will be overwritten (use --resume to continue it)", p.display());
        }
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir.join("frames")).with_context(|| format!("creating {}", dir.display()))?;
    }
    let finished: BTreeSet<u64> = done.iter().map(|e| e.index).collect();
    let todo: VecDeque<u64> = (0..args.episodes).filter(|i| !finished.contains(i)).collect();
    let t0 = Instant::now();
    let outcome = if args.dora {
        dora::run(&plan, &args, todo, &mut done, wall_before, t0)
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let outcome = rt.block_on(drive(&registry, &plan, &args, todo, &mut done, rx, wall_before, t0));
        // A node stuck in a blocking call (a policy that never returned from the GPU) would keep a
        // plain drop of the runtime waiting forever, and the run would never report why it ended.
        rt.shutdown_timeout(Duration::from_secs(10));
        outcome
    };
    let stats = BenchStats::new(plan.config.clone(), done, wall_before + t0.elapsed().as_secs_f64(), vela_runtime::bench::machine_description());
    if let Some(p) = &args.save_stats {
        stats.save(p)?;
    }
    if let Some(dir) = &args.report {
        let html = report::write(dir, &stats, args.save_stats.as_deref())?;
        println!("report: {}", html.display());
    }
    outcome?;
    Ok(stats)
}

/// Hands out episodes to the environments until all are done, Ctrl-C, or a node fails.
/// Finished episodes land in `done` (and the stats file) as they come, whatever happens.
#[allow(clippy::too_many_arguments)]
async fn drive(
    registry: &Arc<Registry>,
    plan: &Plan,
    args: &RunArgs,
    mut todo: VecDeque<u64>,
    done: &mut Vec<EpisodeRecord>,
    mut rx: mpsc::UnboundedReceiver<TapMsg>,
    wall_before: f64,
    t0: Instant,
) -> Result<()> {
    let seed_of = |i: u64| args.seed + i;
    let bar = progress_bar(args, done);
    let envs = args.parallel.min(todo.len());
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<(usize, EngineEvent)>();
    let mut engines = Vec::new();
    // Per environment: the episode index it is running.
    let mut running: Vec<Option<u64>> = Vec::new();
    for env in 0..envs {
        let index = todo.pop_front().expect("envs <= todo.len()");
        let engine = Engine::new(registry.clone());
        engine.load(&env_graph(plan, env, seed_of(index))).await.with_context(|| format!("loading preset '{}'", plan.config.preset))?;
        let mut events = engine.subscribe();
        let tx = ev_tx.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        if tx.send((env, ev)).is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        });
        engines.push(engine);
        running.push(Some(index));
    }
    for e in &engines {
        e.start().await;
    }
    let save = |done: &Vec<EpisodeRecord>| -> Result<()> {
        if let Some(p) = &args.save_stats {
            let s = BenchStats::new(plan.config.clone(), done.clone(), wall_before + t0.elapsed().as_secs_f64(), vela_runtime::bench::machine_description());
            s.save(p)?;
        }
        Ok(())
    };
    // One listener for the whole run, so a Ctrl-C between two loop turns is not lost.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut watchdog = Watchdog::new(envs, args.stall_timeout, args.startup_timeout);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result: Result<()> = loop {
        if running.iter().all(Option::is_none) {
            break Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.println("interrupted: keeping the finished episodes");
                break Ok(());
            }
            Some((env, ev)) = ev_rx.recv() => match ev {
                EngineEvent::Status { node, status: NodeStatus::Failed { error } } => {
                    break Err(anyhow::anyhow!("node '{node}' failed (environment {env}): {error}"));
                }
                EngineEvent::Alert { node, level: vela_runtime::AlertLevel::Error, text } => {
                    bar.println(format!("{}: {text}", node.unwrap_or_default()));
                }
                _ => {}
            },
            _ = tick.tick() => {
                if let Some((env, secs)) = watchdog.never_started() {
                    break Err(anyhow::anyhow!(
                        "environment {env} has made no step {secs:.0} s after the start: the policy never answered its first frame, \
                         or the simulator never came up (finished episodes are saved; --resume continues, --startup-timeout changes the limit)\n{}",
                        vela_runtime::diag::report()
                    ));
                }
                if let Some((env, secs)) = watchdog.stalled() {
                    let what = running[env].map_or("its last episode".to_string(), |i| format!("episode {i} (seed {})", seed_of(i)));
                    break Err(anyhow::anyhow!(
                        "environment {env} made no step for {secs:.0} s while running {what}: the policy stopped answering \
                         (finished episodes are saved; --resume continues, --stall-timeout changes the limit)\n{}",
                        vela_runtime::diag::report()
                    ));
                }
            }
            Some(msg) = rx.recv() => match msg {
            TapMsg::Step { env } => watchdog.step(env),
            TapMsg::Episode { env, stats, frame } => {
                let Some(index) = running[env] else { continue };
                let seed = stats.get("seed").and_then(Value::as_u64);
                if seed != Some(seed_of(index)) {
                    tracing::warn!("environment {env} reported seed {seed:?} while running {}", seed_of(index));
                    continue;
                }
                let rec = match record(&stats, index, &plan.config.variant) {
                    Ok(r) => r,
                    Err(e) => break Err(e),
                };
                if let (Some(dir), Some(img)) = (&args.report, frame) {
                    if let Err(e) = report::save_frame(dir, &rec, &img) {
                        tracing::warn!("{e:#}");
                    }
                }
                done.push(rec);
                if let Err(e) = save(done) {
                    break Err(e);
                }
                update_bar(&bar, done);
                running[env] = todo.pop_front();
                match running[env] {
                    Some(next) => {
                        let r = engines[env].command(&plan.sim, "reset_episode", json!({ "seed": seed_of(next) })).await;
                        if let Err(e) = r {
                            break Err(anyhow::anyhow!("starting episode {next}: {e}"));
                        }
                    }
                    None => watchdog.retire(env),
                }
            }
            },
        }
    };
    bar.finish_and_clear();
    for e in &engines {
        e.stop().await;
    }
    result
}

/// Notices environments that stopped stepping. Armed per environment from its second frame
/// on: the first frame comes at reset, before the policy (possibly still loading a large
/// model) has answered once.
struct Watchdog {
    limit: Option<Duration>,
    /// For environments still short of their second frame, counted from the start.
    startup: Option<Duration>,
    started: Instant,
    /// Frames seen per environment; `None` once it has no episodes left.
    frames: Vec<Option<u64>>,
    last: Vec<Instant>,
}

impl Watchdog {
    fn new(envs: usize, limit_s: u64, startup_s: u64) -> Self {
        Self {
            limit: (limit_s > 0).then(|| Duration::from_secs(limit_s)),
            startup: (startup_s > 0).then(|| Duration::from_secs(startup_s)),
            started: Instant::now(),
            frames: vec![Some(0); envs],
            last: vec![Instant::now(); envs],
        }
    }

    /// The first environment that has not stepped past its reset frame within the start-up
    /// limit, with the seconds since the start.
    fn never_started(&self) -> Option<(usize, f64)> {
        let limit = self.startup?;
        let waited = self.started.elapsed();
        (waited > limit).then_some(())?;
        (0..self.frames.len()).find(|&e| self.frames[e].is_some_and(|n| n < 2)).map(|e| (e, waited.as_secs_f64()))
    }

    fn step(&mut self, env: usize) {
        if let (Some(Some(f)), Some(t)) = (self.frames.get_mut(env), self.last.get_mut(env)) {
            *f += 1;
            *t = Instant::now();
        }
    }

    /// An environment with no episodes left: idle on purpose.
    fn retire(&mut self, env: usize) {
        if let Some(f) = self.frames.get_mut(env) {
            *f = None;
        }
    }

    /// The first environment past the limit, with its seconds since the last step.
    fn stalled(&self) -> Option<(usize, f64)> {
        let limit = self.limit?;
        (0..self.frames.len())
            .filter(|&e| self.frames[e].is_some_and(|n| n >= 2))
            .map(|e| (e, self.last[e].elapsed()))
            .find(|(_, idle)| *idle > limit)
            .map(|(e, idle)| (e, idle.as_secs_f64()))
    }
}

fn progress_bar(args: &RunArgs, done: &[EpisodeRecord]) -> ProgressBar {
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(args.episodes) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} episodes  {msg}  {elapsed_precise} (ETA {eta})")
            .expect("valid template"),
    );
    bar.set_position(done.len() as u64);
    bar.reset_eta();
    update_bar(&bar, done);
    bar
}

fn update_bar(bar: &ProgressBar, done: &[EpisodeRecord]) {
    let k = done.iter().filter(|e| e.success).count();
    let n = done.len();
    bar.set_position(n as u64);
    if n > 0 {
        bar.set_message(format!("success {k}/{n} ({:.0}%)", 100.0 * k as f64 / n as f64));
    }
}

/// The `compare` table: one column per file, then per-seed outcome differences.
pub fn compare_table(runs: &[(PathBuf, BenchStats)]) -> String {
    use std::fmt::Write as _;
    let name = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |x| format!("{x:.prec$}"));
    let stage_labels: Vec<String> = vela_sim::Stage::ALL.iter().map(|s| format!("furthest: {}", s.name())).collect();
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        ("preset", runs.iter().map(|(_, s)| s.config.preset.clone()).collect()),
        ("variant", runs.iter().map(|(_, s)| s.config.variant.clone()).collect()),
        ("quantization", runs.iter().map(|(_, s)| s.config.quantization.clone().unwrap_or("-".into())).collect()),
        ("parallel", runs.iter().map(|(_, s)| s.config.parallel.to_string()).collect()),
        ("episodes", runs.iter().map(|(_, s)| format!("{}", s.summary.episodes)).collect()),
        ("success", runs.iter().map(|(_, s)| format!("{}/{} ({:.1}%)", s.summary.successes, s.summary.episodes, s.summary.success_pct)).collect()),
        ("95% interval", runs.iter().map(|(_, s)| format!("{:.1}-{:.1}%", s.summary.wilson95_pct[0], s.summary.wilson95_pct[1])).collect()),
        ("steps (successes)", runs.iter().map(|(_, s)| opt(s.summary.mean_steps_success, 1)).collect()),
        ("steps (all)", runs.iter().map(|(_, s)| opt(s.summary.mean_steps_all, 1)).collect()),
        ("policy ms", runs.iter().map(|(_, s)| opt(s.summary.policy_ms_mean, 1)).collect()),
        ("steps/s", runs.iter().map(|(_, s)| format!("{:.1}", s.summary.fps)).collect()),
        ("wall s", runs.iter().map(|(_, s)| format!("{:.1}", s.summary.wall_s)).collect()),
    ];
    // Where the failures stopped, for files that recorded it: a row per stage.
    let stages: Vec<_> = runs.iter().map(|(_, s)| stats::stage_counts(&s.episodes)).collect();
    if stages.iter().any(Option::is_some) {
        for (i, label) in stage_labels.iter().enumerate() {
            rows.push((label.as_str(), stages.iter().map(|c| c.as_ref().map_or("-".into(), |(counts, _)| counts[i].1.to_string())).collect()));
        }
        rows.push(("held the other cube", stages.iter().map(|c| c.as_ref().map_or("-".into(), |(_, other)| other.to_string())).collect()));
    }
    let heads: Vec<String> = runs.iter().map(|(p, _)| name(p)).collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| rows.iter().map(|r| r.1[i].chars().count()).chain([heads[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, label: &str, cells: &[String]| {
        let _ = write!(out, "{label:<w0$}");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {c:>w$}");
        }
        out.push('\n');
    };
    line(&mut out, "", &heads);
    for (label, cells) in &rows {
        line(&mut out, label, cells);
    }
    let (_, first) = &runs[0];
    for (p, other) in &runs[1..] {
        let (same, differ) = outcome_differences(first, other);
        let _ = writeln!(
            out,
            "{} vs {}: {} of {} common seeds differ{}",
            name(&runs[0].0),
            name(p),
            differ.len(),
            same + differ.len(),
            if differ.is_empty() { String::new() } else { format!(" (seeds {})", differ.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")) }
        );
    }
    out
}

/// Seeds both runs finished: how many agree, and the seeds whose success flag differs.
pub fn outcome_differences(a: &BenchStats, b: &BenchStats) -> (usize, Vec<u64>) {
    let mut same = 0;
    let mut differ = Vec::new();
    for e in &a.episodes {
        if let Some(o) = b.episodes.iter().find(|o| o.seed == e.seed && o.variant == e.variant) {
            if o.success == e.success {
                same += 1;
            } else {
                differ.push(e.seed);
            }
        }
    }
    (same, differ)
}
