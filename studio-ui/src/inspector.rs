//! The right-hand panel: the selected node's parameters, status and figures, or the
//! selected edge, or a summary of the graph.

use leptos::prelude::*;
use serde_json::Value;
use vela_protocol::{ClientMsg, EdgeSpec, NodeStatus, ParamKind, ParamSpec};

use crate::canvas::delete_selection;
use crate::conn::{request, request_resync};
use crate::store::{use_store, Selection, Store};

#[component]
pub fn Inspector() -> impl IntoView {
    let store = use_store();
    let sel = Memo::new(move |_| store.selection.get());
    let body = move || match sel.get() {
        Selection::Node(name) => view! { <NodeInspector name=name/> }.into_any(),
        Selection::Edge(edge) => view! { <EdgeInspector edge=edge/> }.into_any(),
        Selection::None => view! { <GraphSummary/> }.into_any(),
    };
    view! { <aside class="inspector">{body}</aside> }
}

#[component]
fn GraphSummary() -> impl IntoView {
    let store = use_store();
    let counts = move || store.state.with(|s| (s.graph.nodes.len(), s.graph.edges.len()));
    let failed = move || {
        store.state.with(|s| s.status.values().filter(|st| matches!(st, NodeStatus::Failed { .. })).count())
    };
    view! {
        <div class="side-title">"Graph"</div>
        <div class="kv">
            <span>"Preset"</span>
            <span>{move || store.state.with(|s| s.preset.clone().unwrap_or_else(|| "unsaved".into()))}</span>
            <span>"Nodes"</span><span class="num">{move || counts().0}</span>
            <span>"Edges"</span><span class="num">{move || counts().1}</span>
            <span>"State"</span>
            <span>{move || if store.state.with(|s| s.running) { "running" } else { "stopped" }}</span>
            <span>"Failed"</span><span class="num">{failed}</span>
        </div>
        <div class="help">
            <div class="side-sub">"How to"</div>
            <ul>
                <li>"Drag a node type from the palette onto the canvas."</li>
                <li>"Drag from an output port (right) to an input port (left) to connect; port colours show data types."</li>
                <li>"Click a node or edge to select it; " <kbd>"Delete"</kbd> " removes it."</li>
                <li>"Drag the background to pan, use the wheel to zoom."</li>
            </ul>
        </div>
    }
}

#[component]
fn EdgeInspector(edge: EdgeSpec) -> impl IntoView {
    let store = use_store();
    let policy = match edge.policy {
        vela_protocol::EdgePolicy::Queue => "queue (every message, back-pressure)",
        vela_protocol::EdgePolicy::Latest => "latest (newest only, stale ones dropped)",
    };
    view! {
        <div class="side-title">"Edge"</div>
        <div class="kv">
            <span>"From"</span><span class="mono">{edge.from.to_string()}</span>
            <span>"To"</span><span class="mono">{edge.to.to_string()}</span>
            <span>"Policy"</span><span>{policy}</span>
        </div>
        <div class="actions">
            <button class="btn danger" on:click=move |_| delete_selection(store)>"Delete edge"</button>
        </div>
    }
}

#[component]
fn NodeInspector(name: String) -> impl IntoView {
    let store = use_store();
    let n = name.clone();
    let type_name = Memo::new(move |_| store.state.with(|s| s.graph.node(&n).map(|x| x.type_name.clone())));
    let desc = Memo::new(move |_| type_name.get().and_then(|t| store.descriptor(&t)));
    let n = name.clone();
    let status = Memo::new(move |_| store.state.with(|s| s.status.get(&n).cloned()));
    let n = name.clone();
    let stats = Memo::new(move |_| store.stats.with(|s| s.get(&n).cloned()));
    let running = Memo::new(move |_| store.state.with(|s| s.running));

    let status_view = move || {
        let (class, text, err) = match status.get() {
            Some(NodeStatus::Running) => ("pill ok", "running", None),
            Some(NodeStatus::Failed { error }) => ("pill bad", "failed", Some(error)),
            Some(NodeStatus::Stopped) => ("pill", "stopped", None),
            _ => ("pill", "idle", None),
        };
        view! {
            <span class=class>{text}</span>
            {err.map(|e| view! { <div class="error-box">{e}</div> })}
        }
    };

    let n = name.clone();
    let params = move || {
        let Some(d) = desc.get() else {
            return view! { <div class="muted">"Unknown node type: no parameters."</div> }.into_any();
        };
        if d.params.is_empty() {
            return view! { <div class="muted">"No parameters."</div> }.into_any();
        }
        d.params
            .into_iter()
            .map(|p| view! { <ParamRow node=n.clone() spec=p/> })
            .collect::<Vec<_>>()
            .into_any()
    };

    let stats_view = move || {
        stats.get().map(|s| {
            let v = view! {
                <div class="kv stats">
                    <span>"Rate"</span><span class="num">{format!("{:.1} /s", s.fps)}</span>
                    <span>"Latency"</span><span class="num">{format!("{:.2} ms (max {:.2})", s.latency_ms, s.max_latency_ms)}</span>
                    <span>"Received"</span><span class="num">{s.received}</span>
                    <span>"Processed"</span><span class="num">{s.processed}</span>
                    <span>"Sent"</span><span class="num">{s.sent}</span>
                    <span>"Queued"</span><span class="num">{s.queue_depth}</span>
                    <span>"Dropped"</span><span class="num">{s.dropped}</span>
                    <span>"Errors"</span><span class="num">{s.errors}</span>
                </div>
            };
            v.into_any()
        })
    };

    let n_restart = name.clone();
    let restart = move |_| {
        request(store, ClientMsg::RestartNode { name: n_restart.clone() }, format!("restart {n_restart}"));
    };
    let title = move || desc.get().map(|d| d.title).unwrap_or_default();
    let about = move || desc.get().map(|d| d.description).unwrap_or_default();
    let tn = move || type_name.get().unwrap_or_default();
    view! {
        <div class="side-title node-heading">
            <span>{title}</span>
            {status_view}
        </div>
        <div class="node-ident"><span class="mono">{name.clone()}</span>" · "<span class="muted">{tn}</span></div>
        <div class="about">{about}</div>
        <div class="side-sub">"Parameters"</div>
        <div class="params">{params}</div>
        <div class="side-sub">"Figures"</div>
        {move || stats_view().unwrap_or_else(|| view! { <div class="kv stats"><span class="muted">"No figures yet: start the graph."</span></div> }.into_any())}
        <div class="actions">
            <Show when=move || running.get()>
                <button class="btn" on:click=restart.clone()>"Restart node"</button>
            </Show>
            <button class="btn danger" on:click=move |_| delete_selection(store)>"Delete node"</button>
        </div>
    }
}

