//! `vela bench commanded`: does the arm do what it is told? Episodes of a voice preset's
//! language variant, each started by a command that names which cube goes on which, spoken
//! through the microphone's place in the graph (`--via voice`) or typed as the transcript
//! (`--via typed`, the baseline without speech recognition).
//!
//! Half the commands ask for the big cube on the small one (the order D0–D4 never show), half
//! for the reverse, alternating. An episode counts as a success only if the simulator's
//! success predicate held for the order that was *commanded*: a misheard colour that still
//! parses makes the simulator judge against the wrong order, so the transcript is checked
//! against the command as well, and an ASR error is a failure.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vela_runtime::{
    Audio, Context, DataType, EdgePolicy, EdgeSpec, Engine, EngineEvent, Event, Message, Node, NodeDescriptor, NodeError,
    NodeSpec, NodeStatus, Payload, PortRef, PresetStore, Registry, Text,
};
use vela_sim::{CubeColor, StackOrder};

use super::voice::{only_node, speak, to_rate, RemoveOnDrop, RATE};

#[derive(clap::Args, Clone, Debug)]
pub struct CommandedArgs {
    /// Preset with a microphone (WebAudioIn) → VADFilter → WhisperASR chain whose final
    /// transcripts instruct a Stack_Lang MimicGen node driven by OpenVLA.
    #[arg(long, default_value = "OpenVLA-MimicGen-Voice")]
    pub preset: String,
    #[arg(long, default_value_t = 20)]
    pub episodes: u64,
    /// Seed of the first episode; episode i runs scene `seed + i`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps (from the policy's first action) before a commanded episode fails.
    #[arg(long, default_value_t = 200)]
    pub max_steps: u64,
    /// How the commands arrive: spoken (espeak-ng into the VAD and Whisper), typed (the text
    /// straight to the simulator, as a transcript), or both runs, one after the other.
    #[arg(long, value_enum, default_value_t = Via::Both)]
    pub via: Via,
    /// Write per-episode rows and a summary per run (JSON) here.
    #[arg(long, value_name = "FILE.json")]
    pub save: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Voice,
    Typed,
    Both,
}

const PROBE: &str = "command_probe";
/// Audio per message from the stand-in microphone, as `vela bench voice`.
const CHUNK_S: f64 = 0.02;
/// How long after a command was delivered (spoken to its end, or typed) the simulator may
/// take to restart the scene with it before the command counts as not understood.
const UNDERSTOOD_WITHIN: Duration = Duration::from_secs(12);
/// Wall time one commanded episode may take at most (a stalled graph must not hang the run).
const EPISODE_WALL: Duration = Duration::from_secs(600);

/// One commanded episode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Order {
    seed: u64,
    small: CubeColor,
    big: CubeColor,
    order: StackOrder,
}

impl Order {
    /// Episode `i` of a run from `seed`: even episodes ask for the big cube on the small one.
    fn for_episode(seed: u64, i: u64) -> Result<Self> {
        let s = seed + i;
        let env = vela_sim::StackEnv::new(vela_sim::EnvConfig {
            variant: vela_sim::Variant::Lang,
            seed: s,
            render: false,
            ..Default::default()
        })?;
        let (small, big) = env.colours();
        let order = if i % 2 == 0 { StackOrder::BigOnSmall } else { StackOrder::SmallOnBig };
        Ok(Self { seed: s, small, big, order })
    }

    fn command(&self) -> String {
        let (top, bottom) = match self.order {
            StackOrder::SmallOnBig => (self.small, self.big),
            StackOrder::BigOnSmall => (self.big, self.small),
        };
        format!("put the {top} block on the {bottom} block")
    }

    /// Whether a transcript asks for this episode's order (what the simulator will judge).
    fn heard_right(&self, heard: &str) -> bool {
        vela_sim::variant::parse_instruction(heard, self.small, self.big) == Some(self.order)
    }
}

/// What the stand-in microphone plays next, filled by the run loop.
#[derive(Default)]
struct FeedQueue {
    audio: VecDeque<f32>,
    text: Option<String>,
}

/// The microphone's stand-in: real-time audio blocks (silence when nothing is queued, as a
/// live microphone sends) and, for typed commands, a final transcript.
struct CommandFeed {
    queue: Arc<Mutex<FeedQueue>>,
    chunk: usize,
}

