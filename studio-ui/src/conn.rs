//! The WebSocket to the studio server: one socket per page, reconnected with backoff.
//! Every request carries an id; a refused request becomes an error toast.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use leptos::prelude::*;
use vela_protocol::{AlertLevel, ClientEnvelope, ClientMsg, ServerMsg, PROTOCOL_VERSION};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::store::{describe_output, BenchEnd, BenchView, Conn, LogKind, Selection, Store};

struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

/// What a request was for, to phrase its error.
struct Pending {
    what: String,
    /// Ask for the state again if refused (controls then show the server's values).
    resync: bool,
}

thread_local! {
    static SOCKET: RefCell<Option<Socket>> = const { RefCell::new(None) };
    static PENDING: RefCell<HashMap<u64, Pending>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
    static ATTEMPT: Cell<u32> = const { Cell::new(0) };
}

fn ws_url() -> String {
    let loc = window().location();
    let scheme = if loc.protocol().as_deref() == Ok("https:") { "wss" } else { "ws" };
    format!("{scheme}://{}/ws", loc.host().unwrap_or_else(|_| "127.0.0.1:8050".into()))
}

pub fn connect(store: Store) {
    // Detach the old socket (if any) before replacing it; its callbacks are not running now.
    SOCKET.with(|s| {
        if let Some(old) = s.borrow_mut().take() {
            old.ws.set_onopen(None);
            old.ws.set_onmessage(None);
            old.ws.set_onclose(None);
            let _ = old.ws.close();
        }
    });
    store.conn.set(Conn::Connecting);
    let ws = match WebSocket::new(&ws_url()) {
        Ok(ws) => ws,
        Err(_) => {
            schedule_reconnect(store);
            return;
        }
    };
    let on_open = Closure::<dyn FnMut()>::new(move || {
        ATTEMPT.set(0);
        store.conn.set(Conn::Open);
    });
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Some(text) = e.data().as_string() {
            handle(store, &text);
        }
    });
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |_e: CloseEvent| {
        let lost = PENDING.with(|p| p.borrow_mut().drain().count());
        if store.conn.get_untracked() == Conn::Open {
            store.toast(AlertLevel::Warning, "Lost the connection to the studio server; reconnecting…");
            store.log_line(LogKind::Warning, None, format!("connection lost ({lost} requests unanswered)"));
        }
        store.synced.set(false);
        schedule_reconnect(store);
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    SOCKET.with(|s| *s.borrow_mut() = Some(Socket { ws, _on_open: on_open, _on_message: on_message, _on_close: on_close }));
}

fn schedule_reconnect(store: Store) {
    let attempt = ATTEMPT.get();
    ATTEMPT.set(attempt + 1);
    // 0.5 s, 1 s, 2 s, 4 s, then every 5 s.
    let secs = (0.5 * 2f64.powi(attempt.min(4) as i32)).min(5.0);
    store.conn.set(Conn::Waiting { secs, attempt: attempt + 1 });
    set_timeout(move || connect(store), Duration::from_millis((secs * 1000.0) as u64));
}

/// Sends a request. `what` names it in an error toast ("connect a.out → b.in: …").
pub fn request(store: Store, msg: ClientMsg, what: impl Into<String>) {
    send(store, msg, what.into(), false)
}

/// Like [`request`], but a refusal also re-reads the server's state.
pub fn request_resync(store: Store, msg: ClientMsg, what: impl Into<String>) {
    send(store, msg, what.into(), true)
}

fn send(store: Store, msg: ClientMsg, what: String, resync: bool) {
    let id = NEXT_ID.get();
    NEXT_ID.set(id + 1);
    let env = ClientEnvelope { v: PROTOCOL_VERSION, id: Some(id), msg };
    let text = serde_json::to_string(&env).expect("client messages serialise");
    let sent = SOCKET.with(|s| match s.borrow().as_ref() {
        Some(sock) if sock.ws.ready_state() == WebSocket::OPEN => sock.ws.send_with_str(&text).is_ok(),
        _ => false,
    });
    if sent {
        PENDING.with(|p| p.borrow_mut().insert(id, Pending { what, resync }));
    } else {
        store.toast(AlertLevel::Error, format!("{what}: not connected to the studio server"));
        if resync {
            store.revision.update(|r| *r += 1);
        }
    }
}

