//! The top bar: run controls, the presets menu, reset, and the connection state.

use leptos::prelude::*;
use vela_protocol::ClientMsg;

use crate::conn::request;
use crate::store::{use_store, Conn, Selection, Store};

fn save_as(store: Store, name: &str, description: &str) {
    let name = name.trim().trim_end_matches(".json").to_string();
    if name.is_empty() {
        return;
    }
    let description = Some(description.trim().to_string()).filter(|d| !d.is_empty());
    request(store, ClientMsg::SavePreset { name: name.clone(), description }, format!("save preset {name}"));
}

/// A preset name from an uploaded file's name: what the server accepts, the rest dashed.
fn preset_name_from_file(file: &str) -> String {
    let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
    let name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() { "imported".into() } else { name }
}

/// Reads the chosen Agent Studio preset file and asks the server to convert and save it;
/// the server's report (what did not carry over) comes back as an alert.
fn import_file(store: Store, input: &web_sys::HtmlInputElement) {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
    let name = preset_name_from_file(&file.name());
    let Ok(reader) = web_sys::FileReader::new() else { return };
    let r = reader.clone();
    let onload = Closure::once_into_js(move || {
        match r.result().ok().and_then(|v| v.as_string()) {
            Some(content) => request(
                store,
                ClientMsg::ImportPreset { name: name.clone(), content, replace: false },
                format!("import {name}"),
            ),
            None => store.toast(vela_protocol::AlertLevel::Error, format!("import {name}: the file is not text")),
        }
    });
    reader.set_onload(Some(onload.unchecked_ref()));
    if reader.read_as_text(&file).is_err() {
        store.toast(vela_protocol::AlertLevel::Error, "import: cannot read the file");
    }
    // Choosing the same file again must fire `change` again.
    input.set_value("");
}

