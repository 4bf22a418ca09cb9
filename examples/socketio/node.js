// One Socket.IO v4 server node behind sluice.
//
//   node node.js [port] [name]       (or PORT=9101 NODE_NAME=node-a node node.js)
//
// Port 0 picks a free port; the line printed once listening names the real
// one (`... listening on http://127.0.0.1:PORT`), which tests/socketio.rs reads.
//
// Serves the Socket.IO protocol (long polling and WebSocket) and the client
// bundle at /socket.io/socket.io.js, plus GET /health ("ok", for sluice's
// health check). Events:
//   echo(payload, ack)  acks { payload, node, clientAddress }, where
//                       clientAddress is the X-Forwarded-For sluice added
//                       (else the TCP peer, i.e. sluice itself)
//   whoami(ack)         acks { node, transport, headers } of the handshake
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] ?? process.env.PORT ?? 9101);
const name = process.argv[3] || process.env.NODE_NAME || `node-${port}`;
const host = process.env.HOST || '127.0.0.1';

const httpServer = http.createServer((req, res) => {
  // Everything outside /socket.io/ (Socket.IO handles that path itself).
  if ((req.url || '/').split('?')[0] === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(`not found (${name})\n`);
});

const io = new Server(httpServer, {
  transports: ['polling', 'websocket'],
  serveClient: true,
  // Same-origin through sluice, so no CORS is needed.
});

io.on('connection', (socket) => {
  const clientAddress = socket.handshake.headers['x-forwarded-for'] || socket.handshake.address;
  if (process.env.VERBOSE) {
    console.log(`[${name}] connect ${socket.id} from ${clientAddress} via ${socket.conn.transport.name}`);
  }
  socket.on('echo', (payload, ack) => {
    if (typeof ack === 'function') ack({ payload, node: name, clientAddress });
  });
  socket.on('whoami', (ack) => {
    if (typeof ack === 'function') {
      ack({ node: name, transport: socket.conn.transport.name, headers: socket.handshake.headers });
    }
  });
});

io.engine.on('connection_error', (err) => {
  // e.g. "Session ID unknown" when a polling request reaches the wrong node:
  // with the sticky cookie this should never be printed.
  console.error(`[${name}] engine.io connection_error ${err.code}: ${err.message} (${err.req && err.req.url})`);
});

httpServer.listen(port, host, () => {
  console.log(`[${name}] Socket.IO node listening on http://${host}:${httpServer.address().port}`);
});

const stop = () => {
  io.close(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
