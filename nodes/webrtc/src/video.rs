//! VideoOutput: streams the frames it receives to every browser that asks, as H.264 over
//! WebRTC.
//!
//! Isolation is the point of the design (Agent Studio's pipeline died when a browser
//! connected or went away). The node's callback only drops the frame into each viewer's
//! one-frame slot and returns. Each viewer has a thread of its own that encodes the latest
//! frame with its own encoder (so a new viewer starts at a keyframe and a slow viewer
//! skips whole frames instead of corrupting the stream) and hands the packets to its
//! peer connection. A viewer that fails, closes, or whose WebSocket goes away is dropped;
//! the graph never waits for any of them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Attribute, Interceptor, Packet as InterceptedPacket, Slot, StreamInfo, TaggedPacket};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use vela_runtime::{Context, DataType, Image, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind, ParamSpec, Payload};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder,
};

use crate::h264::H264Encoder;
use crate::hub::{hub, ClientHandle};

/// The H.264 flavour every WebRTC browser decodes: constrained baseline, level 3.1,
/// fragmented (FU-A) packetisation.
pub const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// How long an offer may take to be answered (host candidates gather in milliseconds).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// A packet write that takes longer than this means the connection is wedged.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A viewer that has not connected this long after the answer is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Each viewer costs an encoder thread; more than this many at once is refused.
pub const MAX_VIEWERS: usize = 16;

/// Per-stream settings, shared with the viewers.
pub(crate) struct VideoStream {
    pub(crate) node: String,
    bitrate_bps: AtomicU32,
    keyframe_interval: u32,
    ice_servers: Vec<String>,
    udp_addrs: Vec<String>,
    viewers: Mutex<Vec<Arc<Viewer>>>,
    closed: AtomicBool,
    /// Frames the node handed to viewers, and the last size.
    frames: AtomicU64,
    size: AtomicU64,
}

/// What one browser tab's connection shares between its handler, its thread and the node.
pub(crate) struct Viewer {
    pub(crate) client: u64,
    slot: Mutex<Option<Image>>,
    wake: Condvar,
    connected: AtomicBool,
    closed: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    encode_us: AtomicU64,
    encoded: AtomicU64,
    /// The browser asked for a keyframe (PLI/FIR: it lost packets or cannot decode).
    want_key: AtomicBool,
    key_requests: AtomicU64,
}

impl Viewer {
    fn new(client: u64) -> Self {
        Viewer {
            client,
            slot: Mutex::new(None),
            wake: Condvar::new(),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            encode_us: AtomicU64::new(0),
            encoded: AtomicU64::new(0),
            want_key: AtomicBool::new(false),
            key_requests: AtomicU64::new(0),
        }
    }

    /// Replaces whatever frame is waiting: a viewer that is behind skips frames.
    fn offer(&self, img: &Image) {
        let mut slot = self.slot.lock().unwrap();
        if slot.replace(img.clone()).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(slot);
        self.wake.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Take the lock so the encoder thread is either waiting (and gets the notify) or
        // will see the flag before it waits again.
        drop(self.slot.lock().unwrap());
        self.wake.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The next frame to encode, or `None` once closed (or never connected in time).
    fn next_frame(&self, created: Instant) -> Option<Image> {
        let mut slot = self.slot.lock().unwrap();
        loop {
            if self.is_closed() {
                return None;
            }
            if !self.connected.load(Ordering::Acquire) && created.elapsed() > CONNECT_TIMEOUT {
                // The browser never applied the answer or ICE never got through.
                self.closed.store(true, Ordering::Release);
                return None;
            }
            if self.connected.load(Ordering::Acquire) {
                if let Some(img) = slot.take() {
                    return Some(img);
                }
            }
            slot = self.wake.wait_timeout(slot, Duration::from_millis(500)).unwrap().0;
        }
    }
}

/// An interceptor that passes the browser's keyframe requests (PLI, FIR) on to the
/// application, where the encoder can answer them; all other inbound RTCP is left to the
/// default interceptors (NACK responder, reports), which have seen it by now (it sits last).
#[derive(Default)]
struct KeyframeRequests {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptedPacket::Rtcp(packets) = &msg.message.packet {
            let keep: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if keep.is_empty() {
                return Ok(());
            }
            msg.message.packet = InterceptedPacket::Rtcp(keep);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

struct Handler {
    viewer: Arc<Viewer>,
    gathered: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!("video viewer of client {}: {state}", self.viewer.client);
        match state {
            RTCPeerConnectionState::Connected => {
                self.viewer.connected.store(true, Ordering::Release);
                self.viewer.wake.notify_all();
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => self.viewer.close(),
            _ => {}
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' ']).map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

/// A cheap random number without a crate for it: std's randomly seeded hasher.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish() as u32
}

impl VideoStream {
    /// Hands a frame to every viewer; never blocks on them.
    pub(crate) fn push(&self, img: &Image) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.size.store(((img.width as u64) << 32) | img.height as u64, Ordering::Relaxed);
        let mut viewers = self.viewers.lock().unwrap();
        viewers.retain(|v| !v.is_closed());
        for v in viewers.iter() {
            v.offer(img);
        }
    }

