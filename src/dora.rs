//! `vela dora ...`: run a saved graph as a dora-rs dataflow (see the vela-dora crate).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use vela_dora::launch::{self, LaunchOptions, Via};
use vela_dora::ExportOptions;
use vela_runtime::{GraphSpec, PresetStore};

#[derive(clap::Subcommand)]
pub enum DoraCommand {
    /// Write a preset as a dora 1.1 dataflow (YAML) to stdout or a file.
    Export {
        #[command(flatten)]
        layout: Layout,
        /// Write here instead of stdout.
        #[arg(short, long, value_name = "FILE.yml")]
        out: Option<PathBuf>,
    },
    /// Export a preset and run it on this machine through the dora CLI.
    Run {
        #[command(flatten)]
        layout: Layout,
        /// `coordinator`: a real coordinator and daemon (`dora up`/`start`); `run`: `dora run`.
        #[arg(long, default_value = "coordinator")]
        via: Via,
        /// Stop after this many seconds even if no node ended the run.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
        /// Write what the nodes published and their final stats as JSON here.
        #[arg(long, value_name = "FILE.json")]
        stats_json: Option<PathBuf>,
        /// Keep the exported dataflow here (default: a temporary file).
        #[arg(long, value_name = "FILE.yml")]
        yaml: Option<PathBuf>,
        /// Show dora's and the nodes' own log output.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Latency and throughput of 224² frames: in-process engine vs dora on this machine.
    Bench {
        /// Frames per measurement.
        #[arg(long, default_value_t = 500)]
        frames: u64,
        /// Frame rate of the latency measurement (the throughput one sends as fast as it can).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Frame side in pixels (RGB8, square).
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// How to start dora.
        #[arg(long, default_value = "run")]
        via: Via,
        /// The program dora runs for each node (see `dora export --runner`).
        #[arg(long, value_name = "PATH")]
        runner: Option<PathBuf>,
        /// Write the results as JSON here.
        #[arg(long, value_name = "FILE.json")]
        out: Option<PathBuf>,
    },
    /// Run the Vela node(s) of one dora node; dora starts this, not you.
    #[command(hide = true)]
    Node,
}

#[derive(clap::Args)]
pub struct Layout {
    /// Preset name (from the preset folder) or path to a preset file.
    #[arg(long)]
    preset: String,
    #[command(flatten)]
    placement: Placement,
}

/// Where an exported graph's nodes run, shared by `vela dora export/run` and `vela bench --dora`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Placement {
    /// Put a node (or group) on a dora machine: NODE=MACHINE (the daemon's --machine-id).
    #[arg(long = "machine", value_name = "NODE=MACHINE")]
    pub machines: Vec<String>,
    /// Run several nodes in one process, edges between them in memory: NODE,NODE=GROUP.
    #[arg(long = "group", value_name = "NODE,NODE=GROUP")]
    pub groups: Vec<String>,
    /// The program dora runs for each node: a `vela` built with `--features dora`, or `vela-dora-node` (default: whichever is here).
    #[arg(long, value_name = "PATH")]
    pub runner: Option<PathBuf>,
}

fn split_pair(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.trim().into(), b.trim().into())),
        _ => bail!("--{flag} {s:?}: expected LEFT=RIGHT"),
    }
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty() && self.groups.is_empty() && self.runner.is_none()
    }

    /// `graph` (named `name`) as a dora dataflow placed as the flags say.
    pub fn export(&self, name: &str, graph: &GraphSpec) -> Result<vela_dora::Dataflow> {
        let (runner, runner_args) = runner(self.runner.as_ref())?;
        let mut opts = ExportOptions {
            runner,
            runner_args,
            log: std::env::var("VELA_LOG").ok(),
            workdir: std::env::current_dir().ok(),
            ..Default::default()
        };
        for m in &self.machines {
            let (node, machine) = split_pair(m, "machine")?;
            opts.machines.insert(node, machine);
        }
        for g in &self.groups {
            let (nodes, group) = split_pair(g, "group")?;
            opts.groups.insert(group, nodes.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect());
        }
        Ok(vela_dora::export(name, graph, &registry(), &opts)?)
    }
}

impl Layout {
    fn export(&self, store: &PresetStore) -> Result<(String, vela_dora::Dataflow)> {
        let (preset, path, warnings) = store.load(&self.preset)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let df = self.placement.export(&preset.name, &preset.graph()).with_context(|| format!("exporting {}", path.display()))?;
        Ok((preset.name, df))
    }
}

