//! `vela bench --dora` against the in-process bench: the same seeds must give the same
//! episodes when the preset's nodes run as dora nodes on a real coordinator and daemon.
//!
//! Ignored in the plain `cargo test`: it needs the dora CLI and a runner built with the
//! simulator (`vela-dora-node`, `--features sim`), which the default build leaves out.
//! `scripts/test-dora.sh` builds both and runs it with `VELA_DORA_RUNNER` set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn runner() -> String {
    std::env::var("VELA_DORA_RUNNER").expect("VELA_DORA_RUNNER: the vela-dora-node built with --features sim (scripts/test-dora.sh sets it)")
}

fn bench(preset: &str, extra: &[&str], out: &Path) -> Output {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench").join(preset);
    Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["bench", "--preset", fixture.to_str().unwrap(), "--save-stats", out.to_str().unwrap(), "--quiet"])
        .args(extra)
        .env("VELA_LOG", "warn")
        .output()
        .expect("vela runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-dora-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// (seed, success, steps) per episode, by seed.
fn outcomes(path: &Path) -> Vec<(u64, bool, u64)> {
    trajectories(path).into_iter().map(|(s, ok, n, _)| (s, ok, n)).collect()
}

/// Outcomes plus where the gripper and cubes ended, bit-exact for equal trajectories.
fn trajectories(path: &Path) -> Vec<(u64, bool, u64, String)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut o: Vec<_> = v["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let end = &e["final_positions"];
            assert!(end["cube_a"].is_array(), "every episode records where it ended: {e}");
            (e["seed"].as_u64().unwrap(), e["success"].as_bool().unwrap(), e["steps"].as_u64().unwrap(), end.to_string())
        })
        .collect();
    o.sort();
    o
}

/// The scripted expert on Stack_D2: the success count (and every episode's length) through a
/// real dora coordinator and daemon equals the in-process run's.
#[test]
#[ignore = "needs the dora CLI and VELA_DORA_RUNNER; run by scripts/test-dora.sh"]
fn expert_episodes_on_dora_match_the_in_process_bench() {
    let dir = scratch("expert");
    let (local, on_dora) = (dir.join("local.json"), dir.join("dora.json"));
    let common = ["--episodes", "3", "--seed", "21"];
    let o = bench("expert.json", &common, &local);
    assert!(o.status.success(), "{}", text(&o));
    let (report, runner) = (dir.join("report"), runner());
    let extra = [&common[..], &["--dora", "--runner", &runner, "--report", report.to_str().unwrap()]].concat();
    let o = bench("expert.json", &extra, &on_dora);
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (outcomes(&local), outcomes(&on_dora));
    assert_eq!(a.iter().map(|e| e.0).collect::<Vec<_>>(), vec![21, 22, 23]);
    assert!(a.iter().filter(|e| e.1).count() >= 2, "the expert stacks: {a:?}");
    assert_eq!(a, b, "dora must run the same episodes as in-process");
    assert_eq!(trajectories(&local), trajectories(&on_dora), "and end them in the same state");
    assert!(report.join("index.html").is_file(), "the report is written for dora runs too");
}

/// A closed loop across dora nodes: the simulator waits for each action from a policy in
/// another process (AutoPrompt and the policy grouped in one), step for step as in-process.
#[test]
#[ignore = "needs the dora CLI and VELA_DORA_RUNNER; run by scripts/test-dora.sh"]
fn lock_step_policy_across_dora_nodes_runs_the_same_episodes() {
    let dir = scratch("zeros");
    let (local, on_dora) = (dir.join("local.json"), dir.join("dora.json"));
    let common = ["--episodes", "2", "--max-steps", "12", "--seed", "4"];
    let o = bench("zeros.json", &common, &local);
    assert!(o.status.success(), "{}", text(&o));
    let runner = runner();
    let extra = [&common[..], &["--dora", "--dora-via", "run", "--group", "prompt,policy=brain", "--runner", &runner]].concat();
    let o = bench("zeros.json", &extra, &on_dora);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(outcomes(&local), vec![(4, false, 12), (5, false, 12)]);
    assert_eq!(trajectories(&local), trajectories(&on_dora), "the same actions, so the same end state");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&on_dora).unwrap()).unwrap();
    assert!(v["episodes"][0]["policy_ms_mean"].as_f64().unwrap() > 0.0, "the policy answered over dora: {v}");
}
