// The main web app behind sluice: plain node:http, no framework.
//
//   node app.js [port] [name]        (or PORT=9100 APP_NAME=web node app.js)
//
// GET /        an HTML page that loads /socket.io/socket.io.js (served by the
//              Socket.IO nodes through sluice, same origin), connects with io(),
//              emits `echo` and writes the answer into #result.
// GET /whoami  JSON: this app's name and the X-Forwarded-* headers it saw.
// GET /health  "ok"
// GET /favicon.ico  204 (browsers ask for it)
//
// run.sh starts it twice: as `web` (port 9100, the default backend) and as
// `api` (port 9103, reached through sluice with `Host: api.localhost`).
// Port 0 picks a free port; the line printed once listening names the real
// one (`... listening on http://127.0.0.1:PORT`), which tests/socketio.rs reads.
'use strict';

const http = require('node:http');

const port = Number(process.argv[2] ?? process.env.PORT ?? 9100);
const name = process.argv[3] || process.env.APP_NAME || 'web';
const host = process.env.HOST || '127.0.0.1';

const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sluice + Socket.IO</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; margin: 2rem; }
  #result[data-state="ok"] { color: #060; }
  #result[data-state="error"] { color: #a00; }
  code { background: #eee; padding: 0 .2em; }
</style>
</head>
<body>
<h1>sluice + Socket.IO</h1>
<p>This page was served by the <code>${name}</code> app; the Socket.IO client script and the
connection below go through the same port to one of the Socket.IO nodes.</p>
<p>Page: <span id="page">-</span></p>
<p>Result: <span id="result" data-state="pending">connecting…</span></p>
<p>Transport: <span id="transport">-</span></p>
<script src="/socket.io/socket.io.js"></script>
<script>
  const result = document.getElementById('result');
  const transport = document.getElementById('transport');
  document.getElementById('page').textContent = location.protocol + '//' + location.host + ' (' +
    (location.protocol === 'https:' ? 'TLS terminated by sluice' : 'plain HTTP') + ', same port)';
  const fail = (message) => {
    result.textContent = 'error: ' + message;
    result.dataset.state = 'error';
  };
  if (typeof io !== 'function') {
    fail('/socket.io/socket.io.js did not load');
  } else {
    const socket = io();
    const payload = 'hello-' + Math.random().toString(36).slice(2, 8);
    socket.on('connect', () => {
      transport.textContent = socket.io.engine.transport.name;
      socket.io.engine.on('upgrade', (t) => { transport.textContent = t.name + ' (upgraded)'; });
      socket.timeout(5000).emit('echo', payload, (err, answer) => {
        if (err) return fail('no echo within 5s');
        result.textContent = 'echo:' + answer.payload + ' from ' + answer.node;
        result.dataset.state = 'ok';
        result.dataset.node = answer.node;
      });
    });
    socket.on('connect_error', (err) => fail('connect_error: ' + err.message));
  }
</script>
</body>
</html>
`;

const server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' });
    res.end('method not allowed\n');
    return;
  }
  if (path === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : page);
  } else if (path === '/whoami') {
    const body = JSON.stringify({
      app: name,
      host: req.headers.host || null,
      xForwardedFor: req.headers['x-forwarded-for'] || null,
      xForwardedProto: req.headers['x-forwarded-proto'] || null,
      xForwardedHost: req.headers['x-forwarded-host'] || null,
      peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body + '\n');
  } else if (path === '/favicon.ico') {
    res.writeHead(204, { 'cache-control': 'max-age=86400' });
    res.end();
  } else if (path === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('ok\n');
  } else {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`not found (${name})\n`);
  }
});

server.listen(port, host, () => {
  console.log(`[${name}] web app listening on http://${host}:${server.address().port}`);
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
