//! The `vela` application: CLI commands and the studio server, as a library so the
//! end-to-end tests can run the server in-process.

pub mod bench;
pub mod dagger;
pub mod datagen;
pub mod dora;
pub mod dataset;
pub mod import;
pub mod presets;
pub mod registry;
pub mod run;
pub mod sim;
pub mod speech;
pub mod studio;
pub mod train;
pub mod vla;

