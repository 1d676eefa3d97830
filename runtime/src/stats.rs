//! Per-node statistics, sampled by the studio and `vela run` without pausing the node.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use vela_protocol::types::NodeStats;

/// How many recent callbacks the rate and latency figures look at.
const WINDOW: usize = 128;
/// Samples older than this do not count towards the rate, so a stalled node shows 0 fps.
const RATE_HORIZON: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Inner {
    window: VecDeque<(Instant, Duration)>,
    received: u64,
    processed: u64,
    sent: u64,
    errors: u64,
    custom_summary: Option<String>,
}

/// Shared by a node's driver (which records) and observers (which snapshot). Public so
/// other drivers of the [`crate::Node`] trait (the dora runner) report the same figures.
#[derive(Default)]
pub struct StatsCell {
    inner: Mutex<Inner>,
}

impl StatsCell {
    pub fn record(&self, started: Instant, took: Duration, received: bool, sent: usize) {
        let mut i = self.inner.lock().unwrap();
        if i.window.len() == WINDOW {
            i.window.pop_front();
        }
        i.window.push_back((started, took));
        i.processed += 1;
        i.received += u64::from(received);
        i.sent += sent as u64;
    }

    pub fn record_error(&self) {
        self.inner.lock().unwrap().errors += 1;
    }

    pub fn set_summary(&self, s: Option<String>) {
        self.inner.lock().unwrap().custom_summary = s;
    }

    pub fn snapshot(&self, queue_depth: usize, dropped: u64) -> NodeStats {
        let i = self.inner.lock().unwrap();
        let now = Instant::now();
        let recent: Vec<&(Instant, Duration)> =
            i.window.iter().filter(|(t, _)| now.duration_since(*t) <= RATE_HORIZON).collect();
        let fps = match (recent.first(), recent.len()) {
            (Some((first, _)), n) if n >= 2 => {
                let span = now.duration_since(*first).as_secs_f64();
                if span > 0.0 {
                    (n - 1) as f64 / span
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        let (sum, max) = i.window.iter().fold((Duration::ZERO, Duration::ZERO), |(s, m), (_, d)| (s + *d, m.max(*d)));
        let latency_ms = if i.window.is_empty() { 0.0 } else { sum.as_secs_f64() * 1e3 / i.window.len() as f64 };
        let summary = i.custom_summary.clone().unwrap_or_else(|| {
            if i.processed == 0 {
                "idle".to_string()
            } else {
                format!("{fps:.1} fps · {latency_ms:.2} ms")
            }
        });
        NodeStats {
            fps,
            latency_ms,
            max_latency_ms: max.as_secs_f64() * 1e3,
            received: i.received,
            processed: i.processed,
            sent: i.sent,
            queue_depth,
            dropped,
            errors: i.errors,
            summary,
        }
    }
}
