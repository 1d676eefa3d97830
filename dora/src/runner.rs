//! `vela dora node`: drives Vela nodes (the same [`Node`] trait the in-process engine
//! runs) inside one dora node.
//!
//! dora delivers inputs and stop requests; this loop turns them into `on_input`,
//! `tick`, `set_param` calls, routes outputs between nodes of the same unit directly
//! (a co-located group never serialises its internal edges) and hands the rest to
//! dora through the Arrow codec. One thread, like one engine node task: the node
//! callbacks are synchronous and never see dora.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dora_node_api::futures::StreamExt;
use dora_node_api::{DoraNode, Event, EventStream};
use serde_json::Value;
use vela_runtime::graph::validate_node;
use vela_runtime::{resolve_params, AlertLevel, Context, Message, Node, NodeError, Registry, StatsCell};

use crate::{codec, UnitEvent, UnitSpec, EVENTS_ENV, UNIT_ENV};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{UNIT_ENV} is not set: `vela dora node` is started by dora from a dataflow written by `vela dora export`")]
    NoUnit,
    #[error("{UNIT_ENV} is not a valid unit description: {0}")]
    BadUnit(serde_json::Error),
    #[error("node '{node}': {message}")]
    Node { node: String, message: String },
    #[error("dora: {0}")]
    Dora(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("every node of this unit failed: {0}")]
    AllFailed(String),
}

struct Hosted {
    name: String,
    node: Box<dyn Node>,
    ctx: Context,
    stats: StatsCell,
    interval: Option<Duration>,
    next_tick: tokio::time::Instant,
    param_specs: Vec<vela_runtime::ParamSpec>,
    failed: Option<String>,
}

/// Where a Vela output port's messages go.
#[derive(Default)]
struct Routes {
    local: Vec<(usize, Arc<str>)>,
    dora: Vec<String>,
}

/// The unit's nodes plus its wiring.
pub struct Unit {
    nodes: Vec<Hosted>,
    /// (node index, output port) → targets.
    routes: BTreeMap<(usize, String), Routes>,
    /// dora input id → (node index, input port).
    inputs: BTreeMap<String, (usize, Arc<str>)>,
    events: Option<File>,
    finished: Option<String>,
}

