//! The graph canvas: SVG nodes and edges, pan and zoom, and every pointer gesture.

use leptos::prelude::*;
use vela_protocol::{AlertLevel, ClientMsg, DataType, EdgeSpec, NodeSpec, NodeStatus, PortRef, PortSpec};
use wasm_bindgen::JsCast;

use crate::conn::{request, request_resync};
use crate::store::{
    category_hue, clip, node_height, over_canvas, use_store, Drag, Selection, Store, FOOT_H, HEAD_H, NODE_W, ROW_H,
};

fn edge_path((x1, y1): (f64, f64), (x2, y2): (f64, f64)) -> String {
    let dx = ((x2 - x1).abs() * 0.5).max(40.0);
    format!("M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}", x1 + dx, x2 - dx)
}

/// The element under a client point, or the nearest ancestor with `attr`.
fn attr_at(cx: f64, cy: f64, attr: &str) -> Option<String> {
    let el = document().element_from_point(cx as f32, cy as f32)?;
    let hit = el.closest(&format!("[{attr}]")).ok()??;
    hit.get_attribute(attr)
}

/// Checks types on the client before asking the server (which checks again).
fn try_connect(store: Store, from_node: &str, from_port: &str, ty: DataType, to_node: &str, to_port: Option<&str>) {
    let from = PortRef::new(from_node, from_port);
    if to_node == from_node {
        store.toast(AlertLevel::Warning, "A node cannot feed itself directly.");
        return;
    }
    let Some(spec) = store.node_spec(to_node) else { return };
    let Some(desc) = store.descriptor(&spec.type_name) else {
        store.toast(AlertLevel::Error, format!("{to_node} has an unknown type {}", spec.type_name));
        return;
    };
    let port: Option<&PortSpec> = match to_port {
        Some(p) => desc.input_port(p),
        // Dropped on the node itself: take its first input that fits.
        None => desc.inputs.iter().find(|p| p.accepts(ty)).or(desc.inputs.first()),
    };
    let Some(port) = port else {
        store.toast(AlertLevel::Warning, format!("{to_node} has no inputs."));
        return;
    };
    if !port.accepts(ty) {
        let msg = format!(
            "Cannot connect {from} → {to_node}.{}: it takes {}, but {from} gives {ty}.",
            port.name,
            port.types_string()
        );
        store.toast(AlertLevel::Error, msg);
        return;
    }
    let to = PortRef::new(to_node, &port.name);
    if store.state.with_untracked(|s| s.graph.edges.iter().any(|e| e.from == from && e.to == to)) {
        store.toast(AlertLevel::Info, format!("{from} → {to} is already connected."));
        return;
    }
    let what = format!("connect {from} → {to}");
    let edge = EdgeSpec { from, to, policy: Default::default() };
    request(store, ClientMsg::Connect { edge }, what);
}

/// Adds a node of this type with a fresh name at a world position, and selects it.
pub fn add_node(store: Store, type_name: &str, x: f64, y: f64) {
    let name = store.unique_name(type_name);
    let mut node = NodeSpec::new(&name, type_name);
    node.position = Some([x.round() as f32, y.round() as f32]);
    request(store, ClientMsg::AddNode { node }, format!("add {name} ({type_name})"));
    store.selection.set(Selection::Node(name));
}

/// Deletes the selected node or edge.
pub fn delete_selection(store: Store) {
    match store.selection.get_untracked() {
        Selection::None => {}
        Selection::Node(name) => {
            request(store, ClientMsg::RemoveNode { name: name.clone() }, format!("remove {name}"));
            store.selection.set(Selection::None);
        }
        Selection::Edge(e) => {
            let what = format!("disconnect {} → {}", e.from, e.to);
            request(store, ClientMsg::Disconnect { from: e.from, to: e.to }, what);
            store.selection.set(Selection::None);
        }
    }
}

