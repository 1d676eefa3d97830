//! Two benchmark nodes for comparing transports: a source of identical frames and a
//! sink that measures how long each message took from its sender (wall clock, so it
//! works across processes on one host).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use vela_runtime::{
    now_ns, Context, DataType, Image, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind, ParamSpec, Payload,
    Registry,
};

pub fn register(r: &mut Registry) {
    r.register(BenchFrames::descriptor(), |init| Ok(Box::new(BenchFrames::new(init)?)));
    r.register(LatencyProbe::descriptor(), |init| Ok(Box::new(LatencyProbe::new(init)?)));
}

fn int(min: i64, max: Option<i64>) -> ParamKind {
    ParamKind::Int { min: Some(min), max }
}

/// Sends one pre-rendered RGB frame over and over, each time as a new message, so
/// the measurement is the transport and not the rendering.
pub struct BenchFrames {
    frame: Bytes,
    width: u32,
    height: u32,
    interval: Duration,
    remaining: u64,
}

impl BenchFrames {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("BenchFrames", "Testing", "Benchmark frames")
            .describe("Sends `count` identical RGB frames at a fixed rate, then ends the run.")
            .output("image", DataType::Image, "RGB8 frames")
            .param(ParamSpec::new("width", int(1, Some(8192)), 224, "frame width").startup_only())
            .param(ParamSpec::new("height", int(1, Some(8192)), 224, "frame height").startup_only())
            .param(ParamSpec::new("rate_hz", ParamKind::Float { min: Some(0.0), max: None }, 100.0, "frames per second; 0 = as fast as possible").startup_only())
            .param(ParamSpec::new("count", int(1, None), 500, "frames to send").startup_only())
    }

    fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let p = init.params;
        let (width, height) = (p.u64("width")? as u32, p.u64("height")? as u32);
        let rate = p.f64("rate_hz")?;
        let frame: Vec<u8> = (0..width as usize * height as usize * 3).map(|i| (i % 251) as u8).collect();
        Ok(BenchFrames {
            frame: frame.into(),
            width,
            height,
            interval: if rate > 0.0 { Duration::from_secs_f64(1.0 / rate) } else { Duration::ZERO },
            remaining: p.u64("count")?,
        })
    }
}

impl Node for BenchFrames {
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(if self.remaining == 0 { Duration::from_secs(3600) } else { self.interval })
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.remaining == 0 {
            return Ok(());
        }
        self.remaining -= 1;
        let img = Image::rgb8(self.width, self.height, self.frame.clone()).map_err(NodeError::msg)?;
        ctx.send("image", img)?;
        if self.remaining == 0 {
            ctx.finish("all frames sent");
        }
        Ok(())
    }
}

/// Records per-message latency (receive time minus the sender's timestamp) and, after
/// `expect` messages, publishes the figures and ends the run.
pub struct LatencyProbe {
    expect: u64,
    latencies_us: Vec<f64>,
    bytes: u64,
    first: Option<Instant>,
}

impl LatencyProbe {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("LatencyProbe", "Testing", "Latency probe")
            .describe("Measures sender-to-here latency and throughput; publishes the figures after `expect` messages.")
            .input("in", &[DataType::Any], "anything")
            .param(ParamSpec::new("expect", int(1, None), 500, "messages to measure").startup_only())
    }

    fn new(init: &NodeInit) -> Result<Self, NodeError> {
        Ok(LatencyProbe { expect: init.params.u64("expect")?, latencies_us: Vec::new(), bytes: 0, first: None })
    }

    /// The figures so far: percentiles of latency, and rate from the first to the last message.
    pub fn report(&self) -> serde_json::Value {
        let mut l = self.latencies_us.clone();
        l.sort_by(f64::total_cmp);
        let pct = |q: f64| if l.is_empty() { 0.0 } else { l[((l.len() - 1) as f64 * q).round() as usize] };
        let elapsed = self.first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        let n = l.len() as f64;
        let rate = if elapsed > 0.0 && n > 1.0 { (n - 1.0) / elapsed } else { 0.0 };
        json!({
            "messages": l.len(),
            "latency_us": { "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0),
                            "mean": if l.is_empty() { 0.0 } else { l.iter().sum::<f64>() / n } },
            "elapsed_s": elapsed,
            "msgs_per_s": rate,
            "mb_per_s": if n > 0.0 { rate * self.bytes as f64 / n / 1e6 } else { 0.0 },
        })
    }
}

impl Node for LatencyProbe {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        let now = now_ns();
        self.first.get_or_insert_with(Instant::now);
        self.latencies_us.push(now.saturating_sub(msg.timestamp) as f64 / 1e3);
        self.bytes += match &msg.payload {
            Payload::Image(i) => i.data.len() as u64,
            Payload::Audio(a) => a.samples.len() as u64 * 4,
            _ => 0,
        };
        if self.latencies_us.len() as u64 == self.expect {
            ctx.publish(self.report());
            ctx.finish(format!("measured {} messages", self.expect));
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        Some(format!("{} measured", self.latencies_us.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_runtime::resolve_params;

    fn build(r: &Registry, ty: &str, params: serde_json::Value) -> (Box<dyn Node>, Context) {
        let desc = r.get(ty).unwrap().descriptor.clone();
        let params = resolve_params(&desc, params.as_object().unwrap()).unwrap();
        (r.instantiate(ty, "n", &params).unwrap(), Context::detached("n", (*desc).clone()))
    }

    #[test]
    fn frames_feed_the_probe_which_reports_once() {
        let mut r = Registry::new();
        register(&mut r);
        let (mut src, mut sctx) = build(&r, "BenchFrames", json!({ "width": 4, "height": 2, "count": 3, "rate_hz": 0 }));
        let (mut probe, mut pctx) = build(&r, "LatencyProbe", json!({ "expect": 3 }));
        assert_eq!(src.tick_interval(), Some(Duration::ZERO));
        for _ in 0..5 {
            src.tick(&mut sctx).unwrap();
            for (_, msg) in sctx.take_sent() {
                probe.on_input("in", msg, &mut pctx).unwrap();
            }
        }
        assert_eq!(sctx.take_finished().as_deref(), Some("all frames sent"));
        let published = pctx.take_published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0]["messages"], 3);
        assert!(published[0]["latency_us"]["p50"].as_f64().unwrap() >= 0.0);
        assert!(pctx.take_finished().is_some());
    }
}
