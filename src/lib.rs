//! The `vela` application: CLI commands and the studio server, as a library so the
//! end-to-end tests can run the server in-process.

pub mod bench;
pub mod datagen;
pub mod import;
pub mod presets;
pub mod registry;
pub mod run;
pub mod sim;
pub mod speech;
pub mod studio;
pub mod train;
pub mod vla;

/// CPU model and core count, so benchmark files say where they were measured.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores, {}", std::env::consts::ARCH)
}
