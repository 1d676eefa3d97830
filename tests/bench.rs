//! `vela bench` end to end: real simulator, real policies, few episodes, small frames.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn vela(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VELA_LOG", "warn")
        .output()
        .expect("vela runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench").join(name).to_string_lossy().into_owned()
}

fn stats(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (seed, success, steps) per episode, sorted by seed.
fn outcomes(v: &Value) -> Vec<(u64, bool, u64)> {
    let mut o: Vec<_> = v["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seed"].as_u64().unwrap(), e["success"].as_bool().unwrap(), e["steps"].as_u64().unwrap()))
        .collect();
    o.sort();
    o
}

fn bench(preset: &str, extra: &[&str], out: &Path) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec!["bench", "--preset", preset, "--save-stats", out, "--quiet"];
    args.extend_from_slice(extra);
    vela(&args)
}

#[test]
fn scripted_expert_succeeds_and_the_report_is_written() {
    let dir = scratch("expert");
    let file = dir.join("expert.json");
    let report = dir.join("report");
    let o = bench(&fixture("expert.json"), &["--episodes", "3", "--seed", "0", "--report", report.to_str().unwrap()], &file);
    assert!(o.status.success(), "{}", text(&o));
    let v = stats(&file);
    let s = &v["summary"];
    assert_eq!(s["episodes"], 3, "{v}");
    assert!(s["successes"].as_u64().unwrap() >= 2, "the expert should stack nearly always: {v}");
    assert!(s["complete"].as_bool().unwrap());
    let e = &v["episodes"][0];
    assert_eq!(e["variant"], "Stack_D2");
    assert!(!e["instruction"].as_str().unwrap().is_empty(), "{e}");
    assert!(e["policy_ms_mean"].is_null(), "built-in motion has no policy latency");
    // Each episode says how far it got; the expert's successes got all the way.
    for e in v["episodes"].as_array().unwrap() {
        let want = if e["success"] == true { "stacked" } else { e["stage"].as_str().unwrap_or("missing") };
        assert_eq!(e["stage"], want, "{e}");
        assert_eq!(e["grasped_other"], false, "{e}");
    }
    assert!(text(&o).contains("furthest stage: start ") && text(&o).contains("grasped the other cube"), "{}", text(&o));
    assert!(s["wilson95_pct"][1].as_f64().unwrap() <= 100.0);
    for f in ["index.html", "success.png", "steps.png", "latency.png", "frames.png"] {
        assert!(report.join(f).is_file(), "missing {f}");
    }
    assert_eq!(std::fs::read_dir(report.join("frames")).unwrap().count(), 3, "one final frame per episode");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("successes (") && html.contains("success.png"), "{html}");
    assert!(html.contains("Episodes by furthest stage") && html.contains("stacked <b>"), "{html}");
}

