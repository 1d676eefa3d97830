//! Preset files: a saved graph plus a name and description, as versioned JSON.
//!
//! Loading never panics on user files: syntax errors carry the file and line, keys
//! we do not know become warnings (a newer Vela may have written them), and graph
//! problems name the node they are about.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::{validate, EdgeSpec, GraphError, GraphSpec, NodeSpec};
use crate::registry::Registry;

/// The preset format version this build reads and writes.
pub const PRESET_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    /// Format version; always written first so other tools can sniff the file.
    pub vela_preset: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub edges: Vec<EdgeSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: preset format version {found} is not supported (this build reads version {PRESET_VERSION})")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid { path: PathBuf, errors: Vec<GraphError> },
    #[error("preset name {0:?} is invalid: use letters, digits, '_', '-' and '.', not starting with '.'")]
    BadName(String),
    #[error("no preset named '{name}' (looked in {}); available: {}", searched.display(), if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    NotFound { name: String, searched: PathBuf, available: Vec<String> },
}

impl Preset {
    pub fn new(name: &str, graph: GraphSpec) -> Self {
        Preset {
            vela_preset: PRESET_VERSION,
            name: name.into(),
            description: String::new(),
            nodes: graph.nodes,
            edges: graph.edges,
        }
    }

    pub fn graph(&self) -> GraphSpec {
        GraphSpec { nodes: self.nodes.clone(), edges: self.edges.clone() }
    }

    /// Parses preset JSON. `origin` names the file in messages. Returns warnings for
    /// keys that were ignored, each naming the node or edge it sits in.
    pub fn parse(text: &str, origin: &Path) -> Result<(Preset, Vec<String>), PresetError> {
        let parse_err = |e: serde_json::Error| PresetError::Parse {
            path: origin.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        };
        // Check the version before the structure, so an old or future file says so
        // instead of failing on some field deep inside.
        let raw: serde_json::Value = serde_json::from_str(text).map_err(parse_err)?;
        match raw.get("vela_preset").and_then(|v| v.as_u64()) {
            Some(v) if v == PRESET_VERSION as u64 => {}
            Some(v) => return Err(PresetError::Version { path: origin.into(), found: v as u32 }),
            None => {
                return Err(PresetError::Parse {
                    path: origin.into(),
                    line: 1,
                    column: 1,
                    message: "not a Vela preset: missing the \"vela_preset\": 1 version field".into(),
                })
            }
        }
        let mut ignored = Vec::new();
        let de = &mut serde_json::Deserializer::from_str(text);
        let preset: Preset = serde_ignored::deserialize(de, |path| ignored.push(path.to_string())).map_err(parse_err)?;
        let warnings = ignored
            .into_iter()
            .map(|p| format!("{}: {}: unknown key ignored", origin.display(), describe_path(&preset, &p)))
            .collect();
        Ok((preset, warnings))
    }

    pub fn load(path: &Path) -> Result<(Preset, Vec<String>), PresetError> {
        let text = fs::read_to_string(path).map_err(|source| PresetError::Io { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Checks the graph against the node types this build has.
    pub fn validate(&self, registry: &Registry, origin: &Path) -> Result<(), PresetError> {
        validate(&self.graph(), registry).map_err(|errors| PresetError::Invalid { path: origin.into(), errors })
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("presets serialise");
        s.push('\n');
        s
    }

    /// Writes through a temporary file and a rename, so a crash mid-write never leaves
    /// a truncated preset behind.
    pub fn save(&self, path: &Path) -> Result<(), PresetError> {
        let io = |source| PresetError::Io { path: path.into(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, self.to_json()).map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

/// Turns serde_ignored's `nodes.1.parms` into `node 'sink' (nodes[1]): key 'parms'`.
fn describe_path(preset: &Preset, path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        ["nodes", idx, rest @ ..] => {
            let name = idx.parse::<usize>().ok().and_then(|i| preset.nodes.get(i)).map(|n| n.name.as_str()).unwrap_or("?");
            format!("node '{name}' (nodes[{idx}]): key '{}'", rest.join("."))
        }
        ["edges", idx, rest @ ..] => {
            let e = idx.parse::<usize>().ok().and_then(|i| preset.edges.get(i)).map(|e| e.to_string()).unwrap_or_default();
            format!("edge {e} (edges[{idx}]): key '{}'", rest.join("."))
        }
        _ => format!("key '{path}'"),
    }
}

/// Whether `name` is safe to turn into a file name inside the preset folder.
pub fn valid_preset_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A folder of `NAME.json` presets.
#[derive(Debug, Clone)]
pub struct PresetStore {
    pub dir: PathBuf,
}

impl PresetStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PresetStore { dir: dir.into() }
    }

    pub fn path_of(&self, name: &str) -> Result<PathBuf, PresetError> {
        if !valid_preset_name(name) {
            return Err(PresetError::BadName(name.into()));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Names of the presets in the folder, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "json").then(|| p.file_stem()?.to_str().map(str::to_string))?
            })
            .filter(|n| valid_preset_name(n))
            .collect();
        names.sort();
        names
    }

    /// Accepts a preset name from this folder or a path to any preset file.
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf, PresetError> {
        let as_path = Path::new(name_or_path);
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        if name_or_path.contains('/') || name_or_path.ends_with(".json") {
            return Err(PresetError::Io {
                path: as_path.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let path = self.path_of(name_or_path)?;
        if path.is_file() {
            Ok(path)
        } else {
            Err(PresetError::NotFound { name: name_or_path.into(), searched: self.dir.clone(), available: self.list() })
        }
    }

    pub fn load(&self, name_or_path: &str) -> Result<(Preset, PathBuf, Vec<String>), PresetError> {
        let path = self.resolve(name_or_path)?;
        let (preset, warnings) = Preset::load(&path)?;
        Ok((preset, path, warnings))
    }

    pub fn save(&self, name: &str, preset: &Preset) -> Result<PathBuf, PresetError> {
        let path = self.path_of(name)?;
        preset.save(&path)?;
        Ok(path)
    }
}
