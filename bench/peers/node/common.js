// Helpers shared by the Node.js peers. Every program prints one line
// `RESULT key=value ...`.
'use strict';
const fs = require('fs');

const now = () => Number(process.hrtime.bigint()) * 1e-9; // monotonic
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1e-6;
};

function status(field) {
  const text = fs.readFileSync('/proc/self/status', 'utf8');
  const m = text.match(new RegExp('^' + field + ':\\s+(\\d+) kB', 'm'));
  return m ? Number(m[1]) * 1024 : null;
}

function fmt(v) {
  return Number.isInteger(v) ? String(v) : Number(v).toPrecision(6);
}

function result(...pairs) {
  console.log('RESULT ' + pairs.map(([k, v]) => `${k}=${fmt(v)}`).join(' '));
}

// Positional arguments without --flags.
const args = () => process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flag = (name) => process.argv.includes(name);

// A seeded uniform [0,1) generator (mulberry32) so runs are repeatable.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

module.exports = {
  now, cpu, status, rss: () => status('VmRSS'), hwm: () => status('VmHWM'),
  result, args, flag, rng,
};