#[test]
fn zero_policy_never_succeeds_and_parallel_runs_the_same_episodes() {
    let dir = scratch("zeros");
    let (one, two) = (dir.join("p1.json"), dir.join("p2.json"));
    let common = ["--episodes", "4", "--max-steps", "15", "--seed", "7"];
    let o = bench(&fixture("zeros.json"), &common, &one);
    assert!(o.status.success(), "{}", text(&o));
    let o = bench(&fixture("zeros.json"), &[&common[..], &["--parallel", "2"]].concat(), &two);
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (stats(&one), stats(&two));
    assert_eq!(a["summary"]["successes"], 0, "{a}");
    assert!(a["summary"]["model"].as_str().unwrap().contains("ConstantPolicy"), "{a}");
    // Every episode ran its full 15 counted steps, answered by the policy each step.
    assert_eq!(outcomes(&a), (7..11).map(|s| (s, false, 15)).collect::<Vec<_>>());
    assert_eq!(outcomes(&a), outcomes(&b), "--parallel 2 must run the same episodes");
    assert!(a["episodes"][0]["policy_ms_mean"].as_f64().unwrap() > 0.0);
    // A policy that never moves never gets near a cube.
    assert!(a["episodes"].as_array().unwrap().iter().all(|e| e["stage"] == "start"), "{a}");
    let o = vela(&["bench", "compare", one.to_str().unwrap(), two.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("0/4 (0.0%)") && t.contains("p1 vs p2: 0 of 4 common seeds differ"), "{t}");
    assert!(t.contains("furthest: start") && t.contains("held the other cube"), "{t}");
}

#[test]
fn interrupted_runs_resume_where_they_stopped() {
    let dir = scratch("resume");
    let file = dir.join("run.json");
    // A run that would take far longer than we wait; stop it once two episodes are saved.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["bench", "--preset", &fixture("zeros.json"), "--episodes", "1000", "--max-steps", "10", "--quiet"])
        .args(["--save-stats", file.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VELA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !(file.exists() && stats(&file)["episodes"].as_array().unwrap().len() >= 2) {
        assert!(t0.elapsed() < Duration::from_secs(60), "no episodes saved");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGINT, as Ctrl-C sends: the run stops cleanly and keeps its episodes.
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean stop, not a failure: {status:?}");
    let partial = stats(&file);
    let kept = partial["episodes"].as_array().unwrap().len();
    assert!((2..1000).contains(&kept));
    assert_eq!(partial["summary"]["complete"], false);

    let total = (kept + 2).to_string();
    let o = bench(&fixture("zeros.json"), &["--episodes", &total, "--max-steps", "10", "--resume"], &file);
    assert!(o.status.success(), "{}", text(&o));
    let done = stats(&file);
    let seeds: Vec<u64> = outcomes(&done).iter().map(|o| o.0).collect();
    assert_eq!(seeds, (0..kept as u64 + 2).collect::<Vec<_>>(), "each seed exactly once");
    assert_eq!(done["summary"]["complete"], true);

    // A different configuration is not a continuation.
    let o = bench(&fixture("zeros.json"), &["--episodes", &total, "--max-steps", "11", "--resume"], &file);
    assert!(!o.status.success());
    assert!(text(&o).contains("resume with the same flags"), "{}", text(&o));
}

#[test]
fn bad_flags_and_missing_presets_give_clear_errors() {
    let dir = scratch("errors");
    let out = dir.join("x.json");
    let cases: [(&[&str], &str); 14] = [
        (&["bench", "--preset", "no-such-preset"], "no-such-preset"),
        (&["bench", "commanded", "--episodes", "0"], "--episodes must be at least 1"),
        (&["bench", "commanded", "--preset", "mimicgen-expert", "--episodes", "1"], "needs a WebAudioIn node"),
        (&["bench", "commanded", "--via", "shouted"], "shouted"),
        (&["bench", "voice", "--preset", "mimicgen-expert"], "needs a WebAudioIn node"),
        (&["bench", "voice", "--preset", "no-such-preset"], "no-such-preset"),
        (&["bench", "voice", "--gap", "0.2", "--wav", "/nonexistent.wav"], "--gap"),
        (&["bench", "--episodes", "3"], "--preset is required"),
        (&["bench", "--preset", "counter-demo"], "has no MimicGen node"),
        (&["bench", "--preset", "mimicgen-expert", "--parallel", "0"], "--parallel must be between 1 and 64"),
        (&["bench", "--preset", "mimicgen-expert", "--variant", "Stack_D9"], "environment"),
        (&["bench", "--preset", "mimicgen-expert", "--resume"], "--resume needs --save-stats"),
        (&["bench", "--preset", "mimicgen-expert", "--dora", "--parallel", "2"], "--dora runs one environment"),
        (&["bench", "--preset", "mimicgen-expert", "--machine", "sim=gpu"], "add --dora"),
    ];
    for (args, want) in cases {
        let o = vela(args);
        assert!(!o.status.success(), "{args:?} should fail");
        let t = text(&o);
        assert!(t.contains(want), "{args:?}: expected {want:?} in {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    let o = vela(&["bench", "--preset", "mimicgen-expert", "--resume", "--save-stats", out.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("x.json"), "{}", text(&o));
    let o = vela(&["bench", "compare", out.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("x.json"), "{}", text(&o));
}

/// The real OpenVLA node (random tiny checkpoint) in lock-step with the simulator, alone and
/// batched across two environments.
#[test]
fn tiny_openvla_runs_alone_and_batched() {
    let dir = scratch("vla");
    let model = dir.join("tiny");
    let o = vela(&["vla", "make-checkpoint", "--config", "tiny", "--out", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let preset = std::fs::read_to_string(fixture("zeros.json"))
        .unwrap()
        .replace("\"bench-zeros\"", "\"bench-tiny-vla\"")
        .replace(
            r#""type": "ConstantPolicy", "params": { "values": "0,0,0,0,0,0,0" }"#,
            &format!(r#""type": "OpenVLA", "params": {{ "model": {:?} }}"#, model.to_str().unwrap()),
        )
        .replace("\"policy.in\"", "\"policy.prompt\"");
    let preset_file = dir.join("tiny-vla.json");
    std::fs::write(&preset_file, preset).unwrap();
    let (one, two) = (dir.join("p1.json"), dir.join("p2.json"));
    let (r1, r2) = (dir.join("r1"), dir.join("r2"));
    let common = ["--episodes", "3", "--max-steps", "6", "--seed", "3"];
    let o = bench(preset_file.to_str().unwrap(), &[&common[..], &["--report", r1.to_str().unwrap()]].concat(), &one);
    assert!(o.status.success(), "{}", text(&o));
    let o = bench(preset_file.to_str().unwrap(), &[&common[..], &["--parallel", "2", "--report", r2.to_str().unwrap()]].concat(), &two);
    assert!(o.status.success(), "{}", text(&o));
    // Same seeds, same trajectories: every final frame is bit-identical alone and batched
    // (episode 3 starts in whichever environment finishes first).
    for seed in 3..6 {
        let f = format!("frames/seed{seed:06}.png");
        assert_eq!(std::fs::read(r1.join(&f)).unwrap(), std::fs::read(r2.join(&f)).unwrap(), "seed {seed} diverged");
    }
    let (a, b) = (stats(&one), stats(&two));
    assert_eq!(a["summary"]["model"], model.to_str().unwrap());
    assert_eq!(a["summary"]["quantization"], "fp16");
    assert_eq!(b["config"]["parallel"], 2);
    for v in [&a, &b] {
        assert_eq!(v["summary"]["episodes"], 3, "{v}");
        for e in v["episodes"].as_array().unwrap() {
            assert!(e["policy_ms_mean"].as_f64().unwrap() > 0.0 && e["policy_ms_p95"].as_f64().unwrap() > 0.0, "{e}");
        }
    }
    // Random weights never stack the cube within 6 steps, alone or batched.
    assert_eq!(outcomes(&a), outcomes(&b));
}

/// The zeros fixture with one edit (`from` must occur in it), saved as `dir/<name>.json`
/// under the preset name `bench-<name>`.
fn zeros_variant(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(fixture("zeros.json")).unwrap();
    assert!(text.contains(from), "fixture changed: {text}");
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, text.replace("\"bench-zeros\"", &format!("\"bench-{name}\"")).replace(from, to)).unwrap();
    file
}

/// A policy that stops answering mid-episode ends the run with an error naming the
/// environment and episode, instead of hanging forever.
#[test]
fn a_hung_policy_is_reported_not_waited_for() {
    let dir = scratch("stall");
    let preset_file = zeros_variant(&dir, "stall", r#""values": "0,0,0,0,0,0,0""#, r#""values": "0,0,0,0,0,0,0", "limit": 3"#);
    let o = bench(preset_file.to_str().unwrap(), &["--episodes", "2", "--stall-timeout", "2"], &dir.join("s.json"));
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("environment 0 made no step") && t.contains("episode 0 (seed 0)"), "{t}");
}

/// A policy that never answers its first frame (here: its actions go nowhere) ends the run
/// after the start-up limit with an error that says so, instead of hanging forever: a GPU run
/// once sat for eight minutes on environments that never made a step.
#[test]
fn a_policy_that_never_answers_is_reported_after_the_startup_limit() {
    let dir = scratch("startup");
    let preset_file = zeros_variant(&dir, "silent", r#",
    { "from": "policy.actions", "to": "sim.actions" }"#, "");
    let o = bench(preset_file.to_str().unwrap(), &["--episodes", "1", "--startup-timeout", "3"], &dir.join("s.json"));
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("environment 0 has made no step") && t.contains("--startup-timeout"), "{t}");
}

/// `vela bench commanded` on the shipped voice preset: typed commands reach the simulator as
/// given and restart the scene they name; spoken ones go through espeak-ng, the VAD and
/// Whisper first. Four steps per episode: this checks the loop and its records, not the
/// policy (which cannot stack in four steps).
#[test]
fn commanded_episodes_run_typed_and_spoken() {
    let dir = scratch("commanded");
    let file = dir.join("c.json");
    let o = vela(&["bench", "commanded", "--episodes", "2", "--max-steps", "4", "--seed", "3", "--save", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("Voice commands") && t.contains("Typed commands"), "{t}");
    let doc = stats(&file);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["via"], "voice");
    assert_eq!(runs[1]["via"], "typed");
    for run in runs {
        let rows = run["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{run}");
        assert_eq!(rows[0]["seed"], 3);
        assert_eq!(rows[1]["seed"], 4);
        assert_eq!(run["summary"]["episodes"], 2);
        for r in rows {
            assert!(r["heard"].as_str().is_some_and(|h| !h.is_empty()), "a transcript for every command: {r}");
        }
    }
    // Typed commands are understood as given, and each commanded episode runs to its limit.
    for r in runs[1]["rows"].as_array().unwrap() {
        assert_eq!(r["understood"], true, "{r}");
        assert_eq!(r["heard_right"], true, "{r}");
        assert!(r["steps"].as_u64().unwrap() <= 4, "{r}");
    }
    // The first command asks for the big cube on the small one, the second the reverse.
    let c0 = runs[1]["rows"][0]["command"].as_str().unwrap();
    let c1 = runs[1]["rows"][1]["command"].as_str().unwrap();
    assert!(c0.starts_with("put the ") && c1.starts_with("put the ") && c0 != c1, "{c0} / {c1}");
    assert!(doc["machine"].is_string() || doc["machine"].is_object(), "{doc}");
}
