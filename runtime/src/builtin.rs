//! Small utility nodes that ship with the runtime: sources and sinks for trying a
//! graph out, checking a machine, and testing the engine with real nodes.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::message::{Actions, Image, Message, Payload};
use crate::node::{AlertLevel, Context, Node, NodeError, NodeInit};
use crate::registry::Registry;
use crate::types::{DataType, NodeDescriptor, ParamKind, ParamSpec};

pub fn register(r: &mut Registry) {
    r.register(Counter::descriptor(), |init| Ok(Box::new(Counter::new(init)?)));
    r.register(Scale::descriptor(), |init| Ok(Box::new(Scale { factor: init.params.f64("factor")?, skipped: 0 })));
    r.register(Collector::descriptor(), |init| Ok(Box::new(Collector::new(init)?)));
    r.register(TestPattern::descriptor(), |init| Ok(Box::new(TestPattern::new(init)?)));
    r.register(ConstantPolicy::descriptor(), |init| Ok(Box::new(ConstantPolicy::new(init)?)));
}

fn int(min: i64, max: Option<i64>) -> ParamKind {
    ParamKind::Int { min: Some(min), max }
}

/// Emits 0, 1, 2, ... as JSON numbers.
pub struct Counter {
    next: i64,
    step: i64,
    interval: Duration,
    remaining: Option<u64>,
    finish: bool,
    sent: u64,
}

impl Counter {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("Counter", "Utility", "Counter")
            .describe("Counts up at a fixed rate; handy for trying graphs and edges out.")
            .output("out", DataType::Json, "the current count")
            .param(ParamSpec::new("start", int(i64::MIN, None), 0, "first value").startup_only())
            .param(ParamSpec::new("step", int(i64::MIN, None), 1, "increment"))
            .param(ParamSpec::new(
                "interval_ms",
                ParamKind::Float { min: Some(0.0), max: Some(60_000.0) },
                100.0,
                "time between values; 0 = as fast as downstream takes them",
            ))
            .param(ParamSpec::new("count", int(0, None), 0, "stop after this many values (0 = never)").startup_only())
            .param(ParamSpec::new("finish", ParamKind::Bool, true, "end the run once `count` values were sent"))
    }

    fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let p = init.params;
        let count = p.u64("count")?;
        Ok(Counter {
            next: p.i64("start")?,
            step: p.i64("step")?,
            interval: Duration::from_secs_f64(p.f64("interval_ms")? / 1e3),
            remaining: (count > 0).then_some(count),
            finish: p.bool("finish")?,
            sent: 0,
        })
    }
}

impl Node for Counter {
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        // Once done, a long period keeps the task idle instead of spinning.
        Some(if self.remaining == Some(0) { Duration::from_secs(3600) } else { self.interval })
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if self.remaining == Some(0) {
            return Ok(());
        }
        ctx.send("out", json!(self.next))?;
        self.next += self.step;
        self.sent += 1;
        if let Some(r) = &mut self.remaining {
            *r -= 1;
            if *r == 0 && self.finish {
                ctx.finish(format!("counted {} values", self.sent));
            }
        }
        Ok(())
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "step" => self.step = value.as_i64().unwrap_or(self.step),
            "interval_ms" => self.interval = Duration::from_secs_f64(value.as_f64().unwrap_or(0.0) / 1e3),
            "finish" => self.finish = value.as_bool().unwrap_or(self.finish),
            _ => return Err(NodeError::param(name, "cannot change while running")),
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        Some(format!("{} sent, next {}", self.sent, self.next))
    }
}

/// Multiplies JSON numbers by a factor.
pub struct Scale {
    factor: f64,
    skipped: u64,
}

impl Scale {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("Scale", "Utility", "Scale")
            .describe("Multiplies numbers by a factor that can change while running.")
            .input("in", &[DataType::Json], "numbers")
            .output("out", DataType::Json, "numbers × factor")
            .param(ParamSpec::new("factor", ParamKind::Float { min: None, max: None }, 2.0, "multiplier"))
    }
}

impl Node for Scale {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        match &msg.payload {
            Payload::Json(v) if v.is_number() => ctx.send("out", json!(v.as_f64().unwrap() * self.factor)),
            other => {
                // Bad data is reported, not fatal: one odd message should not take a pipeline down.
                self.skipped += 1;
                ctx.alert(AlertLevel::Warning, format!("Scale skipped a non-number: {}", other.describe()));
                Ok(())
            }
        }
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "factor" => {
                self.factor = value.as_f64().ok_or_else(|| NodeError::param(name, "expected a number"))?;
                Ok(())
            }
            _ => Err(NodeError::param(name, "unknown")),
        }
    }

    fn summary(&self) -> Option<String> {
        Some(format!("× {}{}", self.factor, if self.skipped > 0 { format!(", {} skipped", self.skipped) } else { String::new() }))
    }
}

/// Receives anything; publishes what it gets so the studio (and tests) can watch.
pub struct Collector {
    received: u64,
    expect: u64,
    print: bool,
    name: String,
}

impl Collector {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("Collector", "Utility", "Collector")
            .describe("A sink: counts, publishes and optionally prints every message it gets.")
            .input("in", &[DataType::Any], "anything")
            .param(ParamSpec::new("expect", int(0, None), 0, "end the run after this many messages (0 = never)"))
            .param(ParamSpec::new("print", ParamKind::Bool, false, "log each message"))
    }

    fn new(init: &NodeInit) -> Result<Self, NodeError> {
        Ok(Collector {
            received: 0,
            expect: init.params.u64("expect")?,
            print: init.params.bool("print")?,
            name: init.name.to_string(),
        })
    }
}

