//! `vela bench voice`: how long a spoken command takes to reach the arm, through the voice
//! preset's own graph.
//!
//! The microphone node is swapped for a `WavSource` that plays spoken commands in real time,
//! with silence between them; nothing else in the graph changes (VAD, Whisper, the simulator,
//! AutoPrompt, OpenVLA, the overlay and video all run as in the studio). A passive probe on
//! the VAD's end-of-utterance events, the transcripts, the prompts and the actions times each
//! command from the moment its speech ended in the audio to the first action the policy
//! computed from a frame that carries the new instruction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vela_runtime::{
    now_ns, Context, DataType, EdgePolicy, EdgeSpec, Engine, EngineEvent, Event, Message, Node, NodeDescriptor, NodeError,
    NodeSpec, NodeStatus, Payload, PortRef, Preset, PresetStore, Registry, Timestamp,
};

#[derive(clap::Args, Clone, Debug)]
pub struct VoiceArgs {
    /// Preset with a microphone (WebAudioIn) → VADFilter → WhisperASR → … → OpenVLA chain.
    #[arg(long, default_value = "OpenVLA-MimicGen-Voice")]
    pub preset: String,
    /// A command to speak (espeak-ng), in order; repeat the flag. Without --say or --wav, six
    /// commands that swap the scene's two cubes back and forth, by colour.
    #[arg(long = "say", value_name = "TEXT")]
    pub say: Vec<String>,
    /// A recorded command (WAV), played after the --say ones; repeat the flag.
    #[arg(long = "wav", value_name = "FILE")]
    pub wavs: Vec<PathBuf>,
    /// Seconds of silence before the first command, while the graph loads its models.
    #[arg(long, default_value_t = 6.0)]
    pub lead: f64,
    /// Seconds of silence after each command.
    #[arg(long, default_value_t = 5.0)]
    pub gap: f64,
    /// Simulator seed: the scene whose cube colours the default commands name.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the per-command timings and a summary (JSON) here.
    #[arg(long, value_name = "FILE.json")]
    pub save: Option<PathBuf>,
}

/// Sample rate of the composed recording (espeak-ng's own).
pub(super) const RATE: u32 = 22_050;
/// Audio per message from the stand-in microphone. A real microphone delivers a block once it
/// is recorded; `WavSource` sends it at the start of its interval, so each block arrives up to
/// this much early and the measured latency errs long by at most this much.
const CHUNK_S: f64 = 0.02;
const PROBE: &str = "voice_probe";
/// How far a final transcript may overtake the VAD event that closed its utterance. Far
/// under the silence between commands (`--gap` is at least 1 s).
const OVERTAKE_NS: Timestamp = 500_000_000;

/// The spoken commands' scratch folder goes away however the bench ends.
pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One spoken command in the composed recording.
#[derive(Debug, Clone)]
struct Spoken {
    label: String,
    /// Where its speech ends in the recording (last sample above the noise floor).
    end_s: f64,
}

/// What the probe saw, with the wall time it arrived.
#[derive(Debug)]
enum Seen {
    /// VAD closed an utterance; `heard_s` is the audio received by then.
    Utterance { at: Timestamp, heard_s: f64 },
    Final { at: Timestamp, text: String },
    Prompt { at: Timestamp, text: String, image_ts: Timestamp },
    Action { at: Timestamp, image_ts: Timestamp },
}

struct Probe {
    tx: mpsc::UnboundedSender<Seen>,
}

impl Probe {
    fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("VoiceProbe", "Utility", "Voice latency probe")
            .describe("Times utterance ends, transcripts, prompts and actions for `vela bench voice`.")
            .input("end", &[DataType::Event], "VADFilter's end-of-utterance events")
            .input("final", &[DataType::Text], "WhisperASR's final transcripts")
            .input("prompt", &[DataType::Prompt], "the prompts OpenVLA gets")
            .input("actions", &[DataType::Actions], "OpenVLA's actions")
    }
}

