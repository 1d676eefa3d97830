//! Graph descriptions and their validation.
//!
//! A [`GraphSpec`] is pure data (what a preset file holds). Validation against a
//! [`Registry`] reports every problem at once, each as a typed [`GraphError`] with a
//! message a user can act on.

use std::collections::{BTreeMap, HashSet};

use crate::registry::{resolve_params, Registry};
use crate::types::{Availability, DataType};
pub use vela_protocol::graph::*;

/// Everything that can be wrong with a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("node '{node}': unknown node type '{type_name}'{}", suggest(.suggestion))]
    UnknownType { node: String, type_name: String, suggestion: Option<String> },
    #[error("node '{node}': node type '{type_name}' is unavailable here: {reason}")]
    Unavailable { node: String, type_name: String, reason: String },
    #[error("node name '{0}' is used more than once")]
    DuplicateName(String),
    #[error("node name {0:?} is invalid: use letters, digits, '_' and '-' (no dots, no spaces)")]
    InvalidName(String),
    #[error("node '{node}' ({type_name}) has no {direction} port '{port}' (it has: {available})")]
    UnknownPort { node: String, type_name: String, direction: Direction, port: String, available: String },
    #[error("edge {edge} refers to node '{missing}', which is not in the graph")]
    DanglingEdge { edge: String, missing: String },
    #[error("edge {from} -> {to}: output '{from}' carries {from_type}, but input '{to}' accepts {to_types}")]
    TypeMismatch { from: String, from_type: DataType, to: String, to_types: String },
    #[error("edge {0} appears more than once")]
    DuplicateEdge(String),
    #[error("node '{node}': parameter '{param}': {message}")]
    BadParam { node: String, param: String, message: String },
}

fn suggest(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default()
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The closest registered type name, for "did you mean" hints.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks a single node against the registry (type, name, parameters).
pub fn validate_node(node: &NodeSpec, registry: &Registry) -> Vec<GraphError> {
    let mut errors = Vec::new();
    if !valid_name(&node.name) {
        errors.push(GraphError::InvalidName(node.name.clone()));
    }
    match registry.get(&node.type_name) {
        None => errors.push(GraphError::UnknownType {
            node: node.name.clone(),
            type_name: node.type_name.clone(),
            suggestion: closest(&node.type_name, registry.type_names()),
        }),
        Some(entry) => {
            if let Availability::Unavailable { reason } = &entry.availability {
                errors.push(GraphError::Unavailable {
                    node: node.name.clone(),
                    type_name: node.type_name.clone(),
                    reason: reason.clone(),
                });
            }
            if let Err(errs) = resolve_params(&entry.descriptor, &node.params) {
                errors.extend(errs.into_iter().map(|(param, message)| GraphError::BadParam {
                    node: node.name.clone(),
                    param,
                    message,
                }));
            }
        }
    }
    errors
}

/// Checks one edge given the nodes it may refer to (name → type name).
pub fn validate_edge(edge: &EdgeSpec, nodes: &BTreeMap<String, String>, registry: &Registry) -> Vec<GraphError> {
    let mut errors = Vec::new();
    let mut ends = Vec::new();
    for (end, dir) in [(&edge.from, Direction::Output), (&edge.to, Direction::Input)] {
        let Some(type_name) = nodes.get(&end.node) else {
            errors.push(GraphError::DanglingEdge { edge: edge.to_string(), missing: end.node.clone() });
            continue;
        };
        // Unknown types were already reported on the node itself.
        let Some(entry) = registry.get(type_name) else { continue };
        let ports = match dir {
            Direction::Input => &entry.descriptor.inputs,
            Direction::Output => &entry.descriptor.outputs,
        };
        match ports.iter().find(|p| p.name == end.port) {
            Some(p) => ends.push(p.clone()),
            None => errors.push(GraphError::UnknownPort {
                node: end.node.clone(),
                type_name: type_name.clone(),
                direction: dir,
                port: end.port.clone(),
                available: if ports.is_empty() {
                    "none".into()
                } else {
                    ports.iter().map(|p| format!("{}: {}", p.name, p.types_string())).collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }
    if let [out, inp] = ends.as_slice() {
        let ty = out.types[0];
        if !(inp.accepts(ty) || ty == DataType::Any) {
            errors.push(GraphError::TypeMismatch {
                from: edge.from.to_string(),
                from_type: ty,
                to: edge.to.to_string(),
                to_types: inp.types_string(),
            });
        }
    }
    errors
}

/// Validates a whole graph; `Ok` only if nothing at all is wrong.
pub fn validate(graph: &GraphSpec, registry: &Registry) -> Result<(), Vec<GraphError>> {
    let mut errors = Vec::new();
    let mut names = BTreeMap::new();
    for node in &graph.nodes {
        errors.extend(validate_node(node, registry));
        if names.insert(node.name.clone(), node.type_name.clone()).is_some() {
            errors.push(GraphError::DuplicateName(node.name.clone()));
        }
    }
    let mut seen = HashSet::new();
    for edge in &graph.edges {
        errors.extend(validate_edge(edge, &names, registry));
        if !seen.insert((&edge.from, &edge.to)) {
            errors.push(GraphError::DuplicateEdge(edge.to_string()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
