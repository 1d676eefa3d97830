//! The MimicGen node: the Stack simulator inside a graph.
//!
//! Mirrors Agent Studio's MimicGen plugin (instruction and frame out every step,
//! actions in, genlock, horizon, `S/N (P%)` statistics counted the same way) so
//! success rates are comparable, with its quirks fixed: `repeat_actions` works, and
//! episode events are emitted so benchmarks need not scrape logs.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use vela_runtime::{
    AlertLevel, Context, DataType, Event, Image, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind, ParamSpec,
    now_ns, Payload, Registry, Text,
};

use crate::{action_from_model, Camera, EnvConfig, Expert, Observation, StackEnv, StepResult, Variant};

/// Name of the [`Event::Custom`] that closes each episode with its figures (seed,
/// instruction, steps, success, policy latency, wall time, final frame's timestamp).
pub const EPISODE_STATS: &str = "episode_stats";

/// What the simulator thread is asked to do.
enum Request {
    Reset(u64),
    /// Step with this action, or with the scripted expert's when `None`.
    Step(Option<[f32; 7]>),
    Instruct(String),
}

enum Reply {
    Reset(Observation),
    Step(StepResult),
    Instructed(String),
}

/// The environment on a thread of its own: its EGL context belongs to the thread that
/// made it, while graph nodes must be free to move between threads.
struct SimWorker {
    /// `None` once dropping: closing it ends the thread's loop.
    tx: Option<std::sync::mpsc::Sender<Request>>,
    rx: std::sync::mpsc::Receiver<Result<Reply, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    instruction: String,
    colours: Option<(crate::CubeColor, crate::CubeColor)>,
}

/// Waits for the simulator thread to drop its environment: a detached thread could still be
/// tearing down its EGL context while the process exits (a `vela bench` run once died at exit
/// after printing its summary).
impl Drop for SimWorker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SimWorker {
    fn spawn(cfg: EnvConfig) -> Result<Self, NodeError> {
        let (tx, req_rx) = std::sync::mpsc::channel::<Request>();
        let (rep_tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mimicgen".into())
            .spawn(move || {
                // Stages for a watchdog's report (vela_runtime::diag): a bench that never
                // starts says whether its simulators were building, rendering or waiting.
                static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let who = format!("simulator {}", WORKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                let mark = |what: &str| vela_runtime::diag::stage(&who, what);
                mark("building the scene and renderer");
                let mut env = match StackEnv::new(cfg) {
                    Ok(env) => {
                        let _ = ready_tx.send(Ok(()));
                        env
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        vela_runtime::diag::clear(&who);
                        return;
                    }
                };
                let mut expert = Expert::default();
                let mut steps = 0u64;
                loop {
                    mark(if steps == 0 { "ready, waiting for its first request" } else { "waiting for an action" });
                    let Ok(req) = req_rx.recv() else { break };
                    let reply = match req {
                        Request::Reset(seed) => {
                            mark("resetting and rendering");
                            expert = Expert::default();
                            env.reset(seed).map(Reply::Reset)
                        }
                        Request::Step(action) => {
                            mark("stepping and rendering");
                            steps += 1;
                            let a = action.unwrap_or_else(|| expert.act(&env));
                            env.step(&a).map(Reply::Step)
                        }
                        Request::Instruct(text) => {
                            env.instruct(&text).map(|_| Reply::Instructed(env.instruction().to_string()))
                        }
                    };
                    if rep_tx.send(reply.map_err(|e| e.to_string())).is_err() {
                        break;
                    }
                }
                vela_runtime::diag::clear(&who);
            })
            .map_err(NodeError::msg)?;
        ready_rx.recv().map_err(|_| NodeError::msg("the simulator thread died while starting"))?.map_err(NodeError::msg)?;
        Ok(SimWorker { tx: Some(tx), rx, thread: Some(thread), instruction: String::new(), colours: None })
    }

    fn call(&self, req: Request) -> Result<Reply, NodeError> {
        let tx = self.tx.as_ref().ok_or_else(|| NodeError::msg("the simulator thread has stopped"))?;
        tx.send(req).map_err(|_| NodeError::msg("the simulator thread has stopped"))?;
        self.rx.recv().map_err(|_| NodeError::msg("the simulator thread has stopped"))?.map_err(NodeError::msg)
    }

    fn reset(&mut self, seed: u64) -> Result<Observation, NodeError> {
        match self.call(Request::Reset(seed))? {
            Reply::Reset(obs) => {
                self.instruction = obs.instruction.clone();
                self.colours = Some(obs.colours);
                Ok(obs)
            }
            _ => unreachable!("reset answers with an observation"),
        }
    }

    fn instruct(&mut self, text: String) -> Result<(), NodeError> {
        match self.call(Request::Instruct(text))? {
            Reply::Instructed(text) => {
                self.instruction = text;
                Ok(())
            }
            _ => unreachable!("instruct answers with the instruction"),
        }
    }

    fn step(&mut self, action: Option<[f32; 7]>) -> Result<StepResult, NodeError> {
        match self.call(Request::Step(action))? {
            Reply::Step(r) => {
                self.instruction = r.obs.instruction.clone();
                Ok(r)
            }
            _ => unreachable!("step answers with a step result"),
        }
    }
}

/// What an instruction arriving mid-episode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInstruction {
    Redirect,
    Restart,
}

impl OnInstruction {
    fn parse(s: &str) -> Result<Self, NodeError> {
        match s {
            "redirect" => Ok(Self::Redirect),
            "restart" => Ok(Self::Restart),
            other => Err(NodeError::param("on_instruction", format!("'{other}' is not one of redirect, restart"))),
        }
    }
}

/// What a chunk of several actions (from a model trained with `--action-chunk`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    /// Executed to its end, then the policy is asked again.
    Run,
    /// The policy is asked every step; each step's action averages what the overlapping
    /// chunks planned for it (ACT's temporal ensembling), which smooths the open-loop drift of
    /// `Run`.
    Ensemble,
}

