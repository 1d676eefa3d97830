// Vela browser media: play a VideoOutput node's WebRTC stream and send the microphone to a
// WebAudioIn node, both over the studio WebSocket (/ws). No dependencies; an ES module.
//
//   import { StudioLink, playVideo, startMic } from '/media/vela-media.js';
//   const link = StudioLink.connect();                 // or StudioLink.wrap(existingWebSocket)
//   const video = playVideo(link, 'video', document.querySelector('video'));
//   const mic = await startMic(link, 'mic', { muted: true });
//   mic.setMuted(false);  ...  video.stop(); mic.stop(); link.close();
//
// Both handles keep trying on their own: a VideoOutput that is not running yet, a graph
// restart, a lost connection or a studio restart are all retried; nothing here throws
// after the call returns.

const PROTOCOL = 1;
// Request ids this module uses, far above what a UI is likely to number its own requests.
let nextId = 2 ** 40;

/// A studio WebSocket: JSON requests with replies, event listeners, binary sends.
export class StudioLink {
  /// Opens (and keeps reopening) a socket to the studio at `url` (default: this page's /ws).
  static connect(url) {
    const link = new StudioLink();
    link._url = url || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    link._open();
    return link;
  }

  /// Uses a socket someone else opened (e.g. the UI's own). Reconnecting stays theirs:
  /// call `link.attach(newSocket)` when they open a new one.
  static wrap(ws) {
    const link = new StudioLink();
    link.attach(ws);
    return link;
  }

  constructor() {
    this._listeners = new Map();
    this._pending = new Map();
    this._closed = false;
    this.ws = null;
  }

  attach(ws) {
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('message', (e) => this._onMessage(e));
    ws.addEventListener('close', () => {
      for (const [, p] of this._pending) p.reject(new Error('studio connection closed'));
      this._pending.clear();
      this._emit('_close', {});
    });
    if (ws.readyState === WebSocket.OPEN) this._emit('_open', {});
    else ws.addEventListener('open', () => this._emit('_open', {}));
  }

  _open() {
    if (this._closed) return;
    const ws = new WebSocket(this._url);
    this.attach(ws);
    ws.addEventListener('close', () => setTimeout(() => this._open(), 1000));
  }

  get isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /// Resolves once the socket is open.
  ready() {
    if (this.isOpen) return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.on('_open', () => { off(); resolve(); });
    });
  }

  _onMessage(e) {
    if (typeof e.data !== 'string') return;
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    if (msg.event === 'reply' && this._pending.has(msg.id)) {
      const p = this._pending.get(msg.id);
      this._pending.delete(msg.id);
      if (msg.ok) p.resolve(msg); else p.reject(new Error(msg.error || 'refused'));
    }
    this._emit(msg.event, msg);
  }

  _emit(event, msg) {
    for (const fn of this._listeners.get(event) || []) {
      try { fn(msg); } catch (err) { console.error(err); }
    }
  }

  /// Calls `fn(msg)` for every server message whose `event` is `event`. Returns an unsubscribe.
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this._listeners.get(event).delete(fn);
  }

  /// Sends `{op, ...}` and resolves with the reply (rejects with the server's error).
  request(msg, timeoutMs = 10000) {
    if (!this.isOpen) return Promise.reject(new Error('studio connection not open'));
    const id = nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      setTimeout(() => {
        if (this._pending.delete(id)) reject(new Error('no reply from the studio'));
      }, timeoutMs);
      this.ws.send(JSON.stringify({ v: PROTOCOL, id, ...msg }));
    });
  }

  sendBinary(buf) {
    if (this.isOpen) this.ws.send(buf);
  }

  close() {
    this._closed = true;
    if (this.ws) this.ws.close();
  }
}

function waitForGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(done, ms);
  });
}