impl Node for Probe {
    fn on_input(&mut self, port: &str, msg: Message, _: &mut Context) -> Result<(), NodeError> {
        let at = now_ns();
        let seen = match (port, msg.payload) {
            ("end", Payload::Event(Event::Custom { name, data })) if name == vela_speech::vad::END_OF_SPEECH => {
                let Some(heard_s) = data.get("received").and_then(Value::as_f64) else { return Ok(()) };
                Seen::Utterance { at, heard_s }
            }
            ("final", Payload::Text(t)) => Seen::Final { at, text: t.text },
            ("prompt", Payload::Prompt(p)) => {
                Seen::Prompt { at, text: p.text(), image_ts: p.last_image().map_or(msg.timestamp, |i| i.timestamp) }
            }
            ("actions", Payload::Actions(a)) if !a.partial => Seen::Action { at, image_ts: msg.timestamp },
            _ => return Ok(()),
        };
        let _ = self.tx.send(seen);
        Ok(())
    }
}

/// One command's way from speech to the arm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandTiming {
    pub command: String,
    pub heard: Option<String>,
    /// Speech end in the recording (s from its start).
    pub speech_end_s: f64,
    /// End of speech → VAD closes the utterance.
    pub vad_ms: Option<f64>,
    /// → Whisper's final transcript.
    pub asr_ms: Option<f64>,
    /// → the first prompt with the new instruction (the simulator's next frame).
    pub prompt_ms: Option<f64>,
    /// → the first action computed from such a prompt.
    pub policy_ms: Option<f64>,
    /// End of speech → that first action.
    pub total_ms: Option<f64>,
    /// Why the command has no total (instruction unchanged, nothing heard, ...).
    pub note: Option<String>,
}

