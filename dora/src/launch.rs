//! `vela dora run`: start an exported dataflow with the `dora` CLI on this machine and
//! follow it the way `vela run` follows the in-process engine.
//!
//! The runners append their events (published values, alerts, finish requests, stats)
//! to one JSON-lines file per dora node in a folder handed over as [`EVENTS_ENV`];
//! this side tails those files. A node asking to finish ends the run after a short
//! drain, as `vela run` does; a dataflow whose nodes all exit ends by itself.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use vela_runtime::NodeStats;

use crate::{UnitEvent, EVENTS_ENV};

/// How long a finished run may drain before it is stopped (as `vela run` does).
pub const DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the dora CLI was not found (looked at $VELA_DORA_CLI, {cache} and PATH); install it with scripts/setup-dora.sh")]
    NoCli { cache: String },
    #[error("`{cmd}` failed: {detail}")]
    Cli { cmd: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The dora CLI to use: `$VELA_DORA_CLI`, the one scripts/setup-dora.sh installs, or `dora` on PATH.
pub fn find_cli() -> Result<PathBuf, LaunchError> {
    if let Some(p) = std::env::var_os("VELA_DORA_CLI") {
        return Ok(p.into());
    }
    let cache = std::env::var_os("VELA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vela")))
        .unwrap_or_default()
        .join("dora-cli/bin/dora");
    if cache.is_file() {
        return Ok(cache);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("dora"))
        .find(|p| p.is_file());
    on_path.ok_or(LaunchError::NoCli { cache: cache.display().to_string() })
}

/// How to start the dataflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// `dora up` (if no coordinator answers), `dora start`, `dora stop`, and `dora down`
    /// if this run brought the coordinator up: a real coordinator and daemon.
    #[default]
    Coordinator,
    /// `dora run`: a daemon inside the CLI process, no coordinator.
    Run,
}

impl std::str::FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "coordinator" => Ok(Via::Coordinator),
            "run" => Ok(Via::Run),
            _ => Err(format!("'{s}' is not one of: coordinator, run")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub cli: PathBuf,
    pub via: Via,
    /// Stop after this long even if no node ended the run.
    pub timeout: Option<Duration>,
    /// Name of the dataflow on the coordinator.
    pub name: String,
    /// Show dora's and the nodes' log output.
    pub verbose: bool,
    /// Use the coordinator on this port of 127.0.0.1 (it must be running; nothing is
    /// brought up or down). `None`: the default port, brought up if needed.
    pub coordinator_port: Option<u16>,
}

/// What happened, in the shape `vela run --stats-json` writes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub ended: String,
    /// Published values per Vela node, in order.
    pub outputs: BTreeMap<String, Vec<serde_json::Value>>,
    pub failed: BTreeMap<String, String>,
    pub nodes: BTreeMap<String, NodeStats>,
}

/// Follows the events files in a folder, remembering how far each was read.
struct Tail {
    dir: PathBuf,
    offsets: BTreeMap<PathBuf, u64>,
}

impl Tail {
    fn poll(&mut self, report: &mut RunReport) -> Option<String> {
        let mut finished = None;
        let Ok(entries) = fs::read_dir(&self.dir) else { return None };
        for entry in entries.flatten() {
            let path = entry.path();
            let offset = self.offsets.entry(path.clone()).or_insert(0);
            let Ok(mut f) = fs::File::open(&path) else { continue };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut reader = BufReader::new(f);
            let mut line = String::new();
            // Only whole lines: a runner may be half-way through writing one.
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line.ends_with('\n') {
                *offset += line.len() as u64;
                match serde_json::from_str::<UnitEvent>(&line) {
                    Ok(UnitEvent::Output { node, value }) => report.outputs.entry(node).or_default().push(value),
                    Ok(UnitEvent::Finished { node, reason }) => {
                        finished.get_or_insert(format!("{node}: {reason}"));
                    }
                    Ok(UnitEvent::Failed { node, error }) => {
                        tracing::error!("node '{node}' failed: {error}");
                        report.failed.insert(node, error);
                    }
                    Ok(UnitEvent::Stats { node, stats }) => {
                        report.nodes.insert(node, stats);
                    }
                    Ok(UnitEvent::Alert { .. }) => {}
                    Err(e) => tracing::warn!("{}: unreadable event line: {e}", path.display()),
                }
                line.clear();
            }
        }
        finished
    }
}

fn cli(opts: &LaunchOptions) -> Command {
    let mut c = Command::new(&opts.cli);
    // dora prints long backtraces with every error; the message is what matters here.
    c.env("RUST_BACKTRACE", "0").env("RUST_LIB_BACKTRACE", "0");
    // dora writes `out/` (logs) and `_work/` where it runs; keep them out of the user's folder.
    c.current_dir(std::env::temp_dir());
    if let Some(port) = opts.coordinator_port {
        c.env("DORA_COORDINATOR_PORT", port.to_string());
    }
    c
}