/// Streams VideoOutput `node` into `videoEl`. Options: `iceServers` (default none: host
/// candidates, works offline), `onState(state, detail)` with state one of 'connecting',
/// 'playing', 'waiting' (node not running / connection lost; retrying), 'stopped'.
/// Returns { stop(), stats(), get state() }.
export function playVideo(link, node, videoEl, opts = {}) {
  const iceServers = opts.iceServers || [];
  const onState = opts.onState || (() => {});
  let pc = null;
  let stopped = false;
  let retry = null;
  let state = 'connecting';
  let generation = 0;
  const setState = (s, detail) => { state = s; onState(s, detail); };

  videoEl.muted = true;
  videoEl.playsInline = true;
  videoEl.autoplay = true;

  const schedule = (ms, why) => {
    if (stopped) return;
    setState('waiting', why);
    clearTimeout(retry);
    retry = setTimeout(negotiate, ms);
  };

  async function negotiate() {
    if (stopped) return;
    const gen = ++generation;
    if (pc) { pc.close(); pc = null; }
    if (!link.isOpen) { await link.ready(); if (stopped || gen !== generation) return; }
    setState('connecting');
    const mine = new RTCPeerConnection({ iceServers });
    pc = mine;
    const tr = mine.addTransceiver('video', { direction: 'recvonly' });
    if (tr.setCodecPreferences && RTCRtpReceiver.getCapabilities) {
      const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
      const h264 = codecs.filter((c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || '') && /42e01f/.test(c.sdpFmtpLine || ''));
      if (h264.length) tr.setCodecPreferences([...h264, ...codecs.filter((c) => !h264.includes(c))]);
    }
    mine.ontrack = (e) => {
      videoEl.srcObject = new MediaStream([e.track]);
      videoEl.play().catch(() => {});
    };
    mine.onconnectionstatechange = () => {
      if (mine !== pc || stopped) return;
      const s = mine.connectionState;
      if (s === 'connected') setState('playing');
      else if (s === 'failed' || s === 'closed') schedule(1000, `connection ${s}`);
      else if (s === 'disconnected') {
        setTimeout(() => { if (mine === pc && mine.connectionState === 'disconnected') schedule(0, 'connection lost'); }, 3000);
      }
    };
    try {
      await mine.setLocalDescription(await mine.createOffer());
      await waitForGathering(mine, 3000);
      let answer = null;
      const off = link.on('webrtc_answer', (m) => { if (m.node === node) answer = m.sdp; });
      try {
        await link.request({ op: 'webrtc_offer', node, sdp: mine.localDescription.sdp });
      } finally {
        off();
      }
      if (stopped || gen !== generation) return;
      if (!answer) throw new Error('no answer');
      await mine.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (err) {
      if (mine === pc) schedule(2000, String(err.message || err));
    }
  }

  // A new studio connection (reconnect or studio restart) needs a new negotiation.
  let wasOpen = link.isOpen;
  const offOpen = link.on('_open', () => {
    if (!wasOpen) { wasOpen = true; return; } // the first open: negotiate() is already waiting for it
    if (!stopped) schedule(0, 'studio reconnected');
  });
  negotiate();

  return {
    get state() { return state; },
    get pc() { return pc; },
    /// Figures from the browser's own WebRTC statistics.
    async stats() {
      const out = { state, width: videoEl.videoWidth, height: videoEl.videoHeight, framesDecoded: 0, framesPerSecond: 0, packetsLost: 0, codec: null };
      if (!pc) return out;
      const report = await pc.getStats();
      report.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          out.framesDecoded = r.framesDecoded || 0;
          out.framesPerSecond = r.framesPerSecond || 0;
          out.packetsLost = r.packetsLost || 0;
          if (r.codecId && report.get(r.codecId)) out.codec = report.get(r.codecId).mimeType;
        }
      });
      return out;
    },
    stop() {
      stopped = true;
      clearTimeout(retry);
      offOpen();
      if (pc) { pc.close(); pc = null; }
      if (link.isOpen) link.request({ op: 'webrtc_hangup', node }).catch(() => {});
      setState('stopped');
    },
  };
}

const WORKLET = `
class VelaCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frames = options.processorOptions.blockFrames;
    this.buf = null;
    this.fill = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const ch = input.length, n = input[0].length;
    if (!this.buf || this.buf.length !== this.frames * ch) { this.buf = new Float32Array(this.frames * ch); this.fill = 0; }
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < ch; c++) this.buf[this.fill * ch + c] = input[c][i];
      if (++this.fill === this.frames) {
        this.port.postMessage({ channels: ch, samples: this.buf }, [this.buf.buffer]);
        this.buf = new Float32Array(this.frames * ch);
        this.fill = 0;
      }
    }
    return true;
  }
}
registerProcessor('vela-capture', VelaCapture);
`;