impl CommandFeed {
    fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("CommandFeed", "Utility", "Command feed")
            .describe("Plays `vela bench commanded`'s spoken commands as a microphone would, or sends typed ones as transcripts.")
            .output("audio", DataType::Audio, "microphone blocks")
            .output("text", DataType::Text, "typed commands, as final transcripts")
    }
}

impl Node for CommandFeed {
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs_f64(CHUNK_S))
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        let (block, text) = {
            let mut q = self.queue.lock().map_err(|_| NodeError::msg("command queue poisoned"))?;
            let n = self.chunk.min(q.audio.len());
            let mut block: Vec<f32> = q.audio.drain(..n).collect();
            block.resize(self.chunk, 0.0);
            (block, q.text.take())
        };
        if let Some(t) = text {
            ctx.send("text", Text::final_text(t))?;
        }
        ctx.send("audio", Audio::new(block, RATE, 1))
    }
}

/// What the probe passes to the run loop, in arrival order.
#[derive(Debug)]
enum Seen {
    Start { episode: u64, seed: u64 },
    Final(String),
    Stats(Value),
}

struct Probe {
    tx: mpsc::UnboundedSender<Seen>,
}

impl Probe {
    fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("CommandProbe", "Utility", "Command probe")
            .describe("Passes episode starts, ends and transcripts to `vela bench commanded`.")
            .input("events", &[DataType::Event], "the simulator's episode events")
            .input("final", &[DataType::Text], "WhisperASR's final transcripts")
    }
}

impl Node for Probe {
    fn on_input(&mut self, port: &str, msg: Message, _: &mut Context) -> Result<(), NodeError> {
        let seen = match (port, msg.payload) {
            ("events", Payload::Event(Event::EpisodeStart { episode, seed, .. })) => Seen::Start { episode, seed },
            ("events", Payload::Event(Event::Custom { name, data })) if name == vela_sim::node::EPISODE_STATS => Seen::Stats(data),
            ("final", Payload::Text(t)) if t.is_final && !t.text.trim().is_empty() => Seen::Final(t.text.trim().to_string()),
            _ => return Ok(()),
        };
        let _ = self.tx.send(seen);
        Ok(())
    }
}

/// One commanded episode's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub index: u64,
    pub seed: u64,
    pub command: String,
    /// The final transcript (voice) or the typed text.
    pub heard: Option<String>,
    /// The transcript asks for the commanded order.
    pub heard_right: bool,
    /// The simulator restarted the scene with it.
    pub understood: bool,
    /// Stacked in the commanded order.
    pub success: bool,
    pub steps: Option<u64>,
    /// The furthest stage of the commanded task (`vela_sim::Stage`).
    pub stage: Option<String>,
    /// The gripper held the cube that was meant to stay put: the command was not followed.
    pub grasped_other: bool,
    pub note: Option<String>,
}

