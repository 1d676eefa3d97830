//! WebAudioIn: microphone audio from a browser tab, at the rate the browser really
//! captures at (Agent Studio assumed 48 kHz). The browser sends binary WebSocket frames
//! (see [`crate::audio_frame`]); the studio hands them to the hub, which queues them
//! here; the node emits them on its next tick. A muted microphone sends nothing, so the
//! node emits nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use vela_runtime::{Audio, Context, DataType, Message, Node, NodeDescriptor, NodeError, NodeInit};

use crate::hub::hub;

/// Audio older than this is dropped if the graph does not keep up.
const MAX_QUEUED_S: f64 = 2.0;

pub(crate) struct AudioInlet {
    pub(crate) node: String,
    queue: Mutex<VecDeque<Audio>>,
    received: AtomicU64,
    dropped: AtomicU64,
}

impl AudioInlet {
    pub(crate) fn push(&self, audio: Audio) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut q = self.queue.lock().unwrap();
        q.push_back(audio);
        while q.iter().map(Audio::duration_s).sum::<f64>() > MAX_QUEUED_S && q.len() > 1 {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub struct WebAudioIn {
    inlet: Arc<AudioInlet>,
    blocks: u64,
    seconds: f64,
    last: Option<(u32, u16, f64)>,
    last_block: Option<Instant>,
    last_publish: Instant,
}

impl WebAudioIn {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("WebAudioIn", "Audio", "Browser microphone")
            .describe("Microphone audio from a studio browser tab, at the browser's own sample rate.")
            .output("audio", DataType::Audio, "PCM blocks (f32, interleaved), as the browser sent them")
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        Ok(WebAudioIn {
            inlet: Arc::new(AudioInlet {
                node: init.name.to_string(),
                queue: Mutex::new(VecDeque::new()),
                received: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
            blocks: 0,
            seconds: 0.0,
            last: None,
            last_block: None,
            last_publish: Instant::now(),
        })
    }
}

/// Level in dBFS of a block (20·log10 RMS), -100 for silence.
pub fn level_db(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return -100.0;
    }
    let ms = samples.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / samples.len() as f64;
    if ms <= 1e-10 {
        -100.0
    } else {
        10.0 * ms.log10()
    }
}

impl Node for WebAudioIn {
    fn start(&mut self, _: &mut Context) -> Result<(), NodeError> {
        hub().register_audio(self.inlet.clone());
        Ok(())
    }

    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(10))
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        let blocks: Vec<Audio> = self.inlet.queue.lock().unwrap().drain(..).collect();
        for a in blocks {
            self.blocks += 1;
            self.seconds += a.duration_s();
            self.last = Some((a.sample_rate, a.channels, level_db(&a.samples)));
            self.last_block = Some(Instant::now());
            ctx.send("audio", a)?;
        }
        if self.last_publish.elapsed() >= Duration::from_secs(1) && self.blocks > 0 {
            self.last_publish = Instant::now();
            let (rate, channels, db) = self.last.unwrap_or((0, 0, -100.0));
            ctx.publish(json!({
                "sample_rate": rate, "channels": channels, "blocks": self.blocks,
                "seconds": (self.seconds * 1000.0).round() / 1000.0, "audio_db": (db * 10.0).round() / 10.0,
                "dropped": self.inlet.dropped.load(Ordering::Relaxed),
            }));
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        Some(match (self.last, self.last_block) {
            (Some((rate, ch, db)), Some(t)) if t.elapsed() < Duration::from_secs(1) => {
                format!("{rate} Hz x{ch}, {db:.1} dB, {:.1} s", self.seconds)
            }
            (Some((rate, ch, _)), _) => format!("{rate} Hz x{ch}, silent (muted?), {:.1} s", self.seconds),
            _ => "waiting for a browser microphone".into(),
        })
    }

    fn stop(&mut self) {
        hub().unregister_audio(&self.inlet);
    }
}

impl Drop for WebAudioIn {
    fn drop(&mut self) {
        hub().unregister_audio(&self.inlet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_is_in_dbfs() {
        assert_eq!(level_db(&[]), -100.0);
        assert_eq!(level_db(&[0.0; 10]), -100.0);
        assert!((level_db(&[1.0, -1.0]) - 0.0).abs() < 1e-9);
        assert!((level_db(&[0.5; 4]) + 6.0206).abs() < 1e-3);
    }
}
