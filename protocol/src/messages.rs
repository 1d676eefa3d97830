//! The studio's WebSocket protocol: typed, versioned JSON in both directions.
//!
//! Every client request names an `op`; the server answers each request that carried an
//! `id` with a `reply` naming the same id, and pushes state to every connected client.
//! There is deliberately no "set any attribute" message: each edit is its own variant,
//! checked on the server like any other input.
//!
//! Binary WebSocket messages (browser → server) carry microphone PCM for WebAudioIn
//! nodes: a 14-byte header (magic `VAU1`, sample rate, channels, sample format, node name
//! length), the node name, then samples. The layout is defined and parsed in
//! `vela_webrtc::audio_frame` (nodes/webrtc/README.md describes it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bench::{BenchRun, BenchSummary};
use crate::graph::{EdgeSpec, GraphSpec, NodeSpec, PortRef};
use crate::types::{AlertLevel, NodeStats, NodeStatus, NodeTypeInfo};

/// Bumped on any incompatible change; the server refuses other versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a browser sends: `{"v": 1, "id": 3, "op": "connect", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEnvelope {
    /// Protocol version the client speaks.
    pub v: u32,
    /// Echoed in the reply so the client can match answers to requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub msg: ClientMsg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Ask for the full state again (the server also sends it on connect).
    GetState,
    AddNode { node: NodeSpec },
    RemoveNode { name: String },
    Connect { edge: EdgeSpec },
    Disconnect { from: PortRef, to: PortRef },
    SetParam { node: String, param: String, value: Value },
    MoveNode { node: String, position: [f32; 2] },
    /// A node-specific action, e.g. a widget's reset button.
    Command { node: String, name: String, #[serde(default)] args: Value },
    RestartNode { name: String },
    ListPresets,
    LoadPreset { name: String },
    SavePreset { name: String, #[serde(default)] description: Option<String> },
    /// Convert an Agent Studio preset file's content and save it as preset `name`.
    ImportPreset { name: String, content: String, #[serde(default)] replace: bool },
    Start,
    Stop,
    /// Stop and clear the graph.
    Reset,
    /// Ask a running VideoOutput node for its stream: the browser's SDP offer (receive
    /// only, ICE gathering complete). Answered by [`ServerMsg::WebrtcAnswer`], then the reply.
    WebrtcOffer { node: String, sdp: String },
    /// End this tab's stream from a VideoOutput node (closing the socket does it too).
    WebrtcHangup { node: String },
    /// Run `episodes` episodes of MimicGen node `node` in the live graph (started if it is
    /// not running), seeds `seed`, `seed + 1`, …; every tab gets [`ServerMsg::BenchProgress`]
    /// and finally [`ServerMsg::BenchFinished`] with a report link. One run at a time.
    BenchStart {
        node: String,
        episodes: u64,
        #[serde(default)]
        seed: u64,
        /// Step the simulator as fast as it can (framerate 0) during the run, as `vela bench` does.
        #[serde(default = "yes")]
        fast: bool,
    },
    /// End the running benchmark early; the finished episodes still make a report.
    BenchStop,
}

fn yes() -> bool {
    true
}

/// What the server pushes: `{"event": "state", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerMsg {
    /// First message on every connection.
    Welcome { protocol: u32, version: String, node_types: Vec<NodeTypeInfo>, presets: Vec<String> },
    /// The whole graph; sent on connect and after every change by any client.
    State(StudioState),
    /// Per-node figures, a few times a second while running.
    Stats { nodes: BTreeMap<String, NodeStats> },
    Alert { level: AlertLevel, #[serde(default, skip_serializing_if = "Option::is_none")] node: Option<String>, text: String },
    /// Something a node published for widgets (text lines, action vectors, progress).
    Output { node: String, value: Value },
    Presets { names: Vec<String> },
    /// A benchmark started (or finished one more episode); the whole run so far.
    BenchProgress { run: BenchRun },
    /// A benchmark ended: all episodes done, stopped, or its node failed (`reason` says
    /// which). `report_url` is the HTML report the studio serves, when episodes finished.
    BenchFinished {
        run: BenchRun,
        complete: bool,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        // Boxed: the largest message would otherwise size every other one.
        summary: Option<Box<BenchSummary>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report_url: Option<String>,
    },
    /// The SDP answer (all candidates included) to this tab's [`ClientMsg::WebrtcOffer`].
    WebrtcAnswer { node: String, sdp: String },
    /// The answer to a request that carried an id.
    Reply {
        id: u64,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A message that could not be understood at all (bad JSON, unknown op, wrong version).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        message: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudioState {
    /// The preset the graph was loaded from or last saved as.
    pub preset: Option<String>,
    pub graph: GraphSpec,
    pub running: bool,
    pub status: BTreeMap<String, NodeStatus>,
}