enum Call {
    Start,
    Input(Arc<str>, Message),
    Tick,
    SetParam(String, Value),
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

impl Unit {
    /// Builds every node of `spec` from `registry`, with the same parameter checks as
    /// the in-process engine.
    pub fn new(spec: &UnitSpec, registry: &Registry, events: Option<File>) -> Result<Self, RunnerError> {
        let index: BTreeMap<&str, usize> = spec.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
        let mut nodes = Vec::new();
        for n in &spec.nodes {
            let err = |message: String| RunnerError::Node { node: n.name.clone(), message };
            let problems = validate_node(n, registry);
            if !problems.is_empty() {
                return Err(err(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")));
            }
            let entry = registry.get(&n.type_name).expect("validated");
            let params = resolve_params(&entry.descriptor, &n.params).expect("validated");
            let node = registry.instantiate(&n.type_name, &n.name, &params).map_err(|e| err(e.to_string()))?;
            nodes.push(Hosted {
                name: n.name.clone(),
                interval: None,
                next_tick: tokio::time::Instant::now(),
                ctx: Context::detached(&n.name, (*entry.descriptor).clone()),
                param_specs: entry.descriptor.params.clone(),
                node,
                stats: StatsCell::default(),
                failed: None,
            });
        }
        let lookup = |name: &str| {
            index.get(name).copied().ok_or_else(|| RunnerError::Node { node: name.into(), message: "is not part of this unit".into() })
        };
        let mut routes: BTreeMap<(usize, String), Routes> = BTreeMap::new();
        for e in &spec.edges {
            let to = lookup(&e.to.node)?;
            routes.entry((lookup(&e.from.node)?, e.from.port.clone())).or_default().local.push((to, e.to.port.as_str().into()));
        }
        for (id, from) in &spec.outputs {
            routes.entry((lookup(&from.node)?, from.port.clone())).or_default().dora.push(id.clone());
        }
        let mut inputs = BTreeMap::new();
        for (id, to) in &spec.inputs {
            inputs.insert(id.clone(), (lookup(&to.node)?, to.port.as_str().into()));
        }
        Ok(Unit { nodes, routes, inputs, events, finished: None })
    }

    fn record(&mut self, ev: UnitEvent) {
        if let Some(f) = &mut self.events {
            let line = serde_json::to_string(&ev).expect("events serialise");
            if let Err(e) = writeln!(f, "{line}") {
                tracing::warn!("cannot write the events file: {e}");
                self.events = None;
            }
        }
    }

    /// Runs one callback with panic isolation, then delivers what it produced, local
    /// deliveries included, until the unit is quiet again.
    fn call(&mut self, idx: usize, call: Call, dora: &mut DoraNode) -> Result<(), NodeError> {
        let mut work = VecDeque::from([(idx, call)]);
        let mut first_result = Ok(());
        let mut first = true;
        while let Some((i, call)) = work.pop_front() {
            let h = &mut self.nodes[i];
            if h.failed.is_some() {
                continue;
            }
            let started = Instant::now();
            let received = matches!(call, Call::Input(..));
            let from_user = matches!(call, Call::SetParam(..));
            let (node, ctx) = (&mut h.node, &mut h.ctx);
            let result = catch_unwind(AssertUnwindSafe(|| match call {
                Call::Start => node.start(ctx),
                Call::Input(port, msg) => node.on_input(&port, msg, ctx),
                Call::Tick => node.tick(ctx),
                Call::SetParam(name, value) => node.set_param(&name, &value, ctx),
            }))
            .unwrap_or_else(|p| Err(NodeError::msg(format!("panicked: {}", panic_text(p)))));
            let sent = h.ctx.take_sent();
            h.stats.record(started, started.elapsed(), received, sent.len());
            h.stats.set_summary(h.node.summary());
            let name = h.name.clone();
            for (level, text) in h.ctx.take_alerts() {
                match level {
                    AlertLevel::Info => tracing::info!(node = %name, "{text}"),
                    AlertLevel::Warning => tracing::warn!(node = %name, "{text}"),
                    AlertLevel::Error => tracing::error!(node = %name, "{text}"),
                }
                self.record(UnitEvent::Alert { node: name.clone(), level, text });
            }
            for value in self.nodes[i].ctx.take_published() {
                self.record(UnitEvent::Output { node: name.clone(), value });
            }
            if let Some(reason) = self.nodes[i].ctx.take_finished() {
                tracing::info!(node = %name, "finished: {reason}");
                self.record(UnitEvent::Finished { node: name.clone(), reason: reason.clone() });
                self.finished.get_or_insert(reason);
            }
            for (port, msg) in sent {
                let Some(routes) = self.routes.get(&(i, port)) else { continue };
                for (to, to_port) in &routes.local {
                    work.push_back((*to, Call::Input(to_port.clone(), msg.clone())));
                }
                for id in &routes.dora {
                    let (array, params) = codec::encode(&msg);
                    if let Err(e) = dora.send_output(id.clone().into(), params, array) {
                        tracing::error!(node = %name, "sending on dora output '{id}': {e}");
                    }
                }
            }
            if let Err(e) = result {
                if from_user {
                    // A refused parameter is the caller's mistake; the node keeps running.
                    first_result = first_result.and(Err(e));
                } else {
                    self.fail(i, e.to_string());
                    if first {
                        first_result = Err(e);
                    }
                }
            }
            first = false;
        }
        first_result
    }

    fn fail(&mut self, idx: usize, error: String) {
        let h = &mut self.nodes[idx];
        tracing::error!(node = %h.name, "failed: {error}");
        h.stats.record_error();
        h.failed = Some(error.clone());
        let node = h.name.clone();
        self.record(UnitEvent::Failed { node, error });
    }

    fn write_stats(&mut self) {
        let stats: Vec<_> = self.nodes.iter().map(|h| (h.name.clone(), h.stats.snapshot(0, 0))).collect();
        for (node, stats) in stats {
            self.record(UnitEvent::Stats { node, stats });
        }
        if let Some(f) = &mut self.events {
            let _ = f.flush();
        }
    }

    /// `param` or, in a group, `node.param`.
    fn set_param(&mut self, key: &str, value: Value, dora: &mut DoraNode) {
        let (idx, name) = match key.split_once('.') {
            Some((node, p)) => (self.nodes.iter().position(|h| h.name == node), p),
            None if self.nodes.len() == 1 => (Some(0), key),
            None => (None, key),
        };
        let Some(idx) = idx else {
            tracing::warn!("parameter '{key}': name it as NODE.PARAM (nodes here: {})", self.names());
            return;
        };
        let h = &self.nodes[idx];
        let checked = match h.param_specs.iter().find(|s| s.name == name) {
            None => Err(format!("no parameter '{name}'")),
            Some(spec) if !spec.runtime => Err(format!("'{name}' cannot change while running")),
            Some(spec) => spec.check(&value),
        };
        let node = h.name.clone();
        match checked.map(|v| self.call(idx, Call::SetParam(name.into(), v), dora).map_err(|e| e.to_string())) {
            Ok(Ok(())) => tracing::info!(node = %node, "{name} = {value}"),
            Ok(Err(e)) | Err(e) => tracing::warn!(node = %node, "parameter change refused: {e}"),
        }
    }

    fn names(&self) -> String {
        self.nodes.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    fn next_tick(&self) -> Option<(usize, tokio::time::Instant)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, h)| h.failed.is_none() && h.interval.is_some())
            .map(|(i, h)| (i, h.next_tick))
            .min_by_key(|(_, t)| *t)
    }

