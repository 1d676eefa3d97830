//! The studio server: the browser UI, a REST API and the live WebSocket protocol.
//!
//! One [`Studio`] owns one graph engine shared by every connected browser tab. Edits
//! from any tab are applied to the engine and the resulting state is pushed to all
//! tabs, so they never disagree about the graph.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use vela_runtime::protocol::{ClientEnvelope, ClientMsg, ServerMsg, StudioState, PROTOCOL_VERSION};
use vela_runtime::{AlertLevel, Engine, EngineEvent, GraphSpec, Preset, PresetError, PresetStore, Registry};

mod bench;

/// Largest WebSocket message a client may send; presets and edits are far smaller.
const MAX_WS_MESSAGE: usize = 1 << 20;
/// How often running graphs push their stats.
const STATS_PERIOD: Duration = Duration::from_millis(500);

/// `$VELA_UI_DIST`, else where `scripts/setup.sh` puts the UI build.
pub fn default_ui_dist() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("VELA_UI_DIST") {
        return Some(PathBuf::from(d));
    }
    let cache = std::env::var_os("VELA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vela")))?;
    Some(cache.join("ui"))
}

pub struct StudioConfig {
    pub store: PresetStore,
    /// Built UI (index.html + wasm); `None` serves a page that says how to build it.
    pub ui_dist: Option<PathBuf>,
    pub load: Option<String>,
    /// Start the loaded preset right away.
    pub autostart: bool,
    /// Where benchmark runs started from the browser write their reports (served under /reports/).
    pub reports: PathBuf,
}

/// Shared by every handler and connection.
pub struct Studio {
    engine: Engine,
    store: PresetStore,
    registry: Arc<Registry>,
    preset: Mutex<Option<String>>,
    /// Serialised server messages for every client.
    to_all: broadcast::Sender<Arc<str>>,
    ui_dist: Option<PathBuf>,
    reports: PathBuf,
    /// Stops the benchmark run in progress, if any.
    bench: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    /// The latest benchmark message, for tabs that connect during or after a run.
    last_bench: Mutex<Option<Arc<str>>>,
}

fn encode(msg: &ServerMsg) -> Arc<str> {
    serde_json::to_string(msg).expect("server messages serialise").into()
}

