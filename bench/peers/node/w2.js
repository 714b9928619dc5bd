// W2 switch: T async functions x K "sleep(0)" = T*K switches.
// sleep(0) is `await new Promise(r => setImmediate(r))` (yields to the
// event loop, like asyncio.sleep(0)); with --microtask it is
// `await null` (a microtask hop that never lets I/O run).
// usage: node w2.js [--microtask] [T] [K]
'use strict';
const c = require('./common');
const [T = 1000, K = 1000] = c.args().map(Number);
const micro = c.flag('--microtask');

const immediate = () => new Promise((r) => setImmediate(r));

async function child() {
  if (micro) {
    for (let i = 0; i < K; i++) await null;
  } else {
    for (let i = 0; i < K; i++) await immediate();
  }
}

async function main() {
  const t0 = c.now();
  const ps = [];
  for (let i = 0; i < T; i++) ps.push(child());
  for (const p of ps) await p;
  const elapsed = c.now() - t0;
  c.result(['switches_per_s', (T * K) / elapsed], ['elapsed_s', elapsed],
    ['switches', T * K]);
}
main();
