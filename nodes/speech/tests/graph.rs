//! The whole chain in the engine: WavSource → VADFilter → WhisperASR → Collector.

mod common;

use std::sync::Arc;
use std::time::Duration;

use vela_runtime::*;
use vela_speech::recognizer::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_command_becomes_partials_and_a_final_on_whisper_cpp() {
    spoken_command_becomes_partials_and_a_final(Backend::WhisperCpp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_command_becomes_partials_and_a_final_on_candle() {
    spoken_command_becomes_partials_and_a_final(Backend::Candle).await
}

async fn spoken_command_becomes_partials_and_a_final(backend: Backend) {
    if !backend.built() {
        eprintln!("SKIPPING: this build has no {backend} backend");
        return;
    }
    let Some(_) = common::model_files_on("tiny.en", backend) else {
        return;
    };
    let dir = common::temp_dir(&format!("graph-{backend}"));
    let speech = vela_speech::wav::read_wav(&common::speak(
        &dir,
        "cmd",
        "put the red block on top of the green block",
    ))
    .unwrap();
    // Half a second of silence before and after, as a microphone would give.
    let mut audio = common::silence(speech.sample_rate, 0.5);
    audio.extend(&speech.samples);
    audio.extend(common::silence(speech.sample_rate, 1.0));
    let path = dir.join("padded.wav");
    std::fs::write(
        &path,
        vela_speech::wav::encode_wav(&audio, speech.sample_rate, 1),
    )
    .unwrap();

    // Load the model first (the node shares the cache), so audio played in real time
    // meets a ready recogniser, as it would in a running studio.
    vela_speech::recognizer::load("tiny.en", backend).unwrap();
    let mut reg = Registry::with_builtins();
    vela_speech::register(&mut reg);
    let engine = Engine::new(Arc::new(reg));
    let graph = GraphSpec {
        nodes: vec![
            NodeSpec::new("mic", "WavSource")
                .param("path", path.display().to_string())
                .param("realtime", true),
            NodeSpec::new("vad", "VADFilter"),
            NodeSpec::new("asr", "WhisperASR").param("backend", backend.name()),
            NodeSpec::new("sink", "Collector"),
            NodeSpec::new("partials", "Collector"),
        ],
        edges: vec![
            EdgeSpec::new("mic.audio", "vad.in"),
            EdgeSpec::new("mic.end", "vad.in"),
            EdgeSpec::new("vad.audio", "asr.in"),
            EdgeSpec::new("vad.end", "asr.in"),
            EdgeSpec::new("asr.final", "sink.in"),
            EdgeSpec::new("asr.partial", "partials.in"),
        ],
    };
    let mut events = engine.subscribe();
    engine.load(&graph).await.unwrap();
    engine.start().await;
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            match events.recv().await {
                Ok(EngineEvent::Output { node, value }) if node != "sink" => {
                    eprintln!("{node}: {}", value.get("text").unwrap_or(&value))
                }
                Ok(EngineEvent::Output { node, value }) if node == "sink" => {
                    return Ok(value["value"].as_str().unwrap_or_default().to_string());
                }
                Ok(EngineEvent::Status {
                    node,
                    status: NodeStatus::Failed { error },
                }) => return Err(format!("{node} failed: {error}")),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let stats = engine.stats().await;
    // Stop before asserting: a blocking node left running would keep the runtime from
    // shutting down and turn a failure into a hang.
    engine.stop().await;
    let transcript = outcome.expect("no transcript within 180 s").unwrap();
    eprintln!(
        "{backend}: transcript {transcript:?}; vad: {}; asr: {}; {} partials",
        stats["vad"].summary, stats["asr"].summary, stats["partials"].received
    );
    let lower = transcript.to_lowercase();
    assert!(
        lower.contains("red") && lower.contains("block"),
        "{transcript:?}"
    );
    assert!(
        stats["asr"].summary.starts_with("RTFX="),
        "{}",
        stats["asr"].summary
    );
    assert_eq!(stats["sink"].received, 1);
    // Played in real time, the utterance lasts long enough for partial transcripts.
    assert!(stats["partials"].received >= 1, "no partial transcripts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_straight_into_whisper_is_transcribed_at_its_end() {
    // The node's default backend (whisper.cpp in a default build).
    let Some(_) = common::model_files_on("tiny.en", Backend::default_for_build()) else {
        return;
    };
    let dir = common::temp_dir("graph-direct");
    // 22050 Hz straight from espeak-ng: WhisperASR resamples, and the file's end marker
    // (which may overtake the last chunks) closes the utterance.
    let path = common::speak(&dir, "cmd", "put the red block on the green block");
    let mut reg = Registry::with_builtins();
    vela_speech::register(&mut reg);
    let engine = Engine::new(Arc::new(reg));
    let graph = GraphSpec {
        nodes: vec![
            NodeSpec::new("file", "WavSource")
                .param("path", path.display().to_string())
                .param("realtime", false)
                .param("chunk", 0.05),
            NodeSpec::new("asr", "WhisperASR").param("partial_transcripts", 0.0),
            NodeSpec::new("sink", "Collector"),
        ],
        edges: vec![
            EdgeSpec::new("file.audio", "asr.in"),
            EdgeSpec::new("file.end", "asr.in"),
            EdgeSpec::new("asr.final", "sink.in"),
        ],
    };
    let mut events = engine.subscribe();
    engine.load(&graph).await.unwrap();
    engine.start().await;
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            match events.recv().await {
                Ok(EngineEvent::Output { node, value }) if node == "sink" => {
                    return Ok(value["value"].as_str().unwrap_or_default().to_string())
                }
                Ok(EngineEvent::Status {
                    node,
                    status: NodeStatus::Failed { error },
                }) => return Err(format!("{node} failed: {error}")),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    engine.stop().await;
    let transcript = outcome.expect("no transcript within 180 s").unwrap();
    let lower = transcript.to_lowercase();
    assert!(
        lower.contains("red") && lower.contains("block") && lower.contains("green"),
        "{transcript:?}"
    );
}