impl Studio {
    pub async fn new(registry: Arc<Registry>, cfg: StudioConfig) -> anyhow::Result<Arc<Self>> {
        let (to_all, _) = broadcast::channel(4096);
        let studio = Arc::new(Studio {
            engine: Engine::new(registry.clone()),
            store: cfg.store,
            registry,
            preset: Mutex::new(None),
            to_all,
            ui_dist: cfg.ui_dist,
            reports: cfg.reports,
            bench: Mutex::new(None),
            last_bench: Mutex::new(None),
        });
        if let Some(name) = &cfg.load {
            studio.load_preset(name).await.map_err(anyhow::Error::msg)?;
            if cfg.autostart {
                studio.engine.start().await;
            }
        }
        studio.clone().spawn_forwarders();
        Ok(studio)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn broadcast(&self, msg: &ServerMsg) {
        let _ = self.to_all.send(encode(msg));
    }

    pub async fn state(&self) -> StudioState {
        let vela_runtime::EngineSnapshot { graph, running, status } = self.engine.snapshot().await;
        let preset = self.preset.lock().unwrap().clone();
        StudioState { preset, graph, running, status }
    }

    async fn push_state(&self) {
        let st = self.state().await;
        self.broadcast(&ServerMsg::State(st));
    }

    /// Engine events and periodic stats, fanned out to every client.
    fn spawn_forwarders(self: Arc<Self>) {
        let me = self.clone();
        let mut events = self.engine.subscribe();
        tokio::spawn(async move {
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("studio fell {n} engine events behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                match ev {
                    EngineEvent::GraphChanged | EngineEvent::Status { .. } => me.push_state().await,
                    EngineEvent::Alert { node, level, text } => me.broadcast(&ServerMsg::Alert { level, node, text }),
                    EngineEvent::Output { node, value } => me.broadcast(&ServerMsg::Output { node, value }),
                    EngineEvent::Finished { node, reason } => {
                        me.broadcast(&ServerMsg::Alert {
                            level: AlertLevel::Info,
                            node: Some(node.clone()),
                            text: format!("run finished: {node}: {reason}"),
                        });
                        me.engine.drain_and_stop(Duration::from_secs(2)).await;
                        me.push_state().await;
                    }
                }
            }
        });
        let me = self;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_PERIOD);
            loop {
                tick.tick().await;
                if me.to_all.receiver_count() > 0 && me.engine.is_running().await {
                    let nodes = me.engine.stats().await;
                    me.broadcast(&ServerMsg::Stats { nodes });
                }
            }
        });
    }

    async fn load_preset(&self, name: &str) -> Result<(), String> {
        let (preset, path, warnings) = self.store.load(name).map_err(|e| e.to_string())?;
        preset.validate(&self.registry, &path).map_err(|e| e.to_string())?;
        self.engine.load(&preset.graph()).await.map_err(|e| e.to_string())?;
        *self.preset.lock().unwrap() = Some(preset.name.clone());
        for w in warnings {
            self.broadcast(&ServerMsg::Alert { level: AlertLevel::Warning, node: None, text: w });
        }
        Ok(())
    }

    async fn save_preset(&self, name: &str, description: Option<String>) -> Result<(), String> {
        let graph = self.engine.graph().await;
        let mut preset = Preset::new(name, graph);
        // Keep the description of the preset being overwritten unless a new one is given.
        preset.description = match description {
            Some(d) => d,
            None => self.store.load(name).map(|(p, _, _)| p.description).unwrap_or_default(),
        };
        self.store.save(name, &preset).map_err(|e| e.to_string())?;
        *self.preset.lock().unwrap() = Some(name.to_string());
        self.broadcast(&ServerMsg::Presets { names: self.store.list() });
        Ok(())
    }

    /// Applies one client request. `Err` is the message the client sees.
    async fn handle(self: &Arc<Self>, msg: ClientMsg, reply_to: &mpsc::UnboundedSender<Arc<str>>) -> Result<(), String> {
        let e = |e: vela_runtime::EngineError| e.to_string();
        match msg {
            ClientMsg::GetState => {
                let st = self.state().await;
                let _ = reply_to.send(encode(&ServerMsg::State(st)));
            }
            ClientMsg::AddNode { node } => self.engine.add_node(node).await.map_err(e)?,
            ClientMsg::RemoveNode { name } => self.engine.remove_node(&name).await.map_err(e)?,
            ClientMsg::Connect { edge } => self.engine.connect(edge).await.map_err(e)?,
            ClientMsg::Disconnect { from, to } => self.engine.disconnect(&from, &to).await.map_err(e)?,
            ClientMsg::SetParam { node, param, value } => self.engine.set_param(&node, &param, value).await.map_err(e)?,
            ClientMsg::MoveNode { node, position } => {
                if !position.iter().all(|v| v.is_finite()) {
                    return Err("position must be finite".into());
                }
                self.engine.move_node(&node, position).await.map_err(e)?;
                self.push_state().await;
            }
            ClientMsg::Command { node, name, args } => self.engine.command(&node, &name, args).await.map_err(e)?,
            ClientMsg::RestartNode { name } => {
                self.engine.restart_node(&name).await.map_err(e)?;
                self.push_state().await;
            }
            ClientMsg::ListPresets => {
                let _ = reply_to.send(encode(&ServerMsg::Presets { names: self.store.list() }));
            }
            ClientMsg::LoadPreset { name } => {
                self.load_preset(&name).await?;
                self.push_state().await;
            }
            ClientMsg::SavePreset { name, description } => {
                self.save_preset(&name, description).await?;
                self.push_state().await;
            }
            ClientMsg::ImportPreset { name, content, replace } => {
                let path = self.store.path_of(&name).map_err(|e| e.to_string())?;
                if path.exists() && !replace {
                    return Err(format!("preset '{name}' exists; choose another name or replace it"));
                }
                let (preset, report) =
                    crate::import::import_agent_studio(&content, &name, &self.registry).map_err(|e| e.to_string())?;
                self.store.save(&name, &preset).map_err(|e| e.to_string())?;
                let lines = report.lines();
                let text = if lines.is_empty() {
                    format!("imported '{name}': {} nodes, {} edges", preset.nodes.len(), preset.edges.len())
                } else {
                    format!("imported '{name}' with notes:\n{}", lines.join("\n"))
                };
                let level = if report.is_clean() { AlertLevel::Info } else { AlertLevel::Warning };
                self.broadcast(&ServerMsg::Alert { level, node: None, text });
                self.broadcast(&ServerMsg::Presets { names: self.store.list() });
            }
            ClientMsg::Start => {
                self.engine.start().await;
                self.push_state().await;
            }
            ClientMsg::Stop => {
                self.engine.stop().await;
                self.push_state().await;
            }
            // Handled per connection in `client`, which knows the tab.
            ClientMsg::WebrtcOffer { .. } | ClientMsg::WebrtcHangup { .. } => {
                return Err("WebRTC signalling needs a WebSocket connection".into());
            }
            ClientMsg::BenchStart { node, episodes, seed, fast } => self.bench_start(node, episodes, seed, fast).await?,
            ClientMsg::BenchStop => self.bench_stop()?,
            ClientMsg::Reset => {
                self.engine.load(&GraphSpec::default()).await.map_err(e)?;
                self.engine.stop().await;
                *self.preset.lock().unwrap() = None;
                self.push_state().await;
            }
        }
        Ok(())
    }
}

