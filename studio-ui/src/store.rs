//! Everything the page knows, as signals shared through context. The server is the source
//! of truth for the graph; the page keeps only view state (selection, pan/zoom, drags).

use std::collections::{BTreeMap, VecDeque};

use leptos::prelude::*;
use vela_protocol::{
    AlertLevel, BenchRun, BenchSummary, DataType, EdgeSpec, NodeDescriptor, NodeSpec, NodeStats, NodeTypeInfo, StudioState,
};

/// Node geometry on the canvas (world units = pixels at zoom 1).
pub const NODE_W: f64 = 180.0;
pub const HEAD_H: f64 = 44.0;
pub const ROW_H: f64 = 20.0;
pub const FOOT_H: f64 = 30.0;

/// Most lines kept in the log panel and in each node's output widget.
const LOG_KEEP: usize = 400;
const OUTPUT_KEEP: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    Connecting,
    Open,
    /// Lost; the next attempt starts in `secs` seconds.
    Waiting { secs: f64, attempt: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    None,
    Node(String),
    Edge(EdgeSpec),
}

/// Pan and zoom: screen = world * k + (x, y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub x: f64,
    pub y: f64,
    pub k: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Drag {
    /// Dragging the background; `sx, sy` where the pointer went down, `vx, vy` the view then.
    Pan { sx: f64, sy: f64, vx: f64, vy: f64, moved: bool },
    /// Moving a node; `dx, dy` is where it was grabbed relative to its corner (world units).
    Node { name: String, dx: f64, dy: f64, x: f64, y: f64, moved: bool },
    /// Pulling a wire out of an output port; `x, y` is the pointer in world units.
    Wire { from_node: String, from_port: String, ty: DataType, x: f64, y: f64 },
    /// Dragging a node type out of the palette; client coordinates.
    Palette { type_name: String, cx: f64, cy: f64, moved: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Toast {
    pub id: u64,
    pub level: AlertLevel,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogKind {
    Info,
    Warning,
    Error,
    Output,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub seq: u64,
    pub time: String,
    pub kind: LogKind,
    pub node: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputLine {
    pub seq: u64,
    pub time: String,
    pub text: String,
}

/// The latest benchmark run the server told about, and how it ended once it has.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchView {
    pub run: BenchRun,
    pub finished: Option<BenchEnd>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchEnd {
    pub complete: bool,
    pub reason: String,
    pub summary: Option<Box<BenchSummary>>,
    pub report_url: Option<String>,
}

#[derive(Clone, Copy)]
pub struct Store {
    pub conn: RwSignal<Conn>,
    pub server_version: RwSignal<String>,
    pub types: RwSignal<Vec<NodeTypeInfo>>,
    pub presets: RwSignal<Vec<String>>,
    pub state: RwSignal<StudioState>,
    /// Whether a state message arrived since the page (re)connected.
    pub synced: RwSignal<bool>,
    pub stats: RwSignal<BTreeMap<String, NodeStats>>,
    pub toasts: RwSignal<Vec<Toast>>,
    pub log: RwSignal<VecDeque<LogLine>>,
    pub outputs: RwSignal<BTreeMap<String, VecDeque<OutputLine>>>,
    pub bench: RwSignal<Option<BenchView>>,
    pub selection: RwSignal<Selection>,
    pub view: RwSignal<View>,
    pub drag: RwSignal<Option<Drag>>,
    /// Bumped when the server refused an edit, so controls re-read the server's values.
    pub revision: RwSignal<u64>,
    /// Frame the graph when the next state arrives (page load, preset load).
    pub fit_pending: StoredValue<bool>,
    seq: StoredValue<u64>,
}

pub fn use_store() -> Store {
    expect_context::<Store>()
}

pub fn now_hms() -> String {
    let d = js_sys::Date::new_0();
    format!("{:02}:{:02}:{:02}", d.get_hours(), d.get_minutes(), d.get_seconds())
}

impl Store {
    pub fn new() -> Self {
        Store {
            conn: RwSignal::new(Conn::Connecting),
            server_version: RwSignal::new(String::new()),
            types: RwSignal::new(vec![]),
            presets: RwSignal::new(vec![]),
            state: RwSignal::new(StudioState::default()),
            synced: RwSignal::new(false),
            stats: RwSignal::new(BTreeMap::new()),
            toasts: RwSignal::new(vec![]),
            log: RwSignal::new(VecDeque::new()),
            outputs: RwSignal::new(BTreeMap::new()),
            bench: RwSignal::new(None),
            selection: RwSignal::new(Selection::None),
            view: RwSignal::new(View { x: 0.0, y: 0.0, k: 1.0 }),
            drag: RwSignal::new(None),
            revision: RwSignal::new(0),
            fit_pending: StoredValue::new(true),
            seq: StoredValue::new(0),
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.update_value(|s| *s += 1);
        self.seq.get_value()
    }

    /// Shows a toast for a few seconds.
    pub fn toast(&self, level: AlertLevel, text: impl Into<String>) {
        let id = self.next_seq();
        let text = text.into();
        self.toasts.update(|t| {
            t.push(Toast { id, level, text });
            // Never bury the screen: keep the newest few.
            if t.len() > 5 {
                t.remove(0);
            }
        });
        let toasts = self.toasts;
        let ms = match level {
            AlertLevel::Error => 6000,
            AlertLevel::Warning => 6000,
            AlertLevel::Info => 4000,
        };
        set_timeout(move || toasts.update(|t| t.retain(|x| x.id != id)), std::time::Duration::from_millis(ms));
    }

    pub fn log_line(&self, kind: LogKind, node: Option<String>, text: String) {
        let seq = self.next_seq();
        self.log.update(|l| {
            l.push_back(LogLine { seq, time: now_hms(), kind, node, text });
            while l.len() > LOG_KEEP {
                l.pop_front();
            }
        });
    }

    pub fn add_output(&self, node: &str, text: String) {
        let seq = self.next_seq();
        self.outputs.update(|o| {
            let lines = o.entry(node.to_string()).or_default();
            lines.push_back(OutputLine { seq, time: now_hms(), text });
            while lines.len() > OUTPUT_KEEP {
                lines.pop_front();
            }
        });
    }

    pub fn descriptor(&self, type_name: &str) -> Option<NodeDescriptor> {
        self.types.with(|t| t.iter().find(|i| i.descriptor.type_name == type_name).map(|i| i.descriptor.clone()))
    }

    pub fn node_spec(&self, name: &str) -> Option<NodeSpec> {
        self.state.with(|s| s.graph.node(name).cloned())
    }

    /// A node's corner: the dragged position while it is being moved, else the saved one,
    /// else a grid slot by its index so nodes without positions never overlap.
    pub fn node_pos(&self, name: &str) -> Option<(f64, f64)> {
        if let Some(p) = self.drag.with(|d| match d {
            Some(Drag::Node { name: n, x, y, .. }) if n == name => Some((*x, *y)),
            _ => None,
        }) {
            return Some(p);
        }
        self.state.with(|s| {
            let i = s.graph.nodes.iter().position(|n| n.name == name)?;
            Some(match s.graph.nodes[i].position {
                Some([x, y]) => (x as f64, y as f64),
                None => (40.0 + (i % 4) as f64 * 230.0, 40.0 + (i / 4) as f64 * 160.0),
            })
        })
    }

    /// Where an edge attaches: the middle of the port's row on the node's left or right side.
    pub fn port_anchor(&self, node: &str, port: &str, output: bool) -> Option<(f64, f64)> {
        let (x, y) = self.node_pos(node)?;
        let type_name = self.state.with(|s| s.graph.node(node).map(|n| n.type_name.clone()))?;
        let index = self.types.with(|t| {
            let d = &t.iter().find(|i| i.descriptor.type_name == type_name)?.descriptor;
            let ports = if output { &d.outputs } else { &d.inputs };
            ports.iter().position(|p| p.name == port)
        })?;
        Some((if output { x + NODE_W } else { x }, y + HEAD_H + ROW_H * index as f64 + ROW_H / 2.0))
    }

    /// A name for a new node of this type that no node has yet: `scale`, `scale_2`, …
    pub fn unique_name(&self, type_name: &str) -> String {
        let mut base = String::new();
        for (i, c) in type_name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 && !base.ends_with('_') {
                base.push('_');
            }
            if c.is_ascii_alphanumeric() {
                base.push(c.to_ascii_lowercase());
            } else if !base.ends_with('_') {
                base.push('_');
            }
        }
        let base = base.trim_matches('_').chars().take(48).collect::<String>();
        let base = if base.is_empty() { "node".to_string() } else { base };
        self.state.with(|s| {
            if s.graph.node(&base).is_none() {
                return base.clone();
            }
            (2..).map(|i| format!("{base}_{i}")).find(|n| s.graph.node(n).is_none()).unwrap()
        })
    }

    /// Converts a pointer position to canvas (world) coordinates.
    pub fn world_from_client(&self, cx: f64, cy: f64) -> (f64, f64) {
        let (left, top) = canvas_origin();
        let v = self.view.get_untracked();
        ((cx - left - v.x) / v.k, (cy - top - v.y) / v.k)
    }
}

/// The canvas element's top-left corner in client coordinates.
pub fn canvas_origin() -> (f64, f64) {
    document()
        .get_element_by_id("canvas")
        .map(|e| {
            let r = e.get_bounding_client_rect();
            (r.left(), r.top())
        })
        .unwrap_or((0.0, 0.0))
}

/// Whether a client point lies over the canvas.
pub fn over_canvas(cx: f64, cy: f64) -> bool {
    document()
        .get_element_by_id("canvas")
        .map(|e| {
            let r = e.get_bounding_client_rect();
            cx >= r.left() && cx <= r.right() && cy >= r.top() && cy <= r.bottom()
        })
        .unwrap_or(false)
}

pub fn node_height(d: Option<&NodeDescriptor>) -> f64 {
    let rows = d.map(|d| d.inputs.len().max(d.outputs.len())).unwrap_or(0).max(1);
    HEAD_H + ROW_H * rows as f64 + FOOT_H
}

/// Shortens text to fit a fixed-width box, with an ellipsis.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// One short line for a value a node published (Collector publishes `{seq, from, type, value, text}`).
pub fn describe_output(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let from = o.get("from").and_then(Value::as_str);
            let body = match (o.get("value"), o.get("text").and_then(Value::as_str)) {
                (Some(val), _) if !val.is_null() => val.to_string(),
                (_, Some(t)) => t.to_string(),
                _ => v.to_string(),
            };
            match from {
                Some(f) => format!("{f} → {body}"),
                None => body,
            }
        }
        _ => v.to_string(),
    }
}

/// A category's accent colour, so groups are recognisable in the palette and on nodes.
pub fn category_hue(category: &str) -> u32 {
    match category {
        "Utility" => 215,
        "Simulation" => 170,
        "Models" | "VLA" => 270,
        "Speech" | "Audio" => 30,
        "Video" => 190,
        "Robotics" => 130,
        "Testing" => 0,
        _ => category.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % 360,
    }
}
