// The studio's own media widgets, in Debian's headless Chromium: the shipped speech-demo
// preset streams a test pattern to the video widget over WebRTC, and the mic widget sends
// Chromium's fake microphone (an espeak-ng WAV) through VADFilter → WhisperASR; the
// transcript shows in the studio. Also: importing an Agent Studio preset from the presets
// menu, and the colour / multiline parameter controls.
//
//   VELA_BIN=target/release/vela VELA_UI_DIST=~/.cache/vela/ui node --test tests/browser/studio-media.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, BIN, UI, startStudio, until, launchWithFakeMic, openStudioPage, closeStudio } from './common.mjs';

const OUT = process.env.VELA_BROWSER_OUT || '/tmp/vela-media-out';
const COMMAND = 'put the red block on the green block';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vela-studio-media-'));
let server, base, browser, page;
const pageErrors = [];


const shot = (name) => page.screenshot({ path: path.join(OUT, name) });

before(async () => {
  assert.ok(fs.existsSync(BIN), `vela binary at ${BIN}`);
  assert.ok(fs.existsSync(path.join(UI, 'index.html')), `built UI at ${UI}`);
  fs.mkdirSync(OUT, { recursive: true });
  // A spoken command, then silence, looped by Chromium's fake capture device.
  const wav = path.join(tmp, 'command.wav');
  // Slow, with gaps between words: what tiny.en hears best from espeak's voice (see nodes/speech/tests/common).
  execFileSync('espeak-ng', ['-s', '130', '-g', '10', '-w', wav, COMMAND]);
  const padded = path.join(tmp, 'command-padded.wav');
  execFileSync('sox', [wav, padded, 'pad', '0.5', '2.5']);

  const presets = path.join(tmp, 'presets');
  fs.mkdirSync(presets);
  const preset = JSON.parse(fs.readFileSync(path.join(ROOT, 'presets/speech-demo.json'), 'utf8'));
  for (const n of preset.nodes) {
    if (n.type === 'VideoOutput') n.params = { ...n.params, udp_addrs: '127.0.0.1:0' };
  }
  fs.writeFileSync(path.join(presets, 'speech-demo.json'), JSON.stringify(preset, null, 2));

  ({ server, base } = await startStudio(presets, 'speech-demo'));

  browser = await launchWithFakeMic(padded);
  page = await openStudioPage(browser, base, pageErrors);
});

after(() => closeStudio({ browser, server, tmp, errors: pageErrors }));

test('the video widget plays the VideoOutput stream over WebRTC', { timeout: 60_000 }, async () => {
  const widget = page.locator('.video-widget[data-widget="video"]');
  await widget.waitFor();
  await until(async () => (await widget.getAttribute('data-video-state')) === 'playing', 'the stream to play');
  const decoded = await until(() => page.evaluate(() => {
    const v = document.querySelector('.video-widget[data-widget="video"] video');
    const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
    return v && v.videoWidth === 320 && v.videoHeight === 240 && q > 10 ? { w: v.videoWidth, h: v.videoHeight, frames: q } : null;
  }), 'decoded 320×240 frames');
  assert.equal(decoded.w, 320);
  await shot('studio-video-docked.png');
  await widget.getByRole('button', { name: 'Enlarge' }).click();
  await until(async () => (await widget.getAttribute('class')).includes('big'), 'the enlarged video');
  await shot('studio-video-enlarged.png');
  await widget.getByRole('button', { name: 'Dock' }).click();
  // Moving the element must not have interrupted the stream.
  assert.equal(await widget.getAttribute('data-video-state'), 'playing');
});

test('the mic widget sends speech that Whisper transcribes, and mute stops it', { timeout: 120_000 }, async () => {
  const mic = page.locator('.mic-widget[data-widget="mic"]');
  await mic.waitFor();
  assert.equal(await mic.getAttribute('data-mic-state'), 'off');
  await mic.locator('[data-mic="toggle"]').click();
  await until(async () => (await mic.getAttribute('data-mic-state')) === 'on', 'the microphone to start');
  // The transcript reaches the Collector, whose text log is a widget, and the log.
  const heard = page.locator('.widget[data-widget="transcripts"] .wline');
  const text = await until(async () => {
    const n = await heard.count();
    for (let i = 0; i < n; i++) {
      const t = (await heard.nth(i).innerText()).toLowerCase();
      if (t.includes('red') && t.includes('block')) return t;
    }
    return null;
  }, 'a transcript naming the red block', 90_000);
  assert.match(text, /green/);
  await shot('studio-mic-transcript.png');

  // Muted: the sent counter stops.
  await mic.locator('[data-mic="mute"]').click();
  await until(async () => (await mic.locator('.mic-status').innerText()).startsWith('muted'), 'the muted state');
  const sent = () => page.evaluate(() => document.querySelector('.mic-widget[data-widget="mic"] .mic-status').textContent);
  await mic.locator('[data-mic="mute"]').click();
  await until(async () => /sending .* \d+ blocks/.test(await sent()), 'sending again after unmuting');
  await mic.locator('[data-mic="toggle"]').click();
  await until(async () => (await mic.getAttribute('data-mic-state')) === 'off', 'the microphone to stop');
  const st = await (await fetch(`${base}/api/state`)).json();
  assert.equal(st.running, true, 'the graph keeps running');
});

test('an Agent Studio preset imports from the presets menu with its report', { timeout: 30_000 }, async () => {
  const fixtures = path.join(ROOT, 'tests/fixtures/agent-studio');
  const file = fs.readdirSync(fixtures).filter((f) => f.endsWith('.json')).sort()[0];
  await page.locator('#preset-menu').click();
  await page.locator('#import-file').setInputFiles(path.join(fixtures, file));
  const stem = file.replace(/\.json$/, '').replace(/[^A-Za-z0-9_-]/g, '-').replace(/^-+|-+$/g, '');
  await page.locator('.toast', { hasText: `imported '${stem}'` }).first().waitFor({ timeout: 10_000 });
  const names = await (await fetch(`${base}/api/presets`)).json();
  assert.ok(JSON.stringify(names).includes(stem), `preset ${stem} listed: ${JSON.stringify(names)}`);
  await shot('studio-import.png');
});

test('colour parameters get a colour picker', { timeout: 30_000 }, async () => {
  await page.locator('#canvas g.node', { hasText: 'overlay' }).first().click();
  const colour = page.locator('[data-param="color"] input[type="color"]');
  await colour.waitFor();
  assert.equal(await colour.inputValue(), '#78d715');
  assert.equal(pageErrors.length, 0, pageErrors.join('\n'));
});
