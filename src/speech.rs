//! `vela speech transcribe`: VAD + Whisper over a recording, segments with times.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

#[derive(clap::Subcommand)]
pub enum SpeechCommand {
    /// Find the utterances in a WAV file and transcribe each.
    Transcribe {
        file: PathBuf,
        /// Whisper model: tiny.en or base (both installed by scripts/setup-speech.sh).
        #[arg(long, default_value = "tiny.en")]
        model: String,
        /// Engine: whisper.cpp or candle (default: whisper.cpp when built with it).
        #[arg(long)]
        backend: Option<String>,
        /// Voice-activity threshold (0-1).
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        /// How much audio whisper.cpp encodes: fit (the utterance, at least 7.7 s) or full
        /// (Whisper's 30 s window).
        #[arg(long, default_value = "fit")]
        encoder_window: String,
    },
}

pub fn run(cmd: SpeechCommand) -> Result<()> {
    match cmd {
        SpeechCommand::Transcribe { file, model, backend, threshold, encoder_window } => {
            anyhow::ensure!((0.0..=1.0).contains(&threshold), "--threshold must be between 0 and 1");
            let window = vela_speech::recognizer::EncoderWindow::parse(&encoder_window)?;
            let wav = vela_speech::wav::read_wav(&file).with_context(|| format!("reading {}", file.display()))?;
            let vad = vela_speech::VadConfig { threshold, ..Default::default() };
            let backend = match backend {
                Some(b) => vela_speech::recognizer::Backend::parse(&b)?,
                None => vela_speech::recognizer::Backend::default_for_build(),
            };
            let segments = vela_speech::transcribe::transcribe_segments(&wav.samples, wav.sample_rate, wav.channels, &model, backend, vad, window)?;
            if segments.is_empty() {
                println!("no speech found in {}", file.display());
            }
            for s in segments {
                println!("[{:7.2} s - {:7.2} s] {}", s.start_s, s.end_s, s.text.trim());
            }
        }
    }
    Ok(())
}