/// Sends one parameter change; a refusal comes back as a toast and the control reverts.
fn set_param(store: Store, node: &str, param: &str, value: Value) {
    let what = format!("set {node}.{param} = {value}");
    request_resync(store, ClientMsg::SetParam { node: node.into(), param: param.into(), value }, what);
}

#[component]
fn ParamRow(node: String, spec: ParamSpec) -> impl IntoView {
    let store = use_store();
    let (n, p, default) = (node.clone(), spec.name.clone(), spec.default.clone());
    // The server's current value; a refused edit bumps `revision` so controls re-read it.
    let value = Memo::new(move |_| {
        store.state.with(|s| s.graph.node(&n).and_then(|x| x.params.get(&p).cloned())).unwrap_or_else(|| default.clone())
    });
    let current = move || {
        store.revision.track();
        value.get()
    };
    let is_default = {
        let d = spec.default.clone();
        move || value.get() == d
    };
    let id = format!("param-{node}-{}", spec.name);
    let pname = spec.name.clone();

    let control = match spec.kind.clone() {
        ParamKind::Bool => {
            let (n, p) = (node.clone(), pname.clone());
            view! {
                <label class="switch">
                    <input
                        id=id.clone()
                        type="checkbox"
                        prop:checked=move || current().as_bool().unwrap_or(false)
                        on:change=move |ev| set_param(store, &n, &p, Value::Bool(event_target_checked(&ev)))
                    />
                    <span class="slider-track"></span>
                </label>
            }
            .into_any()
        }
        ParamKind::Choice { options } => {
            let (n, p) = (node.clone(), pname.clone());
            view! {
                <select
                    id=id.clone()
                    class="field"
                    prop:value=move || current().as_str().unwrap_or_default().to_string()
                    on:change=move |ev| set_param(store, &n, &p, Value::String(event_target_value(&ev)))
                >
                    {options.into_iter().map(|o| view! { <option value=o.clone()>{o.clone()}</option> }).collect::<Vec<_>>()}
                </select>
            }
            .into_any()
        }
        ParamKind::Color => {
            // A colour written as #rrggbb: a picker next to the text.
            let (n, p) = (node.clone(), pname.clone());
            let (n2, p2) = (node.clone(), pname.clone());
            view! {
                <div class="num-row">
                    <input
                        class="colour"
                        type="color"
                        prop:value=move || current().as_str().filter(|s| vela_protocol::is_hex_colour(s)).unwrap_or("#000000").to_string()
                        on:change=move |ev| set_param(store, &n2, &p2, Value::String(event_target_value(&ev)))
                    />
                    <input
                        id=id.clone()
                        class="field mono"
                        type="text"
                        prop:value=move || current().as_str().unwrap_or_default().to_string()
                        on:change=move |ev| set_param(store, &n, &p, Value::String(event_target_value(&ev)))
                        on:keydown=blur_on_enter
                    />
                </div>
            }
            .into_any()
        }
        ParamKind::Multiline => {
            // Prompts and templates get a text area; leaving it applies the change.
            let (n, p) = (node.clone(), pname.clone());
            view! {
                <textarea
                    id=id.clone()
                    class="field area"
                    rows="3"
                    prop:value=move || current().as_str().unwrap_or_default().to_string()
                    on:change=move |ev| set_param(store, &n, &p, Value::String(event_target_value(&ev)))
                ></textarea>
            }
            .into_any()
        }
        ParamKind::String | ParamKind::Path => {
            let (n, p) = (node.clone(), pname.clone());
            let placeholder = if matches!(spec.kind, ParamKind::Path) { "path on the server" } else { "" };
            view! {
                <input
                    id=id.clone()
                    class="field"
                    type="text"
                    placeholder=placeholder
                    prop:value=move || current().as_str().unwrap_or_default().to_string()
                    on:change=move |ev| set_param(store, &n, &p, Value::String(event_target_value(&ev)))
                    on:keydown=blur_on_enter
                />
            }
            .into_any()
        }
        ParamKind::Int { min, max } => {
            number_control(store, node.clone(), pname.clone(), id.clone(), true, min.map(|v| v as f64), max.map(|v| v as f64), current)
        }
        ParamKind::Float { min, max } => {
            number_control(store, node.clone(), pname.clone(), id.clone(), false, min, max, current)
        }
    };

    let startup = !spec.runtime;
    let kind = match &spec.kind {
        ParamKind::Bool => "bool".to_string(),
        ParamKind::Int { min, max } => range_text("int", min.map(|v| v.to_string()), max.map(|v| v.to_string())),
        ParamKind::Float { min, max } => range_text("number", min.map(|v| v.to_string()), max.map(|v| v.to_string())),
        ParamKind::String => "text".to_string(),
        ParamKind::Multiline => "multiline text".to_string(),
        ParamKind::Color => "colour".to_string(),
        ParamKind::Path => "path".to_string(),
        ParamKind::Choice { .. } => "choice".to_string(),
    };
    let help = spec.help.clone();
    let default_text = format!("default: {}", spec.default);
    view! {
        <div class="param" class:changed=move || !is_default() data-param=pname.clone()>
            <div class="param-head">
                <label for=id>{pname.clone()}</label>
                <span class="param-kind">{kind}</span>
                {startup.then(|| view! {
                    <span class="badge" title="Read when the node starts: changing it while the graph runs restarts this node.">"start-up"</span>
                })}
            </div>
            <div class="param-control" title=default_text>{control}</div>
            {(!help.is_empty()).then(|| view! { <div class="param-help">{help}</div> })}
        </div>
    }
}