fn handle(store: Store, text: &str) {
    let msg: ServerMsg = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            store.log_line(LogKind::Warning, None, format!("unreadable server message: {e}"));
            return;
        }
    };
    match msg {
        ServerMsg::Welcome { protocol, version, node_types, presets } => {
            if protocol != PROTOCOL_VERSION {
                store.toast(
                    AlertLevel::Error,
                    format!("The server speaks protocol {protocol}, this page {PROTOCOL_VERSION}: reload the page."),
                );
            }
            store.server_version.set(version);
            store.types.set(node_types);
            store.presets.set(presets);
        }
        ServerMsg::State(st) => {
            // Drop a selection the new graph no longer has.
            store.selection.update(|sel| {
                let keep = match sel {
                    Selection::None => true,
                    Selection::Node(n) => st.graph.node(n).is_some(),
                    Selection::Edge(e) => st.graph.edges.iter().any(|x| x.from == e.from && x.to == e.to),
                };
                if !keep {
                    *sel = Selection::None;
                }
            });
            store.stats.update(|s| s.retain(|name, _| st.graph.node(name).is_some()));
            let has_nodes = !st.graph.nodes.is_empty();
            store.state.set(st);
            store.synced.set(true);
            if has_nodes && store.fit_pending.get_value() {
                store.fit_pending.set_value(false);
                // After the new nodes are in the DOM and the canvas has its size.
                set_timeout(move || crate::canvas::fit_view(store), Duration::from_millis(0));
            }
        }
        ServerMsg::Stats { nodes } => store.stats.set(nodes),
        ServerMsg::Alert { level, node, text } => {
            let kind = match level {
                AlertLevel::Info => LogKind::Info,
                AlertLevel::Warning => LogKind::Warning,
                AlertLevel::Error => LogKind::Error,
            };
            let shown = match &node {
                Some(n) if !text.contains(n.as_str()) => format!("{n}: {text}"),
                _ => text.clone(),
            };
            store.toast(level, shown);
            // The log names the node in its own column; don't say it twice.
            let text = match &node {
                Some(n) => text.strip_prefix(n.as_str()).map(|t| t.trim_start_matches([':', ' ']).to_string()).unwrap_or(text),
                None => text,
            };
            store.log_line(kind, node, text);
        }
        ServerMsg::Output { node, value } => {
            let line = describe_output(&value);
            store.add_output(&node, line.clone());
            store.log_line(LogKind::Output, Some(node), line);
        }
        ServerMsg::Presets { names } => store.presets.set(names),
        ServerMsg::BenchProgress { run } => store.bench.set(Some(BenchView { run, finished: None })),
        ServerMsg::BenchFinished { run, complete, reason, summary, report_url } => {
            let finished = Some(BenchEnd { complete, reason, summary, report_url });
            store.bench.set(Some(BenchView { run, finished }));
        }
        // WebRTC answers belong to the media module's own requests (/media/vela-media.js).
        ServerMsg::WebrtcAnswer { .. } => {}
        ServerMsg::Reply { id, ok, error } => {
            let pending = PENDING.with(|p| p.borrow_mut().remove(&id));
            if !ok {
                let what = pending.as_ref().map(|p| p.what.as_str()).unwrap_or("request");
                let err = error.unwrap_or_else(|| "refused".into());
                store.toast(AlertLevel::Error, format!("{what}: {err}"));
                store.log_line(LogKind::Error, None, format!("{what}: {err}"));
                if pending.map(|p| p.resync).unwrap_or(false) {
                    store.revision.update(|r| *r += 1);
                    request(store, ClientMsg::GetState, "refresh");
                }
            }
        }
        ServerMsg::Error { id, message } => {
            let what = id.and_then(|id| PENDING.with(|p| p.borrow_mut().remove(&id))).map(|p| p.what);
            let text = match what {
                Some(w) => format!("{w}: {message}"),
                None => message,
            };
            store.toast(AlertLevel::Error, text.clone());
            store.log_line(LogKind::Error, None, text);
        }
    }
}
