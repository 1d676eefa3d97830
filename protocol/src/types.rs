//! Declarations a node type makes about itself (ports, parameters, category), and the
//! figures and states the engine reports about nodes.
//!
//! These are plain data so the CLI (`vela nodes --json`), the studio palette in the
//! browser and graph validation all read the same description.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;


/// The type of data on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Image,
    Audio,
    Text,
    Prompt,
    Actions,
    Event,
    Json,
    /// Accepts anything (only meaningful on inputs, e.g. a logger).
    Any,
}

impl DataType {
    pub const ALL: [DataType; 8] = [
        DataType::Image,
        DataType::Audio,
        DataType::Text,
        DataType::Prompt,
        DataType::Actions,
        DataType::Event,
        DataType::Json,
        DataType::Any,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Image => "image",
            DataType::Audio => "audio",
            DataType::Text => "text",
            DataType::Prompt => "prompt",
            DataType::Actions => "actions",
            DataType::Event => "event",
            DataType::Json => "json",
            DataType::Any => "any",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| format!("unknown data type {s:?}"))
    }
}

/// An input port accepts one or more types; an output port produces exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortSpec {
    pub name: String,
    /// For inputs: every accepted type. For outputs: a single element.
    pub types: Vec<DataType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
}

impl PortSpec {
    pub fn input(name: &str, types: &[DataType], help: &str) -> Self {
        PortSpec { name: name.into(), types: types.to_vec(), help: help.into() }
    }
    pub fn output(name: &str, ty: DataType, help: &str) -> Self {
        PortSpec { name: name.into(), types: vec![ty], help: help.into() }
    }

    /// Whether this input port takes data of type `ty`.
    pub fn accepts(&self, ty: DataType) -> bool {
        self.types.iter().any(|t| *t == ty || *t == DataType::Any)
    }

    pub fn types_string(&self) -> String {
        self.types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join("|")
    }
}

/// What values a parameter may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    Bool,
    Int {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<i64>,
    },
    Float {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    String,
    /// Several lines of text (prompt templates); the studio shows a text area.
    Multiline,
    /// A colour as `#rrggbb`; the studio shows a colour picker.
    Color,
    /// A path on the server's filesystem (the studio shows a file field).
    Path,
    Choice { options: Vec<String> },
}

/// One parameter of a node type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: ParamKind,
    pub default: Value,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
    /// Whether it may change while the graph runs; others need a node restart.
    pub runtime: bool,
}

impl ParamSpec {
    pub fn new(name: &str, kind: ParamKind, default: impl Into<Value>, help: &str) -> Self {
        ParamSpec { name: name.into(), kind, default: default.into(), help: help.into(), runtime: true }
    }

    /// Marks the parameter as fixed once the node is running.
    pub fn startup_only(mut self) -> Self {
        self.runtime = false;
        self
    }

    /// Checks a value and normalises it (ints given as `3.0` become `3`).
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        match &self.kind {
            ParamKind::Bool => value.as_bool().map(Value::from).ok_or_else(|| "expected true or false".into()),
            ParamKind::Int { min, max } => {
                let v = match value {
                    Value::Number(n) if n.is_i64() => n.as_i64().unwrap(),
                    Value::Number(n) if n.is_u64() => {
                        i64::try_from(n.as_u64().unwrap()).map_err(|_| "integer too large".to_string())?
                    }
                    Value::Number(n) => {
                        let f = n.as_f64().unwrap_or(f64::NAN);
                        if f.fract() != 0.0 || !f.is_finite() {
                            return Err(format!("expected an integer, got {f}"));
                        }
                        f as i64
                    }
                    _ => return Err(format!("expected an integer, got {value}")),
                };
                in_range(v, *min, *max)?;
                Ok(Value::from(v))
            }
            ParamKind::Float { min, max } => {
                let v = value.as_f64().ok_or_else(|| format!("expected a number, got {value}"))?;
                if !v.is_finite() {
                    return Err("expected a finite number".into());
                }
                in_range(v, *min, *max)?;
                Ok(Value::from(v))
            }
            ParamKind::String | ParamKind::Multiline | ParamKind::Path => value
                .as_str()
                .map(Value::from)
                .ok_or_else(|| format!("expected a string, got {value}")),
            ParamKind::Color => {
                let s = value.as_str().ok_or_else(|| format!("expected a colour like \"#78d715\", got {value}"))?;
                if is_hex_colour(s) {
                    Ok(Value::from(s.to_ascii_lowercase()))
                } else {
                    Err(format!("{s:?} is not a colour written as #rrggbb"))
                }
            }
            ParamKind::Choice { options } => {
                let s = value.as_str().ok_or_else(|| format!("expected one of {options:?}, got {value}"))?;
                if options.iter().any(|o| o == s) {
                    Ok(Value::from(s))
                } else {
                    Err(format!("{s:?} is not one of {options:?}"))
                }
            }
        }
    }
}