impl Chunks {
    fn parse(s: &str) -> Result<Self, NodeError> {
        match s {
            "run" => Ok(Self::Run),
            "ensemble" => Ok(Self::Ensemble),
            other => Err(NodeError::param("chunks", format!("'{other}' is not one of run, ensemble"))),
        }
    }
}

/// ACT's ensembling weight `exp(-m i)`, `i = 0` for the oldest plan.
const ENSEMBLE_DECAY: f32 = 0.01;

/// Where actions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    /// The `actions` input (a policy); zeros with an open gripper until the first arrives.
    Agent,
    /// The built-in scripted expert.
    Expert,
    Zeros,
    Random,
}

impl Motion {
    fn parse(s: &str) -> Result<Self, NodeError> {
        match s {
            "agent" => Ok(Motion::Agent),
            "expert" => Ok(Motion::Expert),
            "zeros" | "disabled" => Ok(Motion::Zeros),
            "random" => Ok(Motion::Random),
            other => Err(NodeError::param("motion", format!("{other:?} is not agent, expert, zeros or random"))),
        }
    }
}

pub struct MimicGenNode {
    sim: SimWorker,
    horizon: u32,
    motion: Motion,
    genlock: bool,
    interval: Duration,
    action_scale: f32,
    repeat_actions: bool,
    rng: ChaCha8Rng,
    /// Seed of the next episode; advances by one per episode so runs are reproducible.
    next_seed: u64,
    episode: u64,
    /// Steps in this episode counted from the policy's first action (as the reference).
    frames: u32,
    actions_this_episode: u32,
    next_action: Option<[f32; 7]>,
    last_action: Option<[f32; 7]>,
    /// The rest of an action chunk (a policy that predicts K actions per frame): executed
    /// one per step before the policy is asked again.
    queue: std::collections::VecDeque<[f32; 7]>,
    chunks: Chunks,
    /// With `chunks = ensemble`: recent chunks and the episode step each one started at.
    plans: std::collections::VecDeque<(u32, Vec<[f32; 7]>)>,
    needs_reset: bool,
    paused: bool,
    primed: bool,
    successes: u64,
    finished: u64,
    frames_per_episode: Vec<u32>,
    render_ms: f64,
    last_instruction: String,
    /// Start the next episode by itself; off, an ended episode waits for `reset_episode`
    /// (a benchmark hands out seeds so parallel simulators run a fixed set of episodes).
    auto_reset: bool,
    /// Episodes after which the node ends the run (0 = never). Lets a graph that runs without a
    /// driver, e.g. on dora where no bench can send `reset_episode`, still run a fixed seed set.
    episodes_limit: u64,
    on_instruction: OnInstruction,
    /// An instruction to apply right after the next reset (restart mode).
    pending_instruction: Option<String>,
    seed: u64,
    /// When the last frame went out, to time the policy's answer (genlocked agents).
    frame_sent: Option<Instant>,
    /// Policy latencies of this episode in milliseconds (frame out -> action in).
    latencies_ms: Vec<f64>,
    /// An ended episode waits for `reset_episode` (only with `auto_reset` off).
    waiting: bool,
    /// Wall-clock start of this episode: actions stamped earlier answer an older frame.
    episode_started_ns: u64,
    /// When the counted part of the episode began (reset, or the policy's first action).
    counted_since: Instant,
    /// Capture time of the last frame sent, so a recorder can pair it with the episode's end.
    last_frame_ts: u64,
}

