//! Preset files: round trips, and what users get wrong.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use vela_runtime::*;

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_-]{0,11}"
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "[ -~]{0,16}".prop_map(Value::from),
    ]
}

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    (
        name_strategy(),
        name_strategy(),
        prop::collection::btree_map("[a-z_]{1,8}", value_strategy(), 0..4),
        prop::option::of((-5000.0f32..5000.0, -5000.0f32..5000.0)),
    )
        .prop_map(|(name, ty, params, pos)| NodeSpec {
            name,
            type_name: ty,
            params: params.into_iter().collect::<Map<String, Value>>(),
            position: pos.map(|(x, y)| [x, y]),
        })
}

fn preset_strategy() -> impl Strategy<Value = Preset> {
    (
        name_strategy(),
        "[ -~]{0,40}",
        prop::collection::vec(node_strategy(), 0..6),
        prop::collection::vec((name_strategy(), name_strategy(), name_strategy(), name_strategy(), any::<bool>()), 0..6),
    )
        .prop_map(|(name, description, nodes, edges)| {
            let mut p = Preset::new(&name, GraphSpec { nodes, edges: vec![] });
            p.description = description;
            p.edges = edges
                .into_iter()
                .map(|(a, b, c, d, latest)| EdgeSpec {
                    from: PortRef::new(&a, &b),
                    to: PortRef::new(&c, &d),
                    policy: if latest { EdgePolicy::Latest } else { EdgePolicy::Queue },
                })
                .collect();
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn presets_round_trip_through_json(preset in preset_strategy()) {
        let text = preset.to_json();
        let (back, warnings) = Preset::parse(&text, Path::new("mem.json")).unwrap();
        prop_assert!(warnings.is_empty(), "{:?}", warnings);
        prop_assert_eq!(back, preset);
    }

    #[test]
    fn presets_round_trip_through_files(preset in preset_strategy()) {
        let dir = tempdir();
        let store = PresetStore::new(&dir);
        store.save("p", &preset).unwrap();
        let (back, _, _) = store.load("p").unwrap();
        prop_assert_eq!(back, preset);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Garbage never panics the loader; it is an error with a location.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Preset::parse(&text, Path::new("junk.json"));
    }
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!("vela-preset-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let err = Preset::parse("{\n  \"vela_preset\": 1,\n  \"name\": \"x\",,\n}", Path::new("broken.json")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PresetError::Parse { line: 3, .. }), "{err:?}");
    assert!(msg.starts_with("broken.json:3:"), "{msg}");
}

#[test]
fn version_is_checked_first() {
    let err = Preset::parse(r#"{"name": "x", "nodes": []}"#, Path::new("a.json")).unwrap_err();
    assert!(err.to_string().contains("missing the \"vela_preset\""), "{err}");
    let err = Preset::parse(r#"{"vela_preset": 7, "name": "x", "nodes": {"weird": 1}}"#, Path::new("a.json")).unwrap_err();
    assert!(matches!(err, PresetError::Version { found: 7, .. }), "{err:?}");
}

#[test]
fn unknown_keys_are_warnings_naming_the_node() {
    let text = r#"{
      "vela_preset": 1, "name": "x", "colour": "blue",
      "nodes": [
        {"name": "c", "type": "Counter"},
        {"name": "sink", "type": "Collector", "parms": {"expect": 3}}
      ],
      "edges": [{"from": "c.out", "to": "sink.in", "polcy": "latest"}]
    }"#;
    let (preset, warnings) = Preset::parse(text, Path::new("w.json")).unwrap();
    assert_eq!(preset.nodes.len(), 2);
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("node 'sink'") && w.contains("parms")), "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("c.out -> sink.in") && w.contains("polcy")), "{warnings:#?}");
    assert!(warnings.iter().all(|w| w.starts_with("w.json")), "{warnings:#?}");
}

#[test]
fn unknown_node_types_and_bad_params_are_errors_with_path_and_node() {
    let text = r#"{"vela_preset": 1, "name": "x", "nodes": [
        {"name": "cam", "type": "Camera"},
        {"name": "c", "type": "Counter", "params": {"interval_ms": "fast"}}
    ]}"#;
    let (preset, _) = Preset::parse(text, Path::new("p.json")).unwrap();
    let err = preset.validate(&Registry::with_builtins(), Path::new("p.json")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("p.json:"), "{msg}");
    assert!(msg.contains("node 'cam': unknown node type 'Camera'"), "{msg}");
    assert!(msg.contains("node 'c': parameter 'interval_ms'"), "{msg}");
}

#[test]
fn bad_edge_endpoints_are_parse_errors() {
    let text = r#"{"vela_preset": 1, "name": "x", "edges": [{"from": "nodot", "to": "a.b"}]}"#;
    let err = Preset::parse(text, Path::new("e.json")).unwrap_err();
    assert!(err.to_string().contains("not of the form node.port"), "{err}");
}

#[test]
fn store_rejects_path_traversal_and_lists_presets() {
    let dir = tempdir();
    let store = PresetStore::new(&dir);
    for bad in ["../etc/passwd", "a/b", ".hidden", "", "x y"] {
        assert!(matches!(store.path_of(bad), Err(PresetError::BadName(_))), "{bad:?}");
    }
    store.save("beta", &Preset::new("beta", GraphSpec::default())).unwrap();
    store.save("alpha", &Preset::new("alpha", GraphSpec::default())).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a preset").unwrap();
    assert_eq!(store.list(), vec!["alpha", "beta"]);
    let err = store.load("gamma").unwrap_err();
    assert!(err.to_string().contains("available: alpha, beta"), "{err}");
    // Saving leaves no temporary files behind.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shipped_presets_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets");
    let store = PresetStore::new(&dir);
    let names = store.list();
    assert!(!names.is_empty());
    for name in names {
        let (preset, path, warnings) = store.load(&name).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        assert_eq!(preset.name, name, "preset name matches its file name");
        // Presets for node families not built into the runtime are checked by the binary's tests.
        if preset.nodes.iter().all(|n| Registry::with_builtins().get(&n.type_name).is_some()) {
            preset.validate(&Registry::with_builtins(), &path).unwrap();
        }
    }
}
