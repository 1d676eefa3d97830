// Runs a benchmark through a running studio's WebSocket, exactly as the browser's benchmark
// widget does, and prints the server's summary as JSON (the stats file and report it wrote
// are under the studio's --reports folder). Measures the studio path end to end; compare
// with `vela bench` on the same preset and seeds.
//
//   vela studio --port 8050 &
//   node --experimental-websocket scripts/studio-bench.mjs [--url ws://127.0.0.1:8050/ws]
//        [--preset mimicgen-expert] [--node sim] [--episodes 100] [--seed 0] [--out FILE.json]

import fs from 'node:fs';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8050/ws' },
    preset: { type: 'string', default: 'mimicgen-expert' },
    node: { type: 'string', default: 'sim' },
    episodes: { type: 'string', default: '100' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string' },
  },
});
if (typeof WebSocket === 'undefined') {
  console.error('error: this node has no WebSocket; run it with node --experimental-websocket (node 20) or node 22+');
  process.exit(2);
}

const ws = new WebSocket(opt.url);
let id = 0;
const replies = new Map();
const request = (msg) => new Promise((resolve, reject) => {
  const n = ++id;
  replies.set(n, (r) => (r.ok ? resolve() : reject(new Error(`${msg.op}: ${r.error}`))));
  ws.send(JSON.stringify({ v: 1, id: n, ...msg }));
});
const fail = (e) => { console.error(`error: ${e.message ?? e}`); process.exit(1); };

let started = false;
ws.onerror = () => fail(`cannot reach the studio at ${opt.url}`);
ws.onmessage = (ev) => {
  const m = JSON.parse(ev.data);
  if (m.event === 'reply') replies.get(m.id)?.(m);
  if (m.event === 'error') fail(m.message);
  if (!started) return;
  if (m.event === 'bench_progress' && m.run.results.length) {
    const n = m.run.results.length, k = m.run.results.filter((e) => e.success).length;
    process.stderr.write(`\r${n}/${m.run.episodes} episodes, ${k} successes, ${m.run.elapsed_s.toFixed(1)} s   `);
  }
  if (m.event === 'bench_finished') {
    process.stderr.write('\n');
    const result = { preset: opt.preset, complete: m.complete, reason: m.reason, report_url: m.report_url, summary: m.summary };
    const text = JSON.stringify(result, null, 2);
    if (opt.out) fs.writeFileSync(opt.out, text + '\n');
    console.log(text);
    ws.close();
    process.exit(m.complete ? 0 : 1);
  }
};
ws.onopen = async () => {
  try {
    await request({ op: 'load_preset', name: opt.preset });
    started = true;
    await request({ op: 'bench_start', node: opt.node, episodes: Number(opt.episodes), seed: Number(opt.seed) });
  } catch (e) {
    fail(e);
  }
};
