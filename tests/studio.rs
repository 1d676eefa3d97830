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
    let cfg = StudioConfig { store: PresetStore::new(&dir), ui_dist: None, load: load.map(str::to_string), autostart: false, reports: dir.join("reports") };
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
    next_within(ws, 5, pred).await
}

/// Next JSON message matching `pred` within `secs` seconds.
async fn next_within(ws: &mut Ws, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(secs), async {
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
    .unwrap_or_else(|_| panic!("expected a message within {secs} s"))
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

// ---------------------------------------------------------------------------
// Benchmarks started from the browser.

/// Seeds of a bench run's results.
fn seeds(run: &Value) -> Vec<u64> {
    run["results"].as_array().unwrap().iter().map(|e| e["seed"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benchmark_runs_n_episodes_of_the_live_graph_and_links_its_report() {
    let (addr, dir) = start("bench", None).await;
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("presets/mimicgen-expert.json");
    std::fs::copy(shipped, dir.join("mimicgen-expert.json")).unwrap();
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    assert_eq!(request(&mut a, 1, json!({"op": "load_preset", "name": "mimicgen-expert"})).await["ok"], true);

    // Bad requests are refused with a reason; nothing starts.
    let r = request(&mut a, 2, json!({"op": "bench_start", "node": "nope", "episodes": 3})).await;
    assert!(r["error"].as_str().unwrap().contains("no node named 'nope'"), "{r}");
    let r = request(&mut a, 3, json!({"op": "bench_start", "node": "sim", "episodes": 0})).await;
    assert!(r["error"].as_str().unwrap().contains("1 to 100000 episodes, not 0"), "{r}");
    let r = request(&mut a, 4, json!({"op": "bench_start", "node": "overlay", "episodes": 3})).await;
    assert!(r["error"].as_str().unwrap().contains("'overlay' is a TextOverlay node"), "{r}");
    let r = request(&mut a, 5, json!({"op": "bench_stop"})).await;
    assert!(r["error"].as_str().unwrap().contains("no benchmark is running"), "{r}");
    send(&mut a, json!({"v": 1, "id": 6, "op": "bench_start", "node": "sim", "episodes": "three"})).await;
    let e = next_event(&mut a, "error").await;
    assert_eq!(e["id"], 6);
    assert!(e["message"].as_str().unwrap().contains("could not understand"), "{e}");
    assert_eq!(request(&mut a, 7, json!({"op": "get_state"})).await["ok"], true, "the connection survives");

    // Three episodes from seed 5: the graph starts for the run and stops after it.
    let r = request(&mut a, 8, json!({"op": "bench_start", "node": "sim", "episodes": 3, "seed": 5})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = request(&mut a, 9, json!({"op": "bench_start", "node": "sim", "episodes": 3})).await;
    assert!(r["error"].as_str().unwrap().contains("already running"), "{r}");
    // The other tab sees every episode come in, then the end.
    for n in 1..=3 {
        let p = next_within(&mut b, 120, |m| m["event"] == "bench_progress" && m["run"]["results"].as_array().map(|r| r.len()) == Some(n)).await;
        assert_eq!(p["run"]["running"], true);
        assert_eq!(p["run"]["max_steps"], 200);
    }
    let f = next_within(&mut b, 60, |m| m["event"] == "bench_finished").await;
    assert_eq!(f["complete"], true, "{f}");
    assert_eq!(f["run"]["running"], false);
    assert_eq!(seeds(&f["run"]), [5, 6, 7]);
    let s = &f["summary"];
    assert_eq!(s["episodes"], 3);
    assert!(s["successes"].as_u64().unwrap() >= 2, "the scripted expert stacks nearly always: {f}");
    assert!(f["run"]["results"][0]["steps"].as_u64().unwrap() > 10);
    let url = f["report_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("/reports/") && url.ends_with("-mimicgen-expert/index.html"), "{url}");
    let (code, html) = http(addr, "GET", &url, "").await;
    assert_eq!(code, 200);
    assert!(html.contains("Success benchmark: mimicgen-expert") && html.contains("success.png"), "{html}");
    let folder = url.trim_end_matches("index.html");
    assert_eq!(http(addr, "GET", &format!("{folder}success.png"), "").await.0, 200);
    let (code, stats) = http(addr, "GET", &format!("{folder}stats.json"), "").await;
    assert_eq!(code, 200);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["config"]["seed"], 5);
    assert_eq!(stats["summary"], *s, "the panel shows what the stats file says");
    // The same episodes as `vela bench` with that seed: one simulator, one way to count.
    let cli = tokio::task::spawn_blocking({
        let (preset, out) = (dir.join("mimicgen-expert.json"), dir.join("cli.json"));
        move || {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_vela"))
                .args(["bench", "--quiet", "--episodes", "3", "--seed", "5", "--preset"])
                .arg(&preset)
                .arg("--save-stats")
                .arg(&out)
                .env("VELA_LOG", "warn")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_str::<Value>(&std::fs::read_to_string(out).unwrap()).unwrap()
        }
    })
    .await
    .unwrap();
    let outcome = |eps: &Value| -> Vec<(u64, bool, u64)> {
        eps.as_array().unwrap().iter().map(|e| (e["seed"].as_u64().unwrap(), e["success"].as_bool().unwrap(), e["steps"].as_u64().unwrap())).collect()
    };
    assert_eq!(outcome(&stats["episodes"]), outcome(&cli["episodes"]));
    assert_eq!(http(addr, "GET", "/reports/../Cargo.toml", "").await.0, 404);
    assert_eq!(http(addr, "GET", "/reports/%2E%2E/Cargo.toml", "").await.0, 404);
    // The graph is as it was: stopped, with the simulator's own framerate and auto reset.
    // A state push reads the graph and the running flag one after the other, so one pushed
    // while the run is being wound down can mix the two; the tabs converge on the last one.
    let restored = |m: &Value| m["graph"]["nodes"].as_array().is_some_and(|ns| ns.iter().any(|n| n["name"] == "sim" && n["params"]["framerate"] == 10.0));
    let st = next_within(&mut a, 10, |m| m["event"] == "state" && m["running"] == false && restored(m)).await;
    let sim = st["graph"]["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "sim").unwrap().clone();
    assert_eq!(sim["params"]["framerate"].as_f64(), Some(10.0), "{sim}");
    assert_eq!(sim["params"]["auto_reset"], true, "{sim}");

    // A tab that connects now gets the finished run.
    let mut c = connect(addr).await;
    let late = next_event(&mut c, "bench_finished").await;
    assert_eq!(late["report_url"], url);

    // Stopping early keeps the finished episodes and still writes a report.
    let r = request(&mut a, 10, json!({"op": "bench_start", "node": "sim", "episodes": 100})).await;
    assert_eq!(r["ok"], true, "{r}");
    next_within(&mut b, 120, |m| m["event"] == "bench_progress" && m["run"]["results"].as_array().map(|r| r.len()) == Some(1)).await;
    assert_eq!(request(&mut a, 11, json!({"op": "bench_stop"})).await["ok"], true);
    let f = next_within(&mut b, 30, |m| m["event"] == "bench_finished").await;
    assert_eq!(f["complete"], false);
    assert!(f["reason"].as_str().unwrap().contains("stopped from the studio after"), "{f}");
    assert_eq!(seeds(&f["run"])[0], 0);
    let url2 = f["report_url"].as_str().unwrap();
    assert_ne!(url2, url, "every run has its own folder");
    let (code, html) = http(addr, "GET", url2, "").await;
    assert_eq!(code, 200);
    assert!(html.contains("(stopped early)"), "{html}");

    // Its node taken out of the graph mid-run: the run ends, saying why.
    assert_eq!(request(&mut a, 12, json!({"op": "bench_start", "node": "sim", "episodes": 100})).await["ok"], true);
    assert_eq!(request(&mut a, 13, json!({"op": "remove_node", "name": "sim"})).await["ok"], true);
    let f = next_within(&mut b, 30, |m| m["event"] == "bench_finished").await;
    assert_eq!(f["complete"], false);
    assert!(f["reason"].as_str().unwrap().contains("node 'sim' was removed from the graph"), "{f}");
    assert_eq!(request(&mut a, 14, json!({"op": "get_state"})).await["ok"], true, "the studio carries on");
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    // Bodies are text except for images, which the tests only fetch for their status.
    let out = String::from_utf8_lossy(&out);
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

// ---------------------------------------------------------------------------
// Browser media: WebRTC signalling for VideoOutput, microphone frames for WebAudioIn.

/// A studio running a preset written for the test: test pattern → VideoOutput on
/// loopback only, and WebAudioIn → Collector. Node names carry `tag`, because the media
/// hub is process-wide and tests run in parallel.
async fn start_media(tag: &str) -> SocketAddr {
    let dir = preset_dir(tag);
    let preset = json!({
        "vela_preset": 1, "name": "media",
        "nodes": [
            {"name": format!("pattern_{tag}"), "type": "TestPattern", "params": {"width": 224, "height": 224, "fps": 30}},
            {"name": format!("video_{tag}"), "type": "VideoOutput", "params": {"udp_addrs": "127.0.0.1:0", "keyframe_interval": 1000}},
            {"name": format!("mic_{tag}"), "type": "WebAudioIn"},
            {"name": format!("heard_{tag}"), "type": "Collector"}
        ],
        "edges": [
            {"from": format!("pattern_{tag}.image"), "to": format!("video_{tag}.image"), "policy": "latest"},
            {"from": format!("mic_{tag}.audio"), "to": format!("heard_{tag}.in")}
        ]
    });
    std::fs::write(dir.join("media.json"), serde_json::to_string_pretty(&preset).unwrap()).unwrap();
    let cfg = StudioConfig { store: PresetStore::new(&dir), ui_dist: None, load: Some("media".into()), autostart: true, reports: dir.join("reports") };
    let studio = Studio::new(Arc::new(vela::registry::build()), cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, vela::studio::router(studio)).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webrtc_and_audio_messages_get_errors_and_the_connection_survives() {
    let tag = "mbad";
    let addr = start_media(tag).await;
    let mut ws = connect(addr).await;
    next_event(&mut ws, "state").await;

    let r = request(&mut ws, 1, json!({"op": "webrtc_offer", "node": "ghost", "sdp": "v=0"})).await;
    assert_eq!(r["ok"], false);
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("no running VideoOutput named 'ghost'") && err.contains(&format!("video_{tag}")), "{r}");
    let r = request(&mut ws, 2, json!({"op": "webrtc_offer", "node": format!("video_{tag}"), "sdp": "this is not SDP"})).await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("bad SDP offer"), "{r}");
    send(&mut ws, json!({"v": 1, "id": 3, "op": "webrtc_offer", "node": format!("video_{tag}")})).await;
    let e = next_event(&mut ws, "error").await;
    assert_eq!(e["id"], 3);
    assert!(e["message"].as_str().unwrap().contains("missing field `sdp`"), "{e}");
    send(&mut ws, json!({"v": 1, "op": "webrtc_offer", "node": format!("video_{tag}"), "sdp": "v=0\r\ngarbage"})).await;
    let e = next_event(&mut ws, "error").await;
    assert!(e["message"].as_str().unwrap().contains("bad SDP offer"), "{e}");
    let r = request(&mut ws, 4, json!({"op": "webrtc_hangup", "node": "ghost"})).await;
    assert!(r["error"].as_str().unwrap().contains("no running VideoOutput"), "{r}");

    use vela_webrtc::audio_frame::{encode_i16, encode_f32};
    ws.send(Message::Binary(encode_i16("nobody", 48_000, 1, &[0; 480]).into())).await.unwrap();
    assert!(next_event(&mut ws, "error").await["message"].as_str().unwrap().contains("no running WebAudioIn named 'nobody'"));
    ws.send(Message::Binary(b"RIFF....WAVEfmt junk".to_vec().into())).await.unwrap();
    assert!(next_event(&mut ws, "error").await["message"].as_str().unwrap().contains("magic"));
    ws.send(Message::Binary(encode_i16(&format!("mic_{tag}"), 100, 1, &[0; 480]).into())).await.unwrap();
    assert!(next_event(&mut ws, "error").await["message"].as_str().unwrap().contains("sample rate 100 Hz"));
    let mut ragged = encode_f32(&format!("mic_{tag}"), 48_000, 2, &[0.0; 4]);
    ragged.pop();
    ws.send(Message::Binary(ragged.into())).await.unwrap();
    assert!(next_event(&mut ws, "error").await["message"].as_str().unwrap().contains("whole number"));

    // Still alive; the graph still runs; good audio still gets through at its own rate.
    let samples: Vec<i16> = (0..441).map(|i| ((i as f32 * 0.1).sin() * 8000.0) as i16).collect();
    ws.send(Message::Binary(encode_i16(&format!("mic_{tag}"), 44_100, 1, &samples).into())).await.unwrap();
    let out = next_matching(&mut ws, |m| m["event"] == "output" && m["node"] == format!("heard_{tag}")).await;
    assert_eq!(out["value"]["text"], "audio 441 samples @ 44100 Hz x1", "{out}");
    send(&mut ws, json!({"v": 1, "op": "get_state"})).await;
    let s = next_event(&mut ws, "state").await;
    assert_eq!(s["running"], true);
    assert!(s["status"].as_object().unwrap().values().all(|st| st["state"] == "running"), "{s}");
}

/// A WebRTC viewer written with webrtc-rs, standing in for a browser: offers to receive
/// H.264, and counts the RTP packets and keyframes it gets.
mod viewer {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
    use webrtc::peer_connection::{
        MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
        RTCSessionDescription, SettingEngineBuilder,
    };

    pub struct Counts {
        pub packets: AtomicU32,
        pub idr_starts: AtomicU32,
        pub ssrc: AtomicU32,
        pub track: std::sync::Mutex<Option<Arc<dyn TrackRemote>>>,
    }

    impl Counts {
        /// Sends a picture loss indication, as a browser does when it cannot decode.
        pub async fn request_keyframe(&self) {
            use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
            let track = self.track.lock().unwrap().clone().expect("a track arrived");
            let pli = PictureLossIndication { sender_ssrc: 1, media_ssrc: self.ssrc.load(Ordering::Relaxed) };
            track.write_rtcp(vec![Box::new(pli)]).await.unwrap();
        }
    }

    struct Handler {
        gathered: tokio::sync::watch::Sender<bool>,
        counts: Arc<Counts>,
    }

    #[async_trait::async_trait]
    impl PeerConnectionEventHandler for Handler {
        async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
            if state == RTCIceGatheringState::Complete {
                let _ = self.gathered.send(true);
            }
        }
        async fn on_track(&self, track: Arc<dyn TrackRemote>) {
            let counts = self.counts.clone();
            *counts.track.lock().unwrap() = Some(track.clone());
            tokio::spawn(async move {
                while let Some(ev) = track.poll().await {
                    match ev {
                        TrackRemoteEvent::OnRtpPacket(p) => {
                            counts.packets.fetch_add(1, Ordering::Relaxed);
                            counts.ssrc.store(p.header.ssrc, Ordering::Relaxed);
                            // STAP-A (24) carrying an SPS, or a bare SPS: a stream (re)start.
                            let b = &p.payload;
                            if !b.is_empty() && (b[0] & 0x1f == 7 || (b[0] & 0x1f == 24 && b.len() > 3 && b[3] & 0x1f == 7)) {
                                counts.idr_starts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        TrackRemoteEvent::OnEnded => break,
                        _ => {}
                    }
                }
            });
        }
    }

    pub async fn offer() -> (Arc<dyn PeerConnection>, String, Arc<Counts>) {
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: "video/H264".into(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: vela_webrtc::H264_FMTP.into(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: 109,
                },
                RtpCodecKind::Video,
            )
            .unwrap();
        let (gathered, mut rx) = tokio::sync::watch::channel(false);
        let counts = Arc::new(Counts {
            packets: AtomicU32::new(0),
            idr_starts: AtomicU32::new(0),
            ssrc: AtomicU32::new(0),
            track: std::sync::Mutex::new(None),
        });
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_media_engine(media)
                .with_setting_engine(
                    SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build(),
                )
                .with_handler(Arc::new(Handler { gathered, counts: counts.clone() }))
                .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
                .build()
                .await
                .unwrap(),
        );
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() }),
        )
        .await
        .unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|g| *g)).await;
        let sdp = pc.local_description().await.unwrap().sdp;
        (pc, sdp, counts)
    }

    pub async fn accept(pc: &Arc<dyn PeerConnection>, answer: &str) {
        pc.set_remote_description(RTCSessionDescription::answer(answer.to_string()).unwrap()).await.unwrap();
    }
}

/// Stats of node `name` from the next stats push.
async fn node_stats(ws: &mut Ws, name: &str) -> Value {
    let s = next_matching(ws, |m| m["event"] == "stats" && m["nodes"][name].is_object()).await;
    s["nodes"][name].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_streams_to_viewers_that_come_and_go_without_touching_the_graph() {
    use std::sync::atomic::Ordering;
    let tag = "mstream";
    let video = format!("video_{tag}");
    let addr = start_media(tag).await;
    let mut ws = connect(addr).await;
    next_event(&mut ws, "state").await;

    // A first offer is answered, but this viewer never applies the answer; the tab's next
    // offer replaces it.
    let (abandoned, offer, counts) = viewer::offer().await;
    let r = request(&mut ws, 1, json!({"op": "webrtc_offer", "node": video, "sdp": offer})).await;
    assert_eq!(r["ok"], true, "{r}");

    // The answer event comes first, then the reply.
    let (pc, offer, counts2) = viewer::offer().await;
    send(&mut ws, json!({"v": 1, "id": 2, "op": "webrtc_offer", "node": video, "sdp": offer})).await;
    let a = next_event(&mut ws, "webrtc_answer").await;
    assert_eq!(a["node"], video);
    let sdp = a["sdp"].as_str().unwrap();
    assert!(sdp.contains("H264") && sdp.contains("42e01f") && sdp.contains("a=candidate") && sdp.contains("127.0.0.1"), "{sdp}");
    assert!(!sdp.contains("srflx") && !sdp.contains("relay"), "host candidates only: {sdp}");
    assert_eq!(next_matching(&mut ws, |m| m["event"] == "reply" && m["id"] == 2).await["ok"], true);
    viewer::accept(&pc, sdp).await;
    let t0 = std::time::Instant::now();
    while counts2.packets.load(Ordering::Relaxed) < 30 {
        assert!(t0.elapsed() < Duration::from_secs(15), "no video packets arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let starts = counts2.idr_starts.load(Ordering::Relaxed);
    assert_eq!(starts, 1, "the stream starts with SPS/PPS + IDR, and keyframes are 1000 frames apart");
    // A picture loss indication gets a keyframe right away.
    counts2.request_keyframe().await;
    let t0 = std::time::Instant::now();
    while counts2.idr_starts.load(Ordering::Relaxed) == starts {
        assert!(t0.elapsed() < Duration::from_secs(3), "no keyframe after a PLI");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts.packets.load(Ordering::Relaxed), 0, "the first viewer was replaced before it connected");
    let st = node_stats(&mut ws, &video).await;
    assert!(st["summary"].as_str().unwrap().starts_with("224x224"), "{st}");
    assert!(st["summary"].as_str().unwrap().ends_with("1 viewer"), "{st}");

    // The tab vanishes: its socket closes, the viewer goes, the graph runs on.
    drop(ws);
    let mut ws = connect(addr).await;
    next_event(&mut ws, "state").await;
    let t0 = std::time::Instant::now();
    loop {
        let st = node_stats(&mut ws, &video).await;
        if st["summary"].as_str().unwrap().ends_with("0 viewers") {
            assert!(st["fps"].as_f64().unwrap() > 10.0, "still fed: {st}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "viewer not dropped: {st}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = counts2.packets.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(after, counts2.packets.load(Ordering::Relaxed), "nothing is sent to a gone tab");
    let _ = pc.close().await;
    let _ = abandoned.close().await;

    // A viewer that never completes ICE (answer never applied) does not hold anything up.
    let (_stuck, offer, _) = viewer::offer().await;
    assert_eq!(request(&mut ws, 3, json!({"op": "webrtc_offer", "node": video, "sdp": offer})).await["ok"], true);
    let s = request(&mut ws, 4, json!({"op": "get_state"})).await;
    assert_eq!(s["ok"], true);
    let st = node_stats(&mut ws, &video).await;
    assert!(st["fps"].as_f64().unwrap() > 10.0, "{st}");
    assert_eq!(st["errors"], 0, "{st}");
}
