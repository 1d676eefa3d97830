//! Importing Agent Studio (NanoLLM) preset files.
//!
//! Their format keys plugins by name, stores every parameter flat next to structural
//! keys, and wires outputs by channel index. We map types and parameter names onto
//! ours, turn channel indices into our named ports, and report everything that did not
//! carry over in one list, instead of failing on the first surprise.

use serde::Serialize;
use serde_json::{Map, Value};
use vela_runtime::{EdgePolicy, EdgeSpec, GraphSpec, NodeSpec, PortRef, Preset, Registry};

/// Keys of a plugin entry that describe the graph, not parameters.
const STRUCTURAL: &[&str] = &["name", "type", "connections", "layout_grid", "layout_node", "init_kwargs"];

/// Their plugin type → ours.
fn map_type(t: &str) -> &str {
    match t {
        "NanoVLA" => "OpenVLA",
        "VideoOverlay" => "TextOverlay",
        "TextStream" => "Collector",
        other => other,
    }
}

/// What one of their parameters becomes: ours (name, value), deliberately dropped (with
/// the reason), or unknown.
enum ParamFate {
    Ours(String, Value),
    Dropped(&'static str),
    Unknown,
}

fn map_param(our_type: &str, key: &str, value: &Value) -> ParamFate {
    use ParamFate::*;
    match (our_type, key) {
        ("OpenVLA", "model") => Ours("model".into(), value.clone()),
        ("OpenVLA", "quantization") => Ours(
            "quantization".into(),
            Value::from(match value.as_str().unwrap_or("") {
                q if q.starts_with("q4f16") => "q4f16",
                q if q.starts_with("q8f16") => "q8f16",
                _ => "fp16",
            }),
        ),
        ("OpenVLA", "api") => Dropped("the inference backend is always candle"),
        ("OpenVLA", "max_context_len" | "chat_template" | "system_prompt" | "max_new_tokens" | "min_new_tokens"
            | "do_sample" | "temperature" | "top_p" | "repetition_penalty") => {
            Dropped("chat-LLM setting; OpenVLA always decodes 7 greedy action tokens")
        }
        ("MimicGen", "camera_width") => Ours("width".into(), value.clone()),
        ("MimicGen", "camera_height") => Ours("height".into(), value.clone()),
        ("MimicGen", "motion_select") => Ours("motion".into(), value.clone()),
        ("MimicGen", "robot" | "gripper") => Dropped("the simulator has the Panda arm and gripper only"),
        ("MimicGen", "repeat_actions") => Dropped("actions are applied once per step"),
        ("VideoOutput", "video_output" | "video_output_codec" | "video_output_bitrate") => {
            Dropped("video goes to the studio over WebRTC")
        }
        ("VADFilter", "vad_threshold") => Ours("threshold".into(), value.clone()),
        ("VADFilter", "vad_window") => Ours("window".into(), value.clone()),
        ("VADFilter", "audio_chunk") => {
            // Theirs: below 16 means seconds, otherwise samples at 16 kHz.
            let v = value.as_f64().unwrap_or(0.1);
            Ours("chunk".into(), Value::from(if v < 16.0 { v } else { v / 16000.0 }))
        }
        // tiny.en and base ship (scripts/setup-speech.sh): their `base`/`base.en` become base,
        // everything else (tiny, small, ...) the default tiny.en.
        ("WhisperASR", "model") => {
            let base = value.as_str().is_some_and(|m| m.trim().starts_with("base"));
            Ours("model".into(), Value::from(if base { "base" } else { "tiny.en" }))
        }
        (_, "use_cache") => Dropped("no model cache setting"),
        (_, "language_code") => Dropped("English only"),
        (_, "text_color" | "partial_color" | "delta_color") => Dropped("the studio log styles text itself"),
        ("UserPrompt", "interactive" | "prefix") => Dropped("not supported"),
        _ => Unknown,
    }
}

/// What an import did not carry over, one line each, so a user can fix the preset.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub unknown_types: Vec<String>,
    pub dropped_params: Vec<String>,
    pub unknown_params: Vec<String>,
    pub skipped_connections: Vec<String>,
}

impl ImportReport {
    pub fn is_clean(&self) -> bool {
        self.unknown_types.is_empty() && self.unknown_params.is_empty() && self.skipped_connections.is_empty()
    }

    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        v.extend(self.unknown_types.iter().map(|s| format!("unknown node type: {s}")));
        v.extend(self.unknown_params.iter().map(|s| format!("unknown parameter dropped: {s}")));
        v.extend(self.skipped_connections.iter().map(|s| format!("connection skipped: {s}")));
        v.extend(self.dropped_params.iter().map(|s| format!("not applicable here: {s}")));
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an Agent Studio preset: {0}")]
    Shape(String),
}

