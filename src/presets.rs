//! Where named presets live.

use std::path::{Path, PathBuf};

use vela_runtime::PresetStore;

/// Explicit flag, then `$VELA_PRESETS`, then `./presets`, then the presets shipped in
/// the source tree this binary was built from.
pub fn store(flag: Option<&Path>) -> PresetStore {
    if let Some(dir) = flag {
        return PresetStore::new(dir);
    }
    if let Some(dir) = std::env::var_os("VELA_PRESETS") {
        return PresetStore::new(PathBuf::from(dir));
    }
    let local = Path::new("presets");
    if local.is_dir() {
        return PresetStore::new(local);
    }
    PresetStore::new(concat!(env!("CARGO_MANIFEST_DIR"), "/presets"))
}
