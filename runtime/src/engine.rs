//! The executor: runs a graph on tokio and applies edits while it runs.
//!
//! Each node instance is one task (or one dedicated thread, for nodes that declare
//! themselves blocking) that owns the node exclusively. Edges are per-connection inlets
//! owned by the consumer's mailbox; producers hold a copy-on-write list of the inlets
//! of each output port, so connecting or disconnecting never pauses traffic elsewhere.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::graph::{validate, validate_edge, validate_node, EdgePolicy, EdgeSpec, GraphError, GraphSpec, NodeSpec, PortRef};
use crate::message::Message;
use crate::node::{AlertLevel, Context, Node, NodeError, Params};
use crate::registry::{resolve_params, Registry};
use crate::stats::{NodeStats, StatsCell};
use crate::types::NodeDescriptor;

/// Capacity of a "queue" edge before the sender has to wait.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;
/// How long `stop` waits for a node to finish its current callback.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Errors from engine operations (live edits, parameter changes...).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no node named '{0}'")]
    NoSuchNode(String),
    #[error("no edge {0}")]
    NoSuchEdge(String),
    #[error("{}", join_errors(.0))]
    Graph(Vec<GraphError>),
    #[error("node '{node}': {source}")]
    Node { node: String, source: NodeError },
    #[error("node '{node}' has no parameter '{param}'")]
    UnknownParam { node: String, param: String },
    #[error("node '{node}' is not running")]
    NotRunning { node: String },
}

fn join_errors(errs: &[GraphError]) -> String {
    errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

pub use vela_protocol::types::NodeStatus;

/// What the engine tells its observers (studio clients, `vela run`, tests).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    Status { node: String, status: NodeStatus },
    Alert { node: Option<String>, level: AlertLevel, text: String },
    Output { node: String, value: Value },
    /// A node asked for the run to end.
    Finished { node: String, reason: String },
    /// Nodes or edges were added, removed or changed.
    GraphChanged,
}

// ---------------------------------------------------------------------------
// Edges

struct Wake {
    data: Notify,
    space: Notify,
}

/// The receiving end of one edge.
struct Inlet {
    port: Arc<str>,
    policy: EdgePolicy,
    capacity: usize,
    queue: Mutex<VecDeque<Message>>,
    dropped: AtomicU64,
    /// False while the consumer is down (failed/removed): messages are dropped and counted
    /// instead of blocking the producer forever.
    open: AtomicBool,
    wake: Arc<Wake>,
}

impl Inlet {
    fn try_push(&self, msg: Message) -> Result<(), Message> {
        if !self.open.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        {
            let mut q = self.queue.lock().unwrap();
            match self.policy {
                EdgePolicy::Latest => {
                    if !q.is_empty() {
                        self.dropped.fetch_add(q.len() as u64, Ordering::Relaxed);
                        q.clear();
                    }
                    q.push_back(msg);
                }
                EdgePolicy::Queue => {
                    if q.len() >= self.capacity {
                        return Err(msg);
                    }
                    q.push_back(msg);
                }
            }
        }
        self.wake.data.notify_one();
        Ok(())
    }

