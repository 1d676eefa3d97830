//! The node API: what a node implementation writes against.
//!
//! Nodes are plain synchronous state machines. The executor owns the async parts
//! (channels, back-pressure, scheduling, panic isolation), so a node author never
//! touches tokio and a slow or crashing node cannot wedge the engine.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::message::{Message, Payload, Timestamp};
use crate::types::{DataType, NodeDescriptor};

/// Errors a node reports. The executor marks the node failed and keeps the graph running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("parameter '{name}': {message}")]
    Param { name: String, message: String },
    #[error("no output port '{0}'")]
    UnknownPort(String),
    #[error("output port '{port}' carries {expected}, not {got}")]
    WrongType { port: String, expected: DataType, got: DataType },
    #[error("{0}")]
    Failed(String),
}

impl NodeError {
    pub fn msg(m: impl std::fmt::Display) -> Self {
        NodeError::Failed(m.to_string())
    }
    pub fn param(name: &str, message: impl std::fmt::Display) -> Self {
        NodeError::Param { name: name.into(), message: message.to_string() }
    }
}

/// Resolved parameter values (every declared parameter present, defaults filled in).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(pub Map<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> Result<&Value, NodeError> {
        self.0.get(name).ok_or_else(|| NodeError::param(name, "missing"))
    }
    pub fn f64(&self, name: &str) -> Result<f64, NodeError> {
        self.get(name)?.as_f64().ok_or_else(|| NodeError::param(name, "expected a number"))
    }
    pub fn i64(&self, name: &str) -> Result<i64, NodeError> {
        self.get(name)?.as_i64().ok_or_else(|| NodeError::param(name, "expected an integer"))
    }
    pub fn u64(&self, name: &str) -> Result<u64, NodeError> {
        self.get(name)?.as_u64().ok_or_else(|| NodeError::param(name, "expected a non-negative integer"))
    }
    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        self.get(name)?.as_bool().ok_or_else(|| NodeError::param(name, "expected true or false"))
    }
    pub fn str(&self, name: &str) -> Result<&str, NodeError> {
        self.get(name)?.as_str().ok_or_else(|| NodeError::param(name, "expected a string"))
    }
}

/// What a factory gets to build a node instance.
pub struct NodeInit<'a> {
    pub name: &'a str,
    pub params: &'a Params,
}

pub use vela_protocol::types::AlertLevel;

/// A node instance.
pub trait Node: Send + 'static {
    /// Called once before any input arrives or tick fires.
    fn start(&mut self, _ctx: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    /// A message arrived on input port `port`.
    fn on_input(&mut self, port: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError>;

    /// Sources return `Some(period)` to be ticked; `Duration::ZERO` means "as fast as
    /// downstream back-pressure allows".
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    fn tick(&mut self, _ctx: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    /// A run-time parameter change, already checked against the node's [`crate::ParamSpec`].
    fn set_param(&mut self, name: &str, _value: &Value, _ctx: &mut Context) -> Result<(), NodeError> {
        Err(NodeError::param(name, "cannot change while running"))
    }

    /// A named action from the UI (e.g. a widget's "reset episode" button).
    fn command(&mut self, name: &str, _args: &Value, _ctx: &mut Context) -> Result<(), NodeError> {
        Err(NodeError::msg(format!("unknown command '{name}'")))
    }

    /// A node-specific summary line (e.g. `S/N (P%)`); the default shows rate and latency.
    fn summary(&self) -> Option<String> {
        None
    }

    /// Heavy compute (inference, physics, rendering) should return true so the node
    /// gets a thread of its own instead of stalling the async workers.
    fn blocking(&self) -> bool {
        false
    }

    fn stop(&mut self) {}
}

/// Handed to every node callback: how a node talks to the graph.
pub struct Context {
    name: Arc<str>,
    descriptor: Arc<NodeDescriptor>,
    pub(crate) outbox: Vec<(usize, Message)>,
    pub(crate) finished: Option<String>,
    pub(crate) alerts: Vec<(AlertLevel, String)>,
    pub(crate) published: Vec<Value>,
}

impl Context {
    pub(crate) fn new(name: Arc<str>, descriptor: Arc<NodeDescriptor>) -> Self {
        Context { name, descriptor, outbox: Vec::new(), finished: None, alerts: Vec::new(), published: Vec::new() }
    }

    /// A context outside any engine, for unit-testing a node's callbacks.
    pub fn detached(name: &str, descriptor: NodeDescriptor) -> Self {
        Self::new(name.into(), Arc::new(descriptor))
    }

    /// Takes what the node sent so far as (port, message) pairs; for tests of detached nodes.
    pub fn take_sent(&mut self) -> Vec<(String, Message)> {
        let d = self.descriptor.clone();
        self.outbox.drain(..).map(|(i, m)| (d.outputs[i].name.clone(), m)).collect()
    }

    /// Takes the alerts raised so far; for drivers other than the engine.
    pub fn take_alerts(&mut self) -> Vec<(AlertLevel, String)> {
        std::mem::take(&mut self.alerts)
    }

    /// Takes the values published so far; for drivers other than the engine.
    pub fn take_published(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.published)
    }

    /// Takes a pending request to end the run; for drivers other than the engine.
    pub fn take_finished(&mut self) -> Option<String> {
        self.finished.take()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues a payload on an output port. Delivery (and back-pressure) happens when the
    /// callback returns, so a node never blocks inside its own logic.
    pub fn send(&mut self, port: &str, payload: impl Into<Payload>) -> Result<(), NodeError> {
        let payload = payload.into();
        let (idx, spec) = self
            .descriptor
            .outputs
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == port)
            .ok_or_else(|| NodeError::UnknownPort(port.to_string()))?;
        let got = payload.data_type();
        let expected = spec.types[0];
        if expected != DataType::Any && expected != got {
            return Err(NodeError::WrongType { port: port.into(), expected, got });
        }
        self.outbox.push((idx, Message::new(self.name.clone(), payload)));
        Ok(())
    }

    /// Forwards a message unchanged except for the sender, keeping its original timestamp
    /// so end-to-end latency stays measurable across relays.
    pub fn forward(&mut self, port: &str, msg: Message) -> Result<(), NodeError> {
        self.send_stamped(port, msg.payload, msg.timestamp)
    }

    /// Sends a payload stamped with the time of what it answers (a policy's action carries
    /// its camera frame's time), so receivers can tell stale answers from fresh ones.
    pub fn send_stamped(&mut self, port: &str, payload: impl Into<Payload>, timestamp: Timestamp) -> Result<(), NodeError> {
        self.send(port, payload)?;
        if let Some(last) = self.outbox.last_mut() {
            last.1.timestamp = timestamp;
        }
        Ok(())
    }

    /// Asks the engine to end the run (e.g. a benchmark has done its episodes).
    pub fn finish(&mut self, reason: impl Into<String>) {
        self.finished = Some(reason.into());
    }

    /// Shows a notice in the studio and the log.
    pub fn alert(&mut self, level: AlertLevel, text: impl Into<String>) {
        self.alerts.push((level, text.into()));
    }

    /// Publishes a JSON value to whoever watches this node (studio widgets, tests).
    pub fn publish(&mut self, value: Value) {
        self.published.push(value);
    }
}
