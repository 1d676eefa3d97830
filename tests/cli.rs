//! The `vela` binary end to end, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vela(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VELA_LOG", "info")
        .output()
        .expect("vela runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn nodes_lists_types_as_text_and_json() {
    let o = vela(&["nodes"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("Counter (Utility)") && t.contains("param interval_ms"), "{t}");

    let o = vela(&["nodes", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let counter = v.as_array().unwrap().iter().find(|n| n["type_name"] == "Counter").expect("Counter listed");
    assert_eq!(counter["outputs"][0]["name"], "out");
    assert_eq!(counter["availability"]["status"], "available");
    assert!(counter["params"].as_array().unwrap().iter().any(|p| p["name"] == "interval_ms" && p["type"] == "float"));
}

#[test]
fn shipped_presets_validate() {
    let presets: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("presets"))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".json"))
        .collect();
    assert!(!presets.is_empty());
    let mut args = vec!["preset", "validate"];
    args.extend(presets.iter().map(|s| s.as_str()));
    let o = vela(&args);
    assert!(o.status.success(), "{}", text(&o));
    let o = vela(&["preset", "list"]);
    assert!(text(&o).contains("counter-demo"), "{}", text(&o));
}

#[test]
fn run_ends_when_a_node_signals_completion() {
    let dir = scratch("run");
    let stats = dir.join("stats.json");
    let o = vela(&["run", "--preset", "counter-demo", "--stats-every", "0", "--stats-json", stats.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("run ended: counter: counted 20 values"), "{t}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    // Nothing in flight is lost when the run ends: all 20 scaled values reach the log.
    assert_eq!(v["nodes"]["log"]["received"], 20, "{v}");
    assert_eq!(v["nodes"]["half"]["summary"], "× 0.5");
    assert!(v["nodes"]["frames"]["received"].as_u64().unwrap() > 0);
}

#[test]
fn bad_presets_give_clear_errors_and_exit_non_zero() {
    let dir = scratch("bad");
    let cases = [
        ("syntax.json", "{\"vela_preset\": 1,\n \"name\": }", "syntax.json:2:"),
        ("old.json", r#"{"vela_preset": 99, "name": "old"}"#, "version 99 is not supported"),
        (
            "types.json",
            r#"{"vela_preset": 1, "name": "types", "nodes": [{"name": "c", "type": "Counter"}, {"name": "p", "type": "TestPattern"}, {"name": "s", "type": "Scale"}],
               "edges": [{"from": "p.image", "to": "s.in"}]}"#,
            "output 'p.image' carries image, but input 's.in' accepts json",
        ),
        ("unknown.json", r#"{"vela_preset": 1, "name": "unknown", "nodes": [{"name": "w", "type": "WhisperASRR"}]}"#, "node 'w': unknown node type 'WhisperASRR'"),
    ];
    for (file, body, expect) in cases {
        let path = dir.join(file);
        std::fs::write(&path, body).unwrap();
        for cmd in [vec!["preset", "validate", path.to_str().unwrap()], vec!["run", "--preset", path.to_str().unwrap()]] {
            let o = vela(&cmd);
            let t = text(&o);
            assert!(!o.status.success(), "{cmd:?} should fail: {t}");
            assert!(t.contains(expect), "{cmd:?}: expected {expect:?} in:\n{t}");
            assert!(!t.contains("panicked"), "{t}");
        }
        // The file is untouched.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
    }
}

#[test]
fn unknown_preset_names_list_what_exists() {
    let o = vela(&["run", "--preset", "no-such-preset"]);
    let t = text(&o);
    assert!(!o.status.success());
    assert!(t.contains("no preset named 'no-such-preset'") && t.contains("counter-demo"), "{t}");
    let o = vela(&["run", "--preset", "../../etc/passwd"]);
    assert!(!o.status.success());
}

#[test]
fn impossible_parameters_stop_before_anything_runs() {
    let dir = scratch("fail");
    let path = dir.join("fail.json");
    std::fs::write(
        &path,
        r#"{"vela_preset": 1, "name": "fail", "nodes": [{"name": "c", "type": "Counter", "params": {"interval_ms": -1}}]}"#,
    )
    .unwrap();
    let o = vela(&["run", "--preset", path.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success());
    assert!(t.contains("node 'c': parameter 'interval_ms': -1 is below the minimum 0"), "{t}");
}

#[test]
fn bench_runtime_writes_json() {
    let dir = scratch("bench");
    let out = dir.join("bench.json");
    let o = vela(&["bench-runtime", "--messages", "300", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert!(results.iter().all(|r| r["zero_copy"] == true && r["hops"] == 4));
    assert!(v["machine"].as_str().unwrap().contains("cores"));
}

#[test]
fn agent_studio_presets_import_with_a_report() {
    let dir = scratch("import");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-studio");
    let chat = fixtures.join("chat.json");
    let dir_s = dir.to_str().unwrap();
    let o = vela(&["--presets-dir", dir_s, "preset", "import", chat.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("unknown node type: NanoLLM (NanoLLM)"), "{t}");
    assert!(t.contains("connection skipped: AutoPrompt[0] -> NanoLLM[0]: node not imported"), "{t}");
    assert!(t.contains("unknown parameter dropped: Log window.colour"), "{t}");
    assert!(t.contains("not applicable here: Log window.text_color"), "{t}");
    let (preset, _) = vela_runtime::Preset::load(&dir.join("chat.json")).unwrap();
    let names: Vec<&str> = preset.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["UserPrompt", "AutoPrompt", "Log_window"]);
    assert_eq!(preset.nodes[2].type_name, "Collector");
    assert_eq!(preset.nodes[1].params["template"], "<text> Answer briefly.");
    assert_eq!(preset.nodes[1].position, Some([200.0, 20.0]));
    let edges: Vec<String> = preset.edges.iter().map(|e| e.to_string()).collect();
    assert_eq!(edges, ["UserPrompt.text -> AutoPrompt.in", "AutoPrompt.prompt -> Log_window.in"]);
    // The result is a valid preset of ours.
    let o = vela(&["--presets-dir", dir_s, "preset", "validate", "chat"]);
    assert!(o.status.success(), "{}", text(&o));
    // Importing again does not overwrite without --force.
    let o = vela(&["--presets-dir", dir_s, "preset", "import", chat.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("--force"), "{}", text(&o));
    // Not an Agent Studio file: a clear error.
    let o = vela(&["--presets-dir", dir_s, "preset", "import", "--name", "x", "presets/counter-demo.json"]);
    assert!(!o.status.success() && text(&o).contains("no \"plugins\" list"), "{}", text(&o));

    // The OpenVLA tutorial preset: every plugin is either imported or reported.
    let o = vela(&["--presets-dir", dir_s, "preset", "import", fixtures.join("OpenVLA-MimicGen-INT4.json").to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let (preset, _) = vela_runtime::Preset::load(&dir.join("OpenVLA-MimicGen-INT4.json")).unwrap();
    for their in ["MimicGen", "VideoOutput", "NanoVLA", "AutoPrompt", "TextOverlay", "UserPrompt"] {
        let ours = if their == "NanoVLA" { "OpenVLA" } else { their };
        assert!(
            preset.nodes.iter().any(|n| n.type_name == ours) || t.contains(&format!("unknown node type: {their}")),
            "{their} neither imported nor reported:\n{t}"
        );
    }
}

#[test]
fn speech_transcribe_finds_the_words() {
    let dir = scratch("speech");
    let wav = dir.join("cmd.wav");
    let ok = Command::new("espeak-ng")
        .args(["-s", "130", "-g", "10", "-w", wav.to_str().unwrap(), "put the red block on top of the green block"])
        .status()
        .expect("espeak-ng is installed by scripts/setup.sh");
    assert!(ok.success());
    let o = vela(&["speech", "transcribe", wav.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let lower = t.to_lowercase();
    assert!(lower.contains("red") && lower.contains("green") && lower.contains("block"), "{t}");
    assert!(t.contains(" s - "), "segments carry times: {t}");
    // Whisper's whole 30 s window hears the same words as the fitted one.
    let o = vela(&["speech", "transcribe", wav.to_str().unwrap(), "--encoder-window", "full"]);
    let t = text(&o).to_lowercase();
    assert!(o.status.success() && t.contains("red") && t.contains("green"), "{t}");
    let o = vela(&["speech", "transcribe", wav.to_str().unwrap(), "--encoder-window", "half"]);
    assert!(!o.status.success() && text(&o).contains("fit or full"), "{}", text(&o));

    std::fs::write(dir.join("junk.wav"), b"not a wav file").unwrap();
    let o = vela(&["speech", "transcribe", dir.join("junk.wav").to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("junk.wav"), "{}", text(&o));
}

#[test]
fn agent_studio_speech_preset_imports_into_a_working_chain() {
    let dir = scratch("import-speech");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-studio/WhisperASR.json");
    let o = vela(&["--presets-dir", dir.to_str().unwrap(), "preset", "import", fixture.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let (preset, _) = vela_runtime::Preset::load(&dir.join("WhisperASR.json")).unwrap();
    let edges: Vec<String> = preset.edges.iter().map(|e| e.to_string()).collect();
    for want in [
        "WebAudioIn.audio -> VADFilter.in",
        "VADFilter.audio -> WhisperASR.in",
        "VADFilter.end -> WhisperASR.in",
        "WhisperASR.final -> TextStream.in",
        "WhisperASR.partial -> TextStream.in",
    ] {
        assert!(edges.iter().any(|e| e == want), "missing {want} in {edges:?}\n{t}");
    }
    let vad = preset.nodes.iter().find(|n| n.name == "VADFilter").unwrap();
    assert_eq!(vad.params["chunk"], 0.1, "1600 samples at 16 kHz = 0.1 s");
    let asr = preset.nodes.iter().find(|n| n.name == "WhisperASR").unwrap();
    assert_eq!(asr.params["model"], "base", "their base is shipped too");
}

#[test]
fn datagen_writes_a_robomimic_file_that_replays_to_success() {
    use vela_data::EpisodeReader as _;
    let dir = scratch("datagen");
    let out = dir.to_str().unwrap();
    let args = [
        "datagen", "--tasks", "Stack_D3", "--episodes", "2", "--output", out, "--camera-width", "32",
        "--camera-height", "32", "--source-demos", "3", "--workers", "2", "--seed", "5",
    ];
    let o = vela(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Stack_D3: kept 2 of"), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("datagen_report.json")).unwrap()).unwrap();
    assert_eq!(report["tasks"][0]["kept"], 2);
    assert!(report["tasks"][0]["tried"].as_u64().unwrap() >= 2);

    let mut reader = vela_data::robomimic::RobomimicReader::open(dir.join("Stack_D3.hdf5")).unwrap();
    assert_eq!(reader.len(), 2);
    assert_eq!(reader.meta().env_args["env_name"], "Stack_D3");
    assert_eq!(reader.meta().env_args["env_kwargs"]["controller_configs"]["type"], "OSC_POSE");
    let ep = reader.read(1).unwrap();
    assert_eq!(ep.images["agentview"].len(), ep.len());
    assert_eq!(ep.images["agentview"][0].width, 32);
    assert_eq!(ep.instructions.len(), ep.len());
    assert_eq!(ep.low_dim[vela_data::INTENDED_ACTION_KEY].steps(), ep.len(), "the labels `vela train --action-labels intended` uses");
    // Array attributes are stored as JSON text.
    let inds: Vec<usize> = serde_json::from_str(ep.attrs["src_demo_inds"].as_str().unwrap()).unwrap();
    assert!(inds.len() == 2 && inds.iter().all(|&i| i < 3), "{inds:?}");
    let mut env = vela_sim::StackEnv::new(vela_sim::EnvConfig {
        variant: vela_sim::Variant::D3,
        render: false,
        ..Default::default()
    })
    .unwrap();
    assert!(vela_sim::datagen::replay(&mut env, &ep).unwrap(), "the stored actions stack the cubes again");

    // An existing dataset is never overwritten by accident; one camera per dataset.
    let o = vela(&args);
    assert!(!o.status.success());
    assert!(text(&o).contains("Stack_D3.hdf5 exists") && text(&o).contains("--overwrite"), "{}", text(&o));
    let o = vela(&["datagen", "--output", out, "--cameras", "agentview,robot0_eye_in_hand"]);
    assert!(!o.status.success() && text(&o).contains("one camera"), "{}", text(&o));
    let o = vela(&["datagen", "--output", out, "--tasks", "Stack_D7", "--overwrite"]);
    assert!(!o.status.success() && text(&o).contains("Stack_D7"), "{}", text(&o));
    let o = vela(&["datagen", "--output", out, "--action-noise", "-0.5", "--overwrite"]);
    assert!(!o.status.success() && text(&o).contains("action noise"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn datagen_in_processes_merges_the_shards_into_one_file() {
    use vela_data::EpisodeReader as _;
    let dir = scratch("datagen-procs");
    let out = dir.to_str().unwrap();
    let o = vela(&[
        "datagen", "--tasks", "Stack_D2", "--episodes", "3", "--output", out, "--cameras", "none", "--source-demos", "2",
        "--workers", "2", "--processes", "2", "--seed", "4",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("datagen_report.json")).unwrap()).unwrap();
    assert_eq!(report["processes"], 2);
    assert_eq!(report["tasks"][0]["kept"], 3);
    let mut reader = vela_data::robomimic::RobomimicReader::open(dir.join("Stack_D2.hdf5")).unwrap();
    assert_eq!(reader.len(), 3);
    assert_eq!(reader.meta().env_args["env_name"], "Stack_D2");
    assert!(!dir.join(".Stack_D2-parts").exists(), "the shards' folder is removed after the merge");
    // The last demo comes from the second process: it still replays to success.
    let ep = reader.read(2).unwrap();
    let mut env = vela_sim::StackEnv::new(vela_sim::EnvConfig { variant: vela_sim::Variant::D2, render: false, ..Default::default() }).unwrap();
    assert!(vela_sim::datagen::replay(&mut env, &ep).unwrap());
    // The shards draw different trials: no two demos share their initial state.
    let firsts: Vec<Vec<f64>> = (0..3).map(|i| reader.read(i).unwrap().states.row(0).to_vec()).collect();
    assert!(firsts[0] != firsts[1] && firsts[0] != firsts[2] && firsts[1] != firsts[2]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small robomimic HDF5 file, `vela train` for 20 LoRA steps from a tiny checkpoint, and
/// `vela vla predict` on the result with the dataset's action space.
#[test]
fn train_on_hdf5_then_predict_with_the_dataset_action_space() {
    use vela_data::EpisodeWriter as _;
    let dir = scratch("train");
    let ds = dir.join("stack.hdf5");
    let meta = vela_data::DatasetMeta { name: "stack_synth".into(), env_args: serde_json::json!({}) };
    let mut w = Box::new(vela_data::robomimic::RobomimicWriter::create(&ds, &meta).unwrap());
    for i in 0..4 {
        w.append(&vela_data::synthetic::episode(i, 10, &["agentview"], 32)).unwrap();
    }
    w.finish().unwrap();
    let base = dir.join("base");
    let o = vela(&["vla", "make-checkpoint", "--config", "tiny", "--out", base.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let out = dir.join("out");
    let args = ["train", "--dataset", ds.to_str().unwrap(), "--dataset-type", "mimicgen", "--model", base.to_str().unwrap()];
    let o = vela(&[&args[..], &["--lora-rank", "4", "--epochs", "5", "--max-steps", "20", "--batch-size", "4", "--image-aug", "--val-split", "0.25", "--log-every", "5", "--out", out.to_str().unwrap()]].concat());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("20 steps") && t.contains("loss") && t.contains("samples_per_sec"), "{t}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 20);
    assert_eq!(summary["dataset"]["name"], "stack_synth");
    assert!(out.join("training.png").exists());

    let img = dir.join("frame.png");
    let f = &vela_data::synthetic::episode(9, 1, &["agentview"], 32).images["agentview"][0];
    image::RgbImage::from_raw(f.width, f.height, f.rgb.clone()).unwrap().save(&img).unwrap();
    let o = vela(&["vla", "predict", "--model", out.to_str().unwrap(), "--image", img.to_str().unwrap(), "--instruction", "stack the red block on the green block", "--action-space", "stack_synth"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim().split(',').count(), 7, "{}", text(&o));

    // Training more without --resume refuses to overwrite; --device cuda on a CPU build says why.
    let o = vela(&[&args[..], &["--max-steps", "2", "--out", out.to_str().unwrap()]].concat());
    assert!(!o.status.success() && text(&o).contains("--resume"), "{}", text(&o));
    let o = vela(&[&args[..], &["--device", "cuda", "--out", dir.join("gpu").to_str().unwrap()]].concat());
    assert!(!o.status.success() && text(&o).contains("cuda"), "{}", text(&o));
    // Intended-action labels need the series `vela datagen` writes; this file has none.
    let o = vela(&[&args[..], &["--action-labels", "intended", "--max-steps", "2", "--out", dir.join("relabel").to_str().unwrap()]].concat());
    assert!(!o.status.success() && text(&o).contains("intended_action") && text(&o).contains("demo_0"), "{}", text(&o));
}

#[test]
fn vla_bench_on_cpu_writes_json_with_every_stage() {
    let dir = scratch("vla-bench");
    let model = dir.join("tiny");
    let o = vela(&["vla", "make-checkpoint", "--config", "tiny", "--out", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = dir.join("bench.json");
    let o = vela(&["vla", "bench", "--model", model.to_str().unwrap(), "--device", "cpu", "--iters", "2", "--warmup", "0", "--save", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ratio"), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for k in ["vision_ms", "projector_ms", "prefill_ms", "decode_token_ms", "total_ms"] {
        assert!(v[k]["p50"].as_f64().unwrap() > 0.0 && v[k]["p95"].as_f64().is_some(), "{k}: {v}");
    }
    assert_eq!(v["mode"], "fp16");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 7);
    assert!(v["floor"]["total_ms"].as_f64().unwrap() > 0.0 && v["ratio"].as_f64().unwrap() > 0.0);
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0 && v["gpu_memory"].is_null());
    // A CPU-only build names the way to a CUDA one instead of failing obscurely.
    let o = vela(&["vla", "bench", "--model", model.to_str().unwrap(), "--device", "cuda"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("build-cuda.sh"), "{}", text(&o));
}

/// `vela vla eval` of a tiny checkpoint on a synthetic robomimic file: per-step lines, the
/// summary, the --save-stats JSON, a model against itself, and the errors users hit first.
#[test]
fn vla_eval_scores_a_model_against_recorded_actions() {
    use vela_data::EpisodeWriter as _;
    let dir = scratch("vla-eval");
    let ds = dir.join("stack.hdf5");
    let meta = vela_data::DatasetMeta { name: "stack_synth".into(), env_args: serde_json::json!({}) };
    let mut w = Box::new(vela_data::robomimic::RobomimicWriter::create(&ds, &meta).unwrap());
    for i in 0..2 {
        w.append(&vela_data::synthetic::episode(i, 3, &["agentview"], 32)).unwrap();
    }
    w.finish().unwrap();
    let model = dir.join("tiny");
    let o = vela(&["vla", "make-checkpoint", "--config", "tiny", "--out", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let (m, d) = (model.to_str().unwrap(), ds.to_str().unwrap());
    let stats = dir.join("stats.json");
    let o = vela(&["vla", "eval", "--model", m, "--eval-model", m, "--dataset", d, "--dataset-type", "mimicgen", "--max-steps", "4", "--save-stats", stats.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    for want in ["step 3  [", "gt   3  [", "eval 3  [", "q_err=0.0000", "timesteps 4  accuracy", "quant_error 0.0000"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    for k in ["latency", "error", "eval_latency", "eval_error", "quant_error"] {
        assert_eq!(j[k].as_array().unwrap().len(), 4, "{k}: {j}");
    }
    assert_eq!(j["mean"]["timesteps"], 4);
    assert_eq!(j["mean"]["quant_error"], 0.0);

    let o = vela(&["vla", "eval", "--model", m, "--dataset", d, "--camera", "wrist"]);
    assert!(!o.status.success() && text(&o).contains("episode demo_0: no camera `wrist` (has: agentview)"), "{}", text(&o));
    let o = vela(&["vla", "eval", "--model", m, "--dataset", d, "--action-space", "libero"]);
    assert!(!o.status.success() && text(&o).contains("`libero` not in norm_stats (have: bridge_orig)"), "{}", text(&o));
    let o = vela(&["vla", "eval", "--model", m, "--dataset", dir.join("nope.hdf5").to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("nope.hdf5 not found"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dagger_rolls_the_policy_out_and_labels_with_the_expert() {
    use vela_data::EpisodeReader as _;
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/openvla-small-mimicgen");
    let dir = scratch("dagger");
    let out = dir.to_str().unwrap();
    // beta 1 without noise: the expert drives, so what ran is exactly its label, and it stacks
    // (no model needed then).
    let o = vela(&[
        "dagger", "--tasks", "Stack_D2", "--episodes", "1", "--max-steps", "200", "--beta", "1",
        "--action-noise", "0", "--output", out, "--camera-width", "32", "--camera-height", "32", "--workers", "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut reader = vela_data::robomimic::RobomimicReader::open(dir.join("Stack_D2.hdf5")).unwrap();
    let ep = reader.read(0).unwrap();
    assert!(*ep.dones.last().unwrap() && ep.rewards.last() == Some(&1.0), "the expert stacks within 200 steps");
    let labels = &ep.low_dim[vela_data::INTENDED_ACTION_KEY];
    for (t, a) in ep.actions.iter().enumerate() {
        let l: Vec<f32> = labels.row(t).iter().map(|&x| x as f32).collect();
        assert_eq!(&a[..], &l[..], "step {t}");
    }
    assert_eq!(ep.images["agentview"].len(), ep.len());
    assert_eq!(reader.meta().env_args["datagen"]["method"], "dagger");
    drop(reader); // HDF5 locks an open file against the runs below that overwrite it.

    // A gentler expert (lower position gain) still stacks, and says so in the file.
    let o = vela(&[
        "dagger", "--tasks", "Stack_D2", "--episodes", "1", "--max-steps", "200", "--beta", "1", "--expert-gain", "1",
        "--output", out, "--camera-width", "32", "--camera-height", "32", "--workers", "1", "--overwrite",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut reader = vela_data::robomimic::RobomimicReader::open(dir.join("Stack_D2.hdf5")).unwrap();
    let ep = reader.read(0).unwrap();
    assert!(*ep.dones.last().unwrap() && ep.rewards.last() == Some(&1.0), "the gain-1 expert stacks within 200 steps");
    assert_eq!(reader.meta().env_args["datagen"]["expert_gain"], 1.0);
    drop(reader);

    // beta 0: the policy drives for the whole (short) episode; the labels are the expert's own.
    let o = vela(&[
        "dagger", "--model", model, "--tasks", "Stack_Lang", "--episodes", "2", "--max-steps", "6", "--output", out,
        "--camera-width", "32", "--camera-height", "32", "--workers", "2", "--seed", "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("dagger_report.json")).unwrap()).unwrap();
    assert_eq!(report["tasks"][0]["episodes"], 2);
    assert_eq!(report["tasks"][0]["steps"], 12);
    assert_eq!(report["tasks"][0]["expert_steps"], 0);
    let mut reader = vela_data::robomimic::RobomimicReader::open(dir.join("Stack_Lang.hdf5")).unwrap();
    assert_eq!(reader.len(), 2);
    let ep = reader.read(1).unwrap();
    assert_eq!(ep.len(), 6);
    let labels = &ep.low_dim[vela_data::INTENDED_ACTION_KEY];
    assert!(
        (0..6).any(|t| ep.actions[t].iter().zip(labels.row(t)).any(|(&a, &l)| (a as f64 - l).abs() > 1e-3)),
        "the policy's actions were executed, not the expert's"
    );
    // The expert opens its gripper while it approaches the first cube.
    assert!((0..6).all(|t| labels.row(t)[6] < 0.0));
    drop(reader);

    // Filtered cloning: only successes are written, labelled with what was executed.
    let o = vela(&[
        "dagger", "--model", model, "--tasks", "Stack_Lang", "--episodes", "2", "--max-steps", "6", "--output", out,
        "--camera-width", "32", "--camera-height", "32", "--workers", "2", "--seed", "3", "--keep", "successes",
        "--labels", "executed", "--overwrite",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("dagger_report.json")).unwrap()).unwrap();
    assert_eq!((report["tasks"][0]["episodes"].as_u64(), report["tasks"][0]["kept"].as_u64()), (Some(2), Some(0)), "nobody stacks in 6 steps");
    assert_eq!(vela_data::robomimic::RobomimicReader::open(dir.join("Stack_Lang.hdf5")).unwrap().len(), 0);
    let o = vela(&[
        "dagger", "--model", model, "--tasks", "Stack_D2", "--episodes", "1", "--beta", "1", "--output", out,
        "--camera-width", "32", "--camera-height", "32", "--workers", "1", "--keep", "successes", "--labels", "executed", "--overwrite",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut reader = vela_data::robomimic::RobomimicReader::open(dir.join("Stack_D2.hdf5")).unwrap();
    let ep = reader.read(0).unwrap();
    let labels = &ep.low_dim[vela_data::INTENDED_ACTION_KEY];
    // The expert drove every step (beta 1): its labels are its actions before the noise.
    assert!((0..ep.len()).all(|t| labels.row(t)[6] == ep.actions[t][6] as f64));
    assert!((0..ep.len()).any(|t| ep.actions[t].iter().zip(labels.row(t)).any(|(&a, &l)| (a as f64 - l).abs() > 1e-4)), "noise is not in the labels");

    // Bad flags fail before any work.
    let o = vela(&["dagger", "--model", out, "--output", out]);
    assert!(!o.status.success() && text(&o).contains("config.json"), "{}", text(&o));
    let o = vela(&["dagger", "--output", out, "--beta", "1", "--expert-gain", "0", "--overwrite"]);
    assert!(!o.status.success() && text(&o).contains("expert gain"), "{}", text(&o));
    let o = vela(&["dagger", "--output", out, "--beta", "0.5"]);
    assert!(!o.status.success() && text(&o).contains("--model is needed"), "{}", text(&o));
    let o = vela(&["dagger", "--model", model, "--output", out, "--beta", "1.5", "--overwrite"]);
    assert!(!o.status.success() && text(&o).contains("beta"), "{}", text(&o));
    let o = vela(&["dagger", "--model", model, "--output", out, "--tasks", "Stack_Lang"]);
    assert!(!o.status.success() && text(&o).contains("--overwrite"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sim_agreement_compares_a_datasets_labels_with_the_expert() {
    let dir = scratch("agreement");
    let out = dir.to_str().unwrap();
    let o = vela(&["datagen", "--tasks", "Stack_D2,Stack_Lang", "--episodes", "2", "--output", out, "--cameras", "none", "--source-demos", "2", "--workers", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let d2 = dir.join("Stack_D2.hdf5");
    let o = vela(&["sim", "agreement", "--dataset", d2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let all = text(&o).lines().find(|l| l.starts_with("all")).map(str::to_string).unwrap_or_else(|| panic!("{}", text(&o)));
    let steps: usize = all.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(steps > 100, "both episodes replayed: {all}");
    let same_sign: f64 = all.split_whitespace().find(|w| w.ends_with('%')).unwrap().trim_end_matches('%').parse().unwrap();
    assert!(same_sign > 50.0, "MimicGen's labels mostly point where the expert would go: {all}");
    let lang = dir.join("Stack_Lang.hdf5");
    let o = vela(&["sim", "agreement", "--dataset", lang.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("colours"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