    /// The event loop; needs a multi-threaded tokio runtime. Returns when dora stops the node, every input closed, or a
    /// unit without dora inputs (a source) asked to finish: exiting closes its
    /// outputs, so downstream nodes drain what is queued and end too.
    pub async fn run(&mut self, dora: &mut DoraNode, events: &mut EventStream) -> Result<(), RunnerError> {
        // Node callbacks and dora's send calls block: they run outside the async context.
        use tokio::task::block_in_place as blocking;
        for i in 0..self.nodes.len() {
            let _ = blocking(|| self.call(i, Call::Start, dora));
            let h = &mut self.nodes[i];
            h.interval = h.node.tick_interval();
        }
        let mut last_stats = Instant::now();
        loop {
            if self.finished.is_some() && self.inputs.is_empty() {
                break;
            }
            if self.nodes.iter().all(|h| h.failed.is_some()) {
                break;
            }
            let tick = self.next_tick();
            let event = match tick {
                Some((_, at)) => match tokio::time::timeout_at(at, events.next()).await {
                    Ok(ev) => Some(ev),
                    Err(_) => None,
                },
                None => Some(events.next().await),
            };
            match event {
                // A tick is due.
                None => {
                    let (i, _) = tick.expect("only a tick times out");
                    let _ = blocking(|| self.call(i, Call::Tick, dora));
                    let h = &mut self.nodes[i];
                    let now = tokio::time::Instant::now();
                    h.interval = h.node.tick_interval();
                    let period = h.interval.unwrap_or_default();
                    h.next_tick = (h.next_tick + period).max(if period.is_zero() { now } else { now - period });
                    if period.is_zero() {
                        tokio::task::yield_now().await;
                    }
                }
                Some(None) => break,
                Some(Some(ev)) => match ev {
                    Event::Input { id, metadata, data } => {
                        let Some((i, port)) = self.inputs.get(id.as_str()).cloned() else {
                            tracing::warn!("input '{id}' is not wired to any node here");
                            continue;
                        };
                        match codec::decode_message(data.as_array(), &metadata.parameters, "dora") {
                            Ok(msg) => {
                                let _ = blocking(|| self.call(i, Call::Input(port, msg), dora));
                            }
                            Err(e) => tracing::warn!(node = %self.nodes[i].name, "input '{id}' skipped: {e}"),
                        }
                    }
                    Event::ParamUpdate { key, value } => blocking(|| self.set_param(&key, value, dora)),
                    Event::Stop(_) => break,
                    Event::Error(e) => tracing::error!("dora: {e}"),
                    other => tracing::debug!("dora event {other:?}"),
                },
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                self.write_stats();
                last_stats = Instant::now();
            }
        }
        for h in &mut self.nodes {
            h.node.stop();
            h.stats.set_summary(h.node.summary());
        }
        self.write_stats();
        let failed: Vec<String> =
            self.nodes.iter().filter_map(|h| h.failed.as_ref().map(|e| format!("{}: {e}", h.name))).collect();
        if !failed.is_empty() && failed.len() == self.nodes.len() {
            return Err(RunnerError::AllFailed(failed.join("; ")));
        }
        Ok(())
    }
}

/// Entry point of `vela dora node`: reads the unit from the environment, connects to
/// the dora daemon and runs until dora stops it.
pub fn main(registry: &Registry) -> Result<(), RunnerError> {
    if let Some(dir) = std::env::var_os(crate::WORKDIR_ENV) {
        // The exporter's folder, so `models/...` in a preset means what it meant there; a
        // machine without that folder keeps dora's and says so.
        if let Err(e) = std::env::set_current_dir(&dir) {
            tracing::warn!("cannot work in {} ({e}); relative paths in parameters resolve in {}", PathBuf::from(&dir).display(),
                std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default());
        }
    }
    let text = std::env::var(UNIT_ENV).map_err(|_| RunnerError::NoUnit)?;
    let spec: UnitSpec = serde_json::from_str(&text).map_err(RunnerError::BadUnit)?;
    let (mut dora, mut events) = DoraNode::init_from_env().map_err(|e| RunnerError::Dora(e.to_string()))?;
    let file = match std::env::var_os(EVENTS_ENV) {
        Some(dir) => {
            let path = PathBuf::from(dir).join(format!("{}.jsonl", dora.id()));
            Some(OpenOptions::new().create(true).append(true).open(&path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
            })?)
        }
        None => None,
    };
    let mut unit = Unit::new(&spec, registry, file)?;
    tracing::info!("dora node '{}' runs {}", dora.id(), unit.names());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build()?;
    rt.block_on(unit.run(&mut dora, &mut events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dora_node_api::integration_testing::{
        drain_outputs, output_channel, IntegrationTestInput, TestingInput, TestingOptions, TestingOutput,
    };
    use dora_node_api::integration_testing::integration_testing_format::{IncomingEvent, InputData, TimedIncomingEvent};
    use dora_node_api::{MetadataParameters, Parameter};
    use vela_runtime::{EdgeSpec, NodeSpec, PortRef};

    fn json_input(t: f64, id: &str, value: serde_json::Value) -> TimedIncomingEvent {
        let mut p = MetadataParameters::new();
        p.insert("vela_type".into(), Parameter::String("json".into()));
        p.insert("vela_sender".into(), Parameter::String("counter".into()));
        TimedIncomingEvent {
            time_offset_secs: t,
            event: IncomingEvent::Input {
                id: id.into(),
                metadata: Some(p),
                data: Some(Box::new(InputData::JsonObject { data: serde_json::Value::String(value.to_string()), data_type: None })),
            },
        }
    }

    /// The runner in dora's integration-testing mode (no daemon): inputs go through a
    /// group of two nodes, the internal edge in memory, and out through the codec.
    #[test]
    fn runs_a_group_in_dora_testing_mode() {
        let unit = UnitSpec {
            nodes: vec![NodeSpec::new("half", "Scale").param("factor", 0.5), NodeSpec::new("triple", "Scale").param("factor", 3.0)],
            edges: vec![EdgeSpec::new("half.out", "triple.in")],
            inputs: [("half-in".to_string(), PortRef::new("half", "in"))].into(),
            outputs: [("triple-out".to_string(), PortRef::new("triple", "out"))].into(),
        };
        let events = vec![
            json_input(0.0, "half-in", 4.into()),
            json_input(0.01, "half-in", 10.into()),
            json_input(0.02, "half-in", serde_json::json!("not a number")),
            TimedIncomingEvent { time_offset_secs: 0.05, event: IncomingEvent::Stop },
        ];
        let (tx, mut rx) = output_channel();
        let mut input = IntegrationTestInput::new("numbers".parse().unwrap(), events);
        input.outputs.insert("triple-out".into());
        let input = TestingInput::Input(input);
        let (mut node, mut stream) =
            DoraNode::init_testing(input, TestingOutput::ToChannel(tx), TestingOptions { skip_output_time_offsets: true }).unwrap();
        let mut u = Unit::new(&unit, &Registry::with_builtins(), None).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        rt.block_on(u.run(&mut node, &mut stream)).unwrap();
        drop(node);
        let outputs = drain_outputs(&mut rx);
        let values: Vec<String> = outputs
            .iter()
            .map(|o| {
                assert_eq!(o["id"], "triple-out", "{o:?}");
                o["data"].to_string()
            })
            .collect();
        assert_eq!(values.len(), 2, "{outputs:?}");
        assert!(values[0].contains("6.0") && values[1].contains("15.0"), "{values:?}");
        // The bad message was skipped with a warning, not fatal.
        assert!(u.nodes.iter().all(|h| h.failed.is_none()));
        assert_eq!(u.nodes[0].stats.snapshot(0, 0).received, 3);
    }

    #[test]
    fn a_bad_unit_names_the_node() {
        let unit = UnitSpec {
            nodes: vec![NodeSpec::new("half", "Scale").param("factr", 0.5)],
            edges: vec![],
            inputs: Default::default(),
            outputs: Default::default(),
        };
        let e = Unit::new(&unit, &Registry::with_builtins(), None).err().unwrap().to_string();
        assert!(e.starts_with("node 'half'") && e.contains("factr"), "{e}");
    }
}
