//! The typed node-graph engine of Vela.
//!
//! Node crates depend on this crate alone: it defines the messages that flow between
//! nodes, how node types describe themselves, how graphs are validated and saved, and
//! the tokio executor that runs them with live edits. It deliberately pulls in no heavy
//! dependencies, so every node family and the studio can share it cheaply.

pub mod bench;
pub mod builtin;
pub mod diag;
pub mod engine;
pub mod graph;
pub mod message;
pub mod node;
pub mod preset;
pub use vela_protocol as protocol;
pub mod registry;
pub mod stats;
pub mod types;

pub use engine::{Engine, EngineError, EngineEvent, EngineSnapshot, NodeStatus};
pub use graph::{validate, Direction, EdgePolicy, EdgeSpec, GraphError, GraphSpec, NodeSpec, PortRef};
pub use message::{now_ns, Actions, Audio, Event, Image, Message, Payload, Prompt, PromptPart, Text, Timestamp};
pub use node::{AlertLevel, Context, Node, NodeError, NodeInit, Params};
pub use preset::{Preset, PresetError, PresetStore, PRESET_VERSION};
pub use registry::{resolve_params, NodeTypeInfo, Registry};
pub use stats::{NodeStats, StatsCell};
pub use types::{Availability, DataType, NodeDescriptor, ParamKind, ParamSpec, PortSpec};

/// Errors that are not about a particular graph or node.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("bad payload: {0}")]
    BadPayload(String),
}