pub fn router(studio: Arc<Studio>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ws", get(ws_upgrade))
        .route("/media/vela-media.js", get(media_js))
        .route("/media/test", get(media_test_page))
        .route("/api/nodes", get(api_nodes))
        .route("/api/state", get(api_state))
        .route("/api/presets", get(api_presets))
        .route("/api/presets/{name}", get(api_get_preset).put(api_put_preset))
        .route("/reports/{*file}", get(report_file))
        .route("/{*file}", get(static_file))
        .with_state(studio)
}

/// Serves until the process ends. Binds where told; the CLI defaults to localhost.
pub async fn serve(studio: Arc<Studio>, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("studio at http://{}", listener.local_addr()?);
    axum::serve(listener, router(studio)).await?;
    Ok(())
}

const UI_MISSING: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>Vela studio</title>
<style>body{font-family:sans-serif;background:#14161a;color:#e6e6e6;max-width:44em;margin:4em auto;line-height:1.5}code{background:#262a31;padding:.1em .3em}</style></head>
<body><h1>Vela studio: the browser UI is not built</h1>
<p>The server is running and its API works (<a href="/api/nodes">/api/nodes</a>, <a href="/api/state">/api/state</a>, WebSocket at <code>/ws</code>),
but no built UI was found. Run <code>bash scripts/setup.sh</code> (it builds the UI into the cache) or point
<code>vela studio --ui DIR</code> at a folder holding <code>index.html</code>.</p></body></html>"#;

async fn index(State(s): State<Arc<Studio>>) -> Response {
    match s.ui_dist.as_ref().map(|d| d.join("index.html")).filter(|p| p.is_file()) {
        Some(p) => match tokio::fs::read_to_string(p).await {
            Ok(html) => Html(html).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        None => Html(UI_MISSING).into_response(),
    }
}

async fn static_file(State(s): State<Arc<Studio>>, UrlPath(file): UrlPath<String>) -> Response {
    match &s.ui_dist {
        Some(dist) => serve_file(dist, &file).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Benchmark reports (HTML, plots, stats JSON) written by runs started from the browser.
async fn report_file(State(s): State<Arc<Studio>>, UrlPath(file): UrlPath<String>) -> Response {
    serve_file(&s.reports, &file).await
}

/// A file under `root` by its URL path.
async fn serve_file(root: &std::path::Path, file: &str) -> Response {
    // Only plain relative names inside the folder; no traversal, no hidden files.
    if file.split('/').any(|part| part.is_empty() || part.starts_with('.') || part.contains('\\')) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = root.join(file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mime = match path.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript",
                Some("wasm") => "application/wasm",
                Some("css") => "text/css",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, mime)], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The browser media module (VideoOutput playback, microphone to WebAudioIn).
async fn media_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript"), (header::CACHE_CONTROL, "no-cache")], vela_webrtc::web::MEDIA_JS).into_response()
}

/// A standalone page for trying and testing browser media without the UI.
async fn media_test_page() -> Response {
    Html(vela_webrtc::web::TEST_PAGE).into_response()
}

async fn api_nodes(State(s): State<Arc<Studio>>) -> impl IntoResponse {
    Json(s.registry.list())
}

async fn api_state(State(s): State<Arc<Studio>>) -> impl IntoResponse {
    Json(s.state().await)
}

async fn api_presets(State(s): State<Arc<Studio>>) -> impl IntoResponse {
    Json(s.store.list())
}

fn preset_error(e: PresetError) -> Response {
    let status = match &e {
        PresetError::BadName(_) => StatusCode::BAD_REQUEST,
        PresetError::NotFound { .. } => StatusCode::NOT_FOUND,
        PresetError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        PresetError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}

async fn api_get_preset(State(s): State<Arc<Studio>>, UrlPath(name): UrlPath<String>) -> Response {
    let path = match s.store.path_of(&name) {
        Ok(p) => p,
        Err(e) => return preset_error(e),
    };
    if !path.is_file() {
        return preset_error(PresetError::NotFound { name, searched: s.store.dir.clone(), available: s.store.list() });
    }
    match Preset::load(&path) {
        Ok((p, _)) => ([(header::CONTENT_TYPE, "application/json")], p.to_json()).into_response(),
        Err(e) => preset_error(e),
    }
}

/// Stores a preset after parsing and validating it; a bad body changes nothing on disk.
async fn api_put_preset(State(s): State<Arc<Studio>>, UrlPath(name): UrlPath<String>, body: String) -> Response {
    let path = match s.store.path_of(&name) {
        Ok(p) => p,
        Err(e) => return preset_error(e),
    };
    let (mut preset, warnings) = match Preset::parse(&body, &path) {
        Ok(x) => x,
        Err(e) => return preset_error(e),
    };
    if let Err(e) = preset.validate(&s.registry, &path) {
        return preset_error(e);
    }
    preset.name = name.clone();
    if let Err(e) = s.store.save(&name, &preset) {
        return preset_error(e);
    }
    s.broadcast(&ServerMsg::Presets { names: s.store.list() });
    Json(json!({ "saved": name, "warnings": warnings })).into_response()
}

async fn ws_upgrade(State(s): State<Arc<Studio>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_WS_MESSAGE).on_upgrade(move |socket| client(s, socket))
}

/// One browser tab. Requests are handled in order; pushes to all tabs interleave.
async fn client(studio: Arc<Studio>, socket: WebSocket) {
    use futures_util::{SinkExt, StreamExt};
    let (mut sink, mut stream) = socket.split();
    let me = vela_webrtc::ClientHandle::new();
    let mut audio_errors = ErrorThrottle { last: None };
    let (direct, mut direct_rx) = mpsc::unbounded_channel::<Arc<str>>();
    let mut all = studio.to_all.subscribe();

    let welcome = ServerMsg::Welcome {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
        node_types: studio.registry.list(),
        presets: studio.store.list(),
    };
    let _ = direct.send(encode(&welcome));
    let _ = direct.send(encode(&ServerMsg::State(studio.state().await)));
    if let Some(bench) = studio.last_bench.lock().unwrap().clone() {
        let _ = direct.send(bench);
    }

    let writer = tokio::spawn(async move {
        loop {
            let text = tokio::select! {
                m = direct_rx.recv() => match m { Some(m) => m, None => break },
                m = all.recv() => match m {
                    Ok(m) => m,
                    // A tab too slow to keep up skips pushes; the next state message resyncs it.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if sink.send(WsMessage::Text(text.to_string().into())).await.is_err() {
                break;
            }
        }
    });

    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(WsMessage::Text(t)) => t,
            Ok(WsMessage::Close(_)) | Err(_) => break,
            Ok(WsMessage::Binary(bytes)) => {
                // Binary messages carry microphone PCM for WebAudioIn nodes (format:
                // vela_webrtc::audio_frame). Bad ones are answered, throttled, and skipped.
                let result = vela_webrtc::audio_frame::parse(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|frame| vela_webrtc::hub().push_audio(frame));
                if let Err(message) = result {
                    if audio_errors.should_report(&message) {
                        let _ = direct.send(encode(&ServerMsg::Error { id: None, message }));
                    }
                }
                continue;
            }
            Ok(_) => continue,
        };
        let env: ClientEnvelope = match serde_json::from_str(text.as_str()) {
            Ok(env) => env,
            Err(err) => {
                let id = serde_json::from_str::<serde_json::Value>(text.as_str()).ok().and_then(|v| v["id"].as_u64());
                let _ = direct.send(encode(&ServerMsg::Error { id, message: format!("could not understand message: {err}") }));
                continue;
            }
        };
        if env.v != PROTOCOL_VERSION {
            let _ = direct.send(encode(&ServerMsg::Error {
                id: env.id,
                message: format!("protocol version {} is not supported (server speaks {PROTOCOL_VERSION}); reload the page", env.v),
            }));
            continue;
        }
        let result = match env.msg {
            ClientMsg::WebrtcOffer { node, sdp } => {
                // Negotiation takes a moment (ICE gathering); other requests go on meanwhile.
                tokio::spawn(webrtc_offer(me.clone(), node, sdp, env.id, direct.clone()));
                continue;
            }
            ClientMsg::WebrtcHangup { node } => vela_webrtc::hub().hang_up(&node, &me),
            msg => studio.handle(msg, &direct).await,
        };
        if let Err(err) = &result {
            tracing::debug!("client request refused: {err}");
        }
        if let Some(id) = env.id {
            let (ok, error) = match result {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e)),
            };
            let _ = direct.send(encode(&ServerMsg::Reply { id, ok, error }));
        } else if let Err(message) = result {
            let _ = direct.send(encode(&ServerMsg::Error { id: None, message }));
        }
    }
    vela_webrtc::hub().client_gone(&me);
    drop(direct);
    writer.abort();
}

