// Browser media end to end, with Debian's headless Chromium driven by playwright-core:
// `vela studio` runs TestPattern (224² and 512²) → TextOverlay → VideoOutput and
// WebAudioIn → Collector; the page /media/test plays the streams over real WebRTC and
// sends a fake microphone (an espeak-ng WAV) to WebAudioIn.
//
//   VELA_BIN=target/release/vela node --test tests/browser/webrtc.test.mjs
//
// Needs: chromium, espeak-ng (scripts/setup-media.sh), `npm install` in tests/browser.
// Screenshots and measured numbers go to $VELA_BROWSER_OUT (default /tmp/vela-media-out).
// Everything stays on loopback: VideoOutput binds 127.0.0.1 only, Chromium gets no STUN.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const VELA = process.env.VELA_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/vela/target'), 'release/vela');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.VELA_BROWSER_OUT || '/tmp/vela-media-out';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vela-browser-'));
let studio, base, browser, monitor;
const results = {};

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 20000, everyMs = 200) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeoutMs) {
    last = await fn();
    if (last) return last;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

// Playwright adds --headless and a fresh temporary profile (--user-data-dir) itself.
const chromiumFlags = (wav) => [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // WebRTC on loopback, with plain (not mDNS) host candidates.
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  ...(wav ? [`--use-file-for-fake-audio-capture=${wav}`] : []),
];

async function launch(wav) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: chromiumFlags(wav) });
}

/// Latest stats / outputs from the studio, collected by a plain page with its own socket.
async function openMonitor() {
  const page = await browser.newPage();
  await page.goto(`${base}/api/state`);
  await page.evaluate(() => {
    window.mon = { stats: null, outputs: {}, counts: {}, errors: [] };
    const ws = new WebSocket(`ws://${location.host}/ws`);
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.event === 'stats') window.mon.stats = m.nodes;
      if (m.event === 'output') {
        window.mon.outputs[m.node] = m.value;
        window.mon.counts[m.node] = (window.mon.counts[m.node] || 0) + 1;
      }
      if (m.event === 'error') window.mon.errors.push(m.message);
    };
  });
  return page;
}

const stats = () => monitor.evaluate(() => window.mon.stats);
const outputs = () => monitor.evaluate(() => ({ outputs: window.mon.outputs, counts: window.mon.counts }));

async function apiState() {
  const r = await fetch(`${base}/api/state`);
  return r.json();
}

async function assertGraphRunning(why) {
  const st = await apiState();
  assert.equal(st.running, true, `graph running (${why})`);
  for (const [node, status] of Object.entries(st.status)) assert.equal(status.state, 'running', `${node} after ${why}: ${JSON.stringify(status)}`);
}

/// Waits until the page's video plays at `size` with more than `frames` decoded frames.
async function waitPlaying(page, size, frames = 30) {
  return until(`${size}² video decoding on ${page.url()}`, () => page.evaluate(([size, frames]) => {
    const v = document.getElementById('video');
    const s = window.vela && window.vela.state.last;
    return s && v.videoWidth === size && v.videoHeight === size && s.framesDecoded > frames && window.vela.state.frames > frames ? s : null;
  }, [size, frames]), 30000);
}

