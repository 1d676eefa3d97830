//! Vela's wire types, shared by the engine, the studio server and the browser UI.
//!
//! Kept free of anything that does not build for wasm (no tokio, no I/O), so the
//! Leptos UI deserialises exactly the structs the server serialises.

pub mod bench;
pub mod graph;
pub mod messages;
pub mod types;

pub use bench::*;
pub use graph::*;
pub use messages::*;
pub use types::*;