/// Answers a tab's WebRTC offer for a VideoOutput node: the answer event, then the reply.
async fn webrtc_offer(
    me: vela_webrtc::ClientHandle,
    node: String,
    sdp: String,
    id: Option<u64>,
    direct: mpsc::UnboundedSender<Arc<str>>,
) {
    let result = vela_webrtc::hub().answer(&node, &me, sdp).await;
    let error = match result {
        Ok(sdp) => {
            let _ = direct.send(encode(&ServerMsg::WebrtcAnswer { node, sdp }));
            None
        }
        Err(e) => {
            tracing::debug!("WebRTC offer for '{node}' refused: {e}");
            Some(e)
        }
    };
    match (id, error) {
        (Some(id), error) => {
            let _ = direct.send(encode(&ServerMsg::Reply { id, ok: error.is_none(), error }));
        }
        (None, Some(message)) => {
            let _ = direct.send(encode(&ServerMsg::Error { id: None, message }));
        }
        (None, None) => {}
    }
}

/// Limits repeated identical errors about binary frames (a tab streaming audio to a node
/// that is not running would otherwise get dozens a second).
struct ErrorThrottle {
    last: Option<(String, std::time::Instant)>,
}

impl ErrorThrottle {
    fn should_report(&mut self, message: &str) -> bool {
        let now = std::time::Instant::now();
        match &self.last {
            Some((m, t)) if m == message && now.duration_since(*t) < Duration::from_secs(2) => false,
            _ => {
                self.last = Some((message.to_string(), now));
                true
            }
        }
    }
}
