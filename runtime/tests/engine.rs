//! The executor with real small nodes: typed edges, live edits, failure isolation,
//! edge policies and zero-copy frames.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast;
use vela_runtime::*;

/// Panics when it sees the number `at`, forwards everything else.
struct Fragile {
    at: i64,
}

impl Node for Fragile {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        if let Payload::Json(v) = &msg.payload {
            if v.as_i64() == Some(self.at) {
                panic!("fragile node hit {}", self.at);
            }
        }
        ctx.forward("out", msg)
    }
}

/// Sleeps on every message: a slow consumer, run on its own thread.
struct Slow {
    ms: u64,
}

impl Node for Slow {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        std::thread::sleep(Duration::from_millis(self.ms));
        ctx.forward("out", msg)
    }
    fn blocking(&self) -> bool {
        true
    }
}

struct ImageSink;

impl Node for ImageSink {
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::with_builtins();
    r.register(
        NodeDescriptor::new("Fragile", "Testing", "Fragile")
            .input("in", &[DataType::Json], "")
            .output("out", DataType::Json, "")
            .param(ParamSpec::new("at", ParamKind::Int { min: None, max: None }, 5, "")),
        |init| Ok(Box::new(Fragile { at: init.params.i64("at")? })),
    );
    r.register(
        NodeDescriptor::new("Slow", "Testing", "Slow")
            .input("in", &[DataType::Json], "")
            .output("out", DataType::Json, "")
            .param(ParamSpec::new("ms", ParamKind::Int { min: Some(0), max: None }, 20, "")),
        |init| Ok(Box::new(Slow { ms: init.params.u64("ms")? })),
    );
    r.register(NodeDescriptor::new("ImageSink", "Testing", "Image sink").input("frames", &[DataType::Image], ""), |_| {
        Ok(Box::new(ImageSink))
    });
    r.register(NodeDescriptor::new("Broken", "Testing", "Broken").output("out", DataType::Json, ""), |_| {
        Err(NodeError::msg("model file /nonexistent/model.safetensors not found"))
    });
    r.register_unavailable(
        NodeDescriptor::new("NeedsGpu", "Testing", "Needs a GPU").input("in", &[DataType::Any], ""),
        "built without the `cuda` feature",
    );
    Arc::new(r)
}

