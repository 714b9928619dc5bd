// W5 http-client: COUNT GETs of URL with CONC in flight, using Node's
// global fetch (undici) with the concurrency limit done by CONC workers
// over the default keep-alive agent.
// usage: node w5.js URL COUNT CONC
'use strict';
const c = require('./common');
const [URL, countS, concS] = c.args();
const COUNT = Number(countS); const CONC = Number(concS);

async function main() {
  let remaining = COUNT; let total = 0; let bad = 0;
  async function worker() {
    while (remaining > 0) {
      remaining--;
      const r = await fetch(URL);
      const body = await r.arrayBuffer();
      total += body.byteLength;
      if (r.status !== 200) bad++;
    }
  }
  const t0 = c.now();
  const ws = [];
  for (let i = 0; i < CONC; i++) ws.push(worker());
  await Promise.all(ws);
  const elapsed = c.now() - t0;
  if (bad) throw new Error(`${bad} non-200 responses`);
  c.result(['req_per_s', COUNT / elapsed], ['mb_per_s', total / elapsed / 1e6],
    ['elapsed_s', elapsed], ['requests', COUNT], ['bytes', total]);
}
main();