    pub(crate) fn viewer_count(&self) -> usize {
        self.viewers.lock().unwrap().iter().filter(|v| !v.is_closed()).count()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for v in self.viewers.lock().unwrap().drain(..) {
            v.close();
        }
    }

    /// Closes the viewers of one client (its tab hung up, reloaded or went away).
    pub(crate) fn close_client(&self, client: u64) -> usize {
        let mut n = 0;
        for v in self.viewers.lock().unwrap().iter().filter(|v| v.client == client) {
            v.close();
            n += 1;
        }
        n
    }

    fn stats(&self) -> Value {
        let viewers = self.viewers.lock().unwrap();
        let list: Vec<Value> = viewers
            .iter()
            .filter(|v| !v.is_closed())
            .map(|v| {
                let n = v.encoded.load(Ordering::Relaxed);
                json!({
                    "client": v.client,
                    "connected": v.connected.load(Ordering::Relaxed),
                    "sent": v.sent.load(Ordering::Relaxed),
                    "dropped": v.dropped.load(Ordering::Relaxed),
                    "keyframe_requests": v.key_requests.load(Ordering::Relaxed),
                    "encode_ms": if n > 0 { v.encode_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0 } else { 0.0 },
                })
            })
            .collect();
        json!(list)
    }

    /// Answers a browser's offer (non-trickle: the answer carries every candidate) and
    /// starts streaming to it once connected.
    pub(crate) async fn answer(self: &Arc<Self>, client: &ClientHandle, offer_sdp: String) -> Result<String, String> {
        if self.closed.load(Ordering::Acquire) {
            return Err(format!("VideoOutput '{}' is not running", self.node));
        }
        let offer = RTCSessionDescription::offer(offer_sdp).map_err(|e| format!("bad SDP offer: {e}"))?;
        let others = self.viewers.lock().unwrap().iter().filter(|v| !v.is_closed() && v.client != client.id).count();
        if others >= MAX_VIEWERS {
            return Err(format!("VideoOutput '{}' already streams to {MAX_VIEWERS} viewers", self.node));
        }
        let viewer = Arc::new(Viewer::new(client.id));
        let (gathered, mut gathered_rx) = tokio::sync::watch::channel(false);

        let mut media = MediaEngine::default();
        let fb = |typ: &str, parameter: &str| RTCPFeedback { typ: typ.into(), parameter: parameter.into() };
        let codec = RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
        };
        media
            .register_codec(RTCRtpCodecParameters { rtp_codec: codec.clone(), payload_type: 102 }, RtpCodecKind::Video)
            .map_err(|e| e.to_string())?;
        let interceptors = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| e.to_string())?
            .with(Slot::from(14_000), KeyframeRequests::default());
        let settings = SettingEngineBuilder::new()
            // No multicast DNS: candidates are plain addresses, and nothing is sent to the LAN.
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(true)
            .build();
        let ice: Vec<RTCIceServer> =
            self.ice_servers.iter().map(|u| RTCIceServer { urls: vec![u.clone()], ..Default::default() }).collect();
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().with_ice_servers(ice).build())
                .with_media_engine(media)
                .with_setting_engine(settings)
                .with_interceptor_registry(interceptors)
                .with_handler(Arc::new(Handler { viewer: viewer.clone(), gathered }))
                .with_udp_addrs(self.udp_addrs.clone())
                .build()
                .await
                .map_err(|e| format!("cannot open a peer connection: {e}"))?,
        );

        let negotiated = async {
            pc.set_remote_description(offer).await.map_err(|e| format!("bad SDP offer: {e}"))?;
            let ssrc = random_u32();
            let track = Arc::new(
                TrackLocalStaticSample::new(
                    Instant::now(),
                    MediaStreamTrack::new(
                        format!("vela-{}", self.node),
                        format!("{}-video", self.node),
                        self.node.clone(),
                        RtpCodecKind::Video,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                            codec: codec.clone(),
                            ..Default::default()
                        }],
                    ),
                )
                .map_err(|e| e.to_string())?,
            );
            let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await.map_err(|e| e.to_string())?;
            let answer = pc.create_answer(None).await.map_err(|e| format!("cannot answer this offer: {e}"))?;
            pc.set_local_description(answer).await.map_err(|e| format!("cannot answer this offer: {e}"))?;
            let pt = sender
                .get_parameters()
                .await
                .map_err(|e| e.to_string())?
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .ok_or_else(|| "the offer has no H.264 (constrained baseline, packetization-mode 1) to receive".to_string())?;
            if !*gathered_rx.borrow() {
                tokio::time::timeout(GATHER_TIMEOUT, gathered_rx.wait_for(|g| *g))
                    .await
                    .map_err(|_| "gathering ICE candidates timed out".to_string())?
                    .map_err(|_| "peer connection went away".to_string())?;
            }
            let sdp = pc.local_description().await.ok_or("no local description")?.sdp;
            Ok::<_, String>((track, ssrc, pt, sdp))
        }
        .await;
        let (track, ssrc, pt, sdp) = match negotiated {
            Ok(x) => x,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };

        // One viewer per client and stream: a renegotiation replaces the old connection.
        {
            let mut viewers = self.viewers.lock().unwrap();
            for old in viewers.iter().filter(|v| v.client == client.id) {
                old.close();
            }
            viewers.push(viewer.clone());
        }
        if !client.is_alive() || self.closed.load(Ordering::Acquire) {
            viewer.close();
        }
        // Keyframe requests from the browser, for the encoder thread.
        let (t, v) = (track.clone(), viewer.clone());
        tokio::spawn(async move {
            while !v.is_closed() {
                tokio::select! {
                    ev = t.poll() => match ev {
                        Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                                v.key_requests.fetch_add(1, Ordering::Relaxed);
                                v.want_key.store(true, Ordering::Release);
                            }
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        let stream = self.clone();
        let rt = tokio::runtime::Handle::current();
        let v = viewer.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vela-video-{}", self.node))
            .spawn(move || stream.run_viewer(viewer, pc, track, ssrc, pt, rt));
        if let Err(e) = spawned {
            v.close();
            return Err(format!("cannot start the encoder thread: {e}"));
        }
        Ok(sdp)
    }

    /// The viewer's thread: encode the latest frame, packetise, send; until closed.
    fn run_viewer(
        self: Arc<Self>,
        viewer: Arc<Viewer>,
        pc: Arc<dyn PeerConnection>,
        track: Arc<TrackLocalStaticSample>,
        ssrc: u32,
        pt: u8,
        rt: tokio::runtime::Handle,
    ) {
        let mut enc = H264Encoder::new(self.bitrate_bps.load(Ordering::Relaxed), 30.0, self.keyframe_interval);
        let mut last_ts: Option<u64> = None;
        let mut failures = 0u32;
        let mut last_key = Instant::now();
        let created = Instant::now();
        while let Some(img) = viewer.next_frame(created) {
            enc.set_bitrate(self.bitrate_bps.load(Ordering::Relaxed));
            // Answer keyframe requests, but not more often than every 300 ms (a browser
            // repeats its request until the keyframe arrives).
            if viewer.want_key.load(Ordering::Acquire) && last_key.elapsed() >= Duration::from_millis(300) {
                viewer.want_key.store(false, Ordering::Release);
                enc.request_keyframe();
            }
            let t0 = Instant::now();
            let frame = match enc.encode(&img) {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("VideoOutput '{}': {e}", self.node);
                    continue;
                }
            };
            if frame.keyframe {
                last_key = Instant::now();
            }
            viewer.encode_us.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
            viewer.encoded.fetch_add(1, Ordering::Relaxed);
            // RTP time advances by the capture interval, so playback keeps the source's pace.
            let interval_ns = last_ts.map(|t| img.timestamp.saturating_sub(t)).unwrap_or(33_333_333);
            last_ts = Some(img.timestamp);
            let sample = Sample {
                data: Bytes::from(frame.data),
                duration: Duration::from_nanos(interval_ns.clamp(1_000_000, 1_000_000_000)),
                ..Sample::new(Instant::now())
            };
            let written =
                rt.block_on(async { tokio::time::timeout(WRITE_TIMEOUT, track.sample_writer(ssrc, pt).write_sample(&sample)).await });
            match written {
                Ok(Ok(())) => {
                    failures = 0;
                    viewer.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    failures += 1;
                    tracing::debug!("VideoOutput '{}': sending to client {} failed: {e}", self.node, viewer.client);
                }
                Err(_) => failures += 1,
            }
            if failures >= 50 {
                tracing::info!("VideoOutput '{}': dropping client {} after repeated send failures", self.node, viewer.client);
                viewer.close();
            }
        }
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), pc.close()).await });
        tracing::debug!("VideoOutput '{}': viewer of client {} closed", self.node, viewer.client);
    }
}