impl Node for Collector {
    fn on_input(&mut self, port: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        self.received += 1;
        let value = match &msg.payload {
            Payload::Json(v) => v.clone(),
            Payload::Text(t) => json!(t.text),
            Payload::Actions(a) => json!(a.values),
            _ => Value::Null,
        };
        if self.print {
            tracing::info!(node = %self.name, "{} from {}: {}", port, msg.sender, msg.payload.describe());
        }
        ctx.publish(json!({
            "seq": self.received,
            "from": &*msg.sender,
            "type": msg.data_type(),
            "value": value,
            "text": msg.payload.describe(),
        }));
        if self.expect > 0 && self.received == self.expect {
            ctx.finish(format!("received {} messages", self.received));
        }
        Ok(())
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "expect" => self.expect = value.as_u64().unwrap_or(0),
            "print" => self.print = value.as_bool().unwrap_or(false),
            _ => return Err(NodeError::param(name, "unknown")),
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        Some(format!("{} received", self.received))
    }
}

/// A moving colour test pattern, for checking video paths without a simulator.
pub struct TestPattern {
    width: u32,
    height: u32,
    interval: Duration,
    frame: u64,
}

impl TestPattern {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("TestPattern", "Utility", "Test pattern")
            .describe("Moving colour bars at a fixed frame rate.")
            .output("image", DataType::Image, "RGB8 frames")
            .param(ParamSpec::new("width", int(8, Some(4096)), 224, "frame width").startup_only())
            .param(ParamSpec::new("height", int(8, Some(4096)), 224, "frame height").startup_only())
            .param(ParamSpec::new("fps", ParamKind::Float { min: Some(0.1), max: Some(1000.0) }, 15.0, "frames per second"))
    }

    fn new(init: &NodeInit) -> Result<Self, NodeError> {
        Ok(TestPattern {
            width: init.params.u64("width")? as u32,
            height: init.params.u64("height")? as u32,
            interval: Duration::from_secs_f64(1.0 / init.params.f64("fps")?),
            frame: 0,
        })
    }

    /// Renders frame `n`: eight vertical bars scrolling right one pixel per frame.
    pub fn render(width: u32, height: u32, n: u64) -> Vec<u8> {
        const BARS: [[u8; 3]; 8] =
            [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]];
        let mut row = Vec::with_capacity(width as usize * 3);
        for x in 0..width {
            let bar = (((x as u64 + n) % width as u64) * 8 / width as u64) as usize;
            row.extend_from_slice(&BARS[bar]);
        }
        let mut data = Vec::with_capacity(row.len() * height as usize);
        for _ in 0..height {
            data.extend_from_slice(&row);
        }
        data
    }
}

impl Node for TestPattern {
    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn tick(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        let data = Bytes::from(Self::render(self.width, self.height, self.frame));
        self.frame += 1;
        ctx.send("image", Image::rgb8(self.width, self.height, data).map_err(NodeError::msg)?)
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "fps" => {
                self.interval = Duration::from_secs_f64(1.0 / value.as_f64().unwrap_or(15.0));
                Ok(())
            }
            _ => Err(NodeError::param(name, "cannot change while running")),
        }
    }

    fn summary(&self) -> Option<String> {
        Some(format!("{}x{} frame {}", self.width, self.height, self.frame))
    }
}

/// Answers every frame with the same action vector: the floor a trained policy must beat
/// in a success benchmark, through the same lock-step wiring as a real model.
pub struct ConstantPolicy {
    values: Vec<f32>,
    answered: u64,
    limit: u64,
}

impl ConstantPolicy {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("ConstantPolicy", "Robotics", "Constant policy")
            .describe("Answers each frame (or prompt) with a fixed action vector, e.g. all zeros.")
            .input("in", &[DataType::Image, DataType::Prompt], "camera frames or prompts")
            .output("actions", DataType::Actions, "the fixed action, stamped with its frame's time")
            .param(ParamSpec::new("values", ParamKind::String, "0,0,0,0,0,0,0", "comma-separated action values"))
            .param(ParamSpec::new(
                "limit",
                ParamKind::Int { min: Some(0), max: None },
                0,
                "go silent after this many actions (0 = never): a hung policy, to check what notices it",
            ))
    }

    fn new(init: &NodeInit) -> Result<Self, NodeError> {
        Ok(ConstantPolicy { values: Self::parse(init.params.str("values")?)?, answered: 0, limit: init.params.u64("limit")? })
    }

    fn parse(s: &str) -> Result<Vec<f32>, NodeError> {
        s.split(',')
            .map(|v| v.trim().parse::<f32>().map_err(|_| NodeError::param("values", format!("{v:?} in {s:?} is not a number"))))
            .collect()
    }
}

impl Node for ConstantPolicy {
    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        let frame_time = match &msg.payload {
            Payload::Image(i) => i.timestamp,
            Payload::Prompt(p) => p.last_image().map_or(msg.timestamp, |i| i.timestamp),
            _ => msg.timestamp,
        };
        if self.limit > 0 && self.answered >= self.limit {
            return Ok(());
        }
        self.answered += 1;
        ctx.send_stamped("actions", Actions::new(self.values.clone(), "constant"), frame_time)
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "values" => self.values = Self::parse(value.as_str().unwrap_or_default())?,
            "limit" => self.limit = value.as_u64().ok_or_else(|| NodeError::param("limit", "expected a whole number"))?,
            _ => return Err(NodeError::param(name, "unknown")),
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        Some(format!("{} actions", self.answered))
    }
}
