//! Measures Whisper's real-time factor on each backend and the VAD's cost per second of audio.
//!
//!     cargo run --release -p vela-speech --example speech_bench [RUNS] [MODEL] [BACKEND]
//!
//! MODEL is tiny.en (default) or base; BACKEND is whisper.cpp, candle or all (default).
//!
//! Speech comes from espeak-ng (installed by scripts/setup-speech.sh).

use std::process::Command;
use std::time::Instant;

use vela_speech::recognizer::Backend;
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

    let backends: Vec<Backend> = match std::env::args().nth(3).as_deref() {
        None | Some("all") => Backend::ALL.into_iter().filter(|b| b.built()).collect(),
        Some(b) => vec![Backend::parse(b).expect("backend: whisper.cpp, candle or all")],
    };
    let mut models = Vec::new();
    for backend in backends {
        let t0 = Instant::now();
        match vela_speech::recognizer::load(&name, backend) {
            Ok(m) => {
                println!("{name} on {backend}: model load {:.2} s", t0.elapsed().as_secs_f64());
                // Warm-up
                let _ = m.transcribe(&vec![0.0; 16000]).unwrap();
                models.push((backend, m));
            }
            Err(e) => println!("{name} on {backend}: {e}"),
        }
    }
    // The box is shared, so its load moves during a run: backends take turns on every clip
    // and repetition, and each sees the same conditions.
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load().trim());
    println!("\n| clip | audio s | backend | compute s (median of {runs}) | RTFX | transcript |");
    println!("|---|---|---|---|---|---|");
    for (text, w) in &clips {
        let audio = resample(&w.samples, w.sample_rate, 16000);
        let secs = audio.len() as f64 / 16000.0;
        let mut times = vec![Vec::new(); models.len()];
        let mut outs = vec![String::new(); models.len()];
        for _ in 0..runs {
            for (i, (_, m)) in models.iter().enumerate() {
                let t = m.transcribe(&audio).unwrap();
                times[i].push(t.compute_s);
                outs[i] = t.text;
            }
        }
        for (i, (backend, _)) in models.iter().enumerate() {
            let med = median(&mut times[i]);
            println!(
                "| {text:?} | {secs:.2} | {backend} | {med:.3} | {:.2} | {:?} |",
                secs / med,
                outs[i]
            );
        }
    }
    // Log-mel + encoder alone (fixed cost: every window is padded to 30 s).
    let mut enc = vec![Vec::new(); models.len()];
    for _ in 0..runs {
        for (i, (_, m)) in models.iter().enumerate() {
            enc[i].push(m.encode_window(&vec![0.0; 16000]).unwrap());
        }
    }
    for (i, (backend, _)) in models.iter().enumerate() {
        println!(
            "{name} on {backend}: log-mel + encoder (one 30 s window): {:.3} s median",
            median(&mut enc[i])
        );
    }
    println!("load average after: {}", load().trim());
    if let Ok(m) = vela_speech::asr::load_model(&name) {
        let t = Instant::now();
        let _ = m.lock().unwrap().mel().log_mel(&vec![0.1; 16000 * 5]);
        println!("log-mel of 5 s (ours, candle backend): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }

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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
