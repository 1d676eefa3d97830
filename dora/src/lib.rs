//! Runs a saved Vela graph as a [dora-rs](https://dora-rs.ai) 1.1 dataflow.
//!
//! The preset stays the single source of truth: [`export`] turns it into dora YAML in
//! which every dora node is the `vela` binary itself (`vela dora node`), hosting one
//! Vela node, or a co-located group of them so heavy edges never leave the process.
//! dora only moves the messages (Arrow arrays, shared memory on one host, zenoh
//! between hosts) and places nodes on machines; Vela does not grow its own
//! distributed system.
//!
//! The exporter and the launcher need no dora crates. The runner and the Arrow codec
//! sit behind the `node` feature because dora-node-api pulls in arrow and zenoh.

pub mod bench;
pub mod export;
pub mod launch;
pub mod probe;
#[cfg(feature = "node")]
pub mod codec;
#[cfg(feature = "node")]
pub mod runner;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vela_runtime::{EdgeSpec, NodeSpec, PortRef};

pub use export::{export, Dataflow, ExportError, ExportOptions};

/// Environment variable that carries a dora node's [`UnitSpec`] as JSON. An env entry
/// rather than `args`, because dora splits `args` like a shell and would mangle JSON.
pub const UNIT_ENV: &str = "VELA_UNIT";

/// Environment variable naming a folder where runners append their events
/// (`<dora node id>.jsonl`: published values, alerts, finish requests, stats), so
/// `vela dora run` can end the run and report like `vela run` does.
pub const EVENTS_ENV: &str = "VELA_DORA_EVENTS";

/// Environment variable naming the folder relative node parameters are resolved in (see
/// [`ExportOptions::workdir`]).
pub const WORKDIR_ENV: &str = "VELA_WORKDIR";

/// What one dora node runs: one or more Vela nodes and how their ports map to dora
/// inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSpec {
    pub nodes: Vec<NodeSpec>,
    /// Edges between nodes of this unit; delivered in-process, never through dora.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<EdgeSpec>,
    /// dora input id → the Vela input port it feeds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, PortRef>,
    /// dora output id → the Vela output port it carries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, PortRef>,
}

/// One line of a runner's events file (see [`EVENTS_ENV`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum UnitEvent {
    /// What a node published (the in-process engine's `EngineEvent::Output`).
    Output { node: String, value: serde_json::Value },
    Alert { node: String, level: vela_runtime::AlertLevel, text: String },
    /// A node asked for the run to end.
    Finished { node: String, reason: String },
    Failed { node: String, error: String },
    /// Latest figures of a node, written about once a second and at exit.
    Stats { node: String, stats: vela_runtime::NodeStats },
}
