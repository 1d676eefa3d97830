//! The page layout and start-up.

use leptos::prelude::*;

use crate::canvas::{install_window_handlers, Canvas};
use crate::inspector::Inspector;
use crate::palette::Palette;
use crate::panels::{Dock, Toasts};
use crate::store::{Drag, Store};
use crate::toolbar::Toolbar;

#[component]
pub fn App() -> impl IntoView {
    let store = Store::new();
    provide_context(store);
    install_window_handlers(store);
    crate::conn::connect(store);

    // The node type being dragged out of the palette follows the pointer.
    let ghost = move || {
        store.drag.with(|d| match d {
            Some(Drag::Palette { type_name, cx, cy, moved: true }) => Some((type_name.clone(), *cx, *cy)),
            _ => None,
        })
    };
    view! {
        <div
            class="app"
            class:dragging=move || store.drag.with(|d| d.is_some())
            class:offline=move || store.conn.with(|c| *c != crate::store::Conn::Open)
        >
            <Toolbar/>
            <main class="main">
                <Palette/>
                <div class="center">
                    <Canvas/>
                    <Dock/>
                </div>
                <Inspector/>
            </main>
            <Toasts/>
            {move || ghost().map(|(t, x, y)| view! {
                <div class="drag-ghost" style=format!("left:{}px;top:{}px", x + 12.0, y + 8.0)>{format!("+ {t}")}</div>
            })}
        </div>
    }
}
