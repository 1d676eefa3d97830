// Shared by the studio browser tests: where things are, a free port, polling, and Chromium
// with a fake microphone, a studio on a free port.

import fs from 'node:fs';
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CACHE = process.env.VELA_CACHE || path.join(os.homedir(), '.cache/vela');
export const BIN = process.env.VELA_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(CACHE, 'target'), 'release/vela');
export const UI = process.env.VELA_UI_DIST || path.join(CACHE, 'ui');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

/** Polls `f` until it returns something truthy; `log` (a function) adds context on timeout. */
export async function until(f, what, ms = 20_000, log = () => '') {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await f(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})${log() ? `\n${log()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Headless Chromium whose microphone plays `wav` in a loop (WebRTC on loopback allowed). */
export function launchWithFakeMic(wav) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--autoplay-policy=no-user-gesture-required',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wav}`,
    ],
  });
}

/** `vela studio` on a free port with `preset` loaded from `presetsDir` and started; resolves
 * once it answers. `log()` returns everything it printed so far. */
export async function startStudio(presetsDir, preset, env = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let out = '';
  const server = spawn(BIN, ['--presets-dir', presetsDir, 'studio', '--load', preset, '--start', '--port', String(port), '--ui', UI], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.on('data', (d) => { out += d; });
  server.stderr.on('data', (d) => { out += d; });
  const log = () => out;
  await until(async () => (await fetch(`${base}/api/state`)).ok, 'the studio to answer', 20_000, log);
  return { server, base, log };
}

/** A 1440×900 page on the studio at `base`, once its WebSocket is connected; page errors are
 * pushed onto `errors`. */
export async function openStudioPage(browser, base, errors) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base);
  await page.locator('#conn.conn.ok').waitFor({ timeout: 20_000 });
  return page;
}

/** Closes the browser, stops the studio, removes `tmp` and reports page errors. */
export async function closeStudio({ browser, server, tmp, errors }) {
  if (browser) await browser.close().catch(() => {});
  if (server && server.exitCode === null) server.kill('SIGTERM');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (errors && errors.length) console.error('page errors:', errors);
}