    /// Delivers with back-pressure; gives up (dropping, counted) if the sender is stopping.
    async fn push(&self, mut msg: Message, sender_stopping: &AtomicBool) {
        loop {
            let mut notified = pin!(self.wake.space.notified());
            notified.as_mut().enable();
            match self.try_push(msg) {
                Ok(()) => return,
                Err(m) => msg = m,
            }
            if sender_stopping.load(Ordering::Acquire) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    fn close(&self) {
        self.open.store(false, Ordering::Release);
        let mut q = self.queue.lock().unwrap();
        self.dropped.fetch_add(q.len() as u64, Ordering::Relaxed);
        q.clear();
        drop(q);
        self.wake.space.notify_waiters();
    }
}

/// All inlets of one node, drained oldest message first.
struct Mailbox {
    inlets: Mutex<Vec<Arc<Inlet>>>,
    wake: Arc<Wake>,
    cursor: AtomicUsize,
    /// Drops counted on inlets that have since been disconnected.
    retired_drops: AtomicU64,
}

impl Mailbox {
    fn new() -> Self {
        Mailbox {
            inlets: Mutex::new(Vec::new()),
            wake: Arc::new(Wake { data: Notify::new(), space: Notify::new() }),
            cursor: AtomicUsize::new(0),
            retired_drops: AtomicU64::new(0),
        }
    }

    /// The oldest waiting message over all inlets, so a node sees what one producer sent on
    /// two edges (an instruction, then its frame) in the order it was sent. Ties go
    /// round-robin; new messages are always younger, so no edge starves.
    fn try_recv(&self) -> Option<(Arc<str>, Message)> {
        let inlets = self.inlets.lock().unwrap();
        let n = inlets.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut oldest: Option<(usize, u64)> = None;
        for i in 0..n {
            let k = (start + i) % n;
            if let Some(m) = inlets[k].queue.lock().unwrap().front() {
                if oldest.is_none_or(|(_, ts)| m.timestamp < ts) {
                    oldest = Some((k, m.timestamp));
                }
            }
        }
        let inlet = &inlets[oldest?.0];
        let m = inlet.queue.lock().unwrap().pop_front()?;
        if inlet.policy == EdgePolicy::Queue {
            self.wake.space.notify_waiters();
        }
        Some((inlet.port.clone(), m))
    }

    async fn recv(&self) -> (Arc<str>, Message) {
        loop {
            let mut notified = pin!(self.wake.data.notified());
            notified.as_mut().enable();
            if let Some(x) = self.try_recv() {
                return x;
            }
            notified.await;
        }
    }

    fn depth(&self) -> usize {
        self.inlets.lock().unwrap().iter().map(|i| i.queue.lock().unwrap().len()).sum()
    }

    fn dropped(&self) -> u64 {
        self.retired_drops.load(Ordering::Relaxed)
            + self.inlets.lock().unwrap().iter().map(|i| i.dropped.load(Ordering::Relaxed)).sum::<u64>()
    }

    fn set_open(&self, open: bool) {
        for inlet in self.inlets.lock().unwrap().iter() {
            if open {
                inlet.open.store(true, Ordering::Release);
            } else {
                inlet.close();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Nodes

/// State shared between a node's task and the engine.
struct NodeShared {
    name: Arc<str>,
    mailbox: Mailbox,
    /// Per output port (by index): the inlets it feeds. Replaced whole on edits.
    outlets: Mutex<Arc<Vec<Vec<Arc<Inlet>>>>>,
    stats: StatsCell,
    status: Mutex<NodeStatus>,
    stopping: AtomicBool,
}

enum Control {
    SetParam { name: String, value: Value, reply: oneshot::Sender<Result<(), NodeError>> },
    Command { name: String, args: Value, reply: oneshot::Sender<Result<(), NodeError>> },
    Stop,
}

struct Task {
    control: mpsc::UnboundedSender<Control>,
    join: JoinHandle<()>,
}

struct NodeSlot {
    spec: NodeSpec,
    params: Params,
    descriptor: Arc<NodeDescriptor>,
    shared: Arc<NodeShared>,
    task: Option<Task>,
}

struct EdgeSlot {
    spec: EdgeSpec,
    inlet: Arc<Inlet>,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, NodeSlot>,
    edges: Vec<EdgeSlot>,
    running: bool,
}

struct Inner {
    registry: Arc<Registry>,
    state: tokio::sync::Mutex<State>,
    events: broadcast::Sender<EngineEvent>,
    queue_capacity: usize,
}

/// A handle to a running (or runnable) graph. Cheap to clone; all clones share one graph.
/// What [`Engine::snapshot`] reads at one moment.
#[derive(Debug, Clone)]
pub struct EngineSnapshot {
    pub graph: GraphSpec,
    pub running: bool,
    pub status: BTreeMap<String, NodeStatus>,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self::with_queue_capacity(registry, DEFAULT_QUEUE_CAPACITY)
    }

    pub fn with_queue_capacity(registry: Arc<Registry>, queue_capacity: usize) -> Self {
        let (events, _) = broadcast::channel(1024);
        Engine {
            inner: Arc::new(Inner {
                registry,
                state: tokio::sync::Mutex::new(State::default()),
                events,
                queue_capacity: queue_capacity.max(1),
            }),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Events from now on. Slow subscribers lose the oldest events, never block the graph.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, ev: EngineEvent) {
        let _ = self.inner.events.send(ev);
    }

    /// Replaces the whole graph. If it was running, the new graph starts right away.
    pub async fn load(&self, graph: &GraphSpec) -> Result<(), EngineError> {
        validate(graph, &self.inner.registry).map_err(EngineError::Graph)?;
        let was_running = self.is_running().await;
        self.stop().await;
        {
            let mut st = self.inner.state.lock().await;
            st.nodes.clear();
            st.edges.clear();
        }
        for n in &graph.nodes {
            self.add_node(n.clone()).await?;
        }
        for e in &graph.edges {
            self.connect(e.clone()).await?;
        }
        if was_running {
            self.start().await;
        }
        Ok(())
    }

    /// The current graph, as a preset would store it.
    pub async fn graph(&self) -> GraphSpec {
        let st = self.inner.state.lock().await;
        GraphSpec {
            nodes: st.nodes.values().map(|n| n.spec.clone()).collect(),
            edges: st.edges.iter().map(|e| e.spec.clone()).collect(),
        }
    }

    pub async fn is_running(&self) -> bool {
        self.inner.state.lock().await.running
    }

    /// Graph, running flag and every node's status read under one lock, so a client never sees
    /// the graph of one moment with the running flag of another (a start or stop in between).
    pub async fn snapshot(&self) -> EngineSnapshot {
        let st = self.inner.state.lock().await;
        EngineSnapshot {
            graph: GraphSpec {
                nodes: st.nodes.values().map(|n| n.spec.clone()).collect(),
                edges: st.edges.iter().map(|e| e.spec.clone()).collect(),
            },
            running: st.running,
            status: st.nodes.iter().map(|(k, n)| (k.clone(), n.shared.status.lock().unwrap().clone())).collect(),
        }
    }

    /// Starts every node that is not running yet.
    pub async fn start(&self) {
        let mut st = self.inner.state.lock().await;
        st.running = true;
        let names: Vec<String> = st.nodes.keys().cloned().collect();
        for name in names {
            let slot = st.nodes.get_mut(&name).unwrap();
            if slot.task.is_none() {
                self.spawn(slot);
            }
        }
    }

    /// Stops every node and waits (briefly) for them to finish their current callback.
    pub async fn stop(&self) {
        let mut st = self.inner.state.lock().await;
        st.running = false;
        let mut joins = Vec::new();
        for slot in st.nodes.values_mut() {
            if let Some(task) = slot.task.take() {
                slot.shared.stopping.store(true, Ordering::Release);
                let _ = task.control.send(Control::Stop);
                joins.push((slot.shared.clone(), task.join));
            }
        }
        drop(st);
        for (shared, join) in joins {
            if tokio::time::timeout(STOP_GRACE, join).await.is_err() {
                tracing::warn!(node = %shared.name, "node did not stop within {STOP_GRACE:?}; detached");
            }
            let mut status = shared.status.lock().unwrap();
            if matches!(*status, NodeStatus::Running) {
                *status = NodeStatus::Stopped;
            }
        }
    }

    /// Ends a run without losing what is in flight: sources (nodes without inputs) stop
    /// first, then the rest once their queues are empty or `grace` has passed.
    pub async fn drain_and_stop(&self, grace: Duration) {
        let mut st = self.inner.state.lock().await;
        let mut joins = Vec::new();
        for slot in st.nodes.values_mut() {
            if slot.descriptor.inputs.is_empty() {
                if let Some(task) = slot.task.take() {
                    slot.shared.stopping.store(true, Ordering::Release);
                    let _ = task.control.send(Control::Stop);
                    joins.push(task.join);
                }
            }
        }
        drop(st);
        for j in joins {
            let _ = tokio::time::timeout(STOP_GRACE, j).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut quiet = 0;
        while tokio::time::Instant::now() < deadline && quiet < 3 {
            let st = self.inner.state.lock().await;
            let busy = st.nodes.values().any(|n| n.shared.mailbox.depth() > 0);
            drop(st);
            quiet = if busy { 0 } else { quiet + 1 };
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop().await;
    }

    /// Adds a node; it starts at once if the graph is running.
    pub async fn add_node(&self, spec: NodeSpec) -> Result<(), EngineError> {
        let errs = validate_node(&spec, &self.inner.registry);
        if !errs.is_empty() {
            return Err(EngineError::Graph(errs));
        }
        let entry = self.inner.registry.get(&spec.type_name).expect("validated");
        let params = resolve_params(&entry.descriptor, &spec.params).expect("validated");
        let mut st = self.inner.state.lock().await;
        if st.nodes.contains_key(&spec.name) {
            return Err(EngineError::Graph(vec![GraphError::DuplicateName(spec.name)]));
        }
        let name: Arc<str> = spec.name.as_str().into();
        let shared = Arc::new(NodeShared {
            name,
            mailbox: Mailbox::new(),
            outlets: Mutex::new(Arc::new(vec![Vec::new(); entry.descriptor.outputs.len()])),
            stats: StatsCell::default(),
            status: Mutex::new(NodeStatus::Idle),
            stopping: AtomicBool::new(false),
        });
        let mut slot = NodeSlot { spec: spec.clone(), params, descriptor: entry.descriptor.clone(), shared, task: None };
        if st.running {
            self.spawn(&mut slot);
        }
        st.nodes.insert(spec.name, slot);
        drop(st);
        self.emit(EngineEvent::GraphChanged);
        Ok(())
    }

    /// Removes a node and every edge touching it.
    pub async fn remove_node(&self, name: &str) -> Result<(), EngineError> {
        let mut st = self.inner.state.lock().await;
        if !st.nodes.contains_key(name) {
            return Err(EngineError::NoSuchNode(name.into()));
        }
        let touching: Vec<EdgeSpec> =
            st.edges.iter().filter(|e| e.spec.from.node == name || e.spec.to.node == name).map(|e| e.spec.clone()).collect();
        for e in touching {
            Self::detach_edge(&mut st, &e.from, &e.to);
        }
        let mut slot = st.nodes.remove(name).unwrap();
        drop(st);
        slot.shared.mailbox.set_open(false);
        if let Some(task) = slot.task.take() {
            slot.shared.stopping.store(true, Ordering::Release);
            let _ = task.control.send(Control::Stop);
            let _ = tokio::time::timeout(STOP_GRACE, task.join).await;
        }
        self.emit(EngineEvent::GraphChanged);
        Ok(())
    }

    /// Connects two ports after checking that their types agree.
    pub async fn connect(&self, edge: EdgeSpec) -> Result<(), EngineError> {
        let mut st = self.inner.state.lock().await;
        let names: BTreeMap<String, String> =
            st.nodes.iter().map(|(k, v)| (k.clone(), v.spec.type_name.clone())).collect();
        let mut errs = validate_edge(&edge, &names, &self.inner.registry);
        if st.edges.iter().any(|e| e.spec.from == edge.from && e.spec.to == edge.to) {
            errs.push(GraphError::DuplicateEdge(edge.to_string()));
        }
        if !errs.is_empty() {
            return Err(EngineError::Graph(errs));
        }
        let target = &st.nodes[&edge.to.node];
        let inlet = Arc::new(Inlet {
            port: edge.to.port.as_str().into(),
            policy: edge.policy,
            capacity: if edge.policy == EdgePolicy::Latest { 1 } else { self.inner.queue_capacity },
            queue: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            open: AtomicBool::new(!matches!(*target.shared.status.lock().unwrap(), NodeStatus::Failed { .. })),
            wake: target.shared.mailbox.wake.clone(),
        });
        target.shared.mailbox.inlets.lock().unwrap().push(inlet.clone());
        let source = &st.nodes[&edge.from.node];
        let port_idx = source.descriptor.outputs.iter().position(|p| p.name == edge.from.port).expect("validated");
        {
            let mut outlets = source.shared.outlets.lock().unwrap();
            let mut next = (**outlets).clone();
            next[port_idx].push(inlet.clone());
            *outlets = Arc::new(next);
        }
        st.edges.push(EdgeSlot { spec: edge, inlet });
        drop(st);
        self.emit(EngineEvent::GraphChanged);
        Ok(())
    }

    pub async fn disconnect(&self, from: &PortRef, to: &PortRef) -> Result<(), EngineError> {
        let mut st = self.inner.state.lock().await;
        if !Self::detach_edge(&mut st, from, to) {
            return Err(EngineError::NoSuchEdge(format!("{from} -> {to}")));
        }
        drop(st);
        self.emit(EngineEvent::GraphChanged);
        Ok(())
    }

    fn detach_edge(st: &mut State, from: &PortRef, to: &PortRef) -> bool {
        let Some(pos) = st.edges.iter().position(|e| &e.spec.from == from && &e.spec.to == to) else {
            return false;
        };
        let edge = st.edges.remove(pos);
        if let Some(source) = st.nodes.get(&from.node) {
            let mut outlets = source.shared.outlets.lock().unwrap();
            let next: Vec<Vec<Arc<Inlet>>> = outlets
                .iter()
                .map(|port| port.iter().filter(|i| !Arc::ptr_eq(i, &edge.inlet)).cloned().collect())
                .collect();
            *outlets = Arc::new(next);
        }
        if let Some(target) = st.nodes.get(&to.node) {
            let mb = &target.shared.mailbox;
            mb.inlets.lock().unwrap().retain(|i| !Arc::ptr_eq(i, &edge.inlet));
            edge.inlet.close();
            mb.retired_drops.fetch_add(edge.inlet.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        true
    }

    /// Changes a parameter. Run-time parameters reach the running node directly;
    /// start-up-only ones restart that node with the new value.
    pub async fn set_param(&self, node: &str, name: &str, value: Value) -> Result<(), EngineError> {
        let mut st = self.inner.state.lock().await;
        let slot = st.nodes.get_mut(node).ok_or_else(|| EngineError::NoSuchNode(node.into()))?;
        let spec = slot
            .descriptor
            .param_spec(name)
            .ok_or_else(|| EngineError::UnknownParam { node: node.into(), param: name.into() })?
            .clone();
        let value = spec.check(&value).map_err(|message| {
            EngineError::Graph(vec![GraphError::BadParam { node: node.into(), param: name.into(), message }])
        })?;
        let live = slot.task.is_some() && matches!(*slot.shared.status.lock().unwrap(), NodeStatus::Running);
        if live && spec.runtime {
            let (reply, rx) = oneshot::channel();
            let task = slot.task.as_ref().unwrap();
            task.control
                .send(Control::SetParam { name: name.into(), value: value.clone(), reply })
                .map_err(|_| EngineError::NotRunning { node: node.into() })?;
            drop(st);
            rx.await
                .map_err(|_| EngineError::NotRunning { node: node.into() })?
                .map_err(|source| EngineError::Node { node: node.into(), source })?;
            let mut st = self.inner.state.lock().await;
            if let Some(slot) = st.nodes.get_mut(node) {
                slot.spec.params.insert(name.into(), value.clone());
                slot.params.0.insert(name.into(), value);
            }
        } else {
            slot.spec.params.insert(name.into(), value.clone());
            slot.params.0.insert(name.into(), value);
            let restart = slot.task.is_some();
            drop(st);
            if restart {
                self.restart_node(node).await?;
            }
        }
        self.emit(EngineEvent::GraphChanged);
        Ok(())
    }

    /// Sends a named command (a widget button) to a running node.
    pub async fn command(&self, node: &str, name: &str, args: Value) -> Result<(), EngineError> {
        let st = self.inner.state.lock().await;
        let slot = st.nodes.get(node).ok_or_else(|| EngineError::NoSuchNode(node.into()))?;
        let task = slot.task.as_ref().ok_or_else(|| EngineError::NotRunning { node: node.into() })?;
        let (reply, rx) = oneshot::channel();
        task.control
            .send(Control::Command { name: name.into(), args, reply })
            .map_err(|_| EngineError::NotRunning { node: node.into() })?;
        drop(st);
        rx.await
            .map_err(|_| EngineError::NotRunning { node: node.into() })?
            .map_err(|source| EngineError::Node { node: node.into(), source })
    }

    /// Moves a node on the editor canvas.
    pub async fn move_node(&self, node: &str, position: [f32; 2]) -> Result<(), EngineError> {
        let mut st = self.inner.state.lock().await;
        let slot = st.nodes.get_mut(node).ok_or_else(|| EngineError::NoSuchNode(node.into()))?;
        slot.spec.position = Some(position);
        Ok(())
    }

    /// Builds a fresh instance of a node (e.g. after it failed), keeping its edges.
    pub async fn restart_node(&self, node: &str) -> Result<(), EngineError> {
        let mut st = self.inner.state.lock().await;
        let slot = st.nodes.get_mut(node).ok_or_else(|| EngineError::NoSuchNode(node.into()))?;
        let old = slot.task.take();
        let shared = slot.shared.clone();
        drop(st);
        if let Some(task) = old {
            shared.stopping.store(true, Ordering::Release);
            let _ = task.control.send(Control::Stop);
            let _ = tokio::time::timeout(STOP_GRACE, task.join).await;
        }
        let mut st = self.inner.state.lock().await;
        let running = st.running;
        let slot = st.nodes.get_mut(node).ok_or_else(|| EngineError::NoSuchNode(node.into()))?;
        shared.mailbox.set_open(true);
        if running && slot.task.is_none() {
            self.spawn(slot);
        }
        Ok(())
    }

    pub async fn status(&self, node: &str) -> Option<NodeStatus> {
        let st = self.inner.state.lock().await;
        st.nodes.get(node).map(|n| n.shared.status.lock().unwrap().clone())
    }

    /// Figures for every node, keyed by node name.
    pub async fn stats(&self) -> BTreeMap<String, NodeStats> {
        let st = self.inner.state.lock().await;
        st.nodes
            .iter()
            .map(|(k, n)| {
                let mb = &n.shared.mailbox;
                (k.clone(), n.shared.stats.snapshot(mb.depth(), mb.dropped()))
            })
            .collect()
    }

    /// The resolved parameters of a node (defaults included).
    pub async fn params(&self, node: &str) -> Option<Params> {
        self.inner.state.lock().await.nodes.get(node).map(|n| n.params.clone())
    }

    fn spawn(&self, slot: &mut NodeSlot) {
        let shared = slot.shared.clone();
        shared.stopping.store(false, Ordering::Release);
        shared.mailbox.set_open(true);
        let (control, rx) = mpsc::unbounded_channel();
        let built = catch_unwind(AssertUnwindSafe(|| {
            self.inner.registry.instantiate(&slot.spec.type_name, &slot.spec.name, &slot.params)
        }));
        let node = match built {
            Ok(Ok(node)) => node,
            Ok(Err(e)) => {
                self.fail(&shared, format!("could not start: {e}"));
                return;
            }
            Err(p) => {
                self.fail(&shared, format!("panicked while starting: {}", panic_message(&p)));
                return;
            }
        };
        *shared.status.lock().unwrap() = NodeStatus::Running;
        self.emit(EngineEvent::Status { node: shared.name.to_string(), status: NodeStatus::Running });
        let runner = NodeRunner {
            engine: self.clone(),
            node,
            shared,
            descriptor: slot.descriptor.clone(),
            control: rx,
            last_summary: Instant::now() - Duration::from_secs(1),
        };
        let join = if runner.node.blocking() {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || handle.block_on(runner.run()))
        } else {
            tokio::spawn(runner.run())
        };
        slot.task = Some(Task { control, join });
    }

    fn fail(&self, shared: &NodeShared, error: String) {
        tracing::error!(node = %shared.name, "{error}");
        shared.stats.record_error();
        shared.mailbox.set_open(false);
        let status = NodeStatus::Failed { error: error.clone() };
        *shared.status.lock().unwrap() = status.clone();
        self.emit(EngineEvent::Status { node: shared.name.to_string(), status });
        self.emit(EngineEvent::Alert {
            node: Some(shared.name.to_string()),
            level: AlertLevel::Error,
            text: format!("{} failed: {error}", shared.name),
        });
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Owns one node instance and drives it.
struct NodeRunner {
    engine: Engine,
    node: Box<dyn Node>,
    shared: Arc<NodeShared>,
    descriptor: Arc<NodeDescriptor>,
    control: mpsc::UnboundedReceiver<Control>,
    last_summary: Instant,
}

/// Which callback to run; kept as data so every call goes through one guarded path.
enum Call {
    Start,
    Input(Arc<str>, Message),
    Tick,
    SetParam(String, Value),
    Command(String, Value),
}

enum Outcome {
    Done,
    /// The node refused a user request but is fine.
    Rejected(NodeError),
    /// The node is broken; stop driving it.
    Failed(NodeError),
}

impl NodeRunner {
    /// Runs a user request and replies; false if the node failed doing it.
    async fn answer(&mut self, call: Call, reply: oneshot::Sender<Result<(), NodeError>>, ctx: &mut Context) -> bool {
        match self.call(call, ctx).await {
            Outcome::Done => {
                let _ = reply.send(Ok(()));
                true
            }
            Outcome::Rejected(e) => {
                let _ = reply.send(Err(e));
                true
            }
            Outcome::Failed(e) => {
                let _ = reply.send(Err(e));
                false
            }
        }
    }

    async fn run(mut self) {
        let mut ctx = Context::new(self.shared.name.clone(), self.descriptor.clone());
        if !matches!(self.call(Call::Start, &mut ctx).await, Outcome::Done) {
            return;
        }
        let mut interval = self.node.tick_interval();
        let mut next_tick = tokio::time::Instant::now();
        loop {
            // Asked again after every callback: a rate parameter changed live (a simulator's
            // framerate) or a source running dry changes how often the node wants ticks.
            let wants = self.node.tick_interval();
            if wants != interval {
                interval = wants;
                next_tick = tokio::time::Instant::now();
            }
            let call = tokio::select! {
                biased;
                c = self.control.recv() => match c {
                    None | Some(Control::Stop) => break,
                    Some(Control::SetParam { name, value, reply }) => {
                        if !self.answer(Call::SetParam(name, value), reply, &mut ctx).await { return; }
                        continue;
                    }
                    Some(Control::Command { name, args, reply }) => {
                        if !self.answer(Call::Command(name, args), reply, &mut ctx).await { return; }
                        continue;
                    }
                },
                (port, msg) = self.shared.mailbox.recv() => Call::Input(port, msg),
                _ = async {
                    // Tokio timers have millisecond resolution: a tick that is already due
                    // must not wait for the next timer turn.
                    if next_tick > tokio::time::Instant::now() {
                        tokio::time::sleep_until(next_tick).await;
                    }
                }, if interval.is_some() => {
                    let period = interval.unwrap_or_default();
                    let now = tokio::time::Instant::now();
                    next_tick = (next_tick + period).max(if period.is_zero() { now } else { now - period });
                    Call::Tick
                }
            };
            if let Outcome::Failed(_) = self.call(call, &mut ctx).await {
                return;
            }
            if interval == Some(Duration::ZERO) {
                // A free-running source must not monopolise a worker thread.
                tokio::task::yield_now().await;
            }
        }
        self.node.stop();
        self.shared.stats.set_summary(self.node.summary());
        let mut status = self.shared.status.lock().unwrap();
        if matches!(*status, NodeStatus::Running) {
            *status = NodeStatus::Stopped;
        }
    }

    /// Runs one callback with panic isolation, then delivers what it produced.
    async fn call(&mut self, call: Call, ctx: &mut Context) -> Outcome {
        let started = Instant::now();
        let received = matches!(call, Call::Input(..));
        // Parameter changes and commands that the node refuses are the caller's mistake:
        // the caller hears about it and the node keeps running.
        let from_user = matches!(call, Call::SetParam(..) | Call::Command(..));
        let node = &mut self.node;
        let result = catch_unwind(AssertUnwindSafe(|| match call {
            Call::Start => node.start(ctx),
            Call::Input(port, msg) => node.on_input(&port, msg, ctx),
            Call::Tick => node.tick(ctx),
            Call::SetParam(name, value) => node.set_param(&name, &value, ctx),
            Call::Command(name, args) => node.command(&name, &args, ctx),
        }));
        let took = started.elapsed();
        let sent = ctx.outbox.len();
        self.shared.stats.record(started, took, received, sent);
        // Refresh the summary when idle, after user requests, or every 100 ms: cheap at
        // low rates, bounded at high ones.
        if from_user || self.last_summary.elapsed() >= Duration::from_millis(100) || self.shared.mailbox.depth() == 0 {
            self.shared.stats.set_summary(self.node.summary());
            self.last_summary = Instant::now();
        }
        self.flush(ctx).await;
        match result {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) if from_user => Outcome::Rejected(e),
            Ok(Err(e)) => {
                self.engine.fail(&self.shared, e.to_string());
                Outcome::Failed(e)
            }
            Err(p) => {
                let msg = panic_message(&p);
                self.engine.fail(&self.shared, format!("panicked: {msg}"));
                Outcome::Failed(NodeError::Failed(format!("panicked: {msg}")))
            }
        }
    }

    async fn flush(&mut self, ctx: &mut Context) {
        for (level, text) in ctx.alerts.drain(..) {
            self.engine.emit(EngineEvent::Alert { node: Some(self.shared.name.to_string()), level, text });
        }
        for value in ctx.published.drain(..) {
            self.engine.emit(EngineEvent::Output { node: self.shared.name.to_string(), value });
        }
        if !ctx.outbox.is_empty() {
            let outlets = self.shared.outlets.lock().unwrap().clone();
            for (port, msg) in ctx.outbox.drain(..) {
                let targets = &outlets[port];
                if let Some((last, rest)) = targets.split_last() {
                    for inlet in rest {
                        let m = msg.clone();
                        if let Err(m) = inlet.try_push(m) {
                            inlet.push(m, &self.shared.stopping).await;
                        }
                    }
                    if let Err(m) = last.try_push(msg) {
                        last.push(m, &self.shared.stopping).await;
                    }
                }
            }
        }
        if let Some(reason) = ctx.finished.take() {
            self.engine.emit(EngineEvent::Finished { node: self.shared.name.to_string(), reason });
        }
    }
}
