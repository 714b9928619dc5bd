// W4 tcp-echo server on Node.js: net.createServer, each socket's 'data'
// event writes the chunk back. Prints "READY <port>", serves until killed.
// usage: node w4.js [port]
'use strict';
const net = require('net');
const { args } = require('./common');

const port = Number(args()[0] || 0);
const server = net.createServer({ noDelay: true }, (sock) => {
  sock.on('data', (d) => sock.write(d));
  sock.on('error', () => {});
});
server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${server.address().port}`);
});
