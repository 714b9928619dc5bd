// W3 sleepers: N async functions each sleeping a uniform random 0-1 s
// (fixed seed) with setTimeout. Reports wall s, CPU s and RSS per parked
// task, measured right after spawning all and yielding once.
// usage: node w3.js [N]
'use strict';
const c = require('./common');
const N = Number(c.args()[0] || 100000);
const rand = c.rng(42);
const delays = new Float64Array(N);
for (let i = 0; i < N; i++) delays[i] = rand();

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

async function sleeper(d) {
  await sleep(d);
}

async function main() {
  if (global.gc) global.gc();
  const rss0 = c.rss();
  const t0 = c.now(); const c0 = c.cpu();
  const ps = new Array(N);
  for (let i = 0; i < N; i++) ps[i] = sleeper(delays[i]);
  await new Promise((r) => setImmediate(r)); // all started and parked
  const rss1 = c.rss(); const hwm1 = c.hwm();
  for (let i = 0; i < N; i++) await ps[i];
  const wall = c.now() - t0; const cpu = c.cpu() - c0;
  c.result(['wall_s', wall], ['cpu_s', cpu],
    ['bytes_per_task', (rss1 - rss0) / N],
    ['hwm_bytes_per_task', (hwm1 - rss0) / N], ['tasks', N]);
}
main();
