//! The studio server over real sockets: REST API and the WebSocket protocol.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vela::studio::{Studio, StudioConfig};
use vela_runtime::PresetStore;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn preset_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-studio-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("presets/counter-demo.json");
    std::fs::copy(shipped, d.join("counter-demo.json")).unwrap();
    d
}

async fn start(tag: &str, load: Option<&str>) -> (SocketAddr, PathBuf) {
    let dir = preset_dir(tag);
    let cfg = StudioConfig { store: PresetStore::new(&dir), ui_dist: None, load: load.map(str::to_string), autostart: false };
    let studio = Studio::new(Arc::new(vela::registry::build()), cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, vela::studio::router(studio)).await.unwrap() });
    (addr, dir)
}

async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    ws
}

/// Next JSON message whose "event" is `event` (others are skipped), within 5 s.
async fn next_event(ws: &mut Ws, event: &str) -> Value {
    next_matching(ws, |v| v["event"] == event).await
}

async fn next_matching(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await.expect("socket open").expect("frame") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                    if pred(&v) {
                        return v;
                    }
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("expected message within 5 s")
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Sends a request with an id and returns the matching reply.
async fn request(ws: &mut Ws, id: u64, mut v: Value) -> Value {
    v["v"] = json!(1);
    v["id"] = json!(id);
    send(ws, v).await;
    next_matching(ws, |m| m["event"] == "reply" && m["id"] == id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_then_state_on_connect() {
    let (addr, _) = start("welcome", Some("counter-demo")).await;
    let mut ws = connect(addr).await;
    let w = next_event(&mut ws, "welcome").await;
    assert_eq!(w["protocol"], 1);
    assert!(w["node_types"].as_array().unwrap().iter().any(|n| n["type_name"] == "Counter"));
    assert_eq!(w["presets"], json!(["counter-demo"]));
    let s = next_event(&mut ws, "state").await;
    assert_eq!(s["preset"], "counter-demo");
    assert_eq!(s["graph"]["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(s["running"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_edit_message_works_and_is_seen_by_other_tabs() {
    let (addr, dir) = start("edits", None).await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    next_event(&mut a, "state").await;
    next_event(&mut b, "state").await;

    let r = request(&mut a, 1, json!({"op": "add_node", "node": {"name": "c", "type": "Counter", "params": {"interval_ms": 5}}})).await;
    assert_eq!(r["ok"], true, "{r}");
    let s = next_matching(&mut b, |m| m["event"] == "state" && m["graph"]["nodes"].as_array().map(|n| n.len()) == Some(1)).await;
    assert_eq!(s["graph"]["nodes"][0]["type"], "Counter");

    assert_eq!(request(&mut a, 2, json!({"op": "add_node", "node": {"name": "sink", "type": "Collector"}})).await["ok"], true);
    let r = request(&mut a, 3, json!({"op": "connect", "edge": {"from": "c.out", "to": "sink.in"}})).await;
    assert_eq!(r["ok"], true, "{r}");
    next_matching(&mut b, |m| m["event"] == "state" && m["graph"]["edges"].as_array().map(|e| e.len()) == Some(1)).await;

    let r = request(&mut a, 4, json!({"op": "move_node", "node": "c", "position": [120.5, 80.0]})).await;
    assert_eq!(r["ok"], true);
    next_matching(&mut b, |m| m["event"] == "state" && m["graph"]["nodes"][0]["position"] == json!([120.5, 80.0])).await;

    // Start, watch outputs and stats arrive at the other tab, edit live.
    assert_eq!(request(&mut a, 5, json!({"op": "start"})).await["ok"], true);
    next_matching(&mut b, |m| m["event"] == "state" && m["running"] == true).await;
    next_matching(&mut b, |m| m["event"] == "output" && m["node"] == "sink").await;
    let stats = next_event(&mut b, "stats").await;
    assert!(stats["nodes"]["sink"]["received"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(request(&mut a, 6, json!({"op": "set_param", "node": "c", "param": "step", "value": 1000})).await["ok"], true);
    next_matching(&mut b, |m| m["event"] == "output" && m["node"] == "sink" && m["value"]["value"].as_i64() >= Some(1000)).await;

    let r = request(&mut a, 7, json!({"op": "command", "node": "c", "name": "reset"})).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("unknown command"), "{r}");
    assert_eq!(request(&mut a, 8, json!({"op": "restart_node", "name": "sink"})).await["ok"], true);

    // Save, list, stop, reset, load back.
    let r = request(&mut a, 9, json!({"op": "save_preset", "name": "mine", "description": "saved from a test"})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(dir.join("mine.json").is_file());
    next_matching(&mut b, |m| m["event"] == "presets" && m["names"] == json!(["counter-demo", "mine"])).await;
    assert_eq!(request(&mut a, 10, json!({"op": "stop"})).await["ok"], true);
    assert_eq!(request(&mut a, 11, json!({"op": "reset"})).await["ok"], true);
    next_matching(&mut b, |m| m["event"] == "state" && m["graph"]["nodes"] == json!([])).await;
    assert_eq!(request(&mut a, 12, json!({"op": "load_preset", "name": "mine"})).await["ok"], true);
    let s = next_matching(&mut b, |m| m["event"] == "state" && m["preset"] == "mine").await;
    assert_eq!(s["graph"]["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(s["graph"]["nodes"][0]["params"]["step"], 1000, "live edits are saved: {s}");

    let r = request(&mut a, 13, json!({"op": "disconnect", "from": "c.out", "to": "sink.in"})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(request(&mut a, 14, json!({"op": "remove_node", "name": "sink"})).await["ok"], true);
    assert_eq!(request(&mut a, 15, json!({"op": "list_presets"})).await["ok"], true);
    let r = request(&mut a, 16, json!({"op": "get_state"})).await;
    assert_eq!(r["ok"], true);

    let content = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-studio/chat.json")).unwrap();
    let r = request(&mut a, 17, json!({"op": "import_preset", "name": "chat", "content": content})).await;
    assert_eq!(r["ok"], true, "{r}");
    let alert = next_matching(&mut b, |m| m["event"] == "alert" && m["text"].as_str().unwrap_or("").contains("imported 'chat'")).await;
    assert!(alert["text"].as_str().unwrap().contains("unknown node type: NanoLLM"), "{alert}");
    assert!(dir.join("chat.json").is_file());
    let r = request(&mut a, 18, json!({"op": "import_preset", "name": "chat", "content": content})).await;
    assert!(r["error"].as_str().unwrap().contains("exists"), "{r}");
    let r = request(&mut a, 19, json!({"op": "import_preset", "name": "junk", "content": "{}"})).await;
    assert!(r["error"].as_str().unwrap().contains("plugins"), "{r}");
    assert!(!dir.join("junk.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_the_connection_survives() {
    let (addr, _) = start("bad", Some("counter-demo")).await;
    let mut ws = connect(addr).await;
    next_event(&mut ws, "state").await;

    send(&mut ws, json!("not an object")).await;
    assert!(next_event(&mut ws, "error").await["message"].as_str().unwrap().contains("could not understand"));
    ws.send(Message::Text("{ broken json".into())).await.unwrap();
    next_event(&mut ws, "error").await;
    send(&mut ws, json!({"v": 1, "id": 40, "op": "set_any_attribute", "path": "x"})).await;
    let e = next_event(&mut ws, "error").await;
    assert_eq!(e["id"], 40);
    assert!(e["message"].as_str().unwrap().contains("unknown variant"), "{e}");
    send(&mut ws, json!({"v": 99, "id": 41, "op": "start"})).await;
    assert!(next_event(&mut ws, "error").await["message"].as_str().unwrap().contains("version 99"));
    ws.send(Message::Binary(vec![1u8, 2, 3].into())).await.unwrap();
    assert!(next_event(&mut ws, "error").await["message"].as_str().unwrap().contains("binary"));

    // Refused edits: ill-typed edge, unknown type, bad parameter, path traversal.
    let r = request(&mut ws, 1, json!({"op": "connect", "edge": {"from": "pattern.image", "to": "half.in"}})).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("carries image, but input 'half.in' accepts json"), "{r}");
    let r = request(&mut ws, 2, json!({"op": "add_node", "node": {"name": "x", "type": "Nope"}})).await;
    assert!(r["error"].as_str().unwrap().contains("unknown node type 'Nope'"), "{r}");
    let r = request(&mut ws, 3, json!({"op": "set_param", "node": "half", "param": "factor", "value": "big"})).await;
    assert!(r["error"].as_str().unwrap().contains("expected a number"), "{r}");
    let r = request(&mut ws, 4, json!({"op": "save_preset", "name": "../escape"})).await;
    assert!(r["error"].as_str().unwrap().contains("invalid"), "{r}");
    let r = request(&mut ws, 5, json!({"op": "load_preset", "name": "missing"})).await;
    assert!(r["error"].as_str().unwrap().contains("no preset named 'missing'"), "{r}");
    let r = request(&mut ws, 6, json!({"op": "move_node", "node": "ghost", "position": [0, 0]})).await;
    assert!(r["error"].as_str().unwrap().contains("no node named 'ghost'"), "{r}");

    // Still alive, graph untouched.
    send(&mut ws, json!({"v": 1, "op": "get_state"})).await;
    let s = next_event(&mut ws, "state").await;
    assert_eq!(s["graph"]["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(s["graph"]["edges"].as_array().unwrap().len(), 3);
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api() {
    let (addr, dir) = start("rest", None).await;
    let (code, body) = http(addr, "GET", "/api/nodes", "").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"type_name\":\"Counter\""));
    assert_eq!(http(addr, "GET", "/api/presets", "").await, (200, "[\"counter-demo\"]".into()));
    let (code, body) = http(addr, "GET", "/api/presets/counter-demo", "").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"vela_preset\": 1"));
    assert_eq!(http(addr, "GET", "/api/presets/nope", "").await.0, 404);
    assert_eq!(http(addr, "GET", "/api/presets/..%2F..%2Fetc%2Fpasswd", "").await.0, 400);
    assert_eq!(http(addr, "GET", "/api/presets/.hidden", "").await.0, 400);

    let good = r#"{"vela_preset": 1, "name": "other", "nodes": [{"name": "c", "type": "Counter"}]}"#;
    let (code, body) = http(addr, "PUT", "/api/presets/uploaded", good).await;
    assert_eq!(code, 200, "{body}");
    let saved = std::fs::read_to_string(dir.join("uploaded.json")).unwrap();
    assert!(saved.contains("\"name\": \"uploaded\""), "the file name wins: {saved}");

    // Bad bodies change nothing on disk.
    for bad in ["{not json", r#"{"vela_preset": 1, "name": "x", "nodes": [{"name": "c", "type": "Nope"}]}"#] {
        let (code, body) = http(addr, "PUT", "/api/presets/uploaded", bad).await;
        assert_eq!(code, 422, "{body}");
        assert!(body.contains("error"));
        assert_eq!(std::fs::read_to_string(dir.join("uploaded.json")).unwrap(), saved);
    }
    // Without a built UI the page says how to get one instead of being blank.
    let (code, body) = http(addr, "GET", "/", "").await;
    assert_eq!(code, 200);
    assert!(body.contains("not built") && body.contains("scripts/setup.sh"));
    assert_eq!(http(addr, "GET", "/../Cargo.toml", "").await.0, 404);
}
