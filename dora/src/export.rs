//! Preset → dora 1.1 dataflow YAML.
//!
//! A pure function of the graph, the registry (for port lists) and placement flags.
//! The YAML is written by hand rather than through a YAML crate: the structure is
//! small and fixed, and every scalar is emitted as a JSON string, which YAML reads
//! as a double-quoted scalar, so no value can change meaning (`yes`, `1e3`, `:`...).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use vela_runtime::{validate, EdgePolicy, GraphError, GraphSpec, PortRef, Registry};

use crate::{UnitSpec, UNIT_ENV, WORKDIR_ENV};

/// Queue length of a lossless edge, as in the in-process engine.
pub const QUEUE_SIZE: usize = vela_runtime::engine::DEFAULT_QUEUE_CAPACITY;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the graph is invalid:\n  {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Graph(Vec<GraphError>),
    #[error("--{flag} names node '{node}', which is not in the graph (nodes: {known})")]
    UnknownNode { flag: &'static str, node: String, known: String },
    #[error("node '{node}' is in two groups, '{first}' and '{second}'")]
    TwoGroups { node: String, first: String, second: String },
    #[error("group '{group}' mixes machines ({machines}); a group runs in one process on one machine")]
    GroupSpansMachines { group: String, machines: String },
    #[error("group name '{0}' clashes with a node name or another group; dora node ids must be unique")]
    IdClash(String),
    #[error("group name {0:?} is invalid: use letters, digits, '_' and '-'")]
    BadGroupName(String),
    #[error("machine id {0:?} is invalid: use letters, digits, '_', '-' and '.'")]
    BadMachine(String),
}

/// How to lay the graph out on dora.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The `vela` binary dora runs for every node (absolute, or relative to the
    /// daemon's working directory).
    pub runner: PathBuf,
    /// Arguments for the runner: `dora node` for the `vela` binary, none for `vela-dora-node`.
    pub runner_args: Option<String>,
    /// Vela node (or group) → dora machine id (`deploy.machine`).
    pub machines: BTreeMap<String, String>,
    /// Group name → the Vela nodes that share one dora node (one process).
    pub groups: BTreeMap<String, Vec<String>>,
    /// `RUST_LOG`-style filter handed to every runner (`VELA_LOG`).
    pub log: Option<String>,
    /// Folder that relative paths in node parameters (a preset's `models/...`) mean; handed
    /// to every runner, which works there when its machine has that folder. dora itself
    /// starts nodes in a working directory of its own.
    pub workdir: Option<PathBuf>,
}

/// One dora node of the exported dataflow.
#[derive(Debug, Clone, PartialEq)]
pub struct DoraNode {
    pub id: String,
    pub unit: UnitSpec,
    /// dora input id → (source `node/output`, latest-only).
    pub inputs: BTreeMap<String, (String, bool)>,
    pub machine: Option<String>,
}

/// The exported dataflow; [`Dataflow::to_yaml`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataflow {
    pub preset: String,
    pub runner: PathBuf,
    pub runner_args: Option<String>,
    pub log: Option<String>,
    pub workdir: Option<PathBuf>,
    pub nodes: Vec<DoraNode>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Builds the dataflow for `graph`, checked against `registry` first so a bad preset