impl MimicGenNode {
    pub fn descriptor() -> NodeDescriptor {
        let variants: Vec<String> = Variant::ALL.iter().map(|v| v.name().to_string()).collect();
        NodeDescriptor::new("MimicGen", "Robotics", "MimicGen Stack")
            .describe("The Panda arm stacking cubes in MuJoCo (robosuite Stack, MimicGen D0-D4 and a language variant).")
            .input("actions", &[DataType::Actions], "7-D actions in the model's convention (gripper 1 = open, 0 = closed), or a chunk of several executed in turn")
            .input(
                "instruction",
                &[DataType::Text],
                "replaces the episode's instruction (e.g. a spoken command); in Stack_Lang it decides which cube goes on which",
            )
            .output("image", DataType::Image, "camera frame for the policy: after each step, or after each action chunk")
            .output("view", DataType::Image, "every camera frame, for display and recording")
            .output("text", DataType::Text, "the episode's instruction, every step")
            .output("events", DataType::Event, "episode start, success, timeout")
            .param(ParamSpec::new("environment", ParamKind::Choice { options: variants }, "Stack_D2", "task variant").startup_only())
            .param(
                ParamSpec::new(
                    "camera",
                    ParamKind::Choice { options: Camera::ALL.iter().map(|c| c.name().to_string()).collect() },
                    "agentview",
                    "camera",
                )
                .startup_only(),
            )
            .param(ParamSpec::new("width", ParamKind::Int { min: Some(16), max: Some(1024) }, 224, "image width").startup_only())
            .param(ParamSpec::new("height", ParamKind::Int { min: Some(16), max: Some(1024) }, 224, "image height").startup_only())
            .param(ParamSpec::new("framerate", ParamKind::Float { min: Some(0.0), max: Some(1000.0) }, 10.0, "steps per second (0 = as fast as possible)"))
            .param(ParamSpec::new("genlock", ParamKind::Bool, true, "step only when a new action arrives (lock-step with the policy)"))
            .param(ParamSpec::new("horizon", ParamKind::Int { min: Some(1), max: Some(100_000) }, 200, "steps before an episode fails").startup_only())
            .param(ParamSpec::new("action_scale", ParamKind::Float { min: Some(0.0), max: Some(10.0) }, 1.0, "multiplies position and rotation actions"))
            .param(ParamSpec::new("repeat_actions", ParamKind::Bool, false, "reuse the last action when none arrived (otherwise hold still, keep the gripper)"))
            .param(ParamSpec::new(
                "motion",
                ParamKind::Choice { options: vec!["agent".into(), "expert".into(), "zeros".into(), "random".into()] },
                "agent",
                "where actions come from",
            ))
            .param(ParamSpec::new("seed", ParamKind::Int { min: Some(0), max: None }, 0, "seed of the first episode").startup_only())
            .param(ParamSpec::new("auto_reset", ParamKind::Bool, true, "start the next episode when one ends (off: wait for reset episode)"))
            .param(ParamSpec::new(
                "episodes",
                ParamKind::Int { min: Some(0), max: None },
                0,
                "end the run after this many episodes (0 = never); with auto_reset they use seeds seed, seed+1, ...",
            ))
            .param(ParamSpec::new(
                "on_instruction",
                ParamKind::Choice { options: vec!["redirect".into(), "restart".into()] },
                "redirect",
                "a new instruction: redirect = the arm continues from where it is towards the new goal; restart = the same scene from its start (the interrupted episode is not counted)",
            ))
            .param(ParamSpec::new(
                "chunks",
                ParamKind::Choice { options: vec!["run".into(), "ensemble".into()] },
                "run",
                "a chunk of several actions: run = execute it to its end, then ask again; ensemble = ask every step and average what the last chunks planned for it",
            ))
            .command("reset_episode", "Reset episode", "start a new episode now (args may give its \"seed\")")
            .command("reset_stats", "Reset stats", "forget successes and episodes, start again")
            .command("pause", "Pause / resume", "freeze the simulation")
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let p = init.params;
        let variant: Variant = p.str("environment")?.parse().map_err(|e| NodeError::param("environment", e))?;
        let camera: Camera = p.str("camera")?.parse().map_err(|e| NodeError::param("camera", e))?;
        let seed = p.u64("seed")?;
        let cfg = EnvConfig {
            variant,
            camera,
            width: p.u64("width")? as u32,
            height: p.u64("height")? as u32,
            horizon: p.u64("horizon")? as u32,
            seed,
            render: true,
        };
        cfg.validate().map_err(|e| NodeError::msg(e.to_string()))?;
        let horizon = cfg.horizon;
        let sim = SimWorker::spawn(cfg)?;
        let fr = p.f64("framerate")?;
        Ok(MimicGenNode {
            sim,
            horizon,
            motion: Motion::parse(p.str("motion")?)?,
            genlock: p.bool("genlock")?,
            interval: if fr > 0.0 { Duration::from_secs_f64(1.0 / fr) } else { Duration::ZERO },
            action_scale: p.f64("action_scale")? as f32,
            repeat_actions: p.bool("repeat_actions")?,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
            next_seed: seed,
            episode: 0,
            frames: 0,
            actions_this_episode: 0,
            next_action: None,
            last_action: None,
            needs_reset: true,
            paused: false,
            primed: false,
            successes: 0,
            finished: 0,
            frames_per_episode: Vec::new(),
            render_ms: 0.0,
            last_instruction: String::new(),
            auto_reset: p.bool("auto_reset")?,
            episodes_limit: p.u64("episodes")?,
            on_instruction: OnInstruction::parse(p.str("on_instruction")?)?,
            pending_instruction: None,
            seed,
            frame_sent: None,
            latencies_ms: Vec::new(),
            waiting: false,
            episode_started_ns: 0,
            counted_since: Instant::now(),
            last_frame_ts: 0,
            queue: Default::default(),
            chunks: Chunks::parse(p.str("chunks")?)?,
            plans: Default::default(),
        })
    }

