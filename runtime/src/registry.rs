//! The catalogue of node types. Each node crate registers its own types explicitly,
//! so the binary decides what it ships and nothing registers itself behind our back.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::node::{Node, NodeError, NodeInit, Params};
use crate::types::{Availability, NodeDescriptor};

pub type Factory = Arc<dyn Fn(&NodeInit) -> Result<Box<dyn Node>, NodeError> + Send + Sync>;

#[derive(Clone)]
pub struct RegistryEntry {
    pub descriptor: Arc<NodeDescriptor>,
    pub availability: Availability,
    factory: Option<Factory>,
}

pub use vela_protocol::types::NodeTypeInfo;

#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, RegistryEntry>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the runtime's own utility nodes.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::builtin::register(&mut r);
        r
    }

    pub fn register<F>(&mut self, descriptor: NodeDescriptor, factory: F)
    where
        F: Fn(&NodeInit) -> Result<Box<dyn Node>, NodeError> + Send + Sync + 'static,
    {
        let name = descriptor.type_name.clone();
        self.entries.insert(
            name,
            RegistryEntry {
                descriptor: Arc::new(descriptor),
                availability: Availability::Available,
                factory: Some(Arc::new(factory)),
            },
        );
    }

    /// Lists a node type that cannot run here (missing library, model file...), so users
    /// see it greyed out with the reason instead of the whole program refusing to start.
    pub fn register_unavailable(&mut self, descriptor: NodeDescriptor, reason: impl Into<String>) {
        let name = descriptor.type_name.clone();
        self.entries.insert(
            name,
            RegistryEntry {
                descriptor: Arc::new(descriptor),
                availability: Availability::Unavailable { reason: reason.into() },
                factory: None,
            },
        );
    }

    pub fn get(&self, type_name: &str) -> Option<&RegistryEntry> {
        self.entries.get(type_name)
    }

    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    pub fn list(&self) -> Vec<NodeTypeInfo> {
        self.entries
            .values()
            .map(|e| NodeTypeInfo { descriptor: (*e.descriptor).clone(), availability: e.availability.clone() })
            .collect()
    }

    /// Builds a node, after parameters were resolved with [`resolve_params`].
    pub fn instantiate(&self, type_name: &str, name: &str, params: &Params) -> Result<Box<dyn Node>, NodeError> {
        let entry = self.get(type_name).ok_or_else(|| NodeError::msg(format!("unknown node type '{type_name}'")))?;
        let factory = entry.factory.as_ref().ok_or_else(|| match &entry.availability {
            Availability::Unavailable { reason } => {
                NodeError::msg(format!("node type '{type_name}' is unavailable: {reason}"))
            }
            Availability::Available => NodeError::msg(format!("node type '{type_name}' has no factory")),
        })?;
        factory(&NodeInit { name, params })
    }
}

/// Fills defaults and checks every given value against the declaration. Returns every
/// problem at once (parameter name and message) so a preset can be fixed in one go.
pub fn resolve_params(desc: &NodeDescriptor, given: &Map<String, Value>) -> Result<Params, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for key in given.keys() {
        if desc.param_spec(key).is_none() {
            let known: Vec<&str> = desc.params.iter().map(|p| p.name.as_str()).collect();
            errors.push((key.clone(), format!("unknown parameter (known: {})", known.join(", "))));
        }
    }
    for spec in &desc.params {
        let v = given.get(&spec.name).unwrap_or(&spec.default);
        match spec.check(v) {
            Ok(v) => {
                out.insert(spec.name.clone(), v);
            }
            Err(e) => errors.push((spec.name.clone(), e)),
        }
    }
    if errors.is_empty() {
        Ok(Params(out))
    } else {
        Err(errors)
    }
}
