//! Graph descriptions as data: what a preset file and the studio protocol carry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// One node in a graph description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// Editor position in the studio canvas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<[f32; 2]>,
}

impl NodeSpec {
    pub fn new(name: &str, type_name: &str) -> Self {
        NodeSpec { name: name.into(), type_name: type_name.into(), params: Map::new(), position: None }
    }
    pub fn param(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }
}

/// `node.port`, written as one string in presets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRef {
    pub node: String,
    pub port: String,
}

impl PortRef {
    pub fn new(node: &str, port: &str) -> Self {
        PortRef { node: node.into(), port: port.into() }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.port)
    }
}

impl FromStr for PortRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('.') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok(PortRef::new(n, p)),
            _ => Err(format!("{s:?} is not of the form node.port")),
        }
    }
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How an edge treats a consumer that falls behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgePolicy {
    /// Keep every message; a full queue makes the sender wait (back-pressure).
    #[default]
    Queue,
    /// Keep only the newest message; stale ones are dropped and counted. Right for
    /// camera frames feeding a slow model.
    Latest,
}

impl EdgePolicy {
    fn is_default(&self) -> bool {
        *self == EdgePolicy::Queue
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeSpec {
    pub from: PortRef,
    pub to: PortRef,
    #[serde(default, skip_serializing_if = "EdgePolicy::is_default")]
    pub policy: EdgePolicy,
}

impl EdgeSpec {
    pub fn new(from: &str, to: &str) -> Self {
        EdgeSpec {
            from: from.parse().expect("edge endpoint of the form node.port"),
            to: to.parse().expect("edge endpoint of the form node.port"),
            policy: EdgePolicy::Queue,
        }
    }
    pub fn latest(mut self) -> Self {
        self.policy = EdgePolicy::Latest;
        self
    }
}

impl fmt::Display for EdgeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub edges: Vec<EdgeSpec>,
}

impl GraphSpec {
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Which side of a node a port is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Input => "input",
            Direction::Output => "output",
        })
    }
}

