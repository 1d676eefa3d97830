//! Batched OpenVLA nodes on one checkpoint open one device between them: on CUDA each opened
//! device is a stream, a cuBLAS handle and kernel modules, and eight clients opening and
//! dropping theirs at once beside the batching thread hung `vela bench` at start-up (issue 9).
//! Its own test binary, so that no other test opens devices in the same process.

use std::sync::Arc;
use std::time::Duration;

use vela_runtime::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_nodes_open_one_device() {
    let mut r = Registry::with_builtins();
    vela_prompt::register(&mut r);
    vela_vla::register(&mut r);
    let dir = std::env::temp_dir().join(format!("vela-vla-node-device-{}", std::process::id()));
    vela_vla::cli::make_checkpoint("tiny", &dir, 3).unwrap();
    let engine = Engine::new(Arc::new(r));
    let mut graph = GraphSpec { nodes: vec![NodeSpec::new("user", "UserPrompt").param("prompt", "stack the red block on the green block")], edges: vec![] };
    for i in 0..3 {
        graph.nodes.push(NodeSpec::new(&format!("cam{i}"), "TestPattern").param("width", 32).param("height", 32).param("fps", 20.0));
        graph.nodes.push(NodeSpec::new(&format!("auto{i}"), "AutoPrompt"));
        graph.nodes.push(NodeSpec::new(&format!("vla{i}"), "OpenVLA").param("model", dir.to_str().unwrap()).param("batch", 4).param("device", "cpu"));
        graph.nodes.push(NodeSpec::new(&format!("sink{i}"), "Collector"));
        graph.edges.push(EdgeSpec::new("user.text", &format!("auto{i}.in")));
        graph.edges.push(EdgeSpec::new(&format!("cam{i}.image"), &format!("auto{i}.in")));
        graph.edges.push(EdgeSpec::new(&format!("auto{i}.prompt"), &format!("vla{i}.prompt")).latest());
        graph.edges.push(EdgeSpec::new(&format!("vla{i}.actions"), &format!("sink{i}.in")));
    }
    let before = vela_vla::device::opened();
    engine.load(&graph).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    let mut answered = std::collections::BTreeSet::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while answered.len() < 3 {
            if let Ok(EngineEvent::Output { node, .. }) = rx.recv().await {
                if node.starts_with("sink") {
                    answered.insert(node);
                }
            }
        }
    })
    .await;
    let opened = vela_vla::device::opened() - before;
    // Stopped before asserting: a panic with the nodes still running would hang the test.
    engine.stop().await;
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(answered.len(), 3, "every node answers: {answered:?}");
    assert_eq!(opened, 1, "three batched nodes on one model open one device");
}
