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
    let df = export("e2e", &graph(), &registry(), opts).unwrap();
    let yaml = std::env::temp_dir().join(format!("vela-e2e-{}-{via:?}.yml", std::process::id()));
    std::fs::write(&yaml, df.to_yaml()).unwrap();
    let opts = LaunchOptions {
        cli: launch::find_cli().unwrap(),
        via,
        timeout: Some(Duration::from_secs(60)),
        name: format!("vela-e2e-{}", std::process::id()),
        verbose: std::env::var_os("VELA_TEST_VERBOSE").is_some(),
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