    /// Every frame goes to `view`; the frames that want an answer (`ask`: no chunk left to
    /// execute, or the episode's last) also go to `image`, after the instruction on `text`.
    fn emit_frame(&mut self, image: crate::RgbImage, ask: bool, ctx: &mut Context) -> Result<(), NodeError> {
        let img = Image::rgb8(image.width, image.height, image.data).map_err(NodeError::msg)?;
        ctx.send("view", img.clone())?;
        if !ask {
            return Ok(());
        }
        let instruction = self.sim.instruction.clone();
        // Instruction first, then the frame: a prompt builder sees the current text with the image.
        ctx.send("text", Text::final_text(instruction.clone()))?;
        self.last_instruction = instruction;
        self.last_frame_ts = img.timestamp;
        ctx.send("image", img)?;
        self.frame_sent = Some(Instant::now());
        Ok(())
    }

    /// Adds a chunk planned from this step on and returns this step's action: the weighted
    /// mean of what every live chunk planned for it.
    fn ensemble(&mut self, chunk: Vec<[f32; 7]>) -> [f32; 7] {
        let t = self.actions_this_episode;
        self.plans.push_back((t, chunk));
        self.plans.retain(|(t0, c)| (t - t0) < c.len() as u32);
        let (mut sum, mut total) = ([0f32; 7], 0f32);
        for (i, (t0, c)) in self.plans.iter().enumerate() {
            let w = (-ENSEMBLE_DECAY * i as f32).exp();
            for (s, v) in sum.iter_mut().zip(c[(t - t0) as usize]) {
                *s += w * v;
            }
            total += w;
        }
        sum.map(|s| s / total)
    }

    /// Takes the next action of a chunk, if one is queued, as the step's policy action.
    fn dequeue(&mut self) {
        if self.next_action.is_none() {
            if let Some(a) = self.queue.pop_front() {
                self.next_action = Some(a);
                self.last_action = Some(a);
            }
        }
    }

