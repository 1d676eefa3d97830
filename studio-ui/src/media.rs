//! Video and microphone widgets. The WebRTC and audio work is the studio's media module
//! (`/media/vela-media.js`, loaded by index.html as `window.velaMedia`); these components
//! own a handle each and stop it when the node leaves the graph.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use crate::store::{use_store, Selection};

#[wasm_bindgen]
extern "C" {
    type MediaHandle;

    #[wasm_bindgen(catch, js_namespace = velaMedia, js_name = video)]
    fn media_video(node: &str, el: &web_sys::HtmlVideoElement, on_state: &JsValue) -> Result<MediaHandle, JsValue>;
    #[wasm_bindgen(catch, js_namespace = velaMedia, js_name = mic)]
    fn media_mic(node: &str, muted: bool, on_state: &JsValue) -> Result<MediaHandle, JsValue>;

    #[wasm_bindgen(method)]
    fn stop(this: &MediaHandle);
    #[wasm_bindgen(method, js_name = setMuted)]
    fn set_muted(this: &MediaHandle, muted: bool);
    #[wasm_bindgen(method)]
    fn sent(this: &MediaHandle) -> f64;
}

/// A JS `onState(state, detail)` callback writing into `state`. Leaked on purpose: the media
/// module may call it after the widget is gone, and `try_set` then does nothing.
fn state_callback(state: RwSignal<(String, String)>) -> JsValue {
    Closure::<dyn FnMut(String, JsValue)>::new(move |s: String, detail: JsValue| {
        let detail = detail.as_string().unwrap_or_default();
        let _ = state.try_set((s, detail));
    })
    .into_js_value()
}

fn node_head(node: &str, kind: &'static str) -> impl IntoView {
    let store = use_store();
    let n = node.to_string();
    view! {
        <div class="widget-head" on:click=move |_| store.selection.set(Selection::Node(n.clone()))>
            <span class="widget-kind media">{kind}</span>
            <span class="mono">{node.to_string()}</span>
        </div>
    }
}

/// Plays a VideoOutput node's stream. "Enlarge" lifts the same `<video>` over the canvas
/// (no renegotiation); the stream keeps retrying while the graph is stopped.
#[component]
pub fn VideoWidget(node: String) -> impl IntoView {
    let video = NodeRef::<leptos::html::Video>::new();
    let state = RwSignal::new(("connecting".to_string(), String::new()));
    let big = RwSignal::new(false);
    let handle = StoredValue::new_local(None::<MediaHandle>);
    let n = node.clone();
    Effect::new(move |_| {
        let Some(el) = video.get() else { return };
        if handle.with_value(|h| h.is_some()) {
            return;
        }
        match media_video(&n, &el, &state_callback(state)) {
            Ok(h) => handle.set_value(Some(h)),
            Err(e) => state.set(("error".into(), format!("{e:?}"))),
        }
    });
    on_cleanup(move || {
        if let Some(h) = handle.try_update_value(|h| h.take()).flatten() {
            h.stop();
        }
    });
    let label = move || {
        state.with(|(s, d)| match s.as_str() {
            "playing" => "live".to_string(),
            "waiting" if !d.is_empty() => format!("waiting: {d}"),
            _ if !d.is_empty() => format!("{s}: {d}"),
            _ => s.clone(),
        })
    };
    view! {
        <div class="widget video-widget" class:big=move || big.get() data-widget=node.clone() data-video-state=move || state.with(|s| s.0.clone())>
            {node_head(&node, "video")}
            <div class="video-box">
                <video node_ref=video muted=true autoplay=true playsinline=true></video>
            </div>
            <div class="video-foot">
                <span class="video-state" class:live=move || state.with(|s| s.0 == "playing")>{label}</span>
                <button class="link-btn" on:click=move |_| big.update(|b| *b = !*b)>
                    {move || if big.get() { "Dock" } else { "Enlarge" }}
                </button>
            </div>
        </div>
    }
}

/// Sends this browser's microphone to a WebAudioIn node. Off until asked (the browser
/// asks for permission then); mute stops sending without closing the device.
#[component]
pub fn MicWidget(node: String) -> impl IntoView {
    let state = RwSignal::new(("off".to_string(), String::new()));
    let muted = RwSignal::new(false);
    let sent = RwSignal::new(0u64);
    let handle = StoredValue::new_local(None::<MediaHandle>);
    let n = node.clone();
    let toggle = move |_| {
        if let Some(h) = handle.try_update_value(|h| h.take()).flatten() {
            h.stop();
            state.set(("off".into(), String::new()));
            return;
        }
        state.set(("starting".into(), String::new()));
        match media_mic(&n, muted.get_untracked(), &state_callback(state)) {
            Ok(h) => handle.set_value(Some(h)),
            Err(e) => state.set(("error".into(), format!("{e:?}"))),
        }
    };
    let mute = move |_| {
        let m = !muted.get_untracked();
        muted.set(m);
        handle.with_value(|h| {
            if let Some(h) = h {
                h.set_muted(m)
            }
        });
    };
    // Blocks sent, refreshed twice a second while the mic is on.
    if let Ok(timer) = set_interval_with_handle(
        move || {
            if let Some(n) = handle.try_with_value(|h| h.as_ref().map(|h| h.sent() as u64)).flatten() {
                let _ = sent.try_set(n);
            }
        },
        std::time::Duration::from_millis(500),
    ) {
        on_cleanup(move || timer.clear());
    }
    on_cleanup(move || {
        if let Some(h) = handle.try_update_value(|h| h.take()).flatten() {
            h.stop();
        }
    });
    let on = move || state.with(|s| s.0 == "on" || s.0 == "starting");
    let status = move || {
        state.with(|(s, d)| match s.as_str() {
            "on" if muted.get() => format!("muted · {d}"),
            "on" => format!("sending · {d} · {} blocks", sent.get()),
            "off" => "microphone off".to_string(),
            _ if !d.is_empty() => format!("{s}: {d}"),
            _ => s.clone(),
        })
    };
    view! {
        <div class="widget mic-widget" data-widget=node.clone() data-mic-state=move || state.with(|s| s.0.clone())>
            {node_head(&node, "microphone")}
            <div class="mic-body">
                <div class="mic-status" class:live=move || on() && !muted.get()>{status}</div>
                <div class="prompt-actions">
                    <button class="btn" class:primary=move || !on() data-mic="toggle" on:click=toggle>
                        {move || if on() { "Stop mic" } else { "Start mic" }}
                    </button>
                    <button class="btn" class:active=move || muted.get() data-mic="mute" on:click=mute>
                        {move || if muted.get() { "Unmute" } else { "Mute" }}
                    </button>
                </div>
            </div>
        </div>
    }
}