/// fails here, naming the node, rather than later inside a dora daemon.
pub fn export(name: &str, graph: &GraphSpec, registry: &Registry, opts: &ExportOptions) -> Result<Dataflow, ExportError> {
    validate(graph, registry).map_err(ExportError::Graph)?;
    let known = || graph.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");

    // Which dora node hosts each Vela node.
    let mut unit_of: BTreeMap<&str, String> = graph.nodes.iter().map(|n| (n.name.as_str(), n.name.clone())).collect();
    let mut group_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (group, members) in &opts.groups {
        if !valid_id(group) {
            return Err(ExportError::BadGroupName(group.clone()));
        }
        if graph.node(group).is_some() && !(members.len() == 1 && members[0] == *group) {
            return Err(ExportError::IdClash(group.clone()));
        }
        for m in members {
            let Some(node) = graph.node(m) else {
                return Err(ExportError::UnknownNode { flag: "group", node: m.clone(), known: known() });
            };
            if let Some(first) = group_of.insert(node.name.as_str(), group.as_str()) {
                return Err(ExportError::TwoGroups { node: m.clone(), first: first.into(), second: group.clone() });
            }
            unit_of.insert(node.name.as_str(), group.clone());
        }
    }
    for (node, machine) in &opts.machines {
        if !machine.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) || machine.is_empty() {
            return Err(ExportError::BadMachine(machine.clone()));
        }
        if graph.node(node).is_none() && !opts.groups.contains_key(node) {
            return Err(ExportError::UnknownNode { flag: "machine", node: node.clone(), known: known() });
        }
    }

    // Units in graph order (a group sits where its first member was).
    let mut order: Vec<String> = Vec::new();
    for n in &graph.nodes {
        let u = &unit_of[n.name.as_str()];
        if !order.contains(u) {
            order.push(u.clone());
        }
    }
    let grouped = |unit: &str| opts.groups.contains_key(unit);
    // A group's ports are named `node-port`: two members may both have an `out`.
    let output_id = |r: &PortRef| {
        let unit = &unit_of[r.node.as_str()];
        if grouped(unit) { format!("{}-{}", r.node, r.port) } else { r.port.clone() }
    };

    let mut nodes = Vec::new();
    for unit in order {
        let members: Vec<_> = graph.nodes.iter().filter(|n| unit_of[n.name.as_str()] == unit).cloned().collect();
        let machine = {
            let ms: BTreeSet<&String> = members
                .iter()
                .filter_map(|n| opts.machines.get(&n.name))
                .chain(opts.machines.get(&unit))
                .collect();
            if ms.len() > 1 {
                let machines = ms.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                return Err(ExportError::GroupSpansMachines { group: unit, machines });
            }
            ms.into_iter().next().cloned()
        };
        let inside = |r: &PortRef| unit_of[r.node.as_str()] == unit;
        let mut spec = UnitSpec { nodes: members, edges: Vec::new(), inputs: BTreeMap::new(), outputs: BTreeMap::new() };
        let mut inputs = BTreeMap::new();
        for e in &graph.edges {
            if inside(&e.from) && inside(&e.to) {
                spec.edges.push(e.clone());
                continue;
            }
            if inside(&e.from) {
                spec.outputs.insert(output_id(&e.from), e.from.clone());
            }
            if inside(&e.to) {
                let base = if grouped(&unit) { format!("{}-{}", e.to.node, e.to.port) } else { e.to.port.clone() };
                let fan_in = graph.edges.iter().filter(|o| o.to == e.to).count() > 1;
                let src_unit = &unit_of[e.from.node.as_str()];
                let src_output = output_id(&e.from);
                let id = if fan_in { format!("{base}-from-{src_unit}-{src_output}") } else { base };
                spec.inputs.insert(id.clone(), e.to.clone());
                inputs.insert(id, (format!("{src_unit}/{src_output}"), e.policy == EdgePolicy::Latest));
            }
        }
        nodes.push(DoraNode { id: unit, unit: spec, inputs, machine });
    }
    Ok(Dataflow {
        preset: name.into(),
        runner: opts.runner.clone(),
        runner_args: opts.runner_args.clone(),
        log: opts.log.clone(),
        workdir: opts.workdir.clone(),
        nodes,
    })
}

/// A YAML double-quoted scalar. JSON string syntax is a subset of it.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