    fn reset(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        let seed = self.next_seed;
        self.seed = seed;
        self.next_seed += 1;
        self.latencies_ms.clear();
        self.waiting = false;
        self.episode_started_ns = now_ns();
        self.counted_since = Instant::now();
        self.episode += 1;
        let t0 = Instant::now();
        let mut obs = self.sim.reset(seed)?;
        if let Some(text) = self.pending_instruction.take() {
            // Checked against this very scene before the restart, so it applies.
            self.sim.instruct(text)?;
            obs.instruction = self.sim.instruction.clone();
        }
        self.render_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.frames = 0;
        self.actions_this_episode = 0;
        self.next_action = None;
        self.last_action = None;
        self.queue.clear();
        self.plans.clear();
        self.needs_reset = false;
        self.primed = false;
        ctx.send("events", Event::EpisodeStart { episode: self.episode, seed, instruction: obs.instruction.clone() })?;
        if let Some(img) = obs.image {
            self.emit_frame(img, true, ctx)?;
        }
        Ok(())
    }

    /// The action to apply; `None` lets the simulator thread ask the scripted expert.
    fn choose_action(&mut self) -> Option<[f32; 7]> {
        Some(match self.motion {
            Motion::Expert => return None,
            Motion::Zeros => [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0],
            Motion::Random => {
                let mut a = [0f32; 7];
                for v in a.iter_mut() {
                    *v = self.rng.random_range(-1.0..1.0);
                }
                a
            }
            Motion::Agent => {
                let model = match self.next_action.take() {
                    Some(a) => Some(a),
                    None if self.repeat_actions => self.last_action,
                    // Hold still but keep the gripper where the policy last put it.
                    None => self.last_action.map(|a| [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, a[6]]),
                };
                match model {
                    Some(a) => action_from_model(&a, self.action_scale),
                    None => [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0],
                }
            }
        })
    }

    fn step(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.needs_reset {
            return if self.waiting { Ok(()) } else { self.reset(ctx) };
        }
        self.dequeue();
        let from_policy = self.motion == Motion::Agent && self.next_action.is_some();
        if self.motion == Motion::Agent && self.genlock && !from_policy {
            // Lock-step: wait for the policy. The first frame went out at reset.
            return Ok(());
        }
        if from_policy {
            if let Some(t) = self.frame_sent.take() {
                self.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            self.actions_this_episode += 1;
            if self.actions_this_episode == 1 {
                // Steps before the policy's first action are not counted (as the reference).
                self.frames = 0;
                self.counted_since = Instant::now();
            }
        }
        let action = self.choose_action();
        let t0 = Instant::now();
        let r = self.sim.step(action)?;
        self.render_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.frames += 1;
        let agent_started = self.motion != Motion::Agent || self.actions_this_episode > 0;
        let timeout = agent_started && self.frames >= self.horizon;
        if let Some(img) = r.obs.image {
            self.emit_frame(img, self.queue.is_empty() || r.success || timeout, ctx)?;
        }
        if r.success || timeout {
            self.finished += 1;
            self.frames_per_episode.push(self.frames);
            let steps = self.frames;
            if r.success {
                self.successes += 1;
                ctx.send("events", Event::Success { episode: self.episode, steps })?;
            } else {
                ctx.send("events", Event::Timeout { episode: self.episode, steps })?;
            }
            ctx.send("events", Event::EpisodeEnd { episode: self.episode, success: r.success, steps })?;
            let (mean_ms, p95_ms) = latency_stats(&self.latencies_ms);
            let stats = json!({
                "episode": self.episode,
                "seed": self.seed,
                "instruction": self.sim.instruction,
                // Small cube, big cube: what a spoken command may name.
                "colours": self.sim.colours.map(|(a, b)| [a.name(), b.name()]),
                "success": r.success,
                // How far it got (see vela_sim::Stage): failures told apart in reports.
                "stage": r.progress.furthest.name(),
                "grasped_other": r.progress.grasped_other,
                "steps": steps,
                "successes": self.successes,
                "episodes": self.finished,
                "policy_ms_mean": mean_ms,
                "policy_ms_p95": p95_ms,
                "wall_s": self.counted_since.elapsed().as_secs_f64(),
                "frame_ts": self.last_frame_ts,
                // Bit-exact for equal trajectories: lets runs without frames be compared.
                "final": { "eef": r.obs.eef.pos, "cube_a": r.obs.cube_a.pos, "cube_b": r.obs.cube_b.pos },
            });
            // Also on the events port, so a recorder gets it in order with the frames.
            ctx.send("events", Event::Custom { name: EPISODE_STATS.into(), data: stats.clone() })?;
            ctx.publish(stats);
            self.needs_reset = true;
            self.waiting = !self.auto_reset;
            if self.episodes_limit > 0 && self.finished >= self.episodes_limit {
                // Hold still from here: a finished run must not start an episode it won't count.
                self.waiting = true;
                ctx.finish(format!("{} of {} episodes succeeded", self.successes, self.finished));
            }
        }
        Ok(())
    }
}

impl Node for MimicGenNode {
    fn start(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        self.reset(ctx)
    }