/// The node.
pub struct VideoOutput {
    stream: Arc<VideoStream>,
    frames: u64,
    /// Arrival times of recent frames, for the rate in the summary.
    recent: VecDeque<Instant>,
    last_publish: Instant,
    stripe: bool,
}

/// Draws the low 32 bits of the frame's capture time in milliseconds as two rows of 16
/// black/white blocks (most significant bit first) at the bottom-left; large enough to
/// survive H.264. The browser module's `readTimestampStripe` reads them back.
pub fn draw_timestamp_stripe(img: &Image) -> Image {
    let (w, h) = (img.width as usize, img.height as usize);
    let bw = w / 16;
    let bh = (bw / 2).max(6);
    if bw < 4 || h < 2 * bh {
        return img.clone();
    }
    let ms = ((img.timestamp / 1_000_000) & 0xffff_ffff) as u32;
    let mut px = img.data.to_vec();
    let y0 = h - 2 * bh;
    for bit in 0..32 {
        let on = (ms >> (31 - bit)) & 1 == 1;
        let (row, col) = (bit / 16, bit % 16);
        for y in y0 + row * bh..y0 + (row + 1) * bh {
            let start = (y * w + col * bw) * 3;
            px[start..start + bw * 3].fill(if on { 255 } else { 0 });
        }
    }
    Image { width: img.width, height: img.height, data: px.into(), timestamp: img.timestamp }
}