fn range_text(kind: &str, min: Option<String>, max: Option<String>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{kind} {a}…{b}"),
        (Some(a), None) if a != i64::MIN.to_string() => format!("{kind} ≥ {a}"),
        (None, Some(b)) => format!("{kind} ≤ {b}"),
        _ => kind.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn number_control(
    store: Store,
    node: String,
    param: String,
    id: String,
    int: bool,
    min: Option<f64>,
    max: Option<f64>,
    current: impl Fn() -> Value + Copy + Send + Sync + 'static,
) -> AnyView {
    let parse = move |s: &str| -> Option<Value> {
        let v: f64 = s.trim().parse().ok()?;
        // Whole numbers go as integers (a float parameter accepts them too).
        Some(if v.fract() == 0.0 && v.abs() < 9.0e15 { Value::from(v as i64) } else { Value::from(v) })
    };
    let shown = move || number_text(&current());
    let step = if int { "1".to_string() } else { "any".to_string() };
    let (n1, p1) = (node.clone(), param.clone());
    let on_field = move |ev: web_sys::Event| {
        let text = event_target_value(&ev);
        match parse(&text) {
            Some(v) => set_param(store, &n1, &p1, v),
            None => {
                store.toast(vela_protocol::AlertLevel::Error, format!("{n1}.{p1}: {text:?} is not a number"));
                store.revision.update(|r| *r += 1);
            }
        }
    };
    let field = view! {
        <input id=id class="field num" type="number" step=step prop:value=shown on:change=on_field on:keydown=blur_on_enter />
    };
    match (min, max) {
        (Some(lo), Some(hi)) if hi > lo && hi - lo <= 1.0e6 => {
            let slider_step = if int { "1".to_string() } else { format!("{}", (hi - lo) / 200.0) };
            let (n2, p2) = (node, param);
            let on_slide = move |ev: web_sys::Event| {
                if let Some(v) = parse(&event_target_value(&ev)) {
                    set_param(store, &n2, &p2, v);
                }
            };
            view! {
                <div class="num-row">
                    <input
                        class="range"
                        type="range"
                        min=lo.to_string()
                        max=hi.to_string()
                        step=slider_step
                        prop:value=move || current().as_f64().unwrap_or(lo).to_string()
                        on:change=on_slide
                    />
                    {field}
                </div>
            }
            .into_any()
        }
        _ => field.into_any(),
    }
}

/// Numbers as people write them: `15`, not `15.0`.
fn number_text(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1.0e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => v.to_string(),
    }
}

/// Enter commits a text or number field (its change event fires on blur).
fn blur_on_enter(ev: web_sys::KeyboardEvent) {
    use wasm_bindgen::JsCast;
    if ev.key() == "Enter" {
        if let Some(el) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlElement>().ok()) {
            let _ = el.blur();
        }
    }
}