    fn on_input(&mut self, _port: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        let sent_at = msg.timestamp;
        match msg.payload {
            Payload::Actions(a) if a.partial => Ok(()),
            // The answer to a frame of an earlier episode (a policy stamps actions with
            // their frame's time): applying it would steer the new episode blind.
            Payload::Actions(_) if sent_at < self.episode_started_ns => Ok(()),
            Payload::Actions(a) => {
                if a.values.is_empty() || a.values.len() % 7 != 0 {
                    return Err(NodeError::msg(format!("expected 7-D actions (or a chunk of several), got {} values", a.values.len())));
                }
                let chunk: Vec<[f32; 7]> = a.values.chunks_exact(7).map(|c| <[f32; 7]>::try_from(c).expect("chunks of 7")).collect();
                if self.chunks == Chunks::Ensemble {
                    let a = self.ensemble(chunk);
                    self.queue.clear();
                    self.next_action = Some(a);
                    self.last_action = Some(a);
                } else {
                    // A chunk replaces whatever was left of the last one: the newest plan wins.
                    self.queue = chunk.into();
                    self.next_action = None;
                    self.dequeue();
                }
                // Genlocked: the action itself drives the step, no waiting for a tick; a chunk
                // runs to its end (or the episode's) before the next frame asks again.
                if self.genlock && self.motion == Motion::Agent && !self.paused {
                    self.step(ctx)?;
                    while !self.queue.is_empty() && !self.needs_reset && !self.paused {
                        self.step(ctx)?;
                    }
                }
                Ok(())
            }
            Payload::Text(t) if !t.is_final || t.text.trim().is_empty() => Ok(()),
            Payload::Text(t) => {
                // A misheard command must not stop the simulation: say why and keep the old one.
                let text = t.text.clone();
                if let Err(e) = self.sim.instruct(t.text) {
                    ctx.alert(AlertLevel::Warning, format!("instruction ignored: {e}"));
                    return Ok(());
                }
                // The rest of a chunk was planned for the old instruction.
                self.queue.clear();
                self.plans.clear();
                match self.on_instruction {
                    OnInstruction::Redirect => ctx.send("text", Text::final_text(self.sim.instruction.clone())),
                    OnInstruction::Restart => {
                        // Same seed: the scene the user was looking at when they spoke, from the top.
                        self.pending_instruction = Some(text);
                        self.next_seed = self.seed;
                        ctx.alert(AlertLevel::Info, format!("restarting episode {} with \"{}\"", self.seed, self.sim.instruction));
                        self.reset(ctx)
                    }
                }
            }
            other => Err(NodeError::msg(format!("MimicGen takes actions and instructions, got {}", other.describe()))),
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        // No ticks while a tick would do nothing (paused, done, or genlocked and waiting for the
        // policy): at framerate 0 they would spin a core that the policy needs (on the 2-core
        // box, a second candle thread ran slower than one because of it). Every way out of
        // these states is a callback, after which the engine asks again.
        let idle = self.paused || self.waiting || (!self.needs_reset && self.genlock && self.motion == Motion::Agent && self.queue.is_empty());
        if idle { None } else { Some(self.interval) }
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.paused || self.waiting {
            return Ok(());
        }
        if self.needs_reset {
            return self.reset(ctx);
        }
        // Genlocked, steps come from the policy's answers; what is left of a chunk after a
        // pause plays out on ticks.
        if self.genlock && self.motion == Motion::Agent && self.queue.is_empty() {
            return Ok(());
        }
        self.step(ctx)
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "framerate" => {
                let fr = value.as_f64().unwrap_or(10.0);
                self.interval = if fr > 0.0 { Duration::from_secs_f64(1.0 / fr) } else { Duration::ZERO };
            }
            "genlock" => self.genlock = value.as_bool().unwrap_or(true),
            "action_scale" => self.action_scale = value.as_f64().unwrap_or(1.0) as f32,
            "repeat_actions" => self.repeat_actions = value.as_bool().unwrap_or(false),
            "motion" => self.motion = Motion::parse(value.as_str().unwrap_or(""))?,
            "auto_reset" => self.auto_reset = value.as_bool().unwrap_or(true),
            "episodes" => self.episodes_limit = value.as_u64().unwrap_or(0),
            "chunks" => {
                self.chunks = Chunks::parse(value.as_str().unwrap_or(""))?;
                self.plans.clear();
            }
            "on_instruction" => self.on_instruction = OnInstruction::parse(value.as_str().unwrap_or(""))?,
            _ => return Err(NodeError::param(name, "cannot change while running")),
        }
        Ok(())
    }

