// W1 spawn: N async functions that each return a number at once; await
// all; sum. (An async function runs synchronously until its first await,
// so Node's tasks finish while they are being spawned.)
// usage: node w1.js [N]
'use strict';
const c = require('./common');
const N = Number(c.args()[0] || 200000);

async function child(i) {
  return i;
}

async function main() {
  const t0 = c.now();
  const ps = new Array(N);
  for (let i = 0; i < N; i++) ps[i] = child(i);
  let s = 0;
  for (let i = 0; i < N; i++) s += await ps[i];
  const elapsed = c.now() - t0;
  if (s !== (N * (N - 1)) / 2) throw new Error('bad sum');
  c.result(['tasks_per_s', N / elapsed], ['elapsed_s', elapsed],
    ['tasks', N], ['sum', s]);
}
main();
