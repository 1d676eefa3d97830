//! Without model files WhisperASR is listed as unavailable, and start-up goes on.

use vela_runtime::{Availability, Registry};

#[test]
fn missing_model_makes_whisper_unavailable_not_fatal() {
    // Its own test binary: the variable would confuse tests running beside it.
    let empty = std::env::temp_dir().join(format!("vela-no-whisper-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    std::env::set_var("VELA_WHISPER_DIR", &empty);
    let mut r = Registry::with_builtins();
    vela_speech::register(&mut r);
    match &r.get("WhisperASR").unwrap().availability {
        Availability::Unavailable { reason } => {
            assert!(reason.contains("setup-speech.sh"), "{reason}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(matches!(
        r.get("VADFilter").unwrap().availability,
        Availability::Available
    ));
    assert!(matches!(
        r.get("WavSource").unwrap().availability,
        Availability::Available
    ));
}