pub fn run(store: &PresetStore, args: CommandedArgs) -> Result<()> {
    if args.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    if !(1..=100_000).contains(&args.max_steps) {
        bail!("--max-steps must be between 1 and 100000");
    }
    let orders = (0..args.episodes).map(|i| Order::for_episode(args.seed, i)).collect::<Result<Vec<_>>>()?;
    let vias: &[Via] = match args.via {
        Via::Both => &[Via::Voice, Via::Typed],
        Via::Voice => &[Via::Voice],
        Via::Typed => &[Via::Typed],
    };
    let mut runs = Vec::new();
    for &via in vias {
        let rows = run_one(store, &args, via, &orders)?;
        let summary = summarise(&rows);
        print_rows(via, &rows, &summary);
        runs.push(json!({ "via": via, "rows": rows, "summary": summary }));
    }
    if let Some(p) = &args.save {
        let doc = json!({ "preset": args.preset, "seed": args.seed, "episodes": args.episodes, "max_steps": args.max_steps,
                          "runs": runs, "machine": vela_runtime::bench::machine_description() });
        std::fs::write(p, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn summarise(rows: &[Row]) -> Value {
    let n = rows.len() as u64;
    let k = rows.iter().filter(|r| r.success).count() as u64;
    let (lo, hi) = vela_runtime::protocol::wilson(k, n, 1.96);
    let steps: Vec<u64> = rows.iter().filter(|r| r.success).filter_map(|r| r.steps).collect();
    json!({
        "episodes": n,
        "successes": k,
        "success_rate": if n > 0 { k as f64 / n as f64 } else { 0.0 },
        "wilson95": [lo, hi],
        "heard_right": rows.iter().filter(|r| r.heard_right).count(),
        "understood": rows.iter().filter(|r| r.understood).count(),
        "grasped_other": rows.iter().filter(|r| r.grasped_other).count(),
        "mean_steps_success": if steps.is_empty() { None } else { Some(steps.iter().sum::<u64>() as f64 / steps.len() as f64) },
    })
}

fn print_rows(via: Via, rows: &[Row], summary: &Value) {
    println!("\n{via:?} commands");
    println!("{:>4} {:>6}  {:<40} {:>7} {:>8} {:>6}  heard", "ep", "seed", "command", "result", "got to", "steps");
    for r in rows {
        let result = if r.success { "stacked" } else if r.understood { "failed" } else { "unheard" };
        let got_to = match (r.stage.as_deref(), r.grasped_other) {
            (_, true) => "wrong cube",
            (Some(s), false) => s,
            (None, false) => "-",
        };
        println!(
            "{:>4} {:>6}  {:<40} {:>7} {:>8} {:>6}  {}{}",
            r.index,
            r.seed,
            r.command,
            result,
            got_to,
            r.steps.map_or("-".into(), |s| s.to_string()),
            r.heard.as_deref().unwrap_or("(nothing)"),
            r.note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default()
        );
    }
    let w = &summary["wilson95"];
    println!(
        "{via:?}: {} of {} in the commanded order ({:.0} %, Wilson 95 %: {:.0}–{:.0} %); {} transcripts named the commanded order; the arm held the cube meant to stay put in {}",
        summary["successes"],
        summary["episodes"],
        100.0 * summary["success_rate"].as_f64().unwrap_or(0.0),
        100.0 * w[0].as_f64().unwrap_or(0.0),
        100.0 * w[1].as_f64().unwrap_or(0.0),
        summary["heard_right"],
        summary["grasped_other"]
    );
}

fn run_one(store: &PresetStore, args: &CommandedArgs, via: Via, orders: &[Order]) -> Result<Vec<Row>> {
    let (preset, path, warnings) = store.load(&args.preset)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let find = |ty: &str| only_node(&preset, &path, ty, "commanded");
    let (mic, asr, sim) = (find("WebAudioIn")?, find("WhisperASR")?, find("MimicGen")?);
    let variant = preset.nodes.iter().find(|n| n.name == sim).and_then(|n| n.params.get("environment")).and_then(Value::as_str);
    if variant != Some("Stack_Lang") {
        bail!(
            "{}: the MimicGen node runs {}, but commanded episodes need Stack_Lang (the only variant where the instruction decides the order)",
            path.display(),
            variant.unwrap_or("Stack_D2 (the default)")
        );
    }

    let dir = std::env::temp_dir().join(format!("vela-bench-commanded-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let spoken: Vec<Vec<f32>> = if via == Via::Voice {
        orders
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let wav = speak(&o.command(), &dir, i)?;
                let w = vela_speech::wav::read_wav(&wav).with_context(|| format!("reading {}", wav.display()))?;
                Ok(to_rate(&w))
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };

    // The preset's graph with the feed in the microphone's place, the scene held after each
    // episode (the loop starts the next one), commands restarting the scene they name, and
    // the probe.
    let mut graph = preset.graph();
    for n in graph.nodes.iter_mut() {
        if n.name == mic {
            n.type_name = "CommandFeed".into();
            n.params = serde_json::Map::new();
        } else if n.name == sim {
            n.params.insert("seed".into(), json!(args.seed));
            n.params.insert("horizon".into(), json!(args.max_steps));
            n.params.insert("on_instruction".into(), json!("restart"));
            n.params.insert("auto_reset".into(), json!(false));
        }
    }
    if via == Via::Typed {
        graph.edges.push(EdgeSpec { from: PortRef::new(&mic, "text"), to: PortRef::new(&sim, "instruction"), policy: EdgePolicy::Queue });
    }
    graph.nodes.push(NodeSpec { name: PROBE.into(), type_name: "CommandProbe".into(), params: Default::default(), position: None });
    for (from, port) in [(PortRef::new(&sim, "events"), "events"), (PortRef::new(&asr, "final"), "final")] {
        graph.edges.push(EdgeSpec { from, to: PortRef::new(PROBE, port), policy: EdgePolicy::Queue });
    }
    let queue = Arc::new(Mutex::new(FeedQueue::default()));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut registry: Registry = crate::registry::build();
    let q = queue.clone();
    let chunk = (CHUNK_S * RATE as f64).round() as usize;
    registry.register(CommandFeed::descriptor(), move |_| Ok(Box::new(CommandFeed { queue: q.clone(), chunk })));
    registry.register(Probe::descriptor(), move |_| Ok(Box::new(Probe { tx: tx.clone() })));
    let registry = Arc::new(registry);
    preset.validate(&registry, &path)?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let engine = Engine::new(registry);
        engine.load(&graph).await?;
        engine.start().await;
        let mut driver = Driver { engine: &engine, sim: &sim, rx, events: engine.subscribe(), queue, via };
        let bar = indicatif::ProgressBar::new(orders.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} episodes · {msg} · eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{via:?}"));
        let mut rows = Vec::new();
        // The simulator opens a scene of its own at start; the loop's resets come after it, so
        // that every scene start it sees is one it asked for.
        let mut outcome = driver.first_scene().await;
        for (i, o) in orders.iter().enumerate() {
            if outcome.is_err() {
                break;
            }
            let sound = spoken.get(i).map(Vec::as_slice);
            match driver.episode(i as u64, o, sound).await {
                Ok(row) => rows.push(row),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
            bar.inc(1);
            bar.set_message(format!("{} stacked as told", rows.iter().filter(|r: &&Row| r.success).count()));
        }
        bar.finish_and_clear();
        engine.drain_and_stop(Duration::from_secs(2)).await;
        outcome.map(|()| rows)
    })
}

struct Driver<'a> {
    engine: &'a Engine,
    sim: &'a str,
    rx: mpsc::UnboundedReceiver<Seen>,
    events: tokio::sync::broadcast::Receiver<EngineEvent>,
    queue: Arc<Mutex<FeedQueue>>,
    via: Via,
}

impl Driver<'_> {
    /// The next thing the probe saw, before `deadline`; `None` at the deadline. A node that
    /// fails or a Ctrl-C ends the run.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Result<Option<Seen>> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
                s = self.rx.recv() => return Ok(s),
                ev = self.events.recv() => match ev {
                    Ok(EngineEvent::Status { node, status: NodeStatus::Failed { error } }) => bail!("node '{node}' failed: {error}"),
                    Ok(EngineEvent::Alert { node, text, .. }) => tracing::info!("{}: {text}", node.unwrap_or_default()),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => bail!("the graph stopped"),
                    _ => {}
                },
            }
        }
    }

    async fn first_scene(&mut self) -> Result<()> {
        let by = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.next(by).await? {
                Some(Seen::Start { .. }) => return Ok(()),
                Some(_) => {}
                None => bail!("the simulator opened no scene within 120 s"),
            }
        }
    }

    /// Starts scene `o.seed`, delivers its command, and follows the commanded episode to its end.
    async fn episode(&mut self, index: u64, o: &Order, sound: Option<&[f32]>) -> Result<Row> {
        let mut row = Row {
            index,
            seed: o.seed,
            command: o.command(),
            heard: None,
            heard_right: false,
            understood: false,
            success: false,
            steps: None,
            stage: None,
            grasped_other: false,
            note: None,
        };
        // The scene, held with its own instruction until the command arrives.
        self.engine.command(self.sim, "reset_episode", json!({ "seed": o.seed })).await?;
        let started = tokio::time::Instant::now() + Duration::from_secs(60);
        let pre = loop {
            match self.next(started).await? {
                Some(Seen::Start { episode, seed }) if seed == o.seed => break episode,
                Some(_) => continue,
                None => bail!("scene {} did not start within 60 s", o.seed),
            }
        };
        let t0 = Instant::now();
        let spoken_s = {
            let mut q = self.queue.lock().map_err(|_| anyhow::anyhow!("command queue poisoned"))?;
            match (self.via, sound) {
                (Via::Voice, Some(s)) => {
                    q.audio.extend(s.iter().copied());
                    s.len() as f64 / RATE as f64
                }
                _ => {
                    q.text = Some(row.command.clone());
                    0.0
                }
            }
        };
        if self.via == Via::Typed {
            row.heard = Some(row.command.clone());
        }
        let understood_by = tokio::time::Instant::now() + Duration::from_secs_f64(spoken_s) + UNDERSTOOD_WITHIN;
        let ends_by = tokio::time::Instant::now() + EPISODE_WALL;
        let mut commanded: Option<u64> = None;
        loop {
            let deadline = if commanded.is_some() { ends_by } else { understood_by };
            match self.next(deadline).await? {
                Some(Seen::Final(text)) if self.via == Via::Voice && row.heard.is_none() => row.heard = Some(text),
                Some(Seen::Start { episode, .. }) if episode != pre && commanded.is_none() => commanded = Some(episode),
                Some(Seen::Stats(s)) if commanded.is_some() && s["episode"].as_u64() == commanded => {
                    row.understood = true;
                    row.steps = s["steps"].as_u64();
                    row.stage = s["stage"].as_str().map(str::to_string);
                    row.grasped_other = s["grasped_other"].as_bool() == Some(true);
                    row.heard_right = row.heard.as_deref().is_some_and(|h| o.heard_right(h));
                    row.success = row.heard_right && s["success"].as_bool() == Some(true);
                    if !row.heard_right {
                        row.note = Some("transcript asked for another order".into());
                    }
                    break;
                }
                Some(_) => {}
                None if commanded.is_none() => {
                    row.note = Some(match &row.heard {
                        None => "nothing transcribed".into(),
                        Some(_) => "the simulator could not use the transcript".into(),
                    });
                    break;
                }
                None => bail!("commanded episode on scene {} ran {} s without ending", o.seed, EPISODE_WALL.as_secs()),
            }
        }
        tracing::debug!("episode {index}: {:.1} s", t0.elapsed().as_secs_f64());
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_alternate_the_order_and_name_the_scenes_cubes() {
        let a = Order::for_episode(7, 0).unwrap();
        let b = Order::for_episode(7, 1).unwrap();
        assert_eq!((a.seed, b.seed), (7, 8));
        assert_eq!(a.order, StackOrder::BigOnSmall);
        assert_eq!(b.order, StackOrder::SmallOnBig);
        assert_eq!(a.command(), format!("put the {} block on the {} block", a.big, a.small));
        assert_eq!(b.command(), format!("put the {} block on the {} block", b.small, b.big));
        // Deterministic: the same scenes and commands every run.
        assert_eq!(Order::for_episode(7, 1).unwrap(), b);
    }

    #[test]
    fn a_transcript_counts_only_if_it_asks_for_the_commanded_order() {
        let o = Order { seed: 0, small: CubeColor::Red, big: CubeColor::Green, order: StackOrder::BigOnSmall };
        assert!(o.heard_right("Put the green block on the red block."));
        assert!(o.heard_right("put the bigger cube on the red one"));
        assert!(!o.heard_right("put the red block on the green block"), "the other order");
        assert!(!o.heard_right("put the blue block on the yellow block"), "colours not in the scene");
        assert!(!o.heard_right("hello"));
    }

    #[test]
    fn the_summary_counts_successes_with_an_interval() {
        let row = |success: bool, understood: bool| Row {
            index: 0,
            seed: 0,
            command: "c".into(),
            heard: Some("c".into()),
            heard_right: understood,
            understood,
            success,
            steps: understood.then_some(if success { 90 } else { 200 }),
            stage: understood.then(|| if success { "stacked" } else { "grasped" }.into()),
            grasped_other: understood && !success,
            note: None,
        };
        let s = summarise(&[row(true, true), row(false, true), row(false, false), row(true, true)]);
        assert_eq!(s["successes"], 2);
        assert_eq!(s["episodes"], 4);
        assert_eq!(s["understood"], 3);
        assert_eq!(s["grasped_other"], 1);
        assert_eq!(s["mean_steps_success"], 90.0);
        let w = s["wilson95"].as_array().unwrap();
        assert!(w[0].as_f64().unwrap() < 0.5 && w[1].as_f64().unwrap() > 0.5);
    }
}
