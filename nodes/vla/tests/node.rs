//! The OpenVLA node in a running graph, on a tiny checkpoint made here.

use std::sync::Arc;
use std::time::Duration;

use vela_runtime::*;

fn registry() -> Arc<Registry> {
    let mut r = Registry::with_builtins();
    vela_prompt::register(&mut r);
    vela_vla::register(&mut r);
    Arc::new(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_become_actions() {
    let dir = std::env::temp_dir().join(format!("vela-vla-node-{}", std::process::id()));
    vela_vla::cli::make_checkpoint("tiny", &dir, 3).unwrap();
    let engine = Engine::new(registry());
    let graph = GraphSpec {
        nodes: vec![
            NodeSpec::new("user", "UserPrompt").param("prompt", "stack the red block on the green block"),
            NodeSpec::new("cam", "TestPattern").param("width", 64).param("height", 48).param("fps", 20.0),
            NodeSpec::new("auto", "AutoPrompt"),
            NodeSpec::new("vla", "OpenVLA").param("model", dir.to_str().unwrap()).param("partial", true),
            NodeSpec::new("sink", "Collector"),
        ],
        edges: vec![
            EdgeSpec::new("user.text", "auto.in"),
            EdgeSpec::new("cam.image", "auto.in"),
            EdgeSpec::new("auto.prompt", "vla.prompt").latest(),
            EdgeSpec::new("vla.actions", "sink.in"),
        ],
    };
    engine.load(&graph).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    let mut finals = 0;
    let mut partials = 0;
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while finals < 3 {
            if let Ok(EngineEvent::Output { node, value }) = rx.recv().await {
                if node == "sink" {
                    let text = value["text"].as_str().unwrap_or_default();
                    if text.contains("(partial)") {
                        partials += 1;
                    } else {
                        assert_eq!(value["value"].as_array().unwrap().len(), 7, "{value}");
                        finals += 1;
                    }
                }
            }
        }
    })
    .await;
    assert!(finals >= 3, "got {finals} actions");
    assert!(partials >= 6, "partial vectors stream while decoding: {partials}");
    assert!(engine.stats().await["vla"].summary.contains("fp16"), "{}", engine.stats().await["vla"].summary);
    engine.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_broken_models_fail_clearly() {
    let engine = Engine::new(registry());
    engine.add_node(NodeSpec::new("nomodel", "OpenVLA")).await.unwrap();
    engine.add_node(NodeSpec::new("missing", "OpenVLA").param("model", "/nonexistent/model")).await.unwrap();
    let broken = std::env::temp_dir().join(format!("vela-vla-broken-{}", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{\"not\": \"a config\"}").unwrap();
    engine.add_node(NodeSpec::new("broken", "OpenVLA").param("model", broken.to_str().unwrap())).await.unwrap();
    engine.add_node(NodeSpec::new("c", "Counter").param("interval_ms", 10.0)).await.unwrap();
    engine.start().await;
    let status = |n: &'static str| {
        let engine = engine.clone();
        async move {
            for _ in 0..100 {
                if let Some(NodeStatus::Failed { error }) = engine.status(n).await {
                    return error;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{n} did not fail")
        }
    };
    assert!(status("nomodel").await.contains("no model folder set"));
    assert!(status("missing").await.contains("has no config.json"));
    assert!(status("broken").await.contains("loading"));
    // The rest of the graph is unaffected.
    assert_eq!(engine.status("c").await, Some(NodeStatus::Running));
    engine.stop().await;
    std::fs::remove_dir_all(&broken).ok();
}
