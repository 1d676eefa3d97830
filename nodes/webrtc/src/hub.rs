//! The process-wide meeting point between running browser-media nodes and the studio's
//! WebSocket connections, keyed by node name. Nodes register when they start and
//! unregister when they stop; the studio forwards offers and microphone frames here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::audio::AudioInlet;
use crate::audio_frame::AudioFrame;
use crate::video::VideoStream;

#[derive(Default)]
pub struct Hub {
    videos: Mutex<HashMap<String, Arc<VideoStream>>>,
    audios: Mutex<HashMap<String, Arc<AudioInlet>>>,
}

/// The hub of this process.
pub fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(Hub::default)
}

/// One studio connection (browser tab), as the hub sees it.
#[derive(Clone)]
pub struct ClientHandle {
    pub id: u64,
    alive: Arc<AtomicBool>,
}

impl ClientHandle {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ClientHandle { id: NEXT.fetch_add(1, Ordering::Relaxed), alive: Arc::new(AtomicBool::new(true)) }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

impl Default for ClientHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub(crate) fn register_video(&self, stream: Arc<VideoStream>) {
        if let Some(old) = self.videos.lock().unwrap().insert(stream.node.clone(), stream) {
            tracing::warn!("a second VideoOutput named '{}' started; browsers now see the newer one", old.node);
        }
    }

    pub(crate) fn unregister_video(&self, stream: &Arc<VideoStream>) {
        let mut map = self.videos.lock().unwrap();
        if map.get(&stream.node).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            map.remove(&stream.node);
        }
    }

    pub(crate) fn register_audio(&self, inlet: Arc<AudioInlet>) {
        if let Some(old) = self.audios.lock().unwrap().insert(inlet.node.clone(), inlet) {
            tracing::warn!("a second WebAudioIn named '{}' started; browsers now feed the newer one", old.node);
        }
    }

    pub(crate) fn unregister_audio(&self, inlet: &Arc<AudioInlet>) {
        let mut map = self.audios.lock().unwrap();
        if map.get(&inlet.node).is_some_and(|s| Arc::ptr_eq(s, inlet)) {
            map.remove(&inlet.node);
        }
    }

    /// Names of the running VideoOutput nodes.
    pub fn video_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.videos.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// Answers a browser's SDP offer for VideoOutput `node`; the answer carries all
    /// candidates (no trickle ICE).
    pub async fn answer(&self, node: &str, client: &ClientHandle, offer_sdp: String) -> Result<String, String> {
        let stream = self.videos.lock().unwrap().get(node).cloned();
        let Some(stream) = stream else {
            let running = self.video_nodes();
            return Err(if running.is_empty() {
                format!("no running VideoOutput named '{node}' (no VideoOutput is running; start the graph)")
            } else {
                format!("no running VideoOutput named '{node}' (running: {})", running.join(", "))
            });
        };
        stream.answer(client, offer_sdp).await
    }

    /// Ends a client's stream from `node`.
    pub fn hang_up(&self, node: &str, client: &ClientHandle) -> Result<(), String> {
        let stream = self.videos.lock().unwrap().get(node).cloned();
        match stream {
            Some(s) => {
                s.close_client(client.id);
                Ok(())
            }
            None => Err(format!("no running VideoOutput named '{node}'")),
        }
    }

    /// The client's WebSocket closed: end everything it had open.
    pub fn client_gone(&self, client: &ClientHandle) {
        client.alive.store(false, Ordering::Release);
        let streams: Vec<Arc<VideoStream>> = self.videos.lock().unwrap().values().cloned().collect();
        for s in streams {
            let n = s.close_client(client.id);
            if n > 0 {
                tracing::debug!("client {} went away: closed its stream from '{}'", client.id, s.node);
            }
        }
    }

    /// Delivers a microphone frame to WebAudioIn `frame.node`.
    pub fn push_audio(&self, frame: AudioFrame) -> Result<(), String> {
        let inlet = self.audios.lock().unwrap().get(&frame.node).cloned();
        match inlet {
            Some(i) => {
                i.push(frame.audio);
                Ok(())
            }
            None => Err(format!("no running WebAudioIn named '{}'", frame.node)),
        }
    }
}
