// Vela studio in real headless Chromium: a user's session from an empty page to a saved,
// reloaded preset. Run through scripts/test-browser.sh (or `node --test` here with VELA_BIN,
// VELA_UI_DIST set). Screenshots go to $VELA_SHOTS (default /tmp/vela-browser-shots).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = process.env.VELA_CACHE || path.join(os.homedir(), '.cache/vela');
const BIN = process.env.VELA_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(CACHE, 'target'), 'release/vela');
const UI = process.env.VELA_UI_DIST || path.join(CACHE, 'ui');
const SHOTS = process.env.VELA_SHOTS || '/tmp/vela-browser-shots';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const T = { timeout: 60_000 };

let server, serverLog = '', port, presetDir, browser, page;
const pageErrors = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function startServer() {
  server = spawn(BIN, ['--presets-dir', presetDir, 'studio', '--port', String(port), '--ui', UI], {
    env: { ...process.env, VELA_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.on('data', (d) => { serverLog += d; });
  server.stderr.on('data', (d) => { serverLog += d; });
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/state`);
      if (r.ok) return;
    } catch { /* not up yet */ }
    if (server.exitCode !== null) throw new Error(`vela studio exited: ${serverLog}`);
    if (Date.now() > deadline) throw new Error(`vela studio did not start: ${serverLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopServer() {
  if (!server || server.exitCode !== null) return;
  const gone = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  await gone;
}

const api = async (p) => {
  const r = await fetch(`http://127.0.0.1:${port}${p}`);
  assert.equal(r.status, 200, `GET ${p}`);
  return r.json();
};
const apiState = () => api('/api/state');

/** Polls until `f` returns a truthy value. */
async function until(f, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await f(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function center(locator) {
  // The palette scrolls once it lists more types than fit; bring the item into view first.
  await locator.scrollIntoViewIfNeeded();
  const b = await locator.boundingBox();
  assert.ok(b, 'element is visible');
  return { x: b.x + b.width / 2, y: b.y + b.height / 2 };
}

async function drag(from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move((from.x + to.x) / 2, (from.y + to.y) / 2, { steps: 6 });
  await page.mouse.move(to.x, to.y, { steps: 6 });
  await page.mouse.up();
}

const shot = (name) => page.screenshot({ path: path.join(SHOTS, name) });
const nodes = () => page.locator('#canvas g.node');
const edges = () => page.locator('#canvas g.edge');

async function expectCount(locator, n, what) {
  await until(async () => (await locator.count()) === n, `${n} ${what} (have ${await locator.count()})`);
}

/** Waits for a toast of this kind whose text matches `re`; returns its text. */
async function toast(kind, re) {
  const t = page.locator(`.toast.${kind}`, { hasText: re }).last();
  await t.waitFor({ timeout: 5000 });
  return t.innerText();
}

before(async () => {
  for (const [what, p] of [['vela binary', BIN], ['built UI', path.join(UI, 'index.html')], ['chromium', CHROMIUM]]) {
    if (!fs.existsSync(p)) throw new Error(`${what} missing at ${p}: run scripts/setup.sh`);
  }
  fs.mkdirSync(SHOTS, { recursive: true });
  presetDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vela-ui-presets-'));
  fs.copyFileSync(path.join(ROOT, 'presets/counter-demo.json'), path.join(presetDir, 'counter-demo.json'));
  port = await freePort();
  await startServer();
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
  await stopServer();
  if (presetDir) fs.rmSync(presetDir, { recursive: true, force: true });
});

test('the page connects and shows the palette by category', T, async () => {
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.locator('#conn.ok').waitFor();
  const types = await api('/api/nodes');
  await expectCount(page.locator('.pal-item'), types.length, 'palette items');
  for (const cat of new Set(types.map((t) => t.category))) {
    assert.ok(await page.locator('.pal-cat', { hasText: cat }).count(), `category ${cat} shown`);
  }
  // Types that cannot run here are greyed, with the reason as a tooltip.
  for (const t of types.filter((t) => t.availability.status === 'unavailable')) {
    const item = page.locator(`.pal-item[data-type="${t.type_name}"]`);
    assert.match(await item.getAttribute('class'), /unavailable/);
    assert.match(await item.getAttribute('title'), /Unavailable/);
  }
  await expectCount(nodes(), 0, 'nodes');
  await shot('00-empty.png');
});

test('unavailable node types are greyed with their reason and cannot be added', T, async () => {
  // This build may have no unavailable types, so a second tab sees one through a routed socket.
  const tab = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await tab.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => {
      // Edit the text, not parsed JSON: JS numbers would mangle 64-bit integer bounds.
      let text = String(m);
      const at = text.indexOf('"type_name":"TestPattern"');
      if (text.startsWith('{"event":"welcome"') && at >= 0) {
        const avail = '"availability":{"status":"available"}';
        const i = text.indexOf(avail, at);
        text = text.slice(0, i) + '"availability":{"status":"unavailable","reason":"needs a camera driver"}' + text.slice(i + avail.length);
      }
      ws.send(text);
    });
  });
  await tab.goto(`http://127.0.0.1:${port}/`);
  const item = tab.locator('.pal-item[data-type="TestPattern"]');
  await item.waitFor();
  assert.match(await item.getAttribute('class'), /unavailable/);
  assert.equal(await item.getAttribute('title'), 'Unavailable: needs a camera driver');
  assert.match(await item.innerText(), /needs a camera driver/);
  await item.click();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await apiState()).graph.nodes.length, 0, 'clicking it added nothing');
  await tab.screenshot({ path: path.join(SHOTS, '00-unavailable.png') });
  await tab.close();
});

test('loading a preset shows its nodes and edges', T, async () => {
  await page.click('#preset-menu');
  await page.click('[data-preset="counter-demo"]');
  await expectCount(nodes(), 5, 'nodes');
  await expectCount(edges(), 3, 'edges');
  for (const n of ['counter', 'half', 'log', 'pattern', 'frames']) {
    await page.locator(`#canvas g.node[data-node="${n}"]`).waitFor();
  }
  for (const e of ['counter.out->half.in', 'half.out->log.in', 'pattern.image->frames.in']) {
    await page.locator(`#canvas g.edge[data-edge="${e}"]`).waitFor({ state: 'attached' });
  }
  // Typed ports: one colour class per data type.
  assert.match(await page.locator('[data-out="pattern.image"] circle').getAttribute('class'), /t-image/);
  assert.match(await page.locator('[data-out="counter.out"] circle').getAttribute('class'), /t-json/);
  assert.equal(await page.locator('.preset-name').innerText(), 'counter-demo');
  await shot('01-preset-loaded.png');
});

test('dragging a type from the palette adds a uniquely named node', T, async () => {
  const canvas = await page.locator('#canvas').boundingBox();
  await drag(await center(page.locator('.pal-item[data-type="Scale"]')), { x: canvas.x + 820, y: canvas.y + 120 });
  await expectCount(nodes(), 6, 'nodes');
  const st = await until(async () => {
    const s = await apiState();
    return s.graph.nodes.find((n) => n.name === 'scale') && s;
  }, 'node scale on the server');
  const node = st.graph.nodes.find((n) => n.name === 'scale');
  assert.equal(node.type, 'Scale');
  assert.ok(Array.isArray(node.position), 'dropped node has a position');
  // A second one gets another name.
  await page.locator('.pal-item[data-type="Scale"]').click();
  await until(async () => (await apiState()).graph.nodes.some((n) => n.name === 'scale_2'), 'node scale_2');
  // Moving a node by its title sends the new position.
  const before = (await apiState()).graph.nodes.find((n) => n.name === 'scale_2').position;
  const title = await center(page.locator('g.node[data-node="scale_2"] .node-title'));
  await drag(title, { x: title.x + 60, y: title.y + 40 });
  await until(async () => {
    const p = (await apiState()).graph.nodes.find((n) => n.name === 'scale_2').position;
    return Math.abs(p[0] - before[0] - 60) < 2 && Math.abs(p[1] - before[1] - 40) < 2;
  }, 'scale_2 moved on the server');
});

test('dragging from an output to an input connects them', T, async () => {
  await drag(await center(page.locator('[data-out="half.out"] circle')), await center(page.locator('[data-in="scale.in"] circle')));
  await page.locator('#canvas g.edge[data-edge="half.out->scale.in"]').waitFor();
  await until(async () => (await apiState()).graph.edges.some((e) => e.from === 'half.out' && e.to === 'scale.in'), 'edge on the server');
  await expectCount(edges(), 4, 'edges');
});

test('an ill-typed connection is refused with a message', T, async () => {
  await drag(await center(page.locator('[data-out="pattern.image"] circle')), await center(page.locator('[data-in="scale_2.in"] circle')));
  const text = await toast('error', /Cannot connect pattern\.image/);
  assert.match(text, /image/);
  await new Promise((r) => setTimeout(r, 300));
  await shot('02-ill-typed-refused.png');
  await new Promise((r) => setTimeout(r, 300));
  await expectCount(edges(), 4, 'edges');
  assert.ok(!(await apiState()).graph.edges.some((e) => e.to === 'scale_2.in'), 'server has no such edge');
});

test('selecting and deleting an edge and a node, seen live by a second tab', T, async () => {
  const tab2 = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await tab2.goto(`http://127.0.0.1:${port}/`);
  await tab2.locator('#conn.ok').waitFor();
  await expectCount(tab2.locator('#canvas g.node'), 7, 'nodes in the second tab');
  await page.click('#canvas g.node[data-node="scale_2"] .node-title');
  await page.keyboard.press('Delete');
  await until(async () => !(await apiState()).graph.nodes.some((n) => n.name === 'scale_2'), 'scale_2 removed');
  await expectCount(nodes(), 6, 'nodes');
  // Select an edge by clicking its line, then delete it.
  const edge = page.locator('#canvas g.edge[data-edge="pattern.image->frames.in"]');
  await edge.locator('.edge-hit').click({ force: true });
  await until(async () => /selected/.test(await edge.getAttribute('class')), 'edge selected');
  await shot('03-edge-selected.png');
  await page.keyboard.press('Delete');
  await until(async () => !(await apiState()).graph.edges.some((e) => e.from === 'pattern.image'), 'edge removed');
  await expectCount(edges(), 3, 'edges');
  await expectCount(tab2.locator('#canvas g.node'), 6, 'nodes in the second tab');
  await expectCount(tab2.locator('#canvas g.edge'), 3, 'edges in the second tab');
  await tab2.close();
});

test('changing parameters in the panel applies them on the server', T, async () => {
  await page.click('#canvas g.node[data-node="half"] .node-title');
  const factor = page.locator('#param-half-factor');
  await factor.fill('0.25');
  await factor.press('Enter');
  await until(async () => (await apiState()).graph.nodes.find((n) => n.name === 'half').params.factor === 0.25, 'factor 0.25');
  // Let the counter run long enough to watch (count is read at start-up).
  await page.click('#canvas g.node[data-node="counter"] .node-title');
  const count = page.locator('#param-counter-count');
  await count.fill('400');
  await count.press('Enter');
  await until(async () => (await apiState()).graph.nodes.find((n) => n.name === 'counter').params.count === 400, 'count 400');
  assert.ok(await page.locator('[data-param="count"] .badge').count(), 'start-up-only parameter is marked');
  // The server refuses an out-of-range value; the page says so and shows the server's value again.
  await page.click('#canvas g.node[data-node="pattern"] .node-title');
  const fps = page.locator('#param-pattern-fps');
  await fps.fill('5000');
  await fps.press('Enter');
  assert.match(await toast('error', /pattern\.fps/), /above the maximum 1000/);
  await until(async () => (await fps.inputValue()) === '15', 'fps field reverted');
  await shot('04-params.png');
});

test('starting the graph shows live stats and widget outputs', T, async () => {
  await page.click('#run-toggle');
  await page.locator('#canvas.running').waitFor();
  const summary = page.locator('g.node[data-node="counter"] .node-summary');
  const first = await until(async () => { const t = await summary.textContent(); return t !== '–' && t; }, 'a counter summary');
  await until(async () => (await summary.textContent()) !== first, 'the counter summary to change');
  await page.locator('.widget[data-widget="log"] .wline').first().waitFor();
  await until(async () => (await page.locator('.log-line.output').count()) > 3, 'output lines in the log');
  await page.click('#canvas g.node[data-node="counter"] .node-title');
  await new Promise((r) => setTimeout(r, 700));
  await shot('05-running.png');
  await page.click('#run-toggle');
  await page.locator('#canvas.running').waitFor({ state: 'detached' });
  assert.equal((await apiState()).running, false);
});

test('save as, reset, and reload the preset', T, async () => {
  await page.click('#preset-menu');
  await page.fill('#save-as-name', 'counter-edit');
  await page.press('#save-as-name', 'Enter');
  await until(async () => (await api('/api/presets')).includes('counter-edit'), 'preset saved');
  const saved = await api('/api/presets/counter-edit');
  assert.ok(saved.nodes.some((n) => n.name === 'scale'));
  assert.ok(saved.edges.some((e) => e.from === 'half.out' && e.to === 'scale.in'));
  await until(async () => (await page.locator('.preset-name').innerText()) === 'counter-edit', 'preset name in the toolbar');

  await page.click('#reset');
  await page.click('#reset');
  await expectCount(nodes(), 0, 'nodes after reset');
  await page.click('#preset-menu');
  await page.click('[data-preset="counter-edit"]');
  await expectCount(nodes(), 6, 'nodes after reload');
  await expectCount(edges(), 3, 'edges after reload');
  const st = await apiState();
  assert.equal(st.preset, 'counter-edit');
  assert.equal(st.graph.nodes.find((n) => n.name === 'half').params.factor, 0.25);
  // Edit, then save over it with Ctrl+S; the toolbar's Save does the same.
  await page.click('#canvas g.node[data-node="half"] .node-title');
  await page.fill('#param-half-factor', '0.5');
  await page.press('#param-half-factor', 'Enter');
  await until(async () => (await apiState()).graph.nodes.find((n) => n.name === 'half').params.factor === 0.5, 'factor 0.5');
  await page.keyboard.press('Control+s');
  await until(async () => (await api('/api/presets/counter-edit')).nodes.find((n) => n.name === 'half').params.factor === 0.5, 'saved with Ctrl+S');
  await page.click('#save');
  await page.mouse.click(5, 895); // off the canvas: keep the selection for the picture
  await new Promise((r) => setTimeout(r, 300));
  await shot('06-reloaded.png');
});

test('pan and zoom', T, async () => {
  const before = await page.locator('.zoom-pct').innerText();
  const c = await page.locator('#canvas').boundingBox();
  await page.mouse.move(c.x + c.width - 80, c.y + c.height - 80);
  await page.mouse.wheel(0, -300);
  await until(async () => (await page.locator('.zoom-pct').innerText()) !== before, 'zoom to change');
  const box0 = await page.locator('g.node[data-node="counter"]').boundingBox();
  // From an empty spot (bottom left: zooming pushed the nodes up and left).
  await drag({ x: c.x + 40, y: c.y + c.height - 40 }, { x: c.x + 140, y: c.y + c.height - 90 });
  const box1 = await page.locator('g.node[data-node="counter"]').boundingBox();
  assert.ok(Math.abs(box1.x - box0.x - 100) < 3 && Math.abs(box1.y - box0.y + 50) < 3, `panned by (${box1.x - box0.x}, ${box1.y - box0.y})`);
  await page.click('.canvas-tools button[title="Frame all nodes"]');
});

test('the page reconnects after the server restarts', T, async () => {
  assert.deepEqual(pageErrors, [], 'no errors in the page console');
  // Toasts go away by themselves (errors after 6 s).
  await until(async () => (await page.locator('.toast').count()) === 0, 'toasts to expire', 10_000);
  await stopServer();
  await page.locator('#conn.bad').waitFor({ timeout: 10_000 });
  await shot('07-offline.png');
  await startServer();
  await page.locator('#conn.ok').waitFor({ timeout: 15_000 });
  // The new server starts empty; the page shows its state, not the old one.
  await expectCount(nodes(), 0, 'nodes from the restarted server');
});
