//! Vela studio in the browser: a Leptos app (client-side rendered, compiled to wasm) that
//! edits and runs the server's graph over the typed WebSocket protocol of `vela-protocol`.

mod app;
mod bench;
mod canvas;
mod conn;
mod inspector;
mod media;
mod palette;
mod panels;
mod store;
mod toolbar;

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    if let Some(boot) = leptos::prelude::document().get_element_by_id("boot") {
        boot.remove();
    }
    leptos::mount::mount_to_body(app::App);
}