/// Collects values published by `node` until `pred` holds or the time runs out.
async fn collect_until(
    rx: &mut broadcast::Receiver<EngineEvent>,
    node: &str,
    timeout: Duration,
    mut pred: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(timeout, async {
        loop {
            match rx.recv().await {
                Ok(EngineEvent::Output { node: n, value }) if n == node => {
                    got.push(value["value"].clone());
                    if pred(&got) {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    })
    .await;
    got
}

async fn wait_status(engine: &Engine, node: &str, pred: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    for _ in 0..200 {
        if let Some(s) = engine.status(node).await {
            if pred(&s) {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.status(node).await.unwrap()
}

fn counter(name: &str, interval_ms: f64) -> NodeSpec {
    NodeSpec::new(name, "Counter").param("interval_ms", interval_ms).param("finish", false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_flow_through_a_chain_in_order() {
    let engine = Engine::new(registry());
    let graph = GraphSpec {
        nodes: vec![
            counter("c", 1.0).param("count", 50),
            NodeSpec::new("x3", "Scale").param("factor", 3.0),
            NodeSpec::new("sink", "Collector"),
        ],
        edges: vec![EdgeSpec::new("c.out", "x3.in"), EdgeSpec::new("x3.out", "sink.in")],
    };
    engine.load(&graph).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    let got = collect_until(&mut rx, "sink", Duration::from_secs(10), |v| v.len() == 50).await;
    let want: Vec<Value> = (0..50).map(|i| json!(i as f64 * 3.0)).collect();
    assert_eq!(got, want);
    let stats = engine.stats().await;
    assert_eq!(stats["sink"].received, 50);
    assert_eq!(stats["x3"].sent, 50);
    assert_eq!(stats["sink"].summary, "50 received");
    engine.stop().await;
}

#[tokio::test]
async fn ill_typed_edge_is_refused_naming_both_ports() {
    let engine = Engine::new(registry());
    engine.add_node(counter("c", 10.0)).await.unwrap();
    engine.add_node(NodeSpec::new("img", "ImageSink")).await.unwrap();
    let err = engine.connect(EdgeSpec::new("c.out", "img.frames")).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, EngineError::Graph(e) if matches!(e[0], GraphError::TypeMismatch { .. })), "{err:?}");
    assert!(msg.contains("c.out") && msg.contains("img.frames"), "{msg}");
    assert!(msg.contains("json") && msg.contains("image"), "{msg}");
    // Nothing was half-connected.
    assert!(engine.graph().await.edges.is_empty());
}

#[test]
fn every_validation_error_is_reported() {
    let reg = registry();
    let graph = GraphSpec {
        nodes: vec![
            NodeSpec::new("a", "Countr"),
            NodeSpec::new("b", "Counter").param("interval_ms", -5.0).param("colour", "red"),
            NodeSpec::new("b", "Collector"),
            NodeSpec::new("bad.name", "Collector"),
            NodeSpec::new("gpu", "NeedsGpu"),
            NodeSpec::new("img", "ImageSink"),
            NodeSpec::new("s", "Scale").param("factor", "two"),
        ],
        edges: vec![
            EdgeSpec::new("b.nope", "s.in"),
            EdgeSpec::new("b.out", "s.out"),
            EdgeSpec::new("ghost.out", "s.in"),
            EdgeSpec::new("s.out", "img.frames"),
            EdgeSpec::new("b.out", "s.in"),
            EdgeSpec::new("b.out", "s.in"),
        ],
    };
    let errors = validate(&graph, &reg).unwrap_err();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |f: &dyn Fn(&GraphError) -> bool| errors.iter().any(f);
    assert!(has(&|e| matches!(e, GraphError::UnknownType { node, suggestion: Some(s), .. } if node == "a" && s == "Counter")), "{text:#?}");
    assert!(has(&|e| matches!(e, GraphError::DuplicateName(n) if n == "b")));
    assert!(has(&|e| matches!(e, GraphError::InvalidName(n) if n == "bad.name")));
    assert!(has(&|e| matches!(e, GraphError::Unavailable { node, reason, .. } if node == "gpu" && reason.contains("cuda"))));
    assert!(has(&|e| matches!(e, GraphError::BadParam { node, param, .. } if node == "b" && param == "interval_ms")));
    assert!(has(&|e| matches!(e, GraphError::BadParam { node, param, message } if node == "b" && param == "colour" && message.contains("unknown"))));
    assert!(has(&|e| matches!(e, GraphError::BadParam { node, param, .. } if node == "s" && param == "factor")));
    assert!(has(&|e| matches!(e, GraphError::UnknownPort { node, port, direction: Direction::Output, .. } if node == "b" && port == "nope")));
    assert!(has(&|e| matches!(e, GraphError::UnknownPort { node, port, direction: Direction::Input, available, .. } if node == "s" && port == "out" && available.contains("in: json"))));
    assert!(has(&|e| matches!(e, GraphError::DanglingEdge { missing, .. } if missing == "ghost")));
    assert!(has(&|e| matches!(e, GraphError::TypeMismatch { from, to, .. } if from == "s.out" && to == "img.frames")));
    assert!(has(&|e| matches!(e, GraphError::DuplicateEdge(e) if e == "b.out -> s.in")));
    // Every message names what it is about.
    assert!(text.iter().any(|t| t.contains("did you mean 'Counter'")), "{text:#?}");
    assert!(text.iter().any(|t| t.contains("below the minimum")), "{text:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_edits_apply_without_restarting_the_graph() {
    let engine = Engine::new(registry());
    engine.add_node(counter("c", 2.0)).await.unwrap();
    engine.add_node(NodeSpec::new("a", "Collector")).await.unwrap();
    engine.connect(EdgeSpec::new("c.out", "a.in")).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    collect_until(&mut rx, "a", Duration::from_secs(5), |v| v.len() >= 5).await;

    // Change a run-time parameter: the step jumps from 1 to 100.
    engine.set_param("c", "step", json!(100)).await.unwrap();
    let got = collect_until(&mut rx, "a", Duration::from_secs(5), |v| {
        v.len() >= 2 && v[v.len() - 1].as_i64().unwrap() - v[v.len() - 2].as_i64().unwrap() == 100
    })
    .await;
    let n = got.len();
    assert_eq!(got[n - 1].as_i64().unwrap() - got[n - 2].as_i64().unwrap(), 100, "{got:?}");
    assert_eq!(engine.params("c").await.unwrap().i64("step").unwrap(), 100);

    // Add a node and wire it in while running.
    engine.add_node(NodeSpec::new("neg", "Scale").param("factor", -1.0)).await.unwrap();
    engine.add_node(NodeSpec::new("b", "Collector")).await.unwrap();
    engine.connect(EdgeSpec::new("c.out", "neg.in")).await.unwrap();
    engine.connect(EdgeSpec::new("neg.out", "b.in")).await.unwrap();
    let got_b = collect_until(&mut rx, "b", Duration::from_secs(5), |v| v.len() >= 3).await;
    assert!(got_b.len() >= 3 && got_b.iter().all(|v| v.as_f64().unwrap() < 0.0), "{got_b:?}");
    assert_eq!(engine.status("a").await, Some(NodeStatus::Running));

    // Disconnect `a`: it stops receiving while the counter keeps going.
    engine.disconnect(&PortRef::new("c", "out"), &PortRef::new("a", "in")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = engine.stats().await["a"].received;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(engine.stats().await["a"].received, before);
    assert!(engine.stats().await["b"].received > 3);

    // Remove a node: its edges go with it.
    engine.remove_node("neg").await.unwrap();
    let g = engine.graph().await;
    assert!(g.node("neg").is_none());
    assert!(g.edges.is_empty(), "{:?}", g.edges);
    assert!(matches!(engine.remove_node("neg").await, Err(EngineError::NoSuchNode(_))));

    // A start-up-only parameter restarts just that node.
    engine.connect(EdgeSpec::new("c.out", "a.in")).await.unwrap();
    engine.set_param("c", "start", json!(1000)).await.unwrap();
    let got = collect_until(&mut rx, "a", Duration::from_secs(5), |v| v.last().and_then(|x| x.as_i64()) >= Some(1000)).await;
    assert!(got.last().unwrap().as_i64().unwrap() >= 1000, "{got:?}");

    // Bad edits are refused with typed errors and change nothing.
    assert!(matches!(engine.set_param("c", "step", json!("ten")).await, Err(EngineError::Graph(_))));
    assert!(matches!(engine.set_param("c", "nope", json!(1)).await, Err(EngineError::UnknownParam { .. })));
    assert!(matches!(engine.set_param("zz", "step", json!(1)).await, Err(EngineError::NoSuchNode(_))));
    assert!(engine.add_node(NodeSpec::new("a", "Collector")).await.is_err());
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_changed_live_takes_effect_at_once() {
    let engine = Engine::new(registry());
    engine.add_node(counter("c", 60_000.0)).await.unwrap();
    engine.add_node(NodeSpec::new("a", "Collector")).await.unwrap();
    engine.connect(EdgeSpec::new("c.out", "a.in")).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    // The first tick is due at start; the next would be a minute away at the old rate.
    collect_until(&mut rx, "a", Duration::from_secs(5), |v| !v.is_empty()).await;
    engine.set_param("c", "interval_ms", json!(1.0)).await.unwrap();
    let got = collect_until(&mut rx, "a", Duration::from_secs(5), |v| v.len() >= 20).await;
    assert!(got.len() >= 20, "the new interval applies without a restart: {got:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_node_is_isolated_and_can_be_restarted() {
    let engine = Engine::new(registry());
    let graph = GraphSpec {
        nodes: vec![
            counter("c", 2.0),
            NodeSpec::new("fragile", "Fragile").param("at", 5),
            NodeSpec::new("after", "Collector"),
            NodeSpec::new("healthy", "Collector"),
        ],
        edges: vec![
            EdgeSpec::new("c.out", "fragile.in"),
            EdgeSpec::new("fragile.out", "after.in"),
            EdgeSpec::new("c.out", "healthy.in"),
        ],
    };
    engine.load(&graph).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    let status = wait_status(&engine, "fragile", |s| matches!(s, NodeStatus::Failed { .. })).await;
    match status {
        NodeStatus::Failed { error } => assert!(error.contains("fragile node hit 5"), "{error}"),
        other => panic!("expected failure, got {other:?}"),
    }
    // The rest keeps running: the healthy branch still receives new values.
    let before = engine.stats().await["healthy"].received;
    for _ in 0..500 {
        if engine.stats().await["healthy"].received >= before + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(engine.stats().await["healthy"].received >= before + 10);
    assert_eq!(engine.status("c").await, Some(NodeStatus::Running));
    assert!(engine.stats().await["fragile"].errors >= 1);
    // The producer is never blocked by the dead consumer (messages are dropped, counted).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(engine.stats().await["fragile"].dropped > 0);

    // Restart: counting has passed 5, so it works again and forwards.
    engine.restart_node("fragile").await.unwrap();
    assert_eq!(engine.status("fragile").await, Some(NodeStatus::Running));
    let got = collect_until(&mut rx, "after", Duration::from_secs(5), |v| v.iter().any(|x| x.as_i64() > Some(5))).await;
    assert!(got.iter().any(|x| x.as_i64() > Some(5)), "{got:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_fails_alone() {
    let engine = Engine::new(registry());
    engine.add_node(NodeSpec::new("broken", "Broken")).await.unwrap();
    engine.add_node(counter("c", 5.0)).await.unwrap();
    engine.add_node(NodeSpec::new("sink", "Collector")).await.unwrap();
    engine.connect(EdgeSpec::new("c.out", "sink.in")).await.unwrap();
    engine.connect(EdgeSpec::new("broken.out", "sink.in")).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    match engine.status("broken").await.unwrap() {
        NodeStatus::Failed { error } => assert!(error.contains("model file"), "{error}"),
        s => panic!("{s:?}"),
    }
    let got = collect_until(&mut rx, "sink", Duration::from_secs(5), |v| v.len() >= 3).await;
    assert!(got.len() >= 3);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_only_edges_drop_stale_messages_and_queues_keep_all() {
    for (policy, expect_drops) in [(EdgePolicy::Latest, true), (EdgePolicy::Queue, false)] {
        let engine = Engine::with_queue_capacity(registry(), 4);
        let mut to_slow = EdgeSpec::new("c.out", "slow.in");
        to_slow.policy = policy;
        let graph = GraphSpec {
            nodes: vec![counter("c", 1.0).param("count", 60), NodeSpec::new("slow", "Slow").param("ms", 15), NodeSpec::new("sink", "Collector")],
            edges: vec![to_slow, EdgeSpec::new("slow.out", "sink.in")],
        };
        engine.load(&graph).await.unwrap();
        let mut rx = engine.subscribe();
        engine.start().await;
        let got = collect_until(&mut rx, "sink", Duration::from_secs(10), |v| v.last() == Some(&json!(59))).await;
        let values: Vec<i64> = got.iter().map(|v| v.as_i64().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{policy:?}: out of order {values:?}");
        assert_eq!(values.last(), Some(&59), "{policy:?}: the newest value always arrives");
        let dropped = engine.stats().await["slow"].dropped;
        if expect_drops {
            assert!(dropped > 0 && values.len() < 60, "latest: {dropped} dropped, {} delivered", values.len());
            assert_eq!(dropped as usize + values.len(), 60);
        } else {
            assert_eq!(dropped, 0);
            assert_eq!(values, (0..60).collect::<Vec<_>>(), "queue keeps everything");
        }
        engine.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_travel_without_copying() {
    let cfg = vela_runtime::bench::BenchConfig {
        payload: vela_runtime::bench::BenchPayload::Image { width: 224, height: 224 },
        nodes: 5,
        messages: 200,
        rate_hz: None,
    };
    let r = vela_runtime::bench::run_chain(&cfg).await.unwrap();
    assert!(r.zero_copy);
    assert_eq!(r.hops, 4);
    assert!(r.throughput_msgs_per_s > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_nodes_and_unknown_ones_are_refused() {
    let engine = Engine::new(registry());
    engine.add_node(counter("c", 50.0)).await.unwrap();
    assert!(matches!(engine.command("c", "reset", json!({})).await, Err(EngineError::NotRunning { .. })));
    engine.start().await;
    let err = engine.command("c", "reset", json!({})).await.unwrap_err();
    assert!(err.to_string().contains("unknown command 'reset'"), "{err}");
    // A refused command does not take the node down.
    assert_eq!(engine.status("c").await, Some(NodeStatus::Running));
    engine.stop().await;
    assert_eq!(engine.status("c").await, Some(NodeStatus::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_whole_graph() {
    let engine = Engine::new(registry());
    let hits = Arc::new(AtomicUsize::new(0));
    engine.add_node(counter("c", 2.0)).await.unwrap();
    engine.add_node(NodeSpec::new("s", "Collector")).await.unwrap();
    engine.connect(EdgeSpec::new("c.out", "s.in")).await.unwrap();
    let mut rx = engine.subscribe();
    for _ in 0..3 {
        engine.start().await;
        let got = collect_until(&mut rx, "s", Duration::from_secs(5), |v| v.len() >= 3).await;
        hits.fetch_add(got.len(), Ordering::Relaxed);
        engine.stop().await;
        assert!(!engine.is_running().await);
    }
    assert!(hits.load(Ordering::Relaxed) >= 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_agrees_with_the_engine_at_one_moment() {
    let engine = Engine::new(registry());
    engine.add_node(counter("c", 2.0)).await.unwrap();
    engine.add_node(NodeSpec::new("s", "Collector")).await.unwrap();
    engine.connect(EdgeSpec::new("c.out", "s.in")).await.unwrap();
    let snap = engine.snapshot().await;
    assert!(!snap.running);
    assert_eq!(snap.graph.nodes.len(), 2);
    assert_eq!(snap.graph.edges.len(), 1);
    assert_eq!(snap.status.len(), 2);
    engine.start().await;
    let snap = engine.snapshot().await;
    assert!(snap.running);
    assert_eq!(snap.status.len(), 2);
    assert_eq!(snap.graph.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), engine.graph().await.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>());
    engine.stop().await;
    assert!(!engine.snapshot().await.running);
}