pub fn run(store: &PresetStore, args: VoiceArgs) -> Result<()> {
    let (rows, summary) = measure(store, &args)?;
    println!(
        "{:<44} {:>7} {:>7} {:>8} {:>8} {:>8}  heard",
        "command", "vad ms", "asr ms", "frame ms", "vla ms", "total ms"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    for r in &rows {
        println!(
            "{:<44} {:>7} {:>7} {:>8} {:>8} {:>8}  {}{}",
            r.command.chars().take(44).collect::<String>(),
            f(r.vad_ms),
            f(r.asr_ms),
            f(r.prompt_ms),
            f(r.policy_ms),
            f(r.total_ms),
            r.heard.as_deref().unwrap_or("(nothing)"),
            r.note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default()
        );
    }
    println!(
        "end of speech → first action: median {} ms, max {} ms over {} of {} commands",
        f(summary["total_ms"]["median"].as_f64()),
        f(summary["total_ms"]["max"].as_f64()),
        summary["measured"],
        rows.len()
    );
    if let Some(p) = &args.save {
        let doc = json!({ "preset": args.preset, "seed": args.seed, "commands": rows, "summary": summary,
                          "chunk_s": CHUNK_S, "machine": vela_runtime::bench::machine_description() });
        std::fs::write(p, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// The default commands: the scene's two cubes, one on the other and back, starting with the
/// order the scene does not already ask for (an unchanged instruction would time nothing).
fn default_commands(variant: &str, seed: u64) -> Result<Vec<String>> {
    let variant: vela_sim::Variant = variant.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let env = vela_sim::StackEnv::new(vela_sim::EnvConfig { variant, seed, render: false, ..Default::default() })?;
    let (small, big) = env.colours();
    let small_on_big = format!("put the {small} block on the {big} block", small = small.name(), big = big.name());
    let big_on_small = format!("put the {big} block on the {small} block", small = small.name(), big = big.name());
    let (first, second) = match env.order() {
        vela_sim::StackOrder::SmallOnBig => (big_on_small, small_on_big),
        vela_sim::StackOrder::BigOnSmall => (small_on_big, big_on_small),
    };
    Ok((0..6).map(|i| if i % 2 == 0 { first.clone() } else { second.clone() }).collect())
}

/// Mono samples at [`RATE`], by linear interpolation (the VAD resamples again to 16 kHz).
pub(super) fn to_rate(w: &vela_speech::wav::WavData) -> Vec<f32> {
    let ch = w.channels.max(1) as usize;
    let mono: Vec<f32> = w.samples.chunks(ch).map(|f| f.iter().sum::<f32>() / ch as f32).collect();
    if w.sample_rate == RATE || mono.is_empty() {
        return mono;
    }
    let n = (mono.len() as f64 * RATE as f64 / w.sample_rate as f64) as usize;
    (0..n)
        .map(|i| {
            let x = i as f64 * w.sample_rate as f64 / RATE as f64;
            let j = x.floor() as usize;
            let t = (x - j as f64) as f32;
            let a = mono[j.min(mono.len() - 1)];
            let b = mono[(j + 1).min(mono.len() - 1)];
            a + (b - a) * t
        })
        .collect()
}

pub(super) fn speak(text: &str, dir: &Path, i: usize) -> Result<PathBuf> {
    let path = dir.join(format!("say-{i}.wav"));
    let status = std::process::Command::new("espeak-ng")
        .args(["-s", "130", "-g", "10", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .context("running espeak-ng for --say (scripts/setup-speech.sh installs it; or pass recordings with --wav)")?;
    if !status.success() {
        bail!("espeak-ng failed on {text:?}");
    }
    Ok(path)
}

/// Lead silence, then each command and a gap of silence; where each command's speech ends.
fn compose(args: &VoiceArgs, commands: &[(String, PathBuf)], out: &Path) -> Result<Vec<Spoken>> {
    if !(args.lead >= 0.0 && args.gap >= 1.0 && args.lead.is_finite() && args.gap.is_finite()) {
        bail!("--lead must be 0 or more seconds and --gap at least 1 s (the VAD needs silence to close an utterance)");
    }
    let silence = |s: f64| vec![0.0f32; (s * RATE as f64) as usize];
    let mut audio = silence(args.lead);
    let mut spoken = Vec::new();
    for (label, path) in commands {
        let w = vela_speech::wav::read_wav(path).with_context(|| format!("reading {}", path.display()))?;
        let s = to_rate(&w);
        let last = s.iter().rposition(|x| x.abs() > 0.01).with_context(|| format!("{}: no speech in it", path.display()))?;
        spoken.push(Spoken { label: label.clone(), end_s: (audio.len() + last + 1) as f64 / RATE as f64 });
        audio.extend_from_slice(&s[..=last]);
        audio.extend(silence(args.gap));
    }
    std::fs::write(out, vela_speech::wav::encode_wav(&audio, RATE, 1)).with_context(|| format!("writing {}", out.display()))?;
    Ok(spoken)
}

/// The name of the preset's one node of type `ty`; `bench` names the subcommand in the error.
pub(super) fn only_node(preset: &Preset, path: &Path, ty: &str, bench: &str) -> Result<String> {
    let mut it = preset.nodes.iter().filter(|n| n.type_name == ty);
    match (it.next(), it.next()) {
        (Some(n), None) => Ok(n.name.clone()),
        (None, _) => bail!("{}: `vela bench {bench}` needs a {ty} node; the preset has none", path.display()),
        (Some(_), Some(_)) => bail!("{}: more than one {ty} node; `vela bench {bench}` needs exactly one", path.display()),
    }
}

fn measure(store: &PresetStore, args: &VoiceArgs) -> Result<(Vec<CommandTiming>, Value)> {
    let (preset, path, warnings) = store.load(&args.preset)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let find = |ty: &str| only_node(&preset, &path, ty, "voice");
    let (mic, vad, asr, prompt, vla, sim) =
        (find("WebAudioIn")?, find("VADFilter")?, find("WhisperASR")?, find("AutoPrompt")?, find("OpenVLA")?, find("MimicGen")?);

    let dir = std::env::temp_dir().join(format!("vela-bench-voice-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let mut commands = Vec::new();
    let says = if args.say.is_empty() && args.wavs.is_empty() {
        let variant = preset
            .nodes
            .iter()
            .find(|n| n.name == sim)
            .and_then(|n| n.params.get("environment"))
            .and_then(Value::as_str)
            .unwrap_or("Stack_Lang")
            .to_string();
        default_commands(&variant, args.seed)?
    } else {
        args.say.clone()
    };
    for (i, s) in says.iter().enumerate() {
        commands.push((s.clone(), speak(s, &dir, i)?));
    }
    for w in &args.wavs {
        commands.push((w.display().to_string(), w.clone()));
    }
    let recording = dir.join("commands.wav");
    let spoken = compose(args, &commands, &recording)?;
    let audio_s = spoken.last().map_or(args.lead, |s| s.end_s) + args.gap;

    // The preset's graph with the recording for a microphone, the scene held still between
    // commands (no episode ends on its own), and the probe.
    let mut graph = preset.graph();
    for n in graph.nodes.iter_mut() {
        if n.name == mic {
            n.type_name = "WavSource".into();
            n.params = serde_json::Map::new();
            n.params.insert("path".into(), json!(recording.display().to_string()));
            n.params.insert("chunk".into(), json!(CHUNK_S));
            n.params.insert("realtime".into(), json!(true));
        } else if n.name == sim {
            n.params.insert("seed".into(), json!(args.seed));
            n.params.insert("horizon".into(), json!(100_000));
        }
    }
    graph.nodes.push(NodeSpec { name: PROBE.into(), type_name: "VoiceProbe".into(), params: Default::default(), position: None });
    for (from, port) in [((&vad, "end"), "end"), ((&asr, "final"), "final"), ((&prompt, "prompt"), "prompt"), ((&vla, "actions"), "actions")] {
        graph.edges.push(EdgeSpec { from: PortRef::new(from.0, from.1), to: PortRef::new(PROBE, port), policy: EdgePolicy::Queue });
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut registry: Registry = crate::registry::build();
    registry.register(Probe::descriptor(), move |_| Ok(Box::new(Probe { tx: tx.clone() })));
    let registry = Arc::new(registry);
    preset.validate(&registry, &path)?;
    // The recording's clock: the mic's first block is sample 0.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let sim_name = sim.clone();
    let seen = rt.block_on(async move {
        let engine = Engine::new(registry);
        engine.load(&graph).await?;
        let mut events = engine.subscribe();
        tracing::info!("playing {} commands ({audio_s:.1} s of audio) into '{}'", spoken.len(), preset.name);
        engine.start().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(audio_s + 15.0);
        let mut seen = Vec::new();
        let mut failure = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::signal::ctrl_c() => { failure = Some("interrupted".to_string()); break }
                s = rx.recv() => match s { Some(s) => seen.push(s), None => break },
                ev = events.recv() => match ev {
                    Ok(EngineEvent::Status { node, status: NodeStatus::Failed { error } }) => {
                        failure = Some(format!("node '{node}' failed: {error}"));
                        break;
                    }
                    Ok(EngineEvent::Alert { node, text, .. }) => {
                        tracing::warn!("{}: {text}", node.unwrap_or_default());
                    }
                    Ok(EngineEvent::Output { node, value }) if node == sim_name => tracing::debug!("{node}: {value}"),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    _ => {}
                },
            }
        }
        engine.drain_and_stop(Duration::from_secs(2)).await;
        while let Ok(s) = rx.try_recv() {
            seen.push(s);
        }
        match failure {
            Some(f) => Err(anyhow::anyhow!(f)),
            None => Ok::<_, anyhow::Error>((seen, spoken)),
        }
    });
    let (seen, spoken) = seen?;
    let rows = attribute(&spoken, &seen);
    let totals: Vec<f64> = rows.iter().filter_map(|r| r.total_ms).collect();
    let stat = |k: fn(&CommandTiming) -> Option<f64>| {
        let mut v: Vec<f64> = rows.iter().filter_map(k).collect();
        v.sort_by(f64::total_cmp);
        json!({ "median": v.get(v.len() / 2), "max": v.last(), "min": v.first() })
    };
    let summary = json!({
        "measured": totals.len(),
        "total_ms": stat(|r| r.total_ms), "vad_ms": stat(|r| r.vad_ms), "asr_ms": stat(|r| r.asr_ms),
        "prompt_ms": stat(|r| r.prompt_ms), "policy_ms": stat(|r| r.policy_ms),
    });
    Ok((rows, summary))
}

/// Matches what the probe saw to the commands, in order: the k-th closed utterance is the k-th
/// command. The speech end's wall time is the VAD event's arrival minus the audio received
/// after the speech ended.
fn attribute(spoken: &[Spoken], seen: &[Seen]) -> Vec<CommandTiming> {
    let ms = |a: Timestamp, b: Timestamp| (b as f64 - a as f64) / 1e6;
    let utterances: Vec<(Timestamp, f64)> =
        seen.iter().filter_map(|s| if let Seen::Utterance { at, heard_s } = s { Some((*at, *heard_s)) } else { None }).collect();
    spoken
        .iter()
        .enumerate()
        .map(|(k, sp)| {
            let mut row = CommandTiming {
                command: sp.label.clone(),
                heard: None,
                speech_end_s: sp.end_s,
                vad_ms: None,
                asr_ms: None,
                prompt_ms: None,
                policy_ms: None,
                total_ms: None,
                note: None,
            };
            let Some(&(t_vad, heard_s)) = utterances.get(k) else {
                row.note = Some("the VAD closed no utterance for it".into());
                return row;
            };
            let t_end = t_vad.saturating_sub(((heard_s - sp.end_s).max(0.0) * 1e9) as u64);
            row.vad_ms = Some(ms(t_end, t_vad));
            // The final can reach the probe before the VAD's event does (an early transcript
            // is sent the moment the ASR node sees the end marker, and the two travel on
            // different edges, a few milliseconds apart at most): it is the first final from
            // half a second before the VAD's event on.
            let since = t_vad.saturating_sub(OVERTAKE_NS);
            let Some((t_final, text)) =
                seen.iter().find_map(|s| match s { Seen::Final { at, text } if *at >= since => Some((*at, text.clone())), _ => None })
            else {
                row.note = Some("no transcript".into());
                return row;
            };
            row.asr_ms = Some(ms(t_vad, t_final).max(0.0));
            row.heard = Some(text.trim().to_string());
            let before = seen.iter().rev().find_map(|s| match s {
                Seen::Prompt { at, text, .. } if *at < t_final => Some(text.clone()),
                _ => None,
            });
            let changed = seen.iter().find_map(|s| match s {
                Seen::Prompt { at, text, image_ts } if *at >= t_final && Some(text) != before.as_ref() => Some((*at, *image_ts)),
                _ => None,
            });
            let next_utterance = utterances.get(k + 1).map_or(Timestamp::MAX, |u| u.0);
            let Some((t_prompt, image_ts)) = changed.filter(|c| c.0 < next_utterance) else {
                row.note = Some("the instruction did not change".into());
                return row;
            };
            row.prompt_ms = Some(ms(t_final, t_prompt));
            let Some(t_action) = seen.iter().find_map(|s| match s {
                Seen::Action { at, image_ts: ts } if *ts >= image_ts => Some(*at),
                _ => None,
            }) else {
                row.note = Some("no action followed".into());
                return row;
            };
            row.policy_ms = Some(ms(t_prompt, t_action));
            row.total_ms = Some(ms(t_end, t_action));
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Timestamp = 1_000_000_000;

    #[test]
    fn a_command_is_timed_from_its_speech_end_to_the_first_action_on_the_new_prompt() {
        let spoken = [Spoken { label: "put the red block on the green block".into(), end_s: 8.0 }];
        let seen = [
            Seen::Prompt { at: 9 * S, text: "old".into(), image_ts: 1 },
            Seen::Utterance { at: 10 * S, heard_s: 8.6 }, // speech ended 0.6 s before
            Seen::Action { at: 10 * S + S / 10, image_ts: 1 }, // the old prompt's action
            Seen::Final { at: 11 * S, text: " put the red block on the green block".into() },
            Seen::Prompt { at: 11 * S + S / 20, text: "old".into(), image_ts: 2 },
            Seen::Prompt { at: 11 * S + S / 10, text: "put the red block on the green block".into(), image_ts: 3 },
            Seen::Action { at: 11 * S + S / 5, image_ts: 2 },
            Seen::Action { at: 11 * S + 3 * S / 10, image_ts: 3 },
        ];
        let r = &attribute(&spoken, &seen)[0];
        assert_eq!(r.note, None);
        assert!((r.vad_ms.unwrap() - 600.0).abs() < 1e-3);
        assert!((r.asr_ms.unwrap() - 1000.0).abs() < 1e-6);
        assert!((r.prompt_ms.unwrap() - 100.0).abs() < 1e-6);
        assert!((r.policy_ms.unwrap() - 200.0).abs() < 1e-6);
        assert!((r.total_ms.unwrap() - 1900.0).abs() < 1e-3);
        assert_eq!(r.heard.as_deref(), Some("put the red block on the green block"));
    }

    #[test]
    fn a_final_that_overtakes_the_vad_event_still_counts() {
        let spoken = [Spoken { label: "a".into(), end_s: 1.0 }, Spoken { label: "b".into(), end_s: 3.0 }];
        let seen = [
            Seen::Prompt { at: S, text: "old".into(), image_ts: 1 },
            Seen::Final { at: 2 * S - 1000, text: "a".into() },
            Seen::Utterance { at: 2 * S, heard_s: 1.6 },
            Seen::Prompt { at: 2 * S + S / 10, text: "a".into(), image_ts: 2 },
            Seen::Action { at: 2 * S + S / 5, image_ts: 2 },
            Seen::Utterance { at: 4 * S, heard_s: 3.6 },
            Seen::Final { at: 4 * S + S / 2, text: "b".into() },
            Seen::Prompt { at: 4 * S + 6 * S / 10, text: "b".into(), image_ts: 3 },
            Seen::Action { at: 4 * S + 7 * S / 10, image_ts: 3 },
        ];
        let r = attribute(&spoken, &seen);
        assert_eq!(r[0].heard.as_deref(), Some("a"));
        assert_eq!(r[0].asr_ms, Some(0.0));
        assert!((r[0].total_ms.unwrap() - 800.0).abs() < 1e-3);
        assert_eq!(r[1].heard.as_deref(), Some("b"));
        assert!((r[1].total_ms.unwrap() - 1300.0).abs() < 1e-3);
    }

    #[test]
    fn a_command_that_changes_nothing_is_reported_not_timed() {
        let spoken = [Spoken { label: "hello".into(), end_s: 1.0 }];
        let seen = [
            Seen::Prompt { at: S, text: "old".into(), image_ts: 1 },
            Seen::Utterance { at: 2 * S, heard_s: 1.5 },
            Seen::Final { at: 3 * S, text: "hello".into() },
            Seen::Prompt { at: 4 * S, text: "old".into(), image_ts: 2 },
            Seen::Action { at: 5 * S, image_ts: 2 },
        ];
        let r = &attribute(&spoken, &seen)[0];
        assert_eq!(r.total_ms, None);
        assert_eq!(r.note.as_deref(), Some("the instruction did not change"));
    }

    #[test]
    fn bad_timing_flags_are_refused() {
        let args = VoiceArgs {
            preset: "x".into(),
            say: vec![],
            wavs: vec![],
            lead: 1.0,
            gap: 0.2,
            seed: 0,
            save: None,
        };
        let e = compose(&args, &[], Path::new("/nonexistent/x.wav")).unwrap_err();
        assert!(e.to_string().contains("--gap"), "{e}");
    }
}