/// Converts an Agent Studio preset (JSON text) into a Vela preset named `name`.
pub fn import_agent_studio(text: &str, name: &str, registry: &Registry) -> Result<(Preset, ImportReport), ImportError> {
    let doc: Value = serde_json::from_str(text)?;
    let plugins = doc
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| ImportError::Shape("no \"plugins\" list".into()))?;
    let mut report = ImportReport::default();
    let mut graph = GraphSpec::default();
    // Their name → (our node name, our type) for nodes that made it.
    let mut kept: Vec<(String, String, String)> = Vec::new();

    for (i, p) in plugins.iter().enumerate() {
        let obj = p.as_object().ok_or_else(|| ImportError::Shape(format!("plugins[{i}] is not an object")))?;
        let their_type = obj.get("type").and_then(Value::as_str).ok_or_else(|| ImportError::Shape(format!("plugins[{i}] has no type")))?;
        let their_name = obj.get("name").and_then(Value::as_str).unwrap_or(their_type);
        let our_type = map_type(their_type);
        let Some(entry) = registry.get(our_type) else {
            report.unknown_types.push(format!("{their_name} ({their_type})"));
            continue;
        };
        let our_name = sanitize(their_name, &kept);
        let mut params = Map::new();
        let mut flat: Vec<(&String, &Value)> = obj.iter().filter(|(k, _)| !STRUCTURAL.contains(&k.as_str())).collect();
        if let Some(init) = obj.get("init_kwargs").and_then(Value::as_object) {
            flat.extend(init.iter().filter(|(k, _)| k.as_str() != "name"));
        }
        for (key, value) in flat {
            if value.is_null() {
                continue;
            }
            let fate = match map_param(our_type, key, value) {
                ParamFate::Unknown if entry.descriptor.param_spec(key).is_some() => ParamFate::Ours(key.clone(), value.clone()),
                f => f,
            };
            match fate {
                ParamFate::Ours(k, v) => match entry.descriptor.param_spec(&k) {
                    Some(spec) => match spec.check(&v) {
                        Ok(v) => {
                            params.insert(k, v);
                        }
                        Err(e) => report.unknown_params.push(format!("{their_name}.{key} = {value}: {e}")),
                    },
                    None => report.unknown_params.push(format!("{their_name}.{key} = {value}")),
                },
                ParamFate::Dropped(why) => report.dropped_params.push(format!("{their_name}.{key} ({why})")),
                ParamFate::Unknown => report.unknown_params.push(format!("{their_name}.{key} = {value}")),
            }
        }
        let position = obj.get("layout_node").and_then(|l| Some([l.get("x")?.as_f64()? as f32, l.get("y")?.as_f64()? as f32]));
        graph.nodes.push(NodeSpec { name: our_name.clone(), type_name: our_type.to_string(), params, position });
        kept.push((their_name.to_string(), our_name, our_type.to_string()));
    }

    for p in plugins {
        let from_their = p.get("name").and_then(Value::as_str).or_else(|| p.get("type").and_then(Value::as_str)).unwrap_or("?");
        let conns = p.get("connections").and_then(Value::as_array).cloned().unwrap_or_default();
        for c in conns {
            let to_their = c.get("to").and_then(Value::as_str).unwrap_or("?");
            let out_idx = c.get("output").and_then(Value::as_u64).unwrap_or(0) as usize;
            let in_idx = c.get("input").and_then(Value::as_u64).unwrap_or(0) as usize;
            let what = format!("{from_their}[{out_idx}] -> {to_their}[{in_idx}]");
            let (Some(from), Some(to)) = (kept.iter().find(|k| k.0 == from_their), kept.iter().find(|k| k.0 == to_their)) else {
                report.skipped_connections.push(format!("{what}: node not imported"));
                continue;
            };
            let from_desc = &registry.get(&from.2).expect("kept types are registered").descriptor;
            let to_desc = &registry.get(&to.2).expect("kept types are registered").descriptor;
            let (Some(out_port), Some(in_port)) = (from_desc.outputs.get(out_idx), to_desc.inputs.get(in_idx)) else {
                report.skipped_connections.push(format!("{what}: no such port on {} / {}", from.2, to.2));
                continue;
            };
            if !in_port.accepts(out_port.types[0]) {
                report.skipped_connections.push(format!(
                    "{what}: {}.{} carries {} but {}.{} accepts {}",
                    from.1,
                    out_port.name,
                    out_port.types[0],
                    to.1,
                    in_port.name,
                    in_port.types_string()
                ));
                continue;
            }
            // Their VLA drops stale inputs; images into models are latest-only here too.
            let policy = if to.2 == "OpenVLA" && to_desc.param_spec("drop_inputs").is_none() {
                EdgePolicy::Latest
            } else {
                EdgePolicy::Queue
            };
            graph.edges.push(EdgeSpec { from: PortRef::new(&from.1, &out_port.name), to: PortRef::new(&to.1, &in_port.name), policy });
        }
    }
    // Their VAD marks the end of speech in-band (None on the audio channel); ours sends it on
    // `end`. Wire it wherever their VAD fed a recogniser, or transcripts would never finish.
    let vad_to_asr: Vec<EdgeSpec> = graph
        .edges
        .iter()
        .filter(|e| {
            let ty = |n: &str| graph.nodes.iter().find(|x| x.name == n).map(|x| x.type_name.clone()).unwrap_or_default();
            e.from.port == "audio" && ty(&e.from.node) == "VADFilter" && ty(&e.to.node) == "WhisperASR"
        })
        .cloned()
        .collect();
    for e in vad_to_asr {
        let end = EdgeSpec { from: PortRef::new(&e.from.node, "end"), to: e.to.clone(), policy: EdgePolicy::Queue };
        if !graph.edges.iter().any(|x| x.from == end.from && x.to == end.to) {
            graph.edges.push(end);
        }
    }
    let mut preset = Preset::new(name, graph);
    preset.description = format!(
        "Imported from an Agent Studio preset (NanoLLM {})",
        doc.get("version").and_then(Value::as_str).unwrap_or("unknown version")
    );
    Ok((preset, report))
}

/// Their names may contain spaces or dots; ours may not. Keeps names unique.
fn sanitize(name: &str, taken: &[(String, String, String)]) -> String {
    let mut base: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if base.is_empty() {
        base = "node".into();
    }
    base.truncate(56);
    let mut candidate = base.clone();
    let mut n = 1;
    while taken.iter().any(|t| t.1 == candidate) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    candidate
}