    fn command(&mut self, name: &str, args: &Value, ctx: &mut Context) -> Result<(), NodeError> {
        match name {
            "reset_episode" => {
                if let Some(seed) = args.get("seed") {
                    self.next_seed = seed
                        .as_u64()
                        .ok_or_else(|| NodeError::msg(format!("reset_episode: seed must be a non-negative integer, got {seed}")))?;
                }
                self.needs_reset = true;
                self.reset(ctx)
            }
            "reset_stats" => {
                self.successes = 0;
                self.finished = 0;
                self.frames_per_episode.clear();
                self.episode = 0;
                self.reset(ctx)
            }
            "pause" => {
                self.paused = !self.paused;
                Ok(())
            }
            other => Err(NodeError::msg(format!("unknown command '{other}' (MimicGen knows: reset_episode, reset_stats, pause)"))),
        }
    }

    fn summary(&self) -> Option<String> {
        let pct = if self.finished > 0 { 100.0 * self.successes as f64 / self.finished as f64 } else { 0.0 };
        Some(format!(
            "episode {} · frame {} · {}/{} ({:.0}%) · {:.0} ms",
            self.episode, self.frames, self.successes, self.finished, pct, self.render_ms
        ))
    }

    fn blocking(&self) -> bool {
        true
    }
}

/// Mean and 95th percentile (nearest rank) of latencies; `None` when there are none
/// (built-in motions have no policy to time).
fn latency_stats(ms: &[f64]) -> (Option<f64>, Option<f64>) {
    if ms.is_empty() {
        return (None, None);
    }
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1];
    (Some(v.iter().sum::<f64>() / v.len() as f64), Some(p95))
}

/// Registers MimicGen, or lists it as unavailable when MuJoCo or the assets are missing.
pub fn register(r: &mut Registry) {
    match crate::assets::asset_dir() {
        Ok(_) => r.register(MimicGenNode::descriptor(), |init| Ok(Box::new(MimicGenNode::new(init)?))),
        Err(e) => r.register_unavailable(MimicGenNode::descriptor(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_runtime::resolve_params;

    /// Each step's action is the (nearly even) mean of what the live chunks planned for it,
    /// and a chunk stops counting once its last action is past.
    #[test]
    fn ensembling_averages_the_plans_that_cover_a_step() {
        let given = json!({ "environment": "Stack_D2", "width": 16, "height": 16, "chunks": "ensemble" });
        let params = resolve_params(&MimicGenNode::descriptor(), given.as_object().unwrap()).unwrap();
        let mut node = MimicGenNode::new(&NodeInit { name: "sim", params: &params }).unwrap();
        let plan = |v: f32, k: usize| vec![[v; 7]; k];
        assert_eq!(node.ensemble(plan(1.0, 2))[0], 1.0);
        node.actions_this_episode = 1;
        let a = node.ensemble(plan(0.0, 2))[0];
        let w = (-ENSEMBLE_DECAY).exp();
        assert!((a - 1.0 / (1.0 + w)).abs() < 1e-6, "{a}");
        // Step 2: the first plan (steps 0-1) no longer covers it.
        node.actions_this_episode = 2;
        assert_eq!(node.ensemble(plan(0.5, 2))[0], 0.0 * 1.0 / (1.0 + w) + 0.5 * w / (1.0 + w));
        assert_eq!(node.plans.len(), 2);
    }
}