/// Pointer and key handling for the whole window: drags may leave the canvas.
pub fn install_window_handlers(store: Store) {
    let _ = window_event_listener(leptos::ev::pointermove, move |ev| {
        let (cx, cy) = (ev.client_x() as f64, ev.client_y() as f64);
        if store.drag.with_untracked(|d| d.is_none()) {
            return;
        }
        let (wx, wy) = store.world_from_client(cx, cy);
        store.drag.update(|d| match d {
            Some(Drag::Pan { sx, sy, vx, vy, moved }) => {
                if (cx - *sx).abs() + (cy - *sy).abs() > 3.0 {
                    *moved = true;
                }
                let (nx, ny) = (*vx + cx - *sx, *vy + cy - *sy);
                store.view.update(|v| {
                    v.x = nx;
                    v.y = ny;
                });
            }
            Some(Drag::Node { dx, dy, x, y, moved, .. }) => {
                let (nx, ny) = (wx - *dx, wy - *dy);
                if (nx - *x).abs() + (ny - *y).abs() > 0.5 {
                    *moved = true;
                }
                *x = nx;
                *y = ny;
            }
            Some(Drag::Wire { x, y, .. }) => {
                *x = wx;
                *y = wy;
            }
            Some(Drag::Palette { cx: px, cy: py, moved, .. }) => {
                if (cx - *px).abs() + (cy - *py).abs() > 3.0 {
                    *moved = true;
                }
                *px = cx;
                *py = cy;
            }
            None => {}
        });
    });

    let _ = window_event_listener(leptos::ev::pointerup, move |ev| {
        let (cx, cy) = (ev.client_x() as f64, ev.client_y() as f64);
        let Some(drag) = store.drag.get_untracked() else { return };
        store.drag.set(None);
        match drag {
            Drag::Pan { moved, .. } => {
                if !moved {
                    store.selection.set(Selection::None);
                }
            }
            Drag::Node { name, x, y, moved, .. } => {
                if moved {
                    let position = [x.round() as f32, y.round() as f32];
                    // Show the new place at once; the server's state confirms it.
                    store.state.update(|s| {
                        if let Some(n) = s.graph.nodes.iter_mut().find(|n| n.name == name) {
                            n.position = Some(position);
                        }
                    });
                    request_resync(store, ClientMsg::MoveNode { node: name.clone(), position }, format!("move {name}"));
                }
            }
            Drag::Wire { from_node, from_port, ty, .. } => {
                if let Some(target) = attr_at(cx, cy, "data-in") {
                    if let Ok(to) = target.parse::<PortRef>() {
                        try_connect(store, &from_node, &from_port, ty, &to.node, Some(&to.port));
                    }
                } else if let Some(node) = attr_at(cx, cy, "data-node") {
                    try_connect(store, &from_node, &from_port, ty, &node, None);
                }
            }
            Drag::Palette { type_name, moved, .. } => {
                if moved && over_canvas(cx, cy) {
                    let (wx, wy) = store.world_from_client(cx, cy);
                    add_node(store, &type_name, wx - NODE_W / 2.0, wy - HEAD_H / 2.0);
                } else if !moved {
                    // A click: put it in the middle of the view, clear of other nodes.
                    let (x, y) = free_spot(store);
                    add_node(store, &type_name, x, y);
                }
            }
        }
    });

    // A drag the browser took away (touch scroll, lost pointer) ends without effect.
    let _ = window_event_listener(leptos::ev::pointercancel, move |_| store.drag.set(None));
    let _ = window_event_listener(leptos::ev::blur, move |_| store.drag.set(None));

    let _ = window_event_listener(leptos::ev::keydown, move |ev| {
        let in_field = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .map(|el| matches!(el.tag_name().to_ascii_lowercase().as_str(), "input" | "textarea" | "select"))
            .unwrap_or(false);
        let save_key = (ev.ctrl_key() || ev.meta_key()) && ev.key() == "s";
        if in_field && !save_key {
            return;
        }
        if save_key {
            ev.prevent_default();
            match store.state.with_untracked(|s| s.preset.clone()) {
                Some(name) => request(
                    store,
                    ClientMsg::SavePreset { name: name.clone(), description: None },
                    format!("save preset {name}"),
                ),
                None => store.toast(AlertLevel::Info, "Not saved yet: use Preset ▾ → Save as."),
            }
            return;
        }
        match ev.key().as_str() {
            "Delete" | "Backspace" => {
                ev.prevent_default();
                delete_selection(store);
            }
            "Escape" => {
                store.drag.set(None);
                store.selection.set(Selection::None);
            }
            _ => {}
        }
    });
}

