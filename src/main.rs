//! `vela`: the command-line front door to the studio, graphs and tools.

use vela::{bench, dagger, dataset, datagen, dora, presets, registry, run, sim, speech, studio, train, vla};

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vela_runtime::{Availability, Preset};

#[derive(Parser)]
#[command(name = "vela", version, about = "Agent studio for vision-language-action robotics")]
struct Cli {
    /// Folder of named presets (default: $VELA_PRESETS, ./presets, or the shipped ones).
    #[arg(long, global = true, value_name = "DIR")]
    presets_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List node types with their ports and parameters.
    Nodes {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check or list presets.
    Preset {
        #[command(subcommand)]
        command: PresetCommand,
    },
    /// Run a preset's graph headless until Ctrl-C or until a node ends the run.
    Run(run::RunArgs),
    /// Success benchmark: N episodes of a preset's simulator and policy, stats and report;
    /// `vela bench compare A.json B.json` puts runs side by side.
    Bench(bench::BenchArgs),
    /// Serve the browser studio: edit and run graphs live.
    Studio {
        /// Preset to load at start (name or path).
        #[arg(long, value_name = "PRESET")]
        load: Option<String>,
        /// Start the loaded preset right away.
        #[arg(long)]
        start: bool,
        /// Address to bind. Anything but loopback exposes the studio to the network.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 8050)]
        port: u16,
        /// Folder with the built UI (default: $VELA_UI_DIST, then the setup script's build).
        #[arg(long, value_name = "DIR")]
        ui: Option<PathBuf>,
        /// Where benchmarks started from the browser write their reports (one folder per run).
        #[arg(long, value_name = "DIR", default_value = "reports")]
        reports: PathBuf,
    },
    /// The Stack simulator: info, render a frame, expert success rate, speed.
    Sim {
        #[command(subcommand)]
        command: sim::SimCommand,
    },
    /// Speech tools: transcribe a recording with the VAD + Whisper nodes' code.
    Speech {
        #[command(subcommand)]
        command: speech::SpeechCommand,
    },
    /// MimicGen-style data generation: source demos from the scripted expert, then
    /// new successful demos in randomised scenes, written as robomimic HDF5.
    Datagen(datagen::DatagenArgs),
    /// DAgger rollouts: a trained policy drives the simulator and the scripted expert labels
    /// every state it reaches; written as robomimic HDF5 for `vela train`.
    Dagger(dagger::DaggerArgs),
    /// Train or LoRA-fine-tune an OpenVLA-family model on a dataset (OpenVLA's finetune.py).
    Train(Box<train::TrainArgs>),
    /// Datasets: convert robomimic HDF5 <-> RLDS, info, action statistics, conversion benchmark.
    Dataset {
        #[command(subcommand)]
        command: dataset::DatasetCommand,
    },
    /// OpenVLA checkpoints: make, quantize, predict, evaluate offline, benchmark.
    Vla {
        #[command(subcommand)]
        command: vla::VlaCommand,
    },
    /// Run a preset as a dora-rs dataflow, on one machine or several.
    Dora {
        #[command(subcommand)]
        command: dora::DoraCommand,
    },
    /// Measure the graph engine: hop latency and throughput through a 5-node chain.
    BenchRuntime {
        /// Messages per configuration.
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        /// Write the results as JSON here.
        #[arg(long, value_name = "FILE.json")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PresetCommand {
    /// Validate preset files (or names) against the node types of this build.
    Validate {
        #[arg(required = true)]
        presets: Vec<String>,
    },
    /// List the presets in the preset folder, or describe the given files.
    List { files: Vec<PathBuf> },
    /// Convert an Agent Studio (NanoLLM) preset into a Vela preset in the preset folder.
    Import {
        file: PathBuf,
        /// Name of the new preset (default: the file name, cleaned up).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing preset of that name.
        #[arg(long)]
        force: bool,
    },
}

fn main() {
    // whisper.cpp logs every model load and state at info level (through whisper-rs).
    let filter = EnvFilter::try_from_env("VELA_LOG").unwrap_or_else(|_| EnvFilter::new("info,whisper_rs=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = real_main() {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, joined by ": " like anyhow's `{:#}`, but skipping a cause whose
/// text is already there: our library errors print their source inside their own message
/// (`dataset: {0}` with `#[from]`), and `{:#}` then said everything twice.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Nodes { .. } | Command::Preset { .. } | Command::Dataset { .. }) {
        // Rust ignores SIGPIPE, so printing a listing into a closed pipe (`vela dataset info |
        // head`) panics; these commands should just stop, as other Unix tools do. Not for the
        // commands that run graphs: a node writing to a child process must get an error instead.
        // SAFETY: no other thread exists yet (tracing's subscriber starts none).
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Graphs use candle's default of one thread per core. They used to leave a core to the
    // simulator, whose node spun that core while it waited for the policy; it no longer spins,
    // and on the 2-core box the shipped INT4 preset now steps 24 times a second with two candle
    // threads against 20 with one (BENCHMARKS.md, "CPU threads when a graph runs").
    let store = presets::store(cli.presets_dir.as_deref());
    match cli.command {
        Command::Nodes { json } => nodes(json),
        Command::Preset { command: PresetCommand::Validate { presets } } => validate(&store, &presets),
        Command::Preset { command: PresetCommand::List { files } } => list(&store, &files),
        Command::Preset { command: PresetCommand::Import { file, name, force } } => import(&store, &file, name, force),
        Command::Run(args) => run::run(&store, args),
        Command::Bench(args) => bench::run(&store, args),
        Command::BenchRuntime { messages, out } => bench_runtime(messages, out),
        Command::Dora { command } => dora::run(&store, command),
        Command::Vla { command } => vla::run(command),
        Command::Datagen(args) => datagen::run(args),
        Command::Dagger(args) => dagger::run(args),
        Command::Train(args) => train::run(*args),
        Command::Dataset { command } => dataset::run(command),
        Command::Sim { command } => sim::run(command),
        Command::Speech { command } => speech::run(command),
        Command::Studio { load, start, host, port, ui, reports } => {
            if !host.is_loopback() {
                tracing::warn!("binding to {host}: the studio has no authentication; anyone who can reach this address can run graphs");
            }
            let ui_dist = ui.or_else(studio::default_ui_dist);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async move {
                let registry = std::sync::Arc::new(registry::build());
                let cfg = studio::StudioConfig { store, ui_dist, load, autostart: start, reports };
                let s = studio::Studio::new(registry, cfg).await?;
                studio::serve(s, std::net::SocketAddr::new(host, port)).await
            })
        }
    }
}

fn nodes(json: bool) -> Result<()> {
    let list = registry::build().list();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for info in list {
        let d = &info.descriptor;
        let avail = match &info.availability {
            Availability::Available => String::new(),
            Availability::Unavailable { reason } => format!("  [unavailable: {reason}]"),
        };
        println!("{} ({}){avail}", d.type_name, d.category);
        if !d.description.is_empty() {
            println!("  {}", d.description);
        }
        for p in &d.inputs {
            println!("  in  {:<12} {}", p.name, p.types_string());
        }
        for p in &d.outputs {
            println!("  out {:<12} {}", p.name, p.types_string());
        }
        for p in &d.params {
            let kind = serde_json::to_value(&p.kind)?;
            println!(
                "  param {:<14} {:<8} default {}{}  {}",
                p.name,
                kind["type"].as_str().unwrap_or("?"),
                p.default,
                if p.runtime { "" } else { " (start-up only)" },
                p.help
            );
        }
    }
    Ok(())
}

fn validate(store: &vela_runtime::PresetStore, presets: &[String]) -> Result<()> {
    let registry = registry::build();
    let mut bad = 0;
    for name in presets {
        match store.load(name) {
            Ok((preset, path, warnings)) => {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                match preset.validate(&registry, &path) {
                    Ok(()) => println!(
                        "ok: {} ('{}', {} nodes, {} edges)",
                        path.display(),
                        preset.name,
                        preset.nodes.len(),
                        preset.edges.len()
                    ),
                    Err(e) => {
                        bad += 1;
                        eprintln!("invalid: {e}");
                    }
                }
            }
            Err(e) => {
                bad += 1;
                eprintln!("invalid: {e}");
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} presets invalid", presets.len());
    }
    Ok(())
}

fn list(store: &vela_runtime::PresetStore, files: &[PathBuf]) -> Result<()> {
    let paths: Vec<PathBuf> = if files.is_empty() {
        store.list().iter().map(|n| store.path_of(n)).collect::<Result<_, _>>()?
    } else {
        files.to_vec()
    };
    if paths.is_empty() {
        println!("no presets in {}", store.dir.display());
    }
    for path in paths {
        match Preset::load(&path) {
            Ok((p, _)) => println!(
                "{:<28} {:>2} nodes {:>2} edges  {}",
                path.file_stem().and_then(|s| s.to_str()).unwrap_or("?"),
                p.nodes.len(),
                p.edges.len(),
                p.description
            ),
            Err(e) => println!("{:<28} unreadable: {e}", path.display()),
        }
    }
    Ok(())
}

fn import(store: &vela_runtime::PresetStore, file: &std::path::Path, name: Option<String>, force: bool) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = name.unwrap_or_else(|| {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("imported");
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect()
    });
    let target = store.path_of(&name)?;
    if target.exists() && !force {
        bail!("preset '{name}' exists ({}); pass --force to replace it or --name to pick another", target.display());
    }
    let registry = registry::build();
    let (preset, report) = vela::import::import_agent_studio(&text, &name, &registry)
        .with_context(|| format!("importing {}", file.display()))?;
    for line in report.lines() {
        println!("  {line}");
    }
    let path = store.save(&name, &preset)?;
    println!(
        "imported {} nodes and {} edges into {}{}",
        preset.nodes.len(),
        preset.edges.len(),
        path.display(),
        if report.is_clean() { "" } else { " (see the report above)" }
    );
    Ok(())
}

fn bench_runtime(messages: usize, out: Option<PathBuf>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut results = Vec::new();
    for cfg in vela_runtime::bench::standard_suite(messages) {
        let r = rt.block_on(vela_runtime::bench::run_chain(&cfg)).map_err(anyhow::Error::msg)?;
        println!(
            "{:<22} {:<19} hop p50 {:>7.1} µs  p99 {:>7.1} µs  e2e p99 {:>8.1} µs  {:>9.0} msg/s {:>8.1} MB/s  zero-copy {}",
            r.payload,
            r.mode,
            r.hop_p50_us,
            r.hop_p99_us,
            r.e2e_p99_us,
            r.throughput_msgs_per_s,
            r.throughput_mb_per_s,
            r.zero_copy
        );
        results.push(r);
    }
    if let Some(path) = out {
        let doc = serde_json::json!({
            "benchmark": "runtime",
            "machine": vela_runtime::bench::machine_description(),
            "tokio_worker_threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "results": results,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    enum Lib {
        #[error("dataset: {0}")]
        Data(#[from] std::io::Error),
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("episode 3 has no `intended_action` series");
        let e = anyhow::Error::from(Lib::from(io)).context("training");
        assert_eq!(super::error_chain(&e), "training: dataset: episode 3 has no `intended_action` series");
        assert_eq!(format!("{e:#}").matches("intended_action").count(), 2, "what anyhow alone prints");
        let plain = anyhow::anyhow!("outer").context("top");
        assert_eq!(super::error_chain(&plain), "top: outer");
    }
}
