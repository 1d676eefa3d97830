//! Prompt nodes inside a running graph.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use vela_runtime::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_text_and_frames_become_one_prompt_per_frame() {
    let mut reg = Registry::with_builtins();
    vela_prompt::register(&mut reg);
    let engine = Engine::new(Arc::new(reg));
    let graph = GraphSpec {
        nodes: vec![
            NodeSpec::new("user", "UserPrompt"),
            NodeSpec::new("cam", "TestPattern").param("width", 16).param("height", 8).param("fps", 50.0),
            NodeSpec::new("auto", "AutoPrompt").param("template", "In: <text>?<image>"),
            NodeSpec::new("sink", "Collector"),
        ],
        edges: vec![
            EdgeSpec::new("user.text", "auto.in"),
            EdgeSpec::new("cam.image", "auto.in"),
            EdgeSpec::new("auto.prompt", "sink.in"),
        ],
    };
    engine.load(&graph).await.unwrap();
    engine.start().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Frames alone do not make a prompt: the text slot is empty.
    assert_eq!(engine.stats().await["sink"].received, 0);
    assert!(engine.stats().await["auto"].summary.contains("waiting for 1 text"));

    let err = engine.command("user", "submit", json!({"text": "   "})).await.unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    engine.command("user", "submit", json!({"text": "stack the red block"})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = engine.stats().await;
    let prompts = s["sink"].received;
    let frames_after = s["cam"].sent;
    assert!(prompts >= 5, "{prompts} prompts");
    // One prompt per frame, not one per input (Agent Studio sends two per step).
    assert!(prompts <= frames_after, "{prompts} prompts for {frames_after} frames");
    assert!(s["user"].summary.contains("stack the red block"));
    engine.stop().await;
}
