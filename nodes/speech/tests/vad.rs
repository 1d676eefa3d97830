//! VADFilter's detector on real speech from espeak-ng (no model files needed).

mod common;

use vela_speech::vad::{Utterance, VadConfig, VadCore, VadOutput};
use vela_speech::wav::read_wav;

fn run(core: &mut VadCore, audio: &[f32], rate: u32, chunk: usize) -> Vec<VadOutput> {
    let mut out = Vec::new();
    for c in audio.chunks(chunk) {
        out.extend(core.push(c, rate, 1));
    }
    out.extend(core.flush());
    out
}

fn ends(out: &[VadOutput]) -> Vec<Utterance> {
    out.iter()
        .filter_map(|o| {
            if let VadOutput::End(u) = o {
                Some(u.clone())
            } else {
                None
            }
        })
        .collect()
}

fn interrupts(out: &[VadOutput]) -> usize {
    out.iter()
        .filter(|o| matches!(o, VadOutput::Interrupt { .. }))
        .count()
}

fn speech_samples(out: &[VadOutput]) -> usize {
    out.iter()
        .map(|o| {
            if let VadOutput::Speech { samples, .. } = o {
                samples.len()
            } else {
                0
            }
        })
        .sum()
}

#[test]
fn finds_one_utterance_with_sensible_bounds() {
    let dir = common::temp_dir("vad-one");
    let wav = read_wav(&common::speak(
        &dir,
        "one",
        "put the red block on the green block",
    ))
    .unwrap();
    let rate = wav.sample_rate;
    // Where espeak's voice actually is (it pads a little silence itself).
    let loud: Vec<usize> = wav
        .samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.abs() > 0.02)
        .map(|(i, _)| i)
        .collect();
    let (voice_start, voice_end) = (
        *loud.first().unwrap() as f64 / rate as f64,
        *loud.last().unwrap() as f64 / rate as f64,
    );
    let mut audio = common::silence(rate, 1.0);
    audio.extend(&wav.samples);
    audio.extend(common::silence(rate, 1.5));
    let mut core = VadCore::new(VadConfig::default());
    // Feed 20 ms blocks at the file's own rate (22050 Hz): the detector resamples.
    let out = run(&mut core, &audio, rate, rate as usize / 50);
    let u = ends(&out);
    assert_eq!(u.len(), 1, "utterances: {u:?}");
    let (start, end) = (u[0].start_s, u[0].end_s);
    let (vs, ve) = (1.0 + voice_start, 1.0 + voice_end);
    eprintln!("voice {vs:.2}..{ve:.2} s, detected {start:.2}..{end:.2} s");
    assert!(
        start <= vs + 0.05 && start >= vs - 0.5,
        "start {start:.2} vs voice onset {vs:.2}"
    );
    assert!(
        end >= ve - 0.05 && end <= ve + 0.8,
        "end {end:.2} vs voice end {ve:.2}"
    );
    // What went out is the utterance, at 16 kHz.
    assert_eq!(speech_samples(&out) as u64, u[0].samples);
    assert!((u[0].samples as f64 / 16000.0 - (end - start)).abs() < 1e-6);
    assert_eq!(interrupts(&out), 1);

    // `received` says how far the live audio had got when the utterance closed (what
    // `vela bench voice` times the rest of the chain from): all that was pushed so far.
    let mut core = VadCore::new(VadConfig::default());
    let (mut fed, mut closed) = (0usize, None);
    for c in audio.chunks(rate as usize / 50) {
        fed += c.len();
        for o in core.push(c, rate, 1) {
            if let VadOutput::End(u) = o {
                closed = Some((u.received as f64 / 16000.0, fed as f64 / rate as f64));
            }
        }
    }
    let (received_s, fed_s) = closed.expect("the utterance closed while audio was still coming");
    assert!((received_s - fed_s).abs() < 0.02, "received {received_s:.3} s, pushed {fed_s:.3} s");
    assert!(received_s > end, "received {received_s:.3} s, utterance end {end:.3} s");
}

#[test]
fn silence_and_faint_noise_give_nothing() {
    let mut core = VadCore::new(VadConfig::default());
    let out = run(&mut core, &common::silence(48000, 3.0), 48000, 960);
    assert!(out.is_empty(), "{} outputs from silence", out.len());
    // Deterministic faint noise (-40 dBFS).
    let mut seed = 12345u32;
    let noise: Vec<f32> = (0..16000 * 3)
        .map(|_| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.02
        })
        .collect();
    let out = run(&mut core, &noise, 16000, 1600);
    assert!(
        ends(&out).is_empty(),
        "noise was taken for speech: {:?}",
        ends(&out)
    );
}

#[test]
fn interrupt_fires_on_every_utterance() {
    let dir = common::temp_dir("vad-two");
    let a = read_wav(&common::speak(&dir, "a", "pick up the blue cup")).unwrap();
    let b = read_wav(&common::speak(&dir, "b", "now stop")).unwrap();
    let rate = a.sample_rate;
    let mut audio = common::silence(rate, 0.5);
    audio.extend(&a.samples);
    audio.extend(common::silence(rate, 1.5));
    audio.extend(&b.samples);
    audio.extend(common::silence(rate, 1.0));
    let mut core = VadCore::new(VadConfig::default());
    let out = run(&mut core, &audio, rate, 2205);
    let u = ends(&out);
    assert_eq!(u.len(), 2, "utterances: {u:?}");
    assert_eq!(
        interrupts(&out),
        2,
        "the interrupt must re-arm for each utterance"
    );
    assert!(u[1].start_s > u[0].end_s);
    assert_eq!(u[1].total, u[0].samples + u[1].samples);
}

#[test]
fn zero_threshold_passes_everything_once() {
    let cfg = VadConfig {
        threshold: 0.0,
        ..VadConfig::default()
    };
    let mut core = VadCore::new(cfg);
    let audio = common::silence(16000, 1.0);
    let out = run(&mut core, &audio, 16000, 1600);
    assert_eq!(speech_samples(&out), 16000);
    assert_eq!(ends(&out).len(), 1);
}

#[test]
fn clipped_speech_is_still_one_utterance_and_garbage_is_harmless() {
    let dir = common::temp_dir("vad-bad");
    let wav = read_wav(&common::speak(
        &dir,
        "loud",
        "put the red block on the green block",
    ))
    .unwrap();
    let rate = wav.sample_rate;
    // Driven 4x into hard clipping, plus samples past full scale.
    let mut audio = common::silence(rate, 0.5);
    audio.extend(wav.samples.iter().map(|s| (s * 4.0).clamp(-1.0, 1.0)));
    audio[rate as usize] = 3.0;
    audio.extend(common::silence(rate, 1.0));
    let mut core = VadCore::new(VadConfig::default());
    let out = run(&mut core, &audio, rate, 2205);
    assert_eq!(ends(&out).len(), 1, "{:?}", ends(&out));

    // NaN and infinities from a broken source: no speech, no panic, no NaN out.
    let mut bad = vec![f32::NAN; 16000];
    bad.extend(vec![f32::INFINITY; 8000]);
    let out = run(&mut core, &bad, 16000, 1600);
    assert!(ends(&out).is_empty());
    for o in &out {
        if let VadOutput::Speech { samples, .. } = o {
            assert!(samples.iter().all(|x| x.is_finite()));
        }
    }
    // Zero rate or channels: ignored.
    assert!(core.push(&[0.1; 100], 0, 1).is_empty());
    assert!(core.push(&[0.1; 100], 16000, 0).is_empty());
}