impl VideoOutput {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("VideoOutput", "Video", "Video output")
            .describe("Streams frames to the studio's browsers as H.264 over WebRTC (host candidates only unless ice_servers is set).")
            .input("image", &[DataType::Image], "frames to show")
            .param(ParamSpec::new(
                "bitrate_kbps",
                ParamKind::Int { min: Some(50), max: Some(50_000) },
                2000,
                "target H.264 bit rate per viewer",
            ))
            .param(
                ParamSpec::new(
                    "keyframe_interval",
                    ParamKind::Int { min: Some(1), max: Some(1000) },
                    60,
                    "frames between keyframes (a viewer that lost packets recovers at the next one)",
                )
                .startup_only(),
            )
            .param(
                ParamSpec::new(
                    "ice_servers",
                    ParamKind::String,
                    "",
                    "STUN/TURN URLs, comma-separated; empty = host candidates only (works offline)",
                )
                .startup_only(),
            )
            .param(ParamSpec::new(
                "timestamp_stripe",
                ParamKind::Bool,
                false,
                "draw each frame's capture time (ms, 32 bits) as blocks at the bottom-left, for measuring latency in the browser",
            ))
            .param(
                ParamSpec::new(
                    "udp_addrs",
                    ParamKind::String,
                    "0.0.0.0:0,127.0.0.1:0",
                    "local UDP addresses for media, comma-separated; 0.0.0.0 = every non-loopback interface",
                )
                .startup_only(),
            )
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let p = init.params;
        let udp_addrs = split_list(p.str("udp_addrs")?);
        if udp_addrs.is_empty() {
            return Err(NodeError::param("udp_addrs", "needs at least one address"));
        }
        for a in &udp_addrs {
            a.parse::<std::net::SocketAddr>().map_err(|_| NodeError::param("udp_addrs", format!("{a:?} is not IP:port")))?;
        }
        let ice_servers = split_list(p.str("ice_servers")?);
        for u in &ice_servers {
            if !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:")) {
                return Err(NodeError::param("ice_servers", format!("{u:?} is not a stun:, turn: or turns: URL")));
            }
        }
        let stream = Arc::new(VideoStream {
            node: init.name.to_string(),
            bitrate_bps: AtomicU32::new(p.u64("bitrate_kbps")? as u32 * 1000),
            keyframe_interval: p.u64("keyframe_interval")? as u32,
            ice_servers,
            udp_addrs,
            viewers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            size: AtomicU64::new(0),
        });
        Ok(VideoOutput {
            stream,
            frames: 0,
            recent: VecDeque::new(),
            last_publish: Instant::now(),
            stripe: p.bool("timestamp_stripe")?,
        })
    }

    fn fps(&self) -> f64 {
        match (self.recent.front(), self.recent.back()) {
            (Some(a), Some(b)) if self.recent.len() >= 2 && b > a && b.elapsed() < Duration::from_secs(3) => {
                (self.recent.len() - 1) as f64 / b.duration_since(*a).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    fn size(&self) -> (u32, u32) {
        let s = self.stream.size.load(Ordering::Relaxed);
        ((s >> 32) as u32, s as u32)
    }
}

impl Node for VideoOutput {
    fn start(&mut self, _: &mut Context) -> Result<(), NodeError> {
        hub().register_video(self.stream.clone());
        Ok(())
    }

    fn on_input(&mut self, _: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        let Payload::Image(img) = msg.payload else {
            return Err(NodeError::msg(format!("VideoOutput shows images, not {}", msg.payload.describe())));
        };
        self.frames += 1;
        if self.recent.len() == 30 {
            self.recent.pop_front();
        }
        self.recent.push_back(Instant::now());
        if self.stripe {
            self.stream.push(&draw_timestamp_stripe(&img));
        } else {
            self.stream.push(&img);
        }
        if self.last_publish.elapsed() >= Duration::from_secs(1) {
            self.last_publish = Instant::now();
            let (w, h) = self.size();
            ctx.publish(json!({
                "width": w, "height": h, "fps": (self.fps() * 10.0).round() / 10.0,
                "frames": self.frames, "viewers": self.stream.stats(),
            }));
        }
        Ok(())
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        match name {
            "bitrate_kbps" => {
                let kbps = value.as_u64().ok_or_else(|| NodeError::param(name, "expected an integer"))?;
                self.stream.bitrate_bps.store(kbps as u32 * 1000, Ordering::Relaxed);
                Ok(())
            }
            "timestamp_stripe" => {
                self.stripe = value.as_bool().unwrap_or(false);
                Ok(())
            }
            _ => Err(NodeError::param(name, "cannot change while running")),
        }
    }

    fn summary(&self) -> Option<String> {
        let (w, h) = self.size();
        let viewers = self.stream.viewer_count();
        let size = if w > 0 { format!("{w}x{h}") } else { "no frames".into() };
        Some(format!("{size}, {:.1} FPS, {viewers} viewer{}", self.fps(), if viewers == 1 { "" } else { "s" }))
    }

    fn stop(&mut self) {
        hub().unregister_video(&self.stream);
        self.stream.close();
    }
}

impl Drop for VideoOutput {
    fn drop(&mut self) {
        // A node dropped without stop() (failed start, removed) must not leave viewers behind.
        hub().unregister_video(&self.stream);
        self.stream.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn build(params: Value) -> Result<VideoOutput, NodeError> {
        let given: Map<String, Value> = serde_json::from_value(params).unwrap();
        let params = vela_runtime::resolve_params(&VideoOutput::descriptor(), &given).map_err(|e| NodeError::msg(format!("{e:?}")))?;
        VideoOutput::new(&NodeInit { name: "v_unit", params: &params })
    }

    #[test]
    fn parameters_are_checked() {
        let v = build(json!({})).unwrap();
        assert_eq!(v.stream.udp_addrs, vec!["0.0.0.0:0", "127.0.0.1:0"]);
        assert!(v.stream.ice_servers.is_empty(), "no STUN unless asked: works offline");
        let v = build(json!({"ice_servers": "stun:10.0.0.1:3478, turn:relay.lan:3478", "udp_addrs": "127.0.0.1:0"})).unwrap();
        assert_eq!(v.stream.ice_servers, vec!["stun:10.0.0.1:3478", "turn:relay.lan:3478"]);
        let e = build(json!({"ice_servers": "stun.l.example.com:19302"})).err().unwrap();
        assert!(e.to_string().contains("not a stun:"), "{e}");
        let e = build(json!({"udp_addrs": "localhost"})).err().unwrap();
        assert!(e.to_string().contains("not IP:port"), "{e}");
        assert!(build(json!({"udp_addrs": " , "})).is_err());
        assert!(build(json!({"bitrate_kbps": 10})).is_err());
    }

    #[test]
    fn the_timestamp_stripe_encodes_the_capture_millisecond() {
        let mut img = Image::rgb8(224, 224, vec![128u8; 224 * 224 * 3]).unwrap();
        img.timestamp = 1_764_130_000_123_456_789;
        let out = draw_timestamp_stripe(&img);
        let (bw, bh) = (224 / 16, 7);
        let mut v: u64 = 0;
        for bit in 0..32 {
            let (row, col) = (bit / 16, bit % 16);
            let p = out.pixel((col * bw + bw / 2) as u32, (224 - 2 * bh + row * bh + bh / 2) as u32);
            v = v * 2 + u64::from(p[0] > 127);
        }
        assert_eq!(v, (1_764_130_000_123u64) & 0xffff_ffff);
        assert_eq!(out.pixel(100, 10), [128, 128, 128], "the rest of the frame is untouched");
        let tiny = Image::rgb8(32, 8, vec![0u8; 32 * 8 * 3]).unwrap();
        assert_eq!(draw_timestamp_stripe(&tiny).data, tiny.data, "too small: left alone");
    }

    #[test]
    fn frames_reach_no_one_without_viewers_and_the_node_reports_them() {
        let mut v = build(json!({"udp_addrs": "127.0.0.1:0"})).unwrap();
        let mut ctx = Context::detached("v_unit", VideoOutput::descriptor());
        for _ in 0..5 {
            let img = Image::rgb8(64, 48, vec![0u8; 64 * 48 * 3]).unwrap();
            v.on_input("image", Message::new("src", img), &mut ctx).unwrap();
        }
        assert!(v.summary().unwrap().starts_with("64x48, "), "{:?}", v.summary());
        assert!(v.summary().unwrap().ends_with("0 viewers"));
        let e = v.on_input("image", Message::new("src", json!(1)), &mut ctx).unwrap_err();
        assert!(e.to_string().contains("shows images"));
    }
}