before(async () => {
  assert.ok(fs.existsSync(VELA), `vela binary at ${VELA} (build it, or set VELA_BIN)`);
  fs.mkdirSync(OUT, { recursive: true });
  // The microphone: a spoken sentence, looped by Chromium's fake capture device.
  const wav = path.join(tmp, 'speech.wav');
  execFileSync('espeak-ng', ['-w', wav, 'pick up the red block and put it in the bowl']);
  // The shipped demo preset, on loopback only and with latency stripes.
  const preset = JSON.parse(fs.readFileSync(path.join(repo, 'presets/media-demo.json'), 'utf8'));
  for (const n of preset.nodes) {
    if (n.type === 'VideoOutput') n.params = { ...n.params, udp_addrs: '127.0.0.1:0', timestamp_stripe: true };
  }
  preset.name = 'media-test';
  const presets = path.join(tmp, 'presets');
  fs.mkdirSync(presets);
  fs.writeFileSync(path.join(presets, 'media-test.json'), JSON.stringify(preset, null, 2));

  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  studio = spawn(VELA, ['--presets-dir', presets, 'studio', '--load', 'media-test', '--start', '--port', String(port)], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  await until('the studio to answer', async () => {
    try { return (await fetch(`${base}/api/state`)).ok; } catch { return false; }
  }, 20000);
  browser = await launch(wav);
  monitor = await openMonitor();
  results.wav = wav;
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (studio) studio.kill('SIGTERM');
  fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(results, null, 2));
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('224² and 512² streams arrive and decode as H.264', async () => {
  const p224 = await browser.newPage({ viewport: { width: 640, height: 420 } });
  await p224.goto(`${base}/media/test?video=video224&stripe=1`);
  const s224 = await waitPlaying(p224, 224);
  assert.equal(s224.codec, 'video/H264');
  const p512 = await browser.newPage({ viewport: { width: 720, height: 700 } });
  await p512.goto(`${base}/media/test?video=video512&stripe=1`);
  const s512 = await waitPlaying(p512, 512);
  assert.equal(s512.codec, 'video/H264');

  // Frames keep coming: painted-frame counts rise.
  const painted = await p224.evaluate(() => window.vela.state.frames);
  await sleep(2000);
  const painted2 = await p224.evaluate(() => window.vela.state.frames);
  assert.ok(painted2 > painted + 10, `painted frames rise: ${painted} → ${painted2}`);

  const st = await until('both viewers in the stats', async () => {
    const s = await stats();
    return s && /1 viewer$/.test(s.video224.summary) && /1 viewer$/.test(s.video512.summary) ? s : null;
  });
  assert.match(st.video224.summary, /^224x224, [\d.]+ FPS, 1 viewer$/);
  assert.match(st.video512.summary, /^512x512, [\d.]+ FPS, 1 viewer$/);

  // Latency from the capture-time stripe, and the browser's own figures.
  await until('latency samples', () => p224.evaluate(() => window.vela.state.latencies.length > 30));
  await until('latency samples 512', () => p512.evaluate(() => window.vela.state.latencies.length > 30));
  for (const [name, page] of [['224', p224], ['512', p512]]) {
    const r = await page.evaluate(() => {
      const l = [...window.vela.state.latencies].sort((a, b) => a - b);
      return { median_ms: l[l.length >> 1], p90_ms: l[Math.floor(l.length * 0.9)], samples: l.length, stats: window.vela.state.last };
    });
    results[`latency_${name}`] = r;
    assert.ok(r.median_ms < 1000, `capture→display median under 1 s at ${name}²: ${JSON.stringify(r)}`);
  }
  const enc = await until('encode times published', async () => {
    const o = (await outputs()).outputs;
    return o.video224 && o.video512 && o.video224.viewers.length && o.video512.viewers.length ? o : null;
  });
  results.encode_ms = { '224': enc.video224.viewers[0].encode_ms, '512': enc.video512.viewers[0].encode_ms };

  await sleep(500);
  await p224.screenshot({ path: path.join(OUT, 'video-224.png') });
  await p512.screenshot({ path: path.join(OUT, 'video-512.png') });
  await p512.close();
  await p224.close();
});

test('a page reloading mid-stream leaves the graph running and streaming resumes', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/media/test?video=video224`);
  await waitPlaying(page, 224);
  const before = (await stats()).pattern224.processed;
  for (let i = 0; i < 3; i++) {
    await page.reload();
    await assertGraphRunning(`reload ${i + 1}`);
  }
  await waitPlaying(page, 224);
  const after = (await until('fresh stats', async () => {
    const s = await stats();
    return s && s.pattern224.processed > before + 15 ? s : null;
  }));
  assert.equal(after.video224.errors, 0);
  // The reloaded tabs' old viewers are gone: exactly one remains.
  await until('one viewer after reloads', async () => /1 viewer$/.test((await stats()).video224.summary));
  await page.close();
  await until('no viewers after closing', async () => /0 viewers$/.test((await stats()).video224.summary));
});

test('a browser killed mid-stream does not disturb the graph or other viewers', async () => {
  const watcher = await browser.newPage();
  await watcher.goto(`${base}/media/test?video=video512`);
  await waitPlaying(watcher, 512);

  // A second Chromium in its own process group, so the whole of it can be killed at once
  // (browser, renderer and network processes: no goodbye of any kind reaches the studio).
  const server = await chromium.launchServer({ executablePath: CHROMIUM, headless: true, args: chromiumFlags() });
  const doomed = await chromium.connect(server.wsEndpoint());
  const page = await doomed.newPage();
  await page.goto(`${base}/media/test?video=video512`);
  await waitPlaying(page, 512);
  await until('two viewers', async () => /2 viewers$/.test((await stats()).video512.summary));
  const pid = server.process().pid;
  process.kill(-pid, 'SIGKILL');
  await until('the killed viewer dropped', async () => /1 viewer$/.test((await stats()).video512.summary), 30000);
  await assertGraphRunning('killing a browser');
  const before = (await watcher.evaluate(() => window.vela.state.last.framesDecoded));
  await sleep(2000);
  const after = (await watcher.evaluate(() => window.vela.state.last.framesDecoded));
  assert.ok(after > before + 10, `the other viewer keeps decoding: ${before} → ${after}`);
  await watcher.close();
});

test('WebAudioIn gets the microphone at the browser\'s real sample rate; muted sends nothing', async () => {
  for (const rate of [null, 16000]) {
    const page = await browser.newPage();
    const q = rate ? `&rate=${rate}` : '';
    await page.goto(`${base}/media/test?video=video224&mic=mic${q}`);
    const mic = await until('the microphone to start', () => page.evaluate(() => {
      if (window.vela && window.vela.state.micError) throw new Error(window.vela.state.micError);
      return window.vela && window.vela.mic && window.vela.mic.sent > 5 ? { rate: window.vela.mic.sampleRate, sent: window.vela.mic.sent } : null;
    }));
    if (rate) assert.equal(mic.rate, rate);
    const heard = await until(`audio at ${mic.rate} Hz`, async () => {
      const o = (await outputs()).outputs.heard;
      return o && o.text.includes(`@ ${mic.rate} Hz x1`) ? o : null;
    });
    assert.match(heard.text, /^audio \d+ samples @ \d+ Hz x1$/);
    const n = Number(heard.text.split(' ')[1]);
    assert.ok(n >= mic.rate * 0.02, `blocks of at least 20 ms: ${n} samples`);
    const level = await until('a speech level', async () => {
      const m = (await outputs()).outputs.mic;
      return m && m.sample_rate === mic.rate && m.audio_db > -60 ? m : null;
    });
    results[`mic_${rate || 'default'}`] = { sample_rate: mic.rate, block_samples: n, level };

    // Muted: nothing reaches the graph. Unmuted: it flows again.
    await page.evaluate(() => window.vela.mic.setMuted(true));
    await sleep(500);
    const c1 = (await outputs()).counts.heard;
    await sleep(1500);
    const c2 = (await outputs()).counts.heard;
    assert.equal(c2, c1, 'no audio while muted');
    await page.evaluate(() => window.vela.mic.setMuted(false));
    await until('audio after unmuting', async () => (await outputs()).counts.heard > c2 + 5);
    await page.close();
  }
  await assertGraphRunning('microphone test');
  const errors = await monitor.evaluate(() => window.mon.errors);
  assert.deepEqual(errors, []);
});
