//! The exported YAML passes `dora validate` (dora's own CLI: descriptor, wiring, types).
//! Skipped with a message when the dora CLI is not installed (scripts/setup-dora.sh).

use vela_dora::{export, launch, ExportOptions};
use vela_runtime::{Preset, Registry};

#[test]
fn shipped_counter_preset_passes_dora_validate() {
    let Ok(cli) = launch::find_cli() else {
        eprintln!("SKIPPED: no dora CLI (scripts/setup-dora.sh)");
        return;
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets/counter-demo.json");
    let (preset, _) = Preset::load(&path).unwrap();
    let mut opts = ExportOptions { runner: "/opt/vela/bin/vela-dora-node".into(), ..Default::default() };
    opts.groups.insert("numbers".into(), vec!["counter".into(), "half".into()]);
    opts.machines.insert("frames".into(), "gpu".into());
    let yaml = export(&preset.name, &preset.graph(), &Registry::with_builtins(), &opts).unwrap().to_yaml();
    let file = std::env::temp_dir().join(format!("vela-validate-{}.yml", std::process::id()));
    std::fs::write(&file, &yaml).unwrap();
    let out = std::process::Command::new(cli).arg("validate").arg(&file).env("RUST_BACKTRACE", "0").output().unwrap();
    let _ = std::fs::remove_file(&file);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}\n{yaml}");
    assert!(text.contains("wiring OK"), "{text}");
}
