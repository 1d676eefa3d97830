//! The whole chain in the engine: WavSource → VADFilter → WhisperASR → Collector.

mod common;

use std::sync::Arc;
use std::time::Duration;

use vela_runtime::*;
use vela_speech::recognizer::Backend;

/// `mic` (a WavSource) → VADFilter → `asr` (a WhisperASR), finals to `sink` and partials to
/// `partials` (the collectors [`run_until_final`] watches).
fn spoken_chain(mic: NodeSpec, asr: NodeSpec) -> GraphSpec {
    GraphSpec {
        nodes: vec![
            mic,
            NodeSpec::new("vad", "VADFilter"),
            asr,
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
    }
}

/// Runs `graph` until its `sink` collector gets a transcript (180 s at most) and stops it
/// before anything is asserted: a blocking node left running would keep the runtime from
/// shutting down and turn a failure into a hang. Returns the transcript, the texts that
/// reached a `partials` collector, and the node stats.
async fn run_until_final(graph: GraphSpec) -> (String, Vec<String>, std::collections::BTreeMap<String, NodeStats>) {
    let mut reg = Registry::with_builtins();
    vela_speech::register(&mut reg);
    let engine = Engine::new(Arc::new(reg));
    let mut events = engine.subscribe();
    engine.load(&graph).await.unwrap();
    engine.start().await;
    let mut partials = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            match events.recv().await {
                Ok(EngineEvent::Output { node, value }) if node == "sink" => {
                    return Ok(value["value"].as_str().unwrap_or_default().to_string())
                }
                Ok(EngineEvent::Output { node, value }) if node == "partials" => {
                    partials.push(value["value"].as_str().unwrap_or_default().to_lowercase())
                }
                Ok(EngineEvent::Output { node, value }) => {
                    eprintln!("{node}: {}", value.get("text").unwrap_or(&value))
                }
                Ok(EngineEvent::Status { node, status: NodeStatus::Failed { error } }) => {
                    return Err(format!("{node} failed: {error}"))
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    // Stats after the stop: the node that sent the final may not have returned yet when the
    // sink reports it, and its summary is taken when it does.
    engine.stop().await;
    let stats = engine.stats().await;
    let transcript = outcome.expect("no transcript within 180 s").unwrap();
    (transcript, partials, stats)
}

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
    let graph = spoken_chain(
        NodeSpec::new("mic", "WavSource")
            .param("path", path.display().to_string())
            .param("realtime", true),
        NodeSpec::new("asr", "WhisperASR").param("backend", backend.name()),
    );
    let (transcript, _, stats) = run_until_final(graph).await;
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
    // The speech went quiet before the VAD closed the utterance, so the final is the
    // transcript made during the VAD's wait (`speculate`), not a second pass.
    assert!(
        stats["asr"].summary.ends_with("1/1 finals early"),
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
    let (transcript, _, _) = run_until_final(graph).await;
    let lower = transcript.to_lowercase();
    assert!(
        lower.contains("red") && lower.contains("block") && lower.contains("green"),
        "{transcript:?}"
    );
}

/// A pause shorter than the VAD's silence window: the node transcribes early at the pause,
/// then more speech comes and the recording ends mid-sentence (the end of stream closes the
/// utterance with no quiet after it), so the early transcript must not become the final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_after_a_short_pause_is_not_lost_to_the_early_transcript() {
    let Some(_) = common::model_files_on("tiny.en", Backend::default_for_build()) else {
        return;
    };
    let dir = common::temp_dir("graph-pause");
    let a = vela_speech::wav::read_wav(&common::speak(&dir, "a", "put the red block")).unwrap();
    let b = vela_speech::wav::read_wav(&common::speak(&dir, "b", "on the green block")).unwrap();
    let trim = |s: &[f32]| {
        let first = s.iter().position(|x| x.abs() > 0.01).unwrap();
        let last = s.iter().rposition(|x| x.abs() > 0.01).unwrap();
        s[first..=last].to_vec()
    };
    let rate = a.sample_rate;
    let mut audio = common::silence(rate, 0.5);
    audio.extend(trim(&a.samples));
    audio.extend(common::silence(rate, 0.3)); // under the VAD's 0.5 s window
    audio.extend(trim(&b.samples));
    let path = dir.join("pause.wav");
    std::fs::write(&path, vela_speech::wav::encode_wav(&audio, rate, 1)).unwrap();
    let graph = spoken_chain(
        NodeSpec::new("mic", "WavSource")
            .param("path", path.display().to_string())
            .param("realtime", false)
            .param("chunk", 0.02),
        NodeSpec::new("asr", "WhisperASR"),
    );
    let (transcript, partials, stats) = run_until_final(graph).await;
    let transcript = transcript.to_lowercase();
    assert!(transcript.contains("red") && transcript.contains("green"), "{transcript:?}");
    // The pause was transcribed early (sent as a partial)...
    assert!(partials.iter().any(|p| p.contains("red") && !p.contains("green")), "partials: {partials:?}");
    // ...but the final came from a full pass over the whole utterance.
    assert!(stats["asr"].summary.ends_with("0/1 finals early"), "{}", stats["asr"].summary);
}