/// The program dora starts for each node: `--runner`, this binary if it was built with
/// dora support, else `vela-dora-node` next to it.
fn runner(given: Option<&PathBuf>) -> Result<(PathBuf, Option<String>)> {
    let exe = std::env::current_exe().context("finding the vela binary")?;
    let sibling = exe.with_file_name("vela-dora-node");
    let is_vela = |p: &std::path::Path| p.file_name().is_some_and(|n| n == "vela");
    Ok(match given {
        Some(p) if is_vela(p) => (p.clone(), Some("dora node".into())),
        Some(p) => (p.clone(), None),
        None if cfg!(feature = "dora") => (exe, Some("dora node".into())),
        None if sibling.is_file() => (sibling, None),
        None => bail!(
            "no dora runner: build `vela` with `--features dora`, or `cargo build --release -p vela-dora --features sim` \
             for vela-dora-node (built-in and simulator nodes) next to vela, or pass --runner PATH"
        ),
    })
}

pub fn run(store: &PresetStore, command: DoraCommand) -> Result<()> {
    match command {
        DoraCommand::Export { layout, out } => {
            let (_, df) = layout.export(store)?;
            match out {
                Some(p) => std::fs::write(&p, df.to_yaml()).with_context(|| format!("writing {}", p.display()))?,
                None => print!("{}", df.to_yaml()),
            }
            Ok(())
        }
        DoraCommand::Run { layout, via, timeout, stats_json, yaml, verbose } => {
            let (name, df) = layout.export(store)?;
            let yaml_path = yaml.unwrap_or_else(|| std::env::temp_dir().join(format!("vela-{name}-{}.yml", std::process::id())));
            std::fs::write(&yaml_path, df.to_yaml()).with_context(|| format!("writing {}", yaml_path.display()))?;
            let opts = LaunchOptions {
                cli: launch::find_cli()?,
                via,
                timeout: timeout.map(|t| Duration::from_secs_f64(t.max(0.0))),
                name: format!("vela-{name}"),
                verbose,
                coordinator_port: None,
            };
            tracing::info!("running '{name}' on dora ({} dora nodes, {})", df.nodes.len(), yaml_path.display());
            tracing::info!("the studio cannot show a graph running on dora; per-node stats are printed when the run ends");
            let report = launch::run(&yaml_path, &opts)?;
            tracing::info!("run ended: {}", report.ended);
            print_stats(&report.nodes);
            if let Some(p) = stats_json {
                let doc = serde_json::json!({ "preset": name, "runtime": "dora", "ended": report.ended,
                    "outputs": report.outputs, "failed": report.failed, "nodes": report.nodes });
                std::fs::write(&p, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("writing {}", p.display()))?;
            }
            if !report.failed.is_empty() {
                bail!("nodes failed during the run: {}", report.failed.keys().cloned().collect::<Vec<_>>().join(", "));
            }
            Ok(())
        }
        DoraCommand::Bench { frames, rate, size, via, runner: given, out } => {
            let (runner, runner_args) = runner(given.as_ref())?;
            let cfg = vela_dora::bench::BenchConfig { frames, rate_hz: rate, size, via, runner, runner_args };
            let results = vela_dora::bench::run(&cfg, &registry(), &launch::find_cli()?)?;
            vela_dora::bench::print(&results);
            if let Some(p) = out {
                let doc = serde_json::json!({ "benchmark": "dora", "machine": vela_dora::bench::machine(), "results": results });
                std::fs::write(&p, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("writing {}", p.display()))?;
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        DoraCommand::Node => node(),
    }
}

/// Every node family plus the transport benchmark nodes.
pub(crate) fn registry() -> vela_runtime::Registry {
    let mut r = crate::registry::build();
    vela_dora::probe::register(&mut r);
    r
}

#[cfg(feature = "dora")]
fn node() -> Result<()> {
    Ok(vela_dora::runner::main(&registry())?)
}

#[cfg(not(feature = "dora"))]
fn node() -> Result<()> {
    bail!("this vela was built without dora support: build it with `cargo build --release --features dora`")
}

fn print_stats(nodes: &BTreeMap<String, vela_runtime::NodeStats>) {
    println!("{:<16} {:>8} {:>9} {:>8} {:>6}  summary", "node", "fps", "lat ms", "in", "errors");
    for (name, s) in nodes {
        println!("{:<16} {:>8.1} {:>9.3} {:>8} {:>6}  {}", name, s.fps, s.latency_ms, s.received, s.errors, s.summary);
    }
}