impl Dataflow {
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "# dora 1.1 dataflow generated by `vela dora export` from preset '{}'.", self.preset);
        let _ = writeln!(y, "# Edit the preset and export again rather than editing this file.");
        y.push_str("nodes:\n");
        for n in &self.nodes {
            let _ = writeln!(y, "  - id: {}", q(&n.id));
            let _ = writeln!(y, "    path: {}", q(&self.runner.to_string_lossy()));
            if let Some(args) = &self.runner_args {
                let _ = writeln!(y, "    args: {}", q(args));
            }
            // dora expands `$VAR` in env values; JSON never needs a literal `$`
            // outside strings, and inside them `\u0024` means the same thing.
            let unit = serde_json::to_string(&n.unit).expect("unit specs serialise").replace('$', "\\u0024");
            y.push_str("    env:\n");
            let _ = writeln!(y, "      {UNIT_ENV}: {}", q(&unit));
            if let Some(log) = &self.log {
                let _ = writeln!(y, "      VELA_LOG: {}", q(log));
            }
            if let Some(dir) = &self.workdir {
                let _ = writeln!(y, "      {WORKDIR_ENV}: {}", q(&dir.to_string_lossy()));
            }
            if !n.inputs.is_empty() {
                y.push_str("    inputs:\n");
                for (id, (source, latest)) in &n.inputs {
                    let _ = writeln!(y, "      {}:", q(id));
                    let _ = writeln!(y, "        source: {}", q(source));
                    if *latest {
                        // Only the newest message matters (camera frames into a slow model).
                        y.push_str("        queue_size: 1\n        queue_policy: drop_oldest\n");
                    } else {
                        let _ = writeln!(y, "        queue_size: {QUEUE_SIZE}\n        queue_policy: backpressure");
                    }
                }
            }
            if !n.unit.outputs.is_empty() {
                y.push_str("    outputs:\n");
                for id in n.unit.outputs.keys() {
                    let _ = writeln!(y, "      - {}", q(id));
                }
            }
            if let Some(m) = &n.machine {
                let _ = writeln!(y, "    deploy:\n      machine: {}", q(m));
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_runtime::{EdgeSpec, NodeSpec};

    pub(crate) fn chain() -> GraphSpec {
        GraphSpec {
            nodes: vec![
                NodeSpec::new("counter", "Counter").param("count", 5).param("interval_ms", 1.0),
                NodeSpec::new("half", "Scale").param("factor", 0.5),
                NodeSpec::new("log", "Collector"),
                NodeSpec::new("pattern", "TestPattern"),
                NodeSpec::new("frames", "Collector"),
            ],
            edges: vec![
                EdgeSpec::new("counter.out", "half.in"),
                EdgeSpec::new("half.out", "log.in"),
                EdgeSpec::new("counter.out", "log.in"),
                EdgeSpec::new("pattern.image", "frames.in").latest(),
            ],
        }
    }

    fn opts() -> ExportOptions {
        ExportOptions { runner: "/opt/vela/bin/vela".into(), ..Default::default() }
    }

    #[test]
    fn every_node_becomes_a_dora_node_and_edges_become_inputs() {
        let df = export("t", &chain(), &Registry::with_builtins(), &opts()).unwrap();
        let ids: Vec<_> = df.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["counter", "half", "log", "pattern", "frames"]);
        let half = &df.nodes[1];
        assert_eq!(half.inputs["in"], ("counter/out".to_string(), false));
        assert_eq!(half.unit.outputs["out"], PortRef::new("half", "out"));
        // Two edges into log.in need two dora inputs.
        let log = &df.nodes[2];
        assert_eq!(log.inputs.len(), 2);
        assert_eq!(log.inputs["in-from-half-out"].0, "half/out");
        assert_eq!(log.inputs["in-from-counter-out"].0, "counter/out");
        assert!(log.unit.inputs.values().all(|p| *p == PortRef::new("log", "in")));
        assert_eq!(df.nodes[4].inputs["in"], ("pattern/image".to_string(), true));
        let yaml = df.to_yaml();
        assert!(yaml.contains("queue_size: 1\n        queue_policy: drop_oldest"), "{yaml}");
        assert!(yaml.contains("queue_policy: backpressure"), "{yaml}");
        assert!(!yaml.contains("deploy"), "no placement asked for: {yaml}");
    }

    #[test]
    fn machines_and_groups() {
        let mut o = opts();
        o.groups.insert("numbers".into(), vec!["counter".into(), "half".into()]);
        o.machines.insert("numbers".into(), "robot".into());
        o.machines.insert("log".into(), "gpu-server".into());
        let df = export("t", &chain(), &Registry::with_builtins(), &o).unwrap();
        let numbers = &df.nodes[0];
        assert_eq!(numbers.id, "numbers");
        assert_eq!(numbers.machine.as_deref(), Some("robot"));
        assert_eq!(numbers.unit.edges, vec![EdgeSpec::new("counter.out", "half.in")]);
        assert_eq!(numbers.unit.outputs.keys().collect::<Vec<_>>(), ["counter-out", "half-out"]);
        let log = &df.nodes[1];
        assert_eq!(log.machine.as_deref(), Some("gpu-server"));
        assert_eq!(log.inputs["in-from-numbers-half-out"].0, "numbers/half-out");
        assert!(df.to_yaml().contains("deploy:\n      machine: \"robot\""));
    }

    #[test]
    fn bad_placement_is_a_clear_error() {
        let reg = Registry::with_builtins();
        let mut o = opts();
        o.machines.insert("nope".into(), "a".into());
        let e = export("t", &chain(), &reg, &o).unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains("counter, half"), "{e}");

        let mut o = opts();
        o.groups.insert("g".into(), vec!["counter".into(), "half".into()]);
        o.machines.insert("counter".into(), "a".into());
        o.machines.insert("half".into(), "b".into());
        let e = export("t", &chain(), &reg, &o).unwrap_err().to_string();
        assert!(e.contains("group 'g' mixes machines (a, b)"), "{e}");

        let mut g = chain();
        g.nodes[1].type_name = "Scael".into();
        let e = export("t", &g, &reg, &opts()).unwrap_err().to_string();
        assert!(e.contains("node 'half'") && e.contains("did you mean 'Scale'"), "{e}");
    }

    #[test]
    fn env_json_survives_yaml_and_dollar_expansion() {
        let mut g = chain();
        g.nodes[2] = NodeSpec::new("log", "Collector");
        g.nodes[0] = g.nodes[0].clone().param("interval_ms", 2.5);
        let df = export("t", &g, &Registry::with_builtins(), &opts()).unwrap();
        let mut unit = df.nodes[0].unit.clone();
        unit.nodes[0].params.insert("note".into(), "costs $5 \"quoted\"\nnewline".into());
        let df = Dataflow { nodes: vec![DoraNode { unit: unit.clone(), ..df.nodes[0].clone() }], ..df };
        let yaml = df.to_yaml();
        assert!(!yaml.contains('$'), "{yaml}");
        let line = yaml.lines().find(|l| l.trim_start().starts_with(UNIT_ENV)).unwrap();
        let scalar: String = serde_json::from_str(line.split_once(": ").unwrap().1).unwrap();
        let back: UnitSpec = serde_json::from_str(&scalar).unwrap();
        assert_eq!(back, unit);
    }
}

#[cfg(all(test, feature = "node"))]
mod dora_schema {
    use super::*;

    /// The YAML is read by dora's own descriptor type (which denies unknown keys) and
    /// passes dora's static checks (wiring, timing), as `dora validate` does.
    #[test]
    fn yaml_parses_as_a_dora_descriptor() {
        let mut o = ExportOptions { runner: "/opt/vela/bin/vela".into(), ..Default::default() };
        o.groups.insert("numbers".into(), vec!["counter".into(), "half".into()]);
        o.machines.insert("frames".into(), "gpu".into());
        o.log = Some("info".into());
        let yaml = export("t", &tests::chain(), &Registry::with_builtins(), &o).unwrap().to_yaml();
        let d: dora_message::descriptor::Descriptor = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(d.nodes.len(), 4);
        dora_core::descriptor::validate::check_dataflow_static(&d).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"));
        let resolved = dora_core::descriptor::DescriptorExt::resolve_aliases_and_set_defaults(&d).unwrap();
        let frames = resolved.values().find(|n| n.id.to_string() == "frames").unwrap();
        assert_eq!(frames.deploy.as_ref().and_then(|d| d.machine.as_deref()), Some("gpu"));
    }
}