/// The binary frame WebAudioIn expects (see vela_webrtc::audio_frame): "VAU1", rate u32,
/// channels u16, format u16 (1 = i16), name length u16, name, then i16 samples; little-endian.
export function encodeAudioFrame(node, sampleRate, channels, float32) {
  const name = new TextEncoder().encode(node);
  const buf = new ArrayBuffer(14 + name.length + float32.length * 2);
  const dv = new DataView(buf);
  [86, 65, 85, 49].forEach((b, i) => dv.setUint8(i, b));
  dv.setUint32(4, sampleRate, true);
  dv.setUint16(8, channels, true);
  dv.setUint16(10, 1, true);
  dv.setUint16(12, name.length, true);
  new Uint8Array(buf, 14, name.length).set(name);
  let o = 14 + name.length;
  for (let i = 0; i < float32.length; i++, o += 2) {
    const s = Math.max(-1, Math.min(1, float32[i]));
    dv.setInt16(o, Math.round(s * 32767), true);
  }
  return buf;
}

/// Sends the microphone to WebAudioIn `node`. Options: `deviceId`, `sampleRate` (default:
/// the device's own), `channels` (1), `blockMs` (40; at least 20), `muted` (false; a muted
/// mic sends nothing). Returns { sampleRate, channels, muted, setMuted(b), sent, stop() }.
/// Rejects if the page may not use the microphone (needs https or localhost).
export async function startMic(link, node, opts = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('this page cannot use the microphone (browsers allow it only over https or on localhost)');
  }
  const channels = opts.channels || 1;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { deviceId: opts.deviceId ? { exact: opts.deviceId } : undefined, channelCount: channels, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const ctx = new AudioContext(opts.sampleRate ? { sampleRate: opts.sampleRate } : {});
  const url = URL.createObjectURL(new Blob([WORKLET], { type: 'text/javascript' }));
  await ctx.audioWorklet.addModule(url);
  URL.revokeObjectURL(url);
  const blockMs = Math.max(20, opts.blockMs || 40);
  const blockFrames = Math.round((ctx.sampleRate * blockMs) / 1000);
  const source = ctx.createMediaStreamSource(stream);
  const worklet = new AudioWorkletNode(ctx, 'vela-capture', {
    numberOfInputs: 1, numberOfOutputs: 0, channelCount: channels, channelCountMode: 'explicit',
    processorOptions: { blockFrames },
  });
  const track = stream.getAudioTracks()[0];
  const handle = {
    sampleRate: ctx.sampleRate,
    channels,
    muted: !!opts.muted,
    sent: 0,
    setMuted(m) { handle.muted = !!m; track.enabled = !handle.muted; },
    stop() { worklet.port.onmessage = null; source.disconnect(); stream.getTracks().forEach((t) => t.stop()); ctx.close(); },
  };
  handle.setMuted(handle.muted);
  worklet.port.onmessage = (e) => {
    if (handle.muted || !link.isOpen) return;
    link.sendBinary(encodeAudioFrame(node, ctx.sampleRate, e.data.channels, e.data.samples));
    handle.sent++;
  };
  source.connect(worklet);
  if (ctx.state === 'suspended') await ctx.resume().catch(() => {});
  return handle;
}

/// Reads the 32-bit millisecond timestamp a VideoOutput with `timestamp_stripe` on draws at
/// the bottom-left of each frame (2 rows of 16 blocks, most significant bit first) from a
/// canvas 2D context holding the frame. Returns the frame's capture time as
/// `Date.now() mod 2^32` would have read it, or null if no stripe is found.
export function readTimestampStripe(ctx2d, width, height) {
  const bw = Math.floor(width / 16);
  const bh = Math.max(6, Math.floor(bw / 2));
  if (bw < 4 || height < 2 * bh) return null;
  const y0 = height - 2 * bh;
  const img = ctx2d.getImageData(0, y0, 16 * bw, 2 * bh).data;
  let v = 0;
  for (let row = 0; row < 2; row++) {
    for (let i = 0; i < 16; i++) {
      const x = i * bw + (bw >> 1), y = row * bh + (bh >> 1);
      const p = (y * 16 * bw + x) * 4;
      const lum = (img[p] + img[p + 1] + img[p + 2]) / 3;
      v = v * 2 + (lum > 127 ? 1 : 0);
    }
  }
  return v >>> 0;
}