#[component]
pub fn Toolbar() -> impl IntoView {
    let store = use_store();
    let running = Memo::new(move |_| store.state.with(|s| s.running));
    let preset = Memo::new(move |_| store.state.with(|s| s.preset.clone()));
    let menu_open = RwSignal::new(false);
    let save_as_name = RwSignal::new(String::new());
    let save_as_desc = RwSignal::new(String::new());
    let confirm_reset = RwSignal::new(false);

    let start_stop = move |_| {
        if running.get_untracked() {
            request(store, ClientMsg::Stop, "stop");
        } else {
            request(store, ClientMsg::Start, "start");
        }
    };
    let save = move |_| match preset.get_untracked() {
        Some(name) => {
            request(store, ClientMsg::SavePreset { name: name.clone(), description: None }, format!("save preset {name}"));
            menu_open.set(false);
        }
        None => {
            menu_open.set(true);
            focus("save-as-name");
        }
    };
    let reset = move |_| {
        if confirm_reset.get_untracked() {
            confirm_reset.set(false);
            store.selection.set(Selection::None);
            request(store, ClientMsg::Reset, "reset");
        } else {
            confirm_reset.set(true);
            set_timeout(move || confirm_reset.set(false), std::time::Duration::from_secs(3));
        }
    };

    let conn_view = move || match store.conn.get() {
        Conn::Open => ("conn ok", "connected".to_string()),
        Conn::Connecting => ("conn wait", "connecting…".to_string()),
        Conn::Waiting { secs, attempt } => ("conn bad", format!("offline · retry {attempt} in {secs:.1} s")),
    };

    let preset_items = move || {
        let current = preset.get();
        store
            .presets
            .get()
            .into_iter()
            .map(|name| {
                let is_current = current.as_deref() == Some(name.as_str());
                let n = name.clone();
                let attr = name.clone();
                let load = move |_| {
                    menu_open.set(false);
                    store.selection.set(Selection::None);
                    store.fit_pending.set_value(true);
                    request(store, ClientMsg::LoadPreset { name: n.clone() }, format!("load preset {n}"));
                };
                view! {
                    <button class="menu-item" class:current=is_current data-preset=attr on:click=load>
                        <span class="menu-icon">{if is_current { "●" } else { "" }}</span>
                        {name}
                    </button>
                }
            })
            .collect::<Vec<_>>()
    };

    view! {
        <header class="toolbar">
            <div class="brand">
                <svg class="logo" viewBox="0 0 24 24" width="22" height="22">
                    <path d="M3 5 L12 20 L21 5" fill="none" stroke="currentColor" stroke-width="2.6" stroke-linejoin="round" stroke-linecap="round"></path>
                    <circle cx="12" cy="20" r="2.2" fill="currentColor"></circle>
                </svg>
                <span class="brand-name">"Vela"</span>
                <span class="brand-sub">"studio"</span>
            </div>
            <div class="tb-sep"></div>
            <button
                id="run-toggle"
                class="btn run"
                class:stop=move || running.get()
                disabled=move || store.conn.get() != Conn::Open
                on:click=start_stop
            >
                {move || if running.get() { "■  Stop" } else { "▶  Start" }}
            </button>
            <div class="preset-box">
                <button id="preset-menu" class="btn ghost" on:click=move |_| menu_open.update(|o| *o = !*o)>
                    <span class="muted">"Preset "</span>
                    <span class="preset-name">{move || preset.get().unwrap_or_else(|| "unsaved graph".into())}</span>
                    <span class="caret">"▾"</span>
                </button>
                <Show when=move || menu_open.get()>
                    <div class="menu-backdrop" on:click=move |_| menu_open.set(false)></div>
                    <div class="menu">
                        <div class="menu-label">"Load"</div>
                        {preset_items}
                        <Show when=move || store.presets.with(|p| p.is_empty())>
                            <div class="menu-empty">"No presets saved yet."</div>
                        </Show>
                        <div class="menu-sep"></div>
                        <div class="menu-label">"Save as"</div>
                        <form class="menu-form" on:submit=move |ev| {
                            ev.prevent_default();
                            save_as(store, &save_as_name.get_untracked(), &save_as_desc.get_untracked());
                            save_as_name.set(String::new());
                            save_as_desc.set(String::new());
                            menu_open.set(false);
                        }>
                            <input
                                id="save-as-name"
                                class="field"
                                placeholder="new preset name"
                                prop:value=move || save_as_name.get()
                                on:input=move |ev| save_as_name.set(event_target_value(&ev))
                            />
                            <input
                                id="save-as-desc"
                                class="field"
                                placeholder="description (optional)"
                                prop:value=move || save_as_desc.get()
                                on:input=move |ev| save_as_desc.set(event_target_value(&ev))
                            />
                            <button class="btn primary" type="submit">"Save"</button>
                        </form>
                        <div class="menu-sep"></div>
                        <label class="menu-item" for="import-file" title="Convert a NanoLLM Agent Studio preset (.json) and save it as a Vela preset">
                            <span class="menu-icon">"⇪"</span>
                            "Import Agent Studio preset…"
                        </label>
                        <input
                            id="import-file"
                            type="file"
                            accept=".json,application/json"
                            class="hidden-file"
                            on:change=move |ev| {
                                use wasm_bindgen::JsCast;
                                if let Some(input) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) {
                                    import_file(store, &input);
                                }
                                menu_open.set(false);
                            }
                        />
                    </div>
                </Show>
            </div>
            <button id="save" class="btn ghost" title="Save over the current preset" on:click=save>"Save"</button>
            <button id="reset" class="btn ghost" class:danger=move || confirm_reset.get() title="Stop and clear the graph" on:click=reset>
                {move || if confirm_reset.get() { "Click again to reset" } else { "Reset" }}
            </button>
            <div class="tb-fill"></div>
            <div class="tb-info">
                {move || {
                    let (n, e) = store.state.with(|s| (s.graph.nodes.len(), s.graph.edges.len()));
                    format!("{n} nodes · {e} edges")
                }}
            </div>
            <div id="conn" class=move || conn_view().0 title=move || format!("server {}", store.server_version.get())>
                <span class="conn-dot"></span>
                {move || conn_view().1}
            </div>
        </header>
    }
}

fn focus(id: &'static str) {
    set_timeout(
        move || {
            use wasm_bindgen::JsCast;
            if let Some(el) = document().get_element_by_id(id).and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
                let _ = el.focus();
            }
        },
        std::time::Duration::from_millis(30),
    );
}
