//! Media nodes: what turns frames and text into what a person watches.

mod text_overlay;

pub use text_overlay::{format_actions, Rgb, TextOverlay, DEFAULT_FONT};

use vela_runtime::Registry;

pub fn register(r: &mut Registry) {
    r.register(TextOverlay::descriptor(), |init| Ok(Box::new(TextOverlay::new(init)?)));
}
