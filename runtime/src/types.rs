//! Node type declarations live in the protocol crate so the browser UI shares them.

pub use vela_protocol::types::*;
