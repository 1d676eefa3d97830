// The studio's benchmark panel in real headless Chromium: load the scripted-expert preset,
// run 3 episodes from the widget, watch the chart fill in, open the report it links; then
// start a long run and stop it from the page. Run through scripts/test-browser.sh (or
// `node --test` here with VELA_BIN, VELA_UI_DIST set). Screenshots go to $VELA_SHOTS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT, BIN, UI, CHROMIUM, freePort, until } from './common.mjs';

const SHOTS = process.env.VELA_SHOTS || '/tmp/vela-browser-shots';
const T = { timeout: 90_000 };

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vela-ui-bench-'));
let server, serverLog = '', port, browser, page;
const pageErrors = [];

const shot = (p, name) => p.screenshot({ path: path.join(SHOTS, name) });
const widget = () => page.locator('.bench-widget[data-widget="sim"]');

before(async () => {
  for (const [what, p] of [['vela binary', BIN], ['built UI', path.join(UI, 'index.html')], ['chromium', CHROMIUM]]) {
    if (!fs.existsSync(p)) throw new Error(`${what} missing at ${p}: run scripts/setup.sh`);
  }
  fs.mkdirSync(SHOTS, { recursive: true });
  const presets = path.join(tmp, 'presets');
  fs.mkdirSync(presets);
  fs.copyFileSync(path.join(ROOT, 'presets/mimicgen-expert.json'), path.join(presets, 'mimicgen-expert.json'));
  port = await freePort();
  server = spawn(BIN, ['--presets-dir', presets, 'studio', '--port', String(port), '--ui', UI, '--reports', path.join(tmp, 'reports')], {
    env: { ...process.env, VELA_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.on('data', (d) => { serverLog += d; });
  server.stderr.on('data', (d) => { serverLog += d; });
  await until(async () => {
    if (server.exitCode !== null) throw new Error(`vela studio exited: ${serverLog}`);
    return (await fetch(`http://127.0.0.1:${port}/api/state`)).ok;
  }, `vela studio to start (${serverLog})`, 20_000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const gone = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await gone;
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('a MimicGen node gets a benchmark widget', T, async () => {
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.locator('#conn.ok').waitFor();
  await page.click('#preset-menu');
  await page.click('[data-preset="mimicgen-expert"]');
  await widget().waitFor();
  assert.equal(await widget().getAttribute('data-bench-state'), 'idle');
  assert.equal(await page.inputValue('#bench-sim-episodes'), '100', 'default: 100 episodes');
});

test('three episodes run from the page, with a live chart and a report link', T, async () => {
  await page.fill('#bench-sim-episodes', '3');
  await page.fill('#bench-sim-seed', '5');
  await page.click('.bench-widget [data-bench="toggle"]');
  await page.locator('.bench-widget[data-bench-state="finished"]').waitFor({ timeout: 60_000 });
  const counters = await widget().locator('.bench-counters').innerText();
  assert.match(counters, /^\d\/3 successes/, counters);
  assert.equal(await widget().locator('.bench-bar').count(), 3, 'one bar per episode');
  assert.equal((await widget().locator('.bench-rate').getAttribute('points')).split(' ').length, 3);
  assert.match(await widget().locator('.bench-status').innerText(), /all 3 episodes done/);
  // The graph was stopped before the run, so the run stopped it again.
  await page.locator('#canvas.running').waitFor({ state: 'detached' });
  await page.mouse.click(5, 895);
  await shot(page, '08-benchmark-finished.png');

  const link = widget().locator('a.bench-report');
  const href = await link.getAttribute('href');
  assert.match(href, /^\/reports\/.+-mimicgen-expert\/index\.html$/);
  const [report] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
  await report.waitForLoadState('load');
  assert.match(await report.locator('h1').innerText(), /Success benchmark: mimicgen-expert/);
  assert.match(await report.locator('.verdict').innerText(), /\/3 successes/);
  // Its plots load from the same folder.
  await until(async () => report.locator('img[src="success.png"]').evaluate((i) => i.complete && i.naturalWidth > 0), 'success plot');
  await shot(report, '09-benchmark-report.png');
  await report.close();
});

test('a long run shows progress and stops from the page', T, async () => {
  await page.fill('#bench-sim-episodes', '100');
  await page.fill('#bench-sim-seed', '0');
  await page.click('.bench-widget [data-bench="toggle"]');
  await page.locator('.bench-widget[data-bench-state="running"]').waitFor();
  assert.equal(await page.locator('#bench-sim-episodes').isDisabled(), true, 'inputs are locked while running');
  await until(async () => (await widget().locator('.bench-bar').count()) >= 4, '4 episodes', 60_000);
  await shot(page, '10-benchmark-running.png');
  await page.click('.bench-widget [data-bench="toggle"]');
  await page.locator('.bench-widget[data-bench-state="stopped"]').waitFor({ timeout: 20_000 });
  assert.match(await widget().locator('.bench-status').innerText(), /stopped from the studio after \d+ of 100/);
  assert.ok(await widget().locator('a.bench-report').count(), 'a stopped run still links its report');
  assert.deepEqual(pageErrors, [], 'no errors in the page console');
});
