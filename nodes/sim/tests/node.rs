//! The MimicGen node inside a running graph.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use vela_runtime::*;

fn registry() -> Arc<Registry> {
    let mut r = Registry::with_builtins();
    vela_sim::register(&mut r);
    Arc::new(r)
}

async fn wait_for(rx: &mut tokio::sync::broadcast::Receiver<EngineEvent>, secs: u64, mut f: impl FnMut(&EngineEvent) -> bool) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match rx.recv().await {
                Ok(ev) if f(&ev) => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expert_motion_stacks_and_counts_successes() {
    let engine = Engine::new(registry());
    let graph = GraphSpec {
        nodes: vec![
            NodeSpec::new("sim", "MimicGen")
                .param("environment", "Stack_D0")
                .param("motion", "expert")
                .param("genlock", false)
                .param("framerate", 0.0)
                .param("width", 64)
                .param("height", 64),
            NodeSpec::new("frames", "Collector"),
            NodeSpec::new("events", "Collector"),
        ],
        edges: vec![EdgeSpec::new("sim.image", "frames.in").latest(), EdgeSpec::new("sim.events", "events.in")],
    };
    engine.load(&graph).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    let mut results = Vec::new();
    let done = wait_for(&mut rx, 240, |ev| {
        if let EngineEvent::Output { node, value } = ev {
            if node == "sim" {
                results.push(value.clone());
            }
        }
        results.len() >= 2
    })
    .await;
    assert!(done, "two episodes within the time limit: {results:?}");
    assert!(results.iter().all(|r| r["success"] == true), "the expert stacks on D0: {results:?}");
    assert!(results.iter().all(|r| r["steps"].as_u64().unwrap() < 200));
    let s = engine.stats().await;
    assert!(s["sim"].summary.contains("2/2 (100%)") || s["sim"].summary.contains("/"), "{}", s["sim"].summary);
    assert!(s["frames"].received > 50);
    // Episode start, success and end events reach downstream nodes.
    assert!(s["events"].received >= 4, "{}", s["events"].received);
    engine.stop().await;
}

/// `episodes` ends the run on its own after a fixed, seeded set of episodes: what a graph on
/// dora (no bench to send `reset_episode`) relies on to run the same episodes as `vela bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_limit_ends_the_run_after_consecutive_seeds() {
    let engine = Engine::new(registry());
    let graph = GraphSpec {
        nodes: vec![NodeSpec::new("sim", "MimicGen")
            .param("environment", "Stack_D0")
            .param("motion", "expert")
            .param("genlock", false)
            .param("framerate", 0.0)
            .param("width", 32)
            .param("height", 32)
            .param("seed", 5)
            .param("episodes", 2)],
        edges: vec![],
    };
    engine.load(&graph).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    let mut seeds = Vec::new();
    let mut reason = None;
    let finished = wait_for(&mut rx, 240, |ev| match ev {
        EngineEvent::Output { node, value } if node == "sim" => {
            seeds.push(value["seed"].as_u64().unwrap());
            false
        }
        EngineEvent::Finished { node, reason: r } if node == "sim" => {
            reason = Some(r.clone());
            true
        }
        _ => false,
    })
    .await;
    assert!(finished, "the node ends the run: {seeds:?}");
    assert_eq!(seeds, vec![5, 6]);
    assert_eq!(reason.as_deref(), Some("2 of 2 episodes succeeded"));
    // No third episode starts after the limit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = engine.stats().await;
    assert!(s["sim"].summary.contains("2/2"), "{}", s["sim"].summary);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genlock_waits_for_actions_and_widget_commands_work() {
    let engine = Engine::new(registry());
    engine
        .add_node(
            NodeSpec::new("sim", "MimicGen").param("environment", "Stack_D1").param("width", 32).param("height", 32).param("framerate", 0.0),
        )
        .await
        .unwrap();
    engine.add_node(NodeSpec::new("frames", "Collector")).await.unwrap();
    engine.connect(EdgeSpec::new("sim.image", "frames.in")).await.unwrap();
    engine.start().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Genlocked with no policy: only the first frame of the episode goes out.
    assert_eq!(engine.stats().await["frames"].received, 1);
    // ... and, even free-running (framerate 0), the waiting node is not ticked in a loop that
    // would spin a core the policy needs.
    let calls = engine.stats().await["sim"].processed;
    assert!(calls < 10, "{calls} callbacks while waiting for an action");
    engine.command("sim", "reset_episode", json!({})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.stats().await["frames"].received, 2);
    // Switching to random motion at run time makes it step on its own.
    engine.set_param("sim", "genlock", json!(false)).await.unwrap();
    engine.set_param("sim", "motion", json!("random")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(engine.stats().await["frames"].received > 3);
    let err = engine.command("sim", "fly", json!({})).await.unwrap_err();
    assert!(err.to_string().contains("reset_episode"), "{err}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_before_start() {
    let reg = registry();
    let g = GraphSpec {
        nodes: vec![NodeSpec::new("sim", "MimicGen").param("environment", "Stack_D9").param("width", 5)],
        edges: vec![],
    };
    let errs = validate(&g, &reg).unwrap_err();
    let text = errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("environment") && text.contains("Stack_D9"), "{text}");
    assert!(text.contains("width") && text.contains("below the minimum 16"), "{text}");
}

/// What a benchmark relies on: seeded resets on command, no auto-reset, per-episode stats,
/// and answers to an earlier episode's frame dropped.
#[test]
fn benchmark_hooks_seeded_resets_and_stale_actions() {
    use vela_sim::MimicGenNode;
    let given = json!({ "environment": "Stack_D2", "width": 32, "height": 32, "horizon": 3, "auto_reset": false, "seed": 5 });
    let params = resolve_params(&MimicGenNode::descriptor(), given.as_object().unwrap()).unwrap();
    let mut node = MimicGenNode::new(&NodeInit { name: "sim", params: &params }).unwrap();
    let mut ctx = Context::detached("sim", MimicGenNode::descriptor());
    let events = |sent: &[(String, Message)]| -> Vec<Event> {
        sent.iter().filter_map(|(_, m)| if let Payload::Event(e) = &m.payload { Some(e.clone()) } else { None }).collect()
    };
    node.start(&mut ctx).unwrap();
    let sent = ctx.take_sent();
    assert!(matches!(events(&sent)[0], Event::EpisodeStart { seed: 5, .. }), "{:?}", events(&sent));
    let action = |ts: u64| {
        let mut m = Message::new("policy", Actions::new(vec![0.0; 7], "x"));
        m.timestamp = ts;
        m
    };
    // An answer stamped before this episode began belongs to an older frame.
    node.on_input("actions", action(1), &mut ctx).unwrap();
    assert!(ctx.take_sent().is_empty(), "a stale action must not step the simulator");
    for _ in 0..3 {
        node.on_input("actions", action(now_ns()), &mut ctx).unwrap();
    }
    let sent = ctx.take_sent();
    let stats = events(&sent)
        .into_iter()
        .find_map(|e| if let Event::Custom { name, data } = e { (name == vela_sim::node::EPISODE_STATS).then_some(data) } else { None })
        .expect("episode stats at the end");
    assert_eq!((stats["seed"].as_u64(), stats["steps"].as_u64(), stats["success"].as_bool()), (Some(5), Some(3), Some(false)));
    assert!(stats["policy_ms_mean"].as_f64().is_some() && !stats["instruction"].as_str().unwrap().is_empty());
    // Without auto_reset the ended episode waits, whatever arrives.
    node.on_input("actions", action(now_ns()), &mut ctx).unwrap();
    node.tick(&mut ctx).unwrap();
    assert!(ctx.take_sent().is_empty());
    node.command("reset_episode", &json!({ "seed": 42 }), &mut ctx).unwrap();
    assert!(matches!(events(&ctx.take_sent())[0], Event::EpisodeStart { seed: 42, .. }));
    assert!(node.command("reset_episode", &json!({ "seed": -1 }), &mut ctx).is_err());
}

/// A chunk of actions (a model trained with `--action-chunk`) runs to its end before the
/// policy sees the next frame; every frame still goes to `view`; an episode that ends
/// mid-chunk drops the rest.
#[test]
fn action_chunks_run_to_their_end_before_the_next_frame_asks() {
    use vela_sim::MimicGenNode;
    let given = json!({ "environment": "Stack_D2", "width": 32, "height": 32, "horizon": 5, "auto_reset": false, "seed": 3 });
    let params = resolve_params(&MimicGenNode::descriptor(), given.as_object().unwrap()).unwrap();
    let mut node = MimicGenNode::new(&NodeInit { name: "sim", params: &params }).unwrap();
    let mut ctx = Context::detached("sim", MimicGenNode::descriptor());
    let count = |sent: &[(String, Message)], port: &str| sent.iter().filter(|(p, _)| p == port).count();
    let chunk = |k: usize| {
        let mut m = Message::new("policy", Actions::new(vec![0.0; 7 * k], "x"));
        m.timestamp = now_ns();
        m
    };
    node.start(&mut ctx).unwrap();
    let sent = ctx.take_sent();
    assert_eq!((count(&sent, "image"), count(&sent, "view")), (1, 1), "the first frame asks");
    node.on_input("actions", chunk(3), &mut ctx).unwrap();
    let sent = ctx.take_sent();
    assert_eq!((count(&sent, "image"), count(&sent, "view")), (1, 3), "three steps, one question after the last");
    assert!(node.summary().unwrap().contains("frame 3"), "{:?}", node.summary());
    // Two steps are left in the episode: a chunk of four ends it after two, and the last
    // frame goes to the policy as every episode's last frame does.
    node.on_input("actions", chunk(4), &mut ctx).unwrap();
    let sent = ctx.take_sent();
    assert_eq!((count(&sent, "image"), count(&sent, "view")), (1, 2));
    let stats = sent
        .iter()
        .find_map(|(_, m)| match &m.payload {
            Payload::Event(Event::Custom { name, data }) if name == vela_sim::node::EPISODE_STATS => Some(data.clone()),
            _ => None,
        })
        .expect("episode stats");
    assert_eq!(stats["steps"].as_u64(), Some(5));
    node.tick(&mut ctx).unwrap();
    assert!(ctx.take_sent().is_empty(), "the rest of the chunk is dropped with the episode");
    node.command("reset_episode", &json!({ "seed": 4 }), &mut ctx).unwrap();
    ctx.take_sent();
    let bad = Message::new("policy", Actions::new(vec![0.0; 8], "x"));
    let e = node.on_input("actions", bad, &mut ctx).unwrap_err().to_string();
    assert!(e.contains("7-D") && e.contains("8 values"), "{e}");
}

/// With `chunks = ensemble` the policy is asked after every step, whatever the chunk length.
#[test]
fn ensembled_chunks_ask_every_step() {
    use vela_sim::MimicGenNode;
    let given = json!({ "environment": "Stack_D2", "width": 32, "height": 32, "chunks": "ensemble" });
    let params = resolve_params(&MimicGenNode::descriptor(), given.as_object().unwrap()).unwrap();
    let mut node = MimicGenNode::new(&NodeInit { name: "sim", params: &params }).unwrap();
    let mut ctx = Context::detached("sim", MimicGenNode::descriptor());
    node.start(&mut ctx).unwrap();
    ctx.take_sent();
    for _ in 0..3 {
        node.on_input("actions", Message::new("policy", Actions::new(vec![0.0; 28], "x")), &mut ctx).unwrap();
        let sent = ctx.take_sent();
        assert_eq!(sent.iter().filter(|(p, _)| p == "image").count(), 1);
        assert_eq!(sent.iter().filter(|(p, _)| p == "view").count(), 1);
    }
    assert!(node.summary().unwrap().contains("frame 3"), "{:?}", node.summary());
    let bad = resolve_params(&MimicGenNode::descriptor(), json!({ "chunks": "blend" }).as_object().unwrap());
    assert!(bad.is_err() || MimicGenNode::new(&NodeInit { name: "sim", params: &bad.unwrap() }).is_err(), "an unknown chunk mode is refused");
}

/// Says one fixed sentence at start, like a speech recogniser would.
struct Say(String);

impl Node for Say {
    fn start(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        ctx.send("out", Text::final_text(self.0.clone()))
    }
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_instruction_replaces_the_sims_own() {
    let mut r = Registry::with_builtins();
    vela_sim::register(&mut r);
    r.register(
        NodeDescriptor::new("Say", "Test", "Say")
            .output("out", DataType::Text, "one sentence")
            .param(ParamSpec::new("text", ParamKind::String, "", "what to say")),
        |init| Ok(Box::new(Say(init.params.str("text")?.to_string()))),
    );
    let engine = Engine::new(Arc::new(r));
    let graph = GraphSpec {
        nodes: vec![
            // Genlocked with no policy: the episode waits at its first frame, so the
            // instruction arrives before anything moves.
            NodeSpec::new("sim", "MimicGen").param("environment", "Stack_Lang").param("width", 32).param("height", 32),
            NodeSpec::new("say", "Say").param("text", "put the big cube on the small one"),
            NodeSpec::new("text", "Collector"),
        ],
        edges: vec![EdgeSpec::new("say.out", "sim.instruction"), EdgeSpec::new("sim.text", "text.in")],
    };
    engine.load(&graph).await.unwrap();
    let mut rx = engine.subscribe();
    engine.start().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Let the expert act on what was said.
    engine.set_param("sim", "genlock", json!(false)).await.unwrap();
    engine.set_param("sim", "framerate", json!(0.0)).await.unwrap();
    engine.set_param("sim", "motion", json!("expert")).await.unwrap();
    let mut result = None;
    let done = wait_for(&mut rx, 240, |ev| {
        if let EngineEvent::Output { node, value } = ev {
            if node == "sim" {
                result = Some(value.clone());
                return true;
            }
        }
        false
    })
    .await;
    assert!(done, "the episode ends");
    assert_eq!(result.unwrap()["success"], true, "the big cube is stacked on the small one");
    let s = engine.stats().await;
    assert!(s["text"].received >= 3, "the sim echoes the given instruction");
    engine.stop().await;
}

/// `on_instruction`: `redirect` keeps the episode going with the new goal; `restart` puts the
/// same scene back to its start with the new instruction; an unreadable one changes nothing.
#[test]
fn instructions_redirect_or_restart_the_episode() {
    use vela_sim::MimicGenNode;
    let run = |mode: &str| {
        let given = json!({ "environment": "Stack_Lang", "width": 32, "height": 32, "seed": 9, "on_instruction": mode });
        let params = resolve_params(&MimicGenNode::descriptor(), given.as_object().unwrap()).unwrap();
        let mut node = MimicGenNode::new(&NodeInit { name: "sim", params: &params }).unwrap();
        let mut ctx = Context::detached("sim", MimicGenNode::descriptor());
        node.start(&mut ctx).unwrap();
        let first = ctx.take_sent();
        let instruction = first
            .iter()
            .find_map(|(_, m)| if let Payload::Event(Event::EpisodeStart { instruction, .. }) = &m.payload { Some(instruction.clone()) } else { None })
            .unwrap();
        for _ in 0..2 {
            let m = Message::new("policy", Actions::new(vec![0.0; 7], "x"));
            node.on_input("actions", m, &mut ctx).unwrap();
        }
        ctx.take_sent();
        // The same two colours, the other way round.
        let words: Vec<&str> = instruction.split_whitespace().collect();
        let colours: Vec<&str> = words.iter().copied().filter(|w| ["red", "orange", "yellow", "green", "blue", "purple"].contains(w)).collect();
        assert_eq!(colours.len(), 2, "{instruction}");
        let swapped = format!("put the {} block on the {} block", colours[1], colours[0]);
        node.on_input("instruction", Message::new("asr", Text::final_text(swapped.clone())), &mut ctx).unwrap();
        let sent = ctx.take_sent();
        node.on_input("instruction", Message::new("asr", Text::final_text("mumble mumble")), &mut ctx).unwrap();
        let after_noise = ctx.take_sent();
        (swapped, sent, after_noise)
    };
    let start = |sent: &[(String, Message)]| {
        sent.iter().find_map(|(_, m)| if let Payload::Event(Event::EpisodeStart { seed, instruction, .. }) = &m.payload { Some((*seed, instruction.clone())) } else { None })
    };
    let (swapped, sent, noise) = run("redirect");
    assert_eq!(start(&sent), None, "redirect keeps the episode");
    assert!(sent.iter().any(|(p, m)| p == "text" && matches!(&m.payload, Payload::Text(t) if t.text == swapped)));
    assert!(noise.iter().all(|(p, _)| p != "text"), "an unreadable command changes nothing");
    let (swapped, sent, _) = run("restart");
    assert_eq!(start(&sent), Some((9, swapped.clone())), "restart: same scene, new instruction");
    assert!(sent.iter().any(|(p, _)| p == "image"), "the restarted scene's first frame");
}