/// The middle of the visible canvas, nudged down and right until no node is there.
fn free_spot(store: Store) -> (f64, f64) {
    let (w, h) = document()
        .get_element_by_id("canvas")
        .map(|e| {
            let r = e.get_bounding_client_rect();
            (r.width(), r.height())
        })
        .unwrap_or((800.0, 600.0));
    let v = store.view.get_untracked();
    let (mut x, mut y) = ((w / 2.0 - v.x) / v.k - NODE_W / 2.0, (h / 2.0 - v.y) / v.k - 50.0);
    let taken: Vec<(f64, f64)> = store
        .state
        .with_untracked(|s| s.graph.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
        .iter()
        .filter_map(|n| store.node_pos(n))
        .collect();
    for _ in 0..20 {
        if !taken.iter().any(|(nx, ny)| (nx - x).abs() < NODE_W * 0.8 && (ny - y).abs() < 70.0) {
            break;
        }
        x += 40.0;
        y += 40.0;
    }
    (x, y)
}

/// Frames every node in the visible canvas.
pub fn fit_view(store: Store) {
    let Some(el) = document().get_element_by_id("canvas") else { return };
    let r = el.get_bounding_client_rect();
    let boxes: Vec<(f64, f64, f64)> = store.state.with_untracked(|s| {
        s.graph
            .nodes
            .iter()
            .filter_map(|n| {
                let (x, y) = store.node_pos(&n.name)?;
                let h = node_height(store.descriptor(&n.type_name).as_ref());
                Some((x, y, h))
            })
            .collect()
    });
    if boxes.is_empty() {
        store.view.set(crate::store::View { x: 0.0, y: 0.0, k: 1.0 });
        return;
    }
    let x0 = boxes.iter().map(|b| b.0).fold(f64::MAX, f64::min) - 40.0;
    let y0 = boxes.iter().map(|b| b.1).fold(f64::MAX, f64::min) - 40.0;
    let x1 = boxes.iter().map(|b| b.0 + NODE_W).fold(f64::MIN, f64::max) + 40.0;
    let y1 = boxes.iter().map(|b| b.1 + b.2).fold(f64::MIN, f64::max) + 40.0;
    let k = (r.width() / (x1 - x0)).min(r.height() / (y1 - y0)).clamp(0.3, 1.0);
    let x = (r.width() - (x1 - x0) * k) / 2.0 - x0 * k;
    let y = (r.height() - (y1 - y0) * k) / 2.0 - y0 * k;
    store.view.set(crate::store::View { x, y, k });
}

#[component]
pub fn Canvas() -> impl IntoView {
    let store = use_store();
    let node_names = move || store.state.with(|s| s.graph.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>());
    let running = move || store.state.with(|s| s.running);
    let empty = move || store.synced.get() && store.state.with(|s| s.graph.nodes.is_empty());
    let transform = move || {
        let v = store.view.get();
        format!("translate({:.1},{:.1}) scale({:.4})", v.x, v.y, v.k)
    };
    let grid = move || {
        let v = store.view.get();
        (v.x, v.y, 24.0 * v.k)
    };

    let on_bg_down = move |ev: web_sys::PointerEvent| {
        if ev.button() != 0 && ev.button() != 1 {
            return;
        }
        ev.prevent_default();
        let v = store.view.get_untracked();
        store.drag.set(Some(Drag::Pan {
            sx: ev.client_x() as f64,
            sy: ev.client_y() as f64,
            vx: v.x,
            vy: v.y,
            moved: false,
        }));
    };
    let on_wheel = move |ev: web_sys::WheelEvent| {
        ev.prevent_default();
        let (left, top) = crate::store::canvas_origin();
        let (mx, my) = (ev.client_x() as f64 - left, ev.client_y() as f64 - top);
        let mut dy = ev.delta_y();
        if ev.delta_mode() == 1 {
            dy *= 16.0;
        }
        store.view.update(|v| {
            let k = (v.k * (-dy * 0.0015).exp()).clamp(0.25, 3.0);
            v.x = mx - (mx - v.x) * (k / v.k);
            v.y = my - (my - v.y) * (k / v.k);
            v.k = k;
        });
    };

    // The wire being pulled out of a port.
    let temp_wire = move || {
        store.drag.with(|d| match d {
            Some(Drag::Wire { from_node, from_port, ty, x, y }) => {
                let start = store.port_anchor(from_node, from_port, true)?;
                Some((edge_path(start, (*x, *y)), format!("wire-temp t-{}", ty.as_str())))
            }
            _ => None,
        })
    };

    view! {
        <div class="canvas-wrap">
            <svg
                id="canvas"
                class="canvas"
                class:running=running
                class:wiring=move || store.drag.with(|d| matches!(d, Some(Drag::Wire { .. })))
                class:panning=move || store.drag.with(|d| matches!(d, Some(Drag::Pan { moved: true, .. })))
                on:pointerdown=on_bg_down
                on:wheel=on_wheel
                on:contextmenu=|ev| ev.prevent_default()
            >
                <defs>
                    <pattern
                        id="grid-dots"
                        patternUnits="userSpaceOnUse"
                        x=move || format!("{:.1}", grid().0)
                        y=move || format!("{:.1}", grid().1)
                        width=move || format!("{:.2}", grid().2)
                        height=move || format!("{:.2}", grid().2)
                    >
                        <circle cx="1" cy="1" r="1" class="grid-dot"></circle>
                    </pattern>
                </defs>
                <rect class="grid-bg" x="0" y="0" width="100%" height="100%" fill="url(#grid-dots)"></rect>
                <g transform=transform>
                    <Edges/>
                    {move || temp_wire().map(|(d, class)| view! { <path class=class d=d></path> })}
                    <For each=node_names key=|n| n.clone() let:name>
                        <NodeView name=name/>
                    </For>
                </g>
            </svg>
            <Show when=empty>
                <div class="canvas-empty">
                    <div class="big">"The graph is empty"</div>
                    <div>"Drag a node in from the palette, or load a preset from the menu above."</div>
                </div>
            </Show>
            <div class="canvas-tools">
                <button class="icon-btn" title="Zoom out" on:click=move |_| store.view.update(|v| zoom_center(v, 1.0 / 1.2))>"−"</button>
                <span class="zoom-pct">{move || format!("{:.0}%", store.view.get().k * 100.0)}</span>
                <button class="icon-btn" title="Zoom in" on:click=move |_| store.view.update(|v| zoom_center(v, 1.2))>"+"</button>
                <button class="icon-btn wide" title="Frame all nodes" on:click=move |_| fit_view(store)>"Fit"</button>
            </div>
        </div>
    }
}

/// A port's type label cut to the room it has; nothing when not even three letters fit.
fn clip_type(t: &str, room: usize) -> String {
    if room < 3 {
        String::new()
    } else {
        clip(t, room)
    }
}

fn zoom_center(v: &mut crate::store::View, f: f64) {
    let (w, h) = document()
        .get_element_by_id("canvas")
        .map(|e| {
            let r = e.get_bounding_client_rect();
            (r.width(), r.height())
        })
        .unwrap_or((800.0, 600.0));
    let (mx, my) = (w / 2.0, h / 2.0);
    let k = (v.k * f).clamp(0.25, 3.0);
    v.x = mx - (mx - v.x) * (k / v.k);
    v.y = my - (my - v.y) * (k / v.k);
    v.k = k;
}

#[component]
fn Edges() -> impl IntoView {
    let store = use_store();
    let edges = move || {
        let sel = store.selection.with(|s| match s {
            Selection::Edge(e) => Some((e.from.clone(), e.to.clone())),
            _ => None,
        });
        store
            .state
            .with(|s| s.graph.edges.clone())
            .into_iter()
            .filter_map(|e| {
                let a = store.port_anchor(&e.from.node, &e.from.port, true)?;
                let b = store.port_anchor(&e.to.node, &e.to.port, false)?;
                let ty = store
                    .node_spec(&e.from.node)
                    .and_then(|n| store.descriptor(&n.type_name))
                    .and_then(|d| d.output_port(&e.from.port).map(|p| p.types[0]))
                    .map(|t| t.as_str())
                    .unwrap_or("any");
                let d = edge_path(a, b);
                let selected = sel.as_ref() == Some(&(e.from.clone(), e.to.clone()));
                let latest = e.policy == vela_protocol::EdgePolicy::Latest;
                let id = format!("{}->{}", e.from, e.to);
                let title = format!("{} → {}{}", e.from, e.to, if latest { " (latest only)" } else { "" });
                let on_down = move |ev: web_sys::PointerEvent| {
                    ev.stop_propagation();
                    store.selection.set(Selection::Edge(e.clone()));
                };
                Some(view! {
                    <g class="edge" class:selected=selected class:latest=latest data-edge=id on:pointerdown=on_down>
                        <title>{title}</title>
                        <path class="edge-hit" d=d.clone()></path>
                        <path class=format!("edge-line t-{ty}") d=d></path>
                    </g>
                })
            })
            .collect::<Vec<_>>()
    };
    view! { <g class="edges">{edges}</g> }
}

#[component]
fn NodeView(name: String) -> impl IntoView {
    let store = use_store();
    let n = name.clone();
    let type_name = Memo::new(move |_| store.state.with(|s| s.graph.node(&n).map(|x| x.type_name.clone())));
    let desc = Memo::new(move |_| type_name.get().and_then(|t| store.descriptor(&t)));
    let n = name.clone();
    let pos = Memo::new(move |_| store.node_pos(&n).unwrap_or((0.0, 0.0)));
    let n = name.clone();
    let status = Memo::new(move |_| store.state.with(|s| s.status.get(&n).cloned()));
    let n = name.clone();
    let summary = Memo::new(move |_| store.stats.with(|s| s.get(&n).map(|x| x.summary.clone())));
    let n = name.clone();
    let selected = Memo::new(move |_| store.selection.with(|s| matches!(s, Selection::Node(x) if *x == n)));

    let n = name.clone();
    let on_down = move |ev: web_sys::PointerEvent| {
        if ev.button() != 0 {
            return;
        }
        ev.stop_propagation();
        ev.prevent_default();
        store.selection.set(Selection::Node(n.clone()));
        let (wx, wy) = store.world_from_client(ev.client_x() as f64, ev.client_y() as f64);
        let (x, y) = pos.get_untracked();
        store.drag.set(Some(Drag::Node { name: n.clone(), dx: wx - x, dy: wy - y, x, y, moved: false }));
    };

    let name_for_body = name.clone();
    let body = move || {
        let name = name_for_body.clone();
        let d = desc.get();
        let h = node_height(d.as_ref());
        let (title, category) = match &d {
            Some(d) => (d.title.clone(), d.category.clone()),
            None => (type_name.get().unwrap_or_default(), String::new()),
        };
        let hue = category_hue(&category);
        let tip = match &d {
            Some(d) if !d.description.is_empty() => format!("{} ({}): {}", name, d.type_name, d.description),
            Some(d) => format!("{} ({})", name, d.type_name),
            None => format!("{name}: unknown node type"),
        };
        let inputs = d.as_ref().map(|d| d.inputs.clone()).unwrap_or_default();
        let outputs = d.as_ref().map(|d| d.outputs.clone()).unwrap_or_default();
        let rows = inputs.len().max(outputs.len()).max(1);
        let (n_in, n_out) = (inputs.len(), outputs.len());
        // How many characters of a port's type fit beside its name: half the node when the
        // row has ports on both sides (≈7 px per name character, 6 px per type character).
        let type_room = move |i: usize, name: &str, input: bool| -> usize {
            let shared = if input { i < n_out } else { i < n_in };
            let width = if shared { NODE_W / 2.0 } else { NODE_W - 30.0 };
            let used = 12.0 + name.chars().count().min(12) as f64 * 7.0 + 8.0;
            ((width - used) / 6.0).max(0.0) as usize
        };
        let foot_y = HEAD_H + ROW_H * rows as f64;
        let status_class = move || match status.get() {
            Some(NodeStatus::Running) => "status-dot running",
            Some(NodeStatus::Failed { .. }) => "status-dot failed",
            Some(NodeStatus::Stopped) => "status-dot stopped",
            _ => "status-dot idle",
        };
        let status_tip = move || match status.get() {
            Some(NodeStatus::Running) => "running".to_string(),
            Some(NodeStatus::Failed { error }) => format!("failed: {error}"),
            Some(NodeStatus::Stopped) => "stopped".to_string(),
            _ => "idle (not started)".to_string(),
        };
        let foot = move || match status.get() {
            Some(NodeStatus::Failed { error }) => (format!("⚠ {}", clip(&error, 25)), format!("failed: {error}"), true),
            _ => {
                let s = summary.get().unwrap_or_default();
                let shown = if s.is_empty() { "–".to_string() } else { clip(&s, 27) };
                (shown, s, false)
            }
        };
        let in_ports = inputs
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let y = HEAD_H + ROW_H * i as f64;
                let cy = y + ROW_H / 2.0;
                let key = format!("{name}.{}", p.name);
                let ty = p.types.first().map(|t| t.as_str()).unwrap_or("any");
                let ty_class = if p.types.len() == 1 { format!("port-dot t-{ty}") } else { "port-dot t-multi".to_string() };
                let tip = format!("{} ← {}{}", key, p.types_string(), if p.help.is_empty() { String::new() } else { format!(": {}", p.help) });
                let p2 = p.clone();
                let n2 = name.clone();
                let drop_state = move || {
                    store.drag.with(|d| match d {
                        Some(Drag::Wire { from_node, ty, .. }) if *from_node != n2 => {
                            if p2.accepts(*ty) { "drop-ok" } else { "drop-bad" }
                        }
                        _ => "",
                    })
                };
                view! {
                    <g class=move || format!("port in {}", drop_state()) data-in=key>
                        <title>{tip}</title>
                        <rect class="port-row" x="0" y=y width=NODE_W / 2.0 height=ROW_H></rect>
                        <circle class=ty_class cx="0" cy=cy r="5"></circle>
                        <text class="port-label" x="12" y=cy + 4.0>{clip(&p.name, 12)}</text>
                        <text class="port-type" x="12" dx=p.name.len().min(12) as f64 * 7.0 + 6.0 y=cy + 4.0>{if p.types_string() == p.name { String::new() } else { clip_type(&p.types_string(), type_room(i, &p.name, true)) }}</text>
                    </g>
                }
            })
            .collect::<Vec<_>>();
        let out_ports = outputs
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let y = HEAD_H + ROW_H * i as f64;
                let cy = y + ROW_H / 2.0;
                let key = format!("{name}.{}", p.name);
                let ty = p.types.first().copied().unwrap_or(DataType::Any);
                let tip = format!("{} → {}{}", key, ty, if p.help.is_empty() { String::new() } else { format!(": {}", p.help) });
                let (n2, port) = (name.clone(), p.name.clone());
                let on_down = move |ev: web_sys::PointerEvent| {
                    if ev.button() != 0 {
                        return;
                    }
                    ev.stop_propagation();
                    ev.prevent_default();
                    let (x, y) = store.world_from_client(ev.client_x() as f64, ev.client_y() as f64);
                    store.drag.set(Some(Drag::Wire { from_node: n2.clone(), from_port: port.clone(), ty, x, y }));
                };
                view! {
                    <g class="port out" data-out=key on:pointerdown=on_down>
                        <title>{tip}</title>
                        <rect class="port-row" x=NODE_W / 2.0 y=y width=NODE_W / 2.0 height=ROW_H></rect>
                        <text class="port-type" x=NODE_W - 12.0 dx=-(p.name.len().min(12) as f64 * 7.0 + 6.0) y=cy + 4.0 text-anchor="end">{if ty.as_str() == p.name { String::new() } else { clip_type(ty.as_str(), type_room(i, &p.name, false)) }}</text>
                        <text class="port-label" x=NODE_W - 12.0 y=cy + 4.0 text-anchor="end">{clip(&p.name, 12)}</text>
                        <circle class=format!("port-dot t-{}", ty.as_str()) cx=NODE_W cy=cy r="5"></circle>
                    </g>
                }
            })
            .collect::<Vec<_>>();

        view! {
            <rect class="node-shadow" x="2" y="4" width=NODE_W height=h rx="8"></rect>
            <rect class="node-box" x="0" y="0" width=NODE_W height=h rx="8"></rect>
            <path class="node-band" d=format!("M0,8 a8,8 0 0 1 8,-8 h{} a8,8 0 0 1 8,8 v2 h-{} z", NODE_W - 16.0, NODE_W)
                style=format!("fill: hsl({hue} 55% 55%)")></path>
            <g class="node-head">
                <title>{tip}</title>
                <text class="node-title" x="12" y="22">{clip(&title, 19)}</text>
                <text class="node-name" x="12" y="37">{clip(&name, 22)}</text>
            </g>
            <g class="node-status">
                <title>{status_tip}</title>
                <circle class=status_class cx=NODE_W - 14.0 cy="18" r="5"></circle>
            </g>
            <line class="node-sep" x1="0" x2=NODE_W y1=HEAD_H - 2.0 y2=HEAD_H - 2.0></line>
            {in_ports}
            {out_ports}
            <line class="node-sep" x1="0" x2=NODE_W y1=foot_y + 2.0 y2=foot_y + 2.0></line>
            <g class="node-foot">
                <title>{move || foot().1}</title>
                <text class="node-summary" class:error=move || foot().2 x="12" y=foot_y + FOOT_H / 2.0 + 6.0>{move || foot().0}</text>
            </g>
        }
    };

    let failed = move || matches!(status.get(), Some(NodeStatus::Failed { .. }));
    view! {
        <g
            class="node"
            class:selected=move || selected.get()
            class:failed=failed
            data-node=name.clone()
            transform=move || { let (x, y) = pos.get(); format!("translate({x:.1},{y:.1})") }
            on:pointerdown=on_down
        >
            {body}
        </g>
    }
}