/// `#rrggbb`, the one colour syntax every node and the browser's colour input share.
pub fn is_hex_colour(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit())
}

/// Checks optional inclusive bounds, with the message the studio and CLI show.
fn in_range<T: PartialOrd + fmt::Display>(v: T, min: Option<T>, max: Option<T>) -> Result<(), String> {
    if let Some(m) = min.filter(|m| v < *m) {
        return Err(format!("{v} is below the minimum {m}"));
    }
    if let Some(m) = max.filter(|m| v > *m) {
        return Err(format!("{v} is above the maximum {m}"));
    }
    Ok(())
}

/// Whether a node type can be instantiated on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Availability {
    Available,
    /// A dependency or model file is missing; the reason says what to do about it.
    Unavailable { reason: String },
}

/// Everything the outside world knows about a node type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDescriptor {
    /// Unique type name used in presets, e.g. `MimicGen`.
    pub type_name: String,
    /// Palette group, e.g. `Simulation`, `Speech`, `Testing`.
    pub category: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub inputs: Vec<PortSpec>,
    pub outputs: Vec<PortSpec>,
    pub params: Vec<ParamSpec>,
    /// Actions the studio shows as buttons (e.g. "reset episode"); sent as `command` requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandSpec>,
}

/// A node command a user can trigger from the studio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSpec {
    pub name: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
}

impl NodeDescriptor {
    pub fn new(type_name: &str, category: &str, title: &str) -> Self {
        NodeDescriptor {
            type_name: type_name.into(),
            category: category.into(),
            title: title.into(),
            description: String::new(),
            inputs: vec![],
            outputs: vec![],
            params: vec![],
            commands: vec![],
        }
    }
    pub fn describe(mut self, d: &str) -> Self {
        self.description = d.into();
        self
    }
    pub fn input(mut self, name: &str, types: &[DataType], help: &str) -> Self {
        self.inputs.push(PortSpec::input(name, types, help));
        self
    }
    pub fn output(mut self, name: &str, ty: DataType, help: &str) -> Self {
        self.outputs.push(PortSpec::output(name, ty, help));
        self
    }
    pub fn param(mut self, p: ParamSpec) -> Self {
        self.params.push(p);
        self
    }
    pub fn command(mut self, name: &str, title: &str, help: &str) -> Self {
        self.commands.push(CommandSpec { name: name.into(), title: title.into(), help: help.into() });
        self
    }

    pub fn input_port(&self, name: &str) -> Option<&PortSpec> {
        self.inputs.iter().find(|p| p.name == name)
    }
    pub fn output_port(&self, name: &str) -> Option<&PortSpec> {
        self.outputs.iter().find(|p| p.name == name)
    }
    pub fn param_spec(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// What `vela nodes --json` and the studio palette show for one node type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeTypeInfo {
    #[serde(flatten)]
    pub descriptor: NodeDescriptor,
    pub availability: Availability,
}

/// Severity of an alert shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    Info,
    Warning,
    Error,
}

/// Life-cycle state of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeStatus {
    /// In the graph, not started.
    Idle,
    Running,
    /// Stopped by an error or panic; the rest of the graph keeps running.
    Failed { error: String },
    Stopped,
}

/// A point-in-time view of one node's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Callbacks (inputs and ticks) per second over the last few seconds.
    pub fps: f64,
    /// Mean processing time of recent callbacks, milliseconds.
    pub latency_ms: f64,
    /// Slowest recent callback, milliseconds.
    pub max_latency_ms: f64,
    pub received: u64,
    pub processed: u64,
    pub sent: u64,
    /// Messages waiting in this node's input queues.
    pub queue_depth: usize,
    /// Messages dropped at this node's inputs (stale frames, or the node was down).
    pub dropped: u64,
    pub errors: u64,
    /// A one-line human summary, like the line Agent Studio shows under each node.
    pub summary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_parameters_take_hex_colours_only() {
        let k = ParamSpec::new("color", ParamKind::Color, "#000000", "");
        assert_eq!(k.check(&Value::from("#A0b0C0")).unwrap(), Value::from("#a0b0c0"));
        for bad in [Value::from("red"), Value::from("#12345"), Value::from("#12345g"), Value::from(3)] {
            let err = k.check(&bad).unwrap_err();
            assert!(err.contains("colour"), "{bad}: {err}");
        }
    }

    #[test]
    fn multiline_parameters_are_strings_with_their_own_tag() {
        assert_eq!(ParamSpec::new("t", ParamKind::Multiline, "", "").check(&Value::from("a\nb")).unwrap(), Value::from("a\nb"));
        assert!(ParamSpec::new("t", ParamKind::Multiline, "", "").check(&Value::from(1)).is_err());
        let json = serde_json::to_value(ParamKind::Multiline).unwrap();
        assert_eq!(json, serde_json::json!({ "type": "multiline" }));
        let json = serde_json::to_value(ParamKind::Color).unwrap();
        assert_eq!(json, serde_json::json!({ "type": "color" }));
    }
}
