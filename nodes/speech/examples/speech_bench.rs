//! Measures Whisper's real-time factor and the VAD's cost per second of audio.
//!
//!     cargo run --release -p vela-speech --example speech_bench [RUNS] [MODEL]
//!
//! MODEL is tiny.en (default) or base.
//!
//! Speech comes from espeak-ng (installed by scripts/setup-speech.sh).

use std::process::Command;
use std::time::Instant;

use vela_speech::resample::resample;
use vela_speech::vad::{VadConfig, VadCore};
use vela_speech::wav::read_wav;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let name = std::env::args().nth(2).unwrap_or_else(|| "tiny.en".to_string());
    let dir = std::env::temp_dir().join(format!("vela-speech-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let commands = [
        "put the red block on the green block",
        "pick up the blue cup and place it on the plate",
        "stop",
        "move the arm to the left, then open the gripper and put the green block on top of the red block",
    ];
    let mut clips = Vec::new();
    for (i, text) in commands.iter().enumerate() {
        let path = dir.join(format!("c{i}.wav"));
        let ok = Command::new("espeak-ng")
            .args(["-s", "130", "-g", "10", "-w"])
            .arg(&path)
            .arg(text)
            .status()
            .unwrap()
            .success();
        assert!(ok, "espeak-ng failed");
        let w = read_wav(&path).unwrap();
        clips.push((text, w));
    }

    let t0 = Instant::now();
    let model = vela_speech::asr::load_model(&name).expect("run scripts/setup-speech.sh first");
    println!("{name}: model load {:.2} s", t0.elapsed().as_secs_f64());
    let mut m = model.lock().unwrap();
    // Warm-up
    let _ = m.transcribe(&vec![0.0; 16000]).unwrap();
    println!("| clip | audio s | compute s (median of {runs}) | RTFX | transcript |");
    println!("|---|---|---|---|---|");
    for (text, w) in &clips {
        let audio = resample(&w.samples, w.sample_rate, 16000);
        let mut times = Vec::new();
        let mut out = String::new();
        for _ in 0..runs {
            let t = m.transcribe(&audio).unwrap();
            times.push(t.compute_s);
            out = t.text;
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        let secs = audio.len() as f64 / 16000.0;
        println!(
            "| {text:?} | {secs:.2} | {med:.3} | {:.2} | {out:?} |",
            secs / med
        );
    }
    // Encoder alone (fixed cost: every window is padded to 30 s).
    let mut enc = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let _ = m.encode(&vec![0.0; 16000]).unwrap();
        enc.push(t.elapsed().as_secs_f64());
    }
    enc.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("encoder (30 s window): {:.3} s median", enc[enc.len() / 2]);
    let t = Instant::now();
    let _ = m.mel().log_mel(&vec![0.1; 16000 * 5]);
    println!("log-mel of 5 s: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    drop(m);

    // VAD: 60 s of speech and silence, fed in 20 ms blocks, at 16 kHz and at 48 kHz.
    let mut audio16 = Vec::new();
    while audio16.len() < 16000 * 60 {
        for (_, w) in &clips {
            audio16.extend(resample(&w.samples, w.sample_rate, 16000));
            audio16.extend(vec![0.0f32; 16000]);
        }
    }
    audio16.truncate(16000 * 60);
    let audio48 = resample(&audio16, 16000, 48000);
    for (rate, audio) in [(16000u32, &audio16), (48000, &audio48)] {
        let mut best = f64::MAX;
        let mut utterances = 0;
        for _ in 0..runs {
            let mut vad = VadCore::new(VadConfig::default());
            let t = Instant::now();
            let mut n = 0;
            for c in audio.chunks(rate as usize / 50) {
                n += vad
                    .push(c, rate, 1)
                    .iter()
                    .filter(|o| matches!(o, vela_speech::VadOutput::End(_)))
                    .count();
            }
            n += vad
                .flush()
                .iter()
                .filter(|o| matches!(o, vela_speech::VadOutput::End(_)))
                .count();
            best = best.min(t.elapsed().as_secs_f64());
            utterances = n;
        }
        println!(
            "VAD at {rate} Hz: {:.3} ms per second of audio ({utterances} utterances in 60 s)",
            best * 1e3 / 60.0
        );
    }
}
