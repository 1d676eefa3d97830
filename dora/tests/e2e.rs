//! End to end: a graph run by real dora (coordinator + daemon, and `dora run`)
//! publishes exactly what the in-process engine publishes for the same graph.
//!
//! Needs the dora CLI (scripts/setup-dora.sh); skipped with a message otherwise.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vela_dora::launch::{self, LaunchOptions, Via};
use vela_dora::{export, ExportOptions};
use vela_runtime::{EdgeSpec, Engine, EngineEvent, GraphSpec, NodeSpec, Registry};

fn graph() -> GraphSpec {
    GraphSpec {
        nodes: vec![
            NodeSpec::new("counter", "Counter").param("count", 20).param("interval_ms", 5.0).param("start", 3),
            NodeSpec::new("half", "Scale").param("factor", 0.5),
            NodeSpec::new("log", "Collector"),
        ],
        edges: vec![EdgeSpec::new("counter.out", "half.in"), EdgeSpec::new("half.out", "log.in")],
    }
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    vela_dora::probe::register(&mut r);
    r
}

/// What `log` publishes when the in-process engine runs the graph.
fn in_process() -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let engine = Engine::new(Arc::new(registry()));
        engine.load(&graph()).await.unwrap();
        let mut events = engine.subscribe();
        engine.start().await;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut finished = false;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(EngineEvent::Output { node, value })) if node == "log" => out.push(value),
                Ok(Ok(EngineEvent::Finished { .. })) if !finished => {
                    finished = true;
                    let e = engine.clone();
                    tokio::spawn(async move { e.drain_and_stop(Duration::from_secs(2)).await });
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
            if finished && out.len() == 20 {
                break;
            }
        }
        engine.stop().await;
        out
    })
}

fn on_dora(opts: &ExportOptions, via: Via) -> launch::RunReport {
    on_dora_at(opts, via, None)
}

fn on_dora_at(opts: &ExportOptions, via: Via, coordinator_port: Option<u16>) -> launch::RunReport {
    let df = export("e2e", &graph(), &registry(), opts).unwrap();
    let yaml = std::env::temp_dir().join(format!("vela-e2e-{}-{via:?}.yml", std::process::id()));
    std::fs::write(&yaml, df.to_yaml()).unwrap();
    let opts = LaunchOptions {
        cli: launch::find_cli().unwrap(),
        via,
        timeout: Some(Duration::from_secs(60)),
        name: format!("vela-e2e-{}", std::process::id()),
        verbose: std::env::var_os("VELA_TEST_VERBOSE").is_some(),
        coordinator_port,
    };
    let report = launch::run(&yaml, &opts).unwrap();
    let _ = std::fs::remove_file(&yaml);
    report
}

#[test]
fn dora_run_matches_the_in_process_engine() {
    if let Err(e) = launch::find_cli() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let expected = in_process();
    assert_eq!(expected.len(), 20, "{expected:?}");
    assert_eq!(expected[0]["value"], 1.5);

    // One dora node per Vela node, on a real coordinator and daemon.
    let opts = ExportOptions { runner: env!("CARGO_BIN_EXE_vela-dora-node").into(), ..Default::default() };
    let report = on_dora(&opts, Via::Coordinator);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.outputs.get("log"), Some(&expected), "{report:?}");
    assert_eq!(report.nodes["half"].received, 20);

    // Counter and Scale in one process, through `dora run`.
    let mut grouped = opts.clone();
    grouped.groups.insert("numbers".into(), vec!["counter".into(), "half".into()]);
    let report = on_dora(&grouped, Via::Run);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.outputs.get("log"), Some(&expected), "{report:?}");
}

/// Processes this test started, ended by their own handles when the test ends.
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two "machines" on one host: a coordinator and two daemons with machine ids A and B
/// (own ports, an explicit zenoh mesh between them), the counter and the collector on
/// A, the scaler on B, so both edges cross daemons.
#[test]
fn two_daemons_on_one_host() {
    let Ok(cli) = launch::find_cli() else {
        eprintln!("SKIPPED: no dora CLI (scripts/setup-dora.sh)");
        return;
    };
    let (coord, zenoh_a, zenoh_b) = (16_013u16, 17_447u16, 17_448u16);
    let quiet = |c: &mut std::process::Command| {
        c.current_dir(std::env::temp_dir());
        if std::env::var_os("VELA_TEST_VERBOSE").is_none() {
            c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        }
    };
    let mut procs = Procs(Vec::new());
    let mut c = std::process::Command::new(&cli);
    c.args(["coordinator", "--port", &coord.to_string(), "--store", "memory"]);
    quiet(&mut c);
    procs.0.push(c.spawn().unwrap());
    std::thread::sleep(Duration::from_secs(1));
    for (id, listen, other, local) in [("A", zenoh_a, zenoh_b, 19_843u16), ("B", zenoh_b, zenoh_a, 19_844)] {
        let mut c = std::process::Command::new(&cli);
        c.args(["daemon", "--machine-id", id, "--coordinator-addr", "127.0.0.1", "--coordinator-port", &coord.to_string()])
            .args(["--local-listen-port", &local.to_string(), "--zenoh-no-multicast"])
            .args(["--zenoh-listen", &format!("127.0.0.1:{listen}"), "--zenoh-connect", &format!("tcp/127.0.0.1:{other}")]);
        quiet(&mut c);
        procs.0.push(c.spawn().unwrap());
    }
    std::thread::sleep(Duration::from_secs(2));

    let expected = in_process();
    let mut opts = ExportOptions { runner: env!("CARGO_BIN_EXE_vela-dora-node").into(), ..Default::default() };
    for (node, machine) in [("counter", "A"), ("half", "B"), ("log", "A")] {
        opts.machines.insert(node.into(), machine.into());
    }
    let report = on_dora_at(&opts, Via::Coordinator, Some(coord));
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.outputs.get("log"), Some(&expected), "{report:?}");
}