/// Runs a short dora command. Its output goes to a file, not a pipe: `dora up` leaves
/// a coordinator and daemon behind, which would hold a pipe open forever.
fn run_cli(opts: &LaunchOptions, args: &[&str]) -> Result<(), LaunchError> {
    let cmd = format!("dora {}", args.join(" "));
    let err = |e: std::io::Error| LaunchError::Cli { cmd: cmd.clone(), detail: e.to_string() };
    let log = std::env::temp_dir().join(format!("vela-dora-cli-{}-{}.log", std::process::id(), vela_runtime::now_ns()));
    let file = fs::File::create(&log).map_err(err)?;
    let mut c = cli(opts);
    c.args(args).stdin(Stdio::null()).stdout(file.try_clone().map_err(err)?).stderr(file);
    let status = c.status().map_err(err)?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = fs::remove_file(&log);
    if opts.verbose {
        eprint!("{text}");
    }
    if !status.success() {
        let detail = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.contains("[ERROR]")).unwrap_or("").to_string();
        return Err(LaunchError::Cli { cmd, detail: format!("{status}: {detail}") });
    }
    Ok(())
}

fn coordinator_up(opts: &LaunchOptions) -> bool {
    cli(opts).arg("list").stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Runs `yaml` (a file written by [`crate::Dataflow::to_yaml`]) until it ends, a node
/// finishes the run, or the timeout passes.
pub fn run(yaml: &Path, opts: &LaunchOptions) -> Result<RunReport, LaunchError> {
    run_watched(yaml, opts, |_| None)
}

/// [`run`], calling `watch` with what has come in so far about every 50 ms, and once more
/// with the final report (its answer then no longer matters). A driver such as
/// `vela bench` follows results live through it, and ends the run early by returning the
/// reason (a stalled node, Ctrl-C): the dataflow is then stopped as after a timeout.
pub fn run_watched(
    yaml: &Path,
    opts: &LaunchOptions,
    mut watch: impl FnMut(&RunReport) -> Option<String>,
) -> Result<RunReport, LaunchError> {
    let events_dir = std::env::temp_dir().join(format!("vela-dora-{}-{}", std::process::id(), vela_runtime::now_ns()));
    fs::create_dir_all(&events_dir).map_err(|source| LaunchError::Io { path: events_dir.clone(), source })?;
    let env_arg = format!("{EVENTS_ENV}={}", events_dir.display());
    let yaml = std::path::absolute(yaml).map_err(|source| LaunchError::Io { path: yaml.into(), source })?;
    let yaml_s = yaml.to_string_lossy().to_string();
    let mut started_coordinator = false;
    let mut child: Child = match opts.via {
        Via::Run => {
            let mut c = cli(opts);
            c.args(["run", &yaml_s, "--env", &env_arg]);
            if !opts.verbose {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
            c.spawn().map_err(|e| LaunchError::Cli { cmd: "dora run".into(), detail: e.to_string() })?
        }
        Via::Coordinator => {
            if !coordinator_up(opts) && opts.coordinator_port.is_none() {
                tracing::info!("no dora coordinator on this machine: running `dora up`");
                run_cli(opts, &["up"])?;
                started_coordinator = true;
            }
            let mut c = cli(opts);
            c.args(["start", &yaml_s, "--name", &opts.name, "--attach", "--env", &env_arg]);
            if !opts.verbose {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
            c.spawn().map_err(|e| LaunchError::Cli { cmd: "dora start".into(), detail: e.to_string() })?
        }
    };
    let mut tail = Tail { dir: events_dir.clone(), offsets: BTreeMap::new() };
    let mut report = RunReport::default();
    let t0 = Instant::now();
    let mut finish: Option<(String, Instant)> = None;
    let mut stop_sent = false;
    let mut stopped_by_watch: Option<String> = None;
    let status = loop {
        if let Some(reason) = tail.poll(&mut report) {
            finish.get_or_insert((reason, Instant::now()));
        }
        if stopped_by_watch.is_none() && finish.is_none() {
            stopped_by_watch = watch(&report);
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("waiting for dora: {e}");
                break None;
            }
        }
        let due = match &finish {
            Some((_, at)) => at.elapsed() >= DRAIN,
            None => stopped_by_watch.is_some() || opts.timeout.is_some_and(|t| t0.elapsed() >= t),
        };
        if due && !stop_sent {
            stop_sent = true;
            match opts.via {
                // Ctrl-C is how `dora run` is stopped gracefully.
                Via::Run => {
                    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
                }
                Via::Coordinator => {
                    if let Err(e) = run_cli(opts, &["stop", "--name", &opts.name]) {
                        tracing::warn!("{e}");
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    tail.poll(&mut report);
    // The last values came in after the finish request; the watcher sees them too.
    let _ = watch(&report);
    report.ended = match (&finish, stop_sent) {
        (Some((reason, _)), _) => reason.clone(),
        (None, true) if stopped_by_watch.is_some() => stopped_by_watch.clone().unwrap_or_default(),
        (None, true) => "timeout reached".into(),
        (None, false) => "all nodes ended".into(),
    };
    if started_coordinator {
        if let Err(e) = run_cli(opts, &["down"]) {
            tracing::warn!("{e}");
        }
    }
    let _ = fs::remove_dir_all(&events_dir);
    if let Some(s) = status.filter(|s| !s.success()) {
        // dora reports a failed node as a failed dataflow; the events say which.
        if report.failed.is_empty() && !stop_sent {
            return Err(LaunchError::Cli { cmd: "dora".into(), detail: format!("the dataflow ended with {s}") });
        }
    }
    Ok(report)
}
