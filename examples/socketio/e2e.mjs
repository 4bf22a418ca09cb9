// End-to-end test of the example against a running stack (./run.sh, or the
// one tests/socketio.rs starts on free ports).
//
//   node e2e.mjs
//   BASE_URL=http://127.0.0.1:8080 FLASH_PORT=8843 node e2e.mjs
//
// Prints one line per check (`ok` / `FAIL`) and exits 1 if any failed, 2 on
// the global timeout. Every wait is bounded. Uses only Node built-ins and
// socket.io-client. The last check kills one Socket.IO node (SIGKILL): run.sh
// starts it again after a few seconds; run it last, and not against nodes you
// care about.
//
// Settings (environment):
//   BASE_URL        http://127.0.0.1:8080   the public port, plain HTTP
//   HTTPS_URL       https://<same host:port> the same port, TLS
//   FLASH_PORT      8843                    the dedicated Flash policy port
//   CA_FILE         certs/localhost.pem     trust this certificate for https (if the
//                                           file is missing: no verification)
//   API_HOST        api.localhost           the Host that reaches the api app
//   POLL_CLIENTS    20, POLL_ROUNDS 20      the polling-only load
//   NODE_PIDS       node-a=PID,node-b=PID   (else read from .run/pids, written by run.sh)
//   KILL_NODE       node-a                  the node the failover check kills
//   FAILOVER_MS     5000                    new clients must connect within this after the kill
//   STICKY_COOKIE   sluice_sio              the sticky cookie's name (sluice.toml)
//   EXPECTED_CLIENT 127.0.0.1               the client address the backends should see
//   E2E_TIMEOUT_MS  90000                   the whole run
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const base = new URL(BASE_URL);
const HOST = base.hostname;
const PUBLIC_PORT = Number(base.port || 80);
const HTTPS_URL = (process.env.HTTPS_URL || `https://${base.host}`).replace(/\/+$/, '');
const httpsBase = new URL(HTTPS_URL);
const FLASH_PORT = Number(process.env.FLASH_PORT || 8843);
const API_HOST = process.env.API_HOST || 'api.localhost';
const POLL_CLIENTS = Number(process.env.POLL_CLIENTS || 20);
const POLL_ROUNDS = Number(process.env.POLL_ROUNDS || 20);
const KILL_NODE = process.env.KILL_NODE || 'node-a';
const FAILOVER_MS = Number(process.env.FAILOVER_MS || 5000);
const STICKY_COOKIE = process.env.STICKY_COOKIE || 'sluice_sio';
const GLOBAL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 90_000);
const STEP_TIMEOUT_MS = 10_000;
// What the backends should see as the client address: sluice's X-Forwarded-For.
const EXPECTED_CLIENT = process.env.EXPECTED_CLIENT || '127.0.0.1';

// How https clients check the certificate.
const CA_FILE = process.env.CA_FILE ?? path.join(here, 'certs', 'localhost.pem');
const CA = CA_FILE && fs.existsSync(CA_FILE) ? fs.readFileSync(CA_FILE) : null;
const TLS_OPTIONS = CA ? { ca: CA } : { rejectUnauthorized: false };

const started = Date.now();
const globalTimer = setTimeout(() => {
  console.log(`FAIL global timeout: the test did not finish within ${GLOBAL_TIMEOUT_MS} ms`);
  process.exit(2);
}, GLOBAL_TIMEOUT_MS);

let failures = 0;
const sockets = new Set();
const nodesSeen = new Map(); // node name -> echo count

function pass(id, message) {
  console.log(`ok   ${id} ${message}`);
}
function fail(id, message) {
  failures++;
  console.log(`FAIL ${id} ${message}`);
}

async function check(id, title, fn, timeoutMs = STEP_TIMEOUT_MS * 3) {
  const t0 = Date.now();
  try {
    const detail = await withTimeout(fn(), timeoutMs, `${title} timed out after ${timeoutMs} ms`);
    pass(id, `${detail ? `${title}: ${detail}` : title} [${Date.now() - t0} ms]`);
  } catch (err) {
    fail(id, `${title}: ${err && err.message ? err.message : err}`);
  } finally {
    for (const socket of sockets) socket.disconnect();
    sockets.clear();
  }
}

function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// ---- Socket.IO helpers ----

/**
 * A new client (never multiplexed) that records every connect_error,
 * reconnect attempt and unexpected disconnect in `socket.problems`.
 *
 * `withCredentials: true` makes socket.io-client keep cookies in Node.js
 * (browsers send same-origin cookies anyway): the sticky cookie sluice sets
 * on the handshake keeps the session's later requests on its node.
 */
function client(options = {}, url = BASE_URL) {
  const socket = io(url, {
    forceNew: true,
    timeout: STEP_TIMEOUT_MS,
    reconnectionAttempts: 3,
    withCredentials: true,
    ...(url.startsWith('https:') ? TLS_OPTIONS : {}),
    ...options,
  });
  sockets.add(socket);
  socket.url = url;
  // The engine and its first transport exist as soon as io() returns; the
  // upgrade may complete before or after the Socket.IO `connect` event.
  const engine = socket.io.engine;
  socket.transports = [engine && engine.transport ? engine.transport.name : '?'];
  engine?.on('upgrade', (transport) => socket.transports.push(transport.name));
  socket.problems = [];
  socket.on('connect_error', (err) => socket.problems.push(`connect_error: ${err.message}`));
  socket.io.on('reconnect_attempt', (n) => socket.problems.push(`reconnect attempt ${n}`));
  socket.on('disconnect', (reason) => {
    if (reason !== 'io client disconnect') socket.problems.push(`disconnected: ${reason}`);
  });
  return socket;
}

function connected(socket, ms = STEP_TIMEOUT_MS) {
  if (socket.connected) return Promise.resolve();
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      // With reconnection, connect_error is followed by another attempt.
      if (socket.io.opts.reconnection === false) socket.once('connect_error', reject);
    }),
    ms,
    `no connect within ${ms} ms (${socket.problems.join('; ') || 'no error reported'})`,
  );
}

async function echo(socket, payload, ms = STEP_TIMEOUT_MS) {
  const answer = await socket.timeout(ms).emitWithAck('echo', payload);
  assert(answer && answer.payload === payload, `echo returned ${JSON.stringify(answer)} for ${JSON.stringify(payload)}`);
  assert(typeof answer.node === 'string' && answer.node, `echo without a node name: ${JSON.stringify(answer)}`);
  nodesSeen.set(answer.node, (nodesSeen.get(answer.node) || 0) + 1);
  return answer;
}

function noProblems(socket, label = 'client') {
  assert(socket.problems.length === 0, `${label}: ${socket.problems.join('; ')}`);
}

function upgraded(socket) {
  const engine = socket.io.engine;
  if (engine.transport.name === 'websocket') return Promise.resolve();
  return withTimeout(
    new Promise((resolve, reject) => {
      engine.once('upgrade', resolve);
      engine.once('upgradeError', (err) => reject(new Error(`upgradeError: ${err.message}`)));
    }),
    STEP_TIMEOUT_MS,
    `no upgrade to websocket (still ${engine.transport.name})`,
  );
}

/** The sticky cookie socket.io-client's jar holds (an internal of engine.io-client 6). */
function stickyCookie(socket) {
  const jar = socket.io.engine && socket.io.engine._cookieJar;
  const cookie = jar && jar._cookies && jar._cookies.get(STICKY_COOKIE);
  return cookie ? cookie.value : null;
}

// ---- Plain HTTP(S) and TCP helpers ----

function get(url, headers = {}, extra = {}) {
  const target = new URL(url);
  const lib = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      target,
      { headers, agent: false, ...(target.protocol === 'https:' ? TLS_OPTIONS : {}), ...extra },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.setTimeout(STEP_TIMEOUT_MS, () => req.destroy(new Error(`GET ${url}: no answer`)));
    req.on('error', reject);
    req.end();
  });
}

/** Send the Flash policy request on a raw TCP (or TLS) connection; resolve with all bytes until close. */
function flashPolicy(port, useTls = false) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const ask = () => conn.write('<policy-file-request/>\0');
    const conn = useTls
      ? tls.connect({ host: HOST, port, servername: 'localhost', ...TLS_OPTIONS }, ask)
      : net.connect({ host: HOST, port }, ask);
    conn.setTimeout(STEP_TIMEOUT_MS, () => conn.destroy(new Error(`port ${port}: no answer/close`)));
    conn.on('data', (c) => chunks.push(c));
    conn.on('error', (err) => (chunks.length ? resolve(Buffer.concat(chunks)) : reject(err)));
    conn.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

function checkPolicy(reply, label) {
  assert(reply.length > 0, `${label}: empty reply`);
  assert(reply[reply.length - 1] === 0, `${label}: reply does not end with NUL`);
  const xml = reply.subarray(0, reply.length - 1).toString('utf8');
  assert(!xml.includes('\0'), `${label}: more than one NUL`);
  assert(/<cross-domain-policy>[\s\S]*<\/cross-domain-policy>$/.test(xml), `${label}: not a policy: ${JSON.stringify(xml)}`);
  const ports = /to-ports="([^"]*)"/.exec(xml);
  assert(ports && (ports[1] === '*' || ports[1].split(',').includes(String(PUBLIC_PORT))),
    `${label}: the policy does not allow port ${PUBLIC_PORT}: ${ports && ports[1]}`);
  return `${label} ${reply.length} bytes, to-ports="${ports[1]}"`;
}

/** The Socket.IO nodes' process ids: NODE_PIDS, else run.sh's .run/pids. */
function nodePids() {
  let text = process.env.NODE_PIDS;
  let source = 'NODE_PIDS';
  if (!text) {
    const file = path.join(here, '.run', 'pids');
    if (!fs.existsSync(file)) return { pids: new Map(), source: 'nothing (no NODE_PIDS, no .run/pids)' };
    text = fs.readFileSync(file, 'utf8');
    source = file;
  }
  const pids = new Map();
  for (const part of text.split(/[,\s]+/).filter(Boolean)) {
    const [name, pid] = part.split('=');
    if (name && Number(pid) > 0) pids.set(name, Number(pid));
  }
  return { pids, source };
}

// ---- The checks ----

console.log(`info ${BASE_URL} and ${HTTPS_URL} (${CA ? `trusting ${CA_FILE}` : 'certificate not verified'}), ` +
  `Flash policy port ${FLASH_PORT}`);

// Both nodes should be in service before the checks start: right after a
// previous run killed one, run.sh restarts it and sluice's health check takes
// it back after a few seconds. Bounded; (d) fails if one node stays out.
{
  const seen = new Set();
  const deadline = Date.now() + 15_000;
  while (seen.size < 2 && Date.now() < deadline) {
    const socket = client({ transports: ['websocket'], reconnection: false });
    try {
      await connected(socket, 2000);
      seen.add((await echo(socket, 'preflight', 2000)).node);
    } catch {
      await sleep(200);
    } finally {
      socket.disconnect();
      sockets.delete(socket);
    }
  }
  nodesSeen.clear();
  console.log(`info nodes in service: ${[...seen].sort().join(', ') || 'none'} (after ${Date.now() - started} ms)`);
}

for (const [id, url] of [['(a)', BASE_URL], ['(b)', HTTPS_URL]]) {
  const scheme = new URL(url).protocol.replace(':', '');
  await check(id, `default transports over ${scheme}: polling, then upgrade to websocket`, async () => {
    const socket = client({}, url);
    await connected(socket);
    // The handshake is a polling request; sluice's answer carries the sticky
    // cookie, and the WebSocket upgrade (with the cookie) must reach the same
    // node, or the node refuses it and the client stays on polling.
    assert(socket.transports[0] === 'polling', `first transport is ${socket.transports[0]}`);
    const cookie = stickyCookie(socket);
    assert(cookie, `no ${STICKY_COOKIE} cookie from the handshake`);
    const before = await echo(socket, `${id}-1`);
    const transportBefore = socket.io.engine.transport.name;
    await upgraded(socket);
    assert(socket.transports.join(' ') === 'polling websocket', `transports ${socket.transports.join(' -> ')}`);
    const after = await echo(socket, `${id}-2`);
    assert(after.node === before.node, `the session moved from ${before.node} to ${after.node}`);
    const who = await socket.timeout(STEP_TIMEOUT_MS).emitWithAck('whoami');
    assert(who.headers['x-forwarded-proto'] === scheme, `X-Forwarded-Proto is ${who.headers['x-forwarded-proto']}`);
    noProblems(socket);
    return `handshake over polling on ${before.node} (cookie ${STICKY_COOKIE}=${cookie}; first echo over ` +
      `${transportBefore}), upgraded to websocket on ${after.node}, X-Forwarded-Proto ${scheme}`;
  });
}

await check('(c)', 'websocket-only clients over http and https', async () => {
  const results = [];
  for (const url of [BASE_URL, HTTPS_URL]) {
    const socket = client({ transports: ['websocket'] }, url);
    await connected(socket);
    const transport = socket.io.engine.transport.name;
    assert(transport === 'websocket', `transport is ${transport}`);
    const nodes = new Set();
    for (let i = 0; i < 5; i++) nodes.add((await echo(socket, `c-${i}-${'y'.repeat(i * 1000)}`)).node);
    noProblems(socket);
    results.push(`${new URL(url).protocol} 5 echoes from ${[...nodes].join(', ')}`);
  }
  return results.join('; ');
});

await check('(d)', `polling-only: ${POLL_CLIENTS} clients x ${POLL_ROUNDS} echo round trips, half over https`, async () => {
  const perNode = new Map();
  const run = async (n) => {
    const url = n % 2 ? HTTPS_URL : BASE_URL;
    const socket = client({ transports: ['polling'] }, url);
    try {
      await connected(socket);
      let node;
      for (let i = 0; i < POLL_ROUNDS; i++) {
        const answer = await echo(socket, `d-${n}-${i}-${'x'.repeat(i * 10)}`);
        assert(!node || node === answer.node, `client ${n} moved from ${node} to ${answer.node} within one session`);
        node = answer.node;
        assert(socket.io.engine.transport.name === 'polling', `client ${n} is on ${socket.io.engine.transport.name}`);
      }
      noProblems(socket, `client ${n}`);
      perNode.set(node, (perNode.get(node) || 0) + 1);
    } catch (err) {
      // Report what went wrong first (e.g. a connect_error before the echo failed).
      throw new Error(socket.problems[0] ? `client ${n} (${url}): ${socket.problems[0]}` : err.message);
    }
  };
  const results = await Promise.allSettled(Array.from({ length: POLL_CLIENTS }, (_, n) => run(n)));
  const errors = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  const shown = [...new Set(errors.map((e) => e.replace(/^client \d+ /, '')))].slice(0, 3).join(' | ');
  assert(errors.length === 0, `${errors.length} of ${POLL_CLIENTS} clients failed: ${shown}`);
  const spread = [...perNode].map(([name, count]) => `${name}=${count}`).sort().join(', ');
  assert(perNode.size >= 2, `all clients landed on one node (${spread}): the sticky cookie should let them spread`);
  return `${POLL_CLIENTS * POLL_ROUNDS} echoes, no connect_error, disconnect or reconnect; clients per node: ${spread}`;
});

await check('(e)', `Flash policy on port ${PUBLIC_PORT} (plain and inside TLS) and on port ${FLASH_PORT}`, async () => {
  return [
    checkPolicy(await flashPolicy(PUBLIC_PORT), `port ${PUBLIC_PORT}:`),
    checkPolicy(await flashPolicy(PUBLIC_PORT, true), `port ${PUBLIC_PORT} in TLS:`),
    checkPolicy(await flashPolicy(FLASH_PORT), `port ${FLASH_PORT}:`),
  ].join('; ');
});

await check('(f)', 'GET / serves the page and /socket.io/socket.io.js is served, over http and https', async () => {
  const seen = [];
  for (const url of [BASE_URL, HTTPS_URL]) {
    const page = await get(`${url}/`);
    assert(page.status === 200, `GET ${url}/ -> ${page.status}`);
    assert(/text\/html/.test(page.headers['content-type'] || ''), `GET / content-type ${page.headers['content-type']}`);
    assert(page.body.includes('src="/socket.io/socket.io.js"'), 'the page does not load /socket.io/socket.io.js');
    assert(page.body.includes('id="result"'), 'the page has no #result element');
    const script = await get(`${url}/socket.io/socket.io.js`);
    assert(script.status === 200, `GET ${url}/socket.io/socket.io.js -> ${script.status}`);
    assert(/javascript/.test(script.headers['content-type'] || ''), `socket.io.js content-type ${script.headers['content-type']}`);
    assert(script.body.length > 10_000 && script.body.includes('Socket.IO'), `socket.io.js looks wrong (${script.body.length} bytes)`);
    const missing = await get(`${url}/no-such-page`);
    assert(missing.status === 404 && missing.body.includes('(web)'), `GET /no-such-page -> ${missing.status} ${missing.body.trim()}`);
    seen.push(`${new URL(url).protocol} / ${page.body.length} bytes, socket.io.js ${script.body.length} bytes`);
  }
  return seen.join('; ');
});

await check('(g)', `the client address (${EXPECTED_CLIENT}) reaches every backend`, async () => {
  const polling = client({ transports: ['polling'] });
  const websocket = client({ transports: ['websocket'] }, HTTPS_URL);
  await Promise.all([connected(polling), connected(websocket)]);
  const details = [];
  for (const [label, socket, proto] of [['polling/http', polling, 'http'], ['websocket/https', websocket, 'https']]) {
    const answer = await echo(socket, `g-${label}`);
    assert(answer.clientAddress === EXPECTED_CLIENT, `${label}: clientAddress is ${JSON.stringify(answer.clientAddress)}`);
    const who = await socket.timeout(STEP_TIMEOUT_MS).emitWithAck('whoami');
    const xff = who.headers['x-forwarded-for'];
    assert(xff === EXPECTED_CLIENT, `${label}: handshake X-Forwarded-For is ${JSON.stringify(xff)}`);
    const xfp = who.headers['x-forwarded-proto'];
    assert(xfp === proto, `${label}: X-Forwarded-Proto is ${JSON.stringify(xfp)}`);
    details.push(`${who.node} ${label}: ${xff}`);
    noProblems(socket, label);
  }
  // A client-supplied X-Forwarded-For is appended to, not replaced.
  const spoof = client({ transports: ['polling'], extraHeaders: { 'x-forwarded-for': '203.0.113.9' } });
  await connected(spoof);
  const spoofed = await echo(spoof, 'g-spoof');
  assert(spoofed.clientAddress === `203.0.113.9, ${EXPECTED_CLIENT}`, `with a client X-Forwarded-For: ${JSON.stringify(spoofed.clientAddress)}`);
  details.push(`appended: "${spoofed.clientAddress}"`);
  // The web and api apps see it too, over http and https.
  for (const [url, host, app, proto] of [
    [BASE_URL, null, 'web', 'http'],
    [HTTPS_URL, null, 'web', 'https'],
    [BASE_URL, `${API_HOST}:${PUBLIC_PORT}`, 'api', 'http'],
  ]) {
    const who = JSON.parse((await get(`${url}/whoami`, host ? { host } : {})).body);
    assert(who.app === app && who.xForwardedFor === EXPECTED_CLIENT && who.xForwardedProto === proto,
      `/whoami over ${proto} (Host ${host || 'default'}): ${JSON.stringify(who)}`);
    details.push(`${app}/${proto}: ${who.xForwardedFor}`);
  }
  return details.join('; ');
});

await check('(h)', `Host: ${API_HOST} goes to the api app, over http and https (SNI ${API_HOST})`, async () => {
  const api = await get(`${BASE_URL}/whoami`, { host: `${API_HOST}:${PUBLIC_PORT}` });
  assert(api.status === 200, `GET /whoami with Host ${API_HOST} -> ${api.status}`);
  const who = JSON.parse(api.body);
  assert(who.app === 'api', `answered by ${who.app}`);
  assert(who.xForwardedHost === `${API_HOST}:${PUBLIC_PORT}`, `X-Forwarded-Host ${who.xForwardedHost}`);
  const apiTls = await get(`${HTTPS_URL}/whoami`, { host: `${API_HOST}:${httpsBase.port || 443}` }, { servername: API_HOST });
  const whoTls = JSON.parse(apiTls.body);
  assert(whoTls.app === 'api' && whoTls.xForwardedProto === 'https', `over https: ${apiTls.body.trim()}`);
  const web = JSON.parse((await get(`${BASE_URL}/whoami`)).body);
  assert(web.app === 'web', `without the Host, answered by ${web.app}`);
  return `${API_HOST} -> ${who.app} (http), ${whoTls.app} (https); ${HOST} -> ${web.app}`;
});

// Without a browser: run the page's own inline script in a VM with a minimal
// DOM, `io` being socket.io-client pointed at the proxy (browser.mjs does the
// same in headless Chromium).
await check('(i)', "the page's script connects, echoes and fills #result (in a VM)", async () => {
  const page = await get(`${BASE_URL}/`);
  const inline = [...page.body.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
  assert(inline.length === 1, `expected one inline script, found ${inline.length}`);
  const elements = new Map();
  const document = {
    getElementById(id) {
      if (!elements.has(id)) elements.set(id, { id, textContent: '', dataset: {} });
      return elements.get(id);
    },
  };
  const result = document.getElementById('result');
  result.dataset.state = 'pending';
  let pageSocket;
  const pageIo = (...args) => {
    assert(args.length === 0, 'the page should call io() without arguments (same origin)');
    pageSocket = client();
    return pageSocket;
  };
  vm.runInNewContext(inline[0], { document, io: pageIo, location: new URL(`${BASE_URL}/`), Math, console });
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (result.dataset.state === 'pending' && Date.now() < deadline) await sleep(50);
  assert(result.dataset.state === 'ok', `#result is ${JSON.stringify(result.textContent)} (state ${result.dataset.state})`);
  assert(/^echo:hello-\w+ from node-\w+$/.test(result.textContent), `#result text ${JSON.stringify(result.textContent)}`);
  await upgraded(pageSocket);
  return `#result = "${result.textContent}", transport now ${pageSocket.io.engine.transport.name}`;
});

// Last: it kills a node.
await check('(j)', `${KILL_NODE} killed mid-run: new clients connect within ${FAILOVER_MS} ms`, async () => {
  const { pids, source } = nodePids();
  const victimPid = pids.get(KILL_NODE);
  assert(victimPid, `no process id for ${KILL_NODE} from ${source}: set NODE_PIDS=node-a=PID,node-b=PID (run.sh writes .run/pids)`);

  // Clients that keep echoing while the node dies: polling and websocket, on both nodes.
  const running = [];
  for (let n = 0; n < 24 && !(running.filter((r) => r.node === KILL_NODE).length >= 2 &&
      running.filter((r) => r.node !== KILL_NODE).length >= 2); n++) {
    const socket = client({ transports: n % 3 === 2 ? ['websocket'] : ['polling', 'websocket'] }, n % 2 ? HTTPS_URL : BASE_URL);
    await connected(socket);
    running.push({ socket, node: (await echo(socket, `j-warmup-${n}`)).node, answers: [], errors: [] });
  }
  const onVictim = running.filter((r) => r.node === KILL_NODE);
  const onSurvivor = running.filter((r) => r.node !== KILL_NODE);
  assert(onVictim.length && onSurvivor.length,
    `could not get clients on both nodes: ${running.map((r) => r.node).join(', ')}`);
  const survivor = onSurvivor[0].node;
  const staleCookie = onVictim.map((r) => stickyCookie(r.socket)).find(Boolean);
  assert(staleCookie, `no sticky cookie from a client on ${KILL_NODE}`);

  let stop = false;
  const loops = running.map(async (r, n) => {
    for (let i = 0; !stop; i++) {
      try {
        r.answers.push((await echo(r.socket, `j-${n}-${i}`, 8000)).node);
      } catch (err) {
        r.errors.push(err.message);
      }
      await sleep(20);
    }
  });
  await sleep(300);

  process.kill(victimPid, 'SIGKILL');
  const killedAt = Date.now();
  for (const r of running) r.answersBeforeKill = r.answers.length;

  // New clients right after the kill: default transports, websocket-only, over
  // http and https, and polling with a stale cookie naming the dead node (a
  // browser that was on it). Each must connect and echo within FAILOVER_MS.
  const fresh = [
    ['default/http', {}, BASE_URL],
    ['default/https', {}, HTTPS_URL],
    ['websocket/http', { transports: ['websocket'] }, BASE_URL],
    ['websocket/https', { transports: ['websocket'] }, HTTPS_URL],
    ['polling/http', { transports: ['polling'] }, BASE_URL],
    ['polling/https', { transports: ['polling'] }, HTTPS_URL],
    ['stale-cookie/http', { transports: ['polling'], extraHeaders: { cookie: `${STICKY_COOKIE}=${staleCookie}` } }, BASE_URL],
    ['stale-cookie/https', { transports: ['polling'], extraHeaders: { cookie: `${STICKY_COOKIE}=${staleCookie}` } }, HTTPS_URL],
  ];
  const freshResults = await Promise.all(fresh.map(async ([label, options, url]) => {
    const socket = client(options, url);
    const left = () => Math.max(1, FAILOVER_MS - (Date.now() - killedAt));
    await connected(socket, left());
    const answer = await echo(socket, `j-new-${label}`, left());
    const ms = Date.now() - killedAt;
    assert(ms <= FAILOVER_MS, `${label}: connected and echoed ${ms} ms after the kill`);
    assert(answer.node !== KILL_NODE, `${label}: answered by ${KILL_NODE}, which was killed`);
    // A request caught in the instant of the kill may fail once; socket.io-client
    // then retries by itself. What counts is being connected within FAILOVER_MS.
    if (socket.problems.length) console.log(`info (j) ${label}: recovered within the deadline after: ${socket.problems.join('; ')}`);
    if (label.startsWith('stale-cookie')) {
      const cookie = stickyCookie(socket);
      assert(cookie && cookie !== staleCookie, `${label}: the sticky cookie was not rewritten (${cookie})`);
    }
    return { label, ms, node: answer.node };
  }));
  const slowest = Math.max(...freshResults.map((r) => r.ms));

  // The clients of the killed node reconnect (automatically) to the survivor;
  // the survivor's clients never notice.
  const reconnectDeadline = Date.now() + 15_000;
  for (const r of onVictim) {
    while (Date.now() < reconnectDeadline &&
        !(r.socket.connected && r.answers.slice(r.answersBeforeKill).includes(survivor))) {
      await sleep(50);
    }
  }
  stop = true;
  await withTimeout(Promise.all(loops), 10_000, 'the echo loops did not stop');
  for (const r of onVictim) {
    assert(r.answers.slice(r.answersBeforeKill).includes(survivor),
      `a client of ${KILL_NODE} did not get back to ${survivor} within 15 s (${r.socket.problems.join('; ') || 'no events'}; ` +
      `echo errors: ${r.errors.slice(0, 2).join('; ')})`);
  }
  for (const r of onSurvivor) {
    noProblems(r.socket, `a client of ${survivor}`);
    assert(r.errors.length === 0, `a client of ${survivor} had echo errors: ${r.errors.slice(0, 2).join('; ')}`);
    assert(r.answers.every((node) => node === survivor), `a client of ${survivor} moved`);
  }
  const reconnectedIn = Date.now() - killedAt;
  return `${freshResults.length} new clients (${freshResults.map((r) => r.label).join(', ')}) connected and echoed ` +
    `via ${[...new Set(freshResults.map((r) => r.node))].join(', ')}, slowest ${slowest} ms after the kill; ` +
    `${onVictim.length} clients of ${KILL_NODE} reconnected to ${survivor} (all within ${reconnectedIn} ms), ` +
    `${onSurvivor.length} clients of ${survivor} undisturbed (${onSurvivor.reduce((s, r) => s + r.answers.length, 0)} echoes)`;
}, 45_000);

const spread = [...nodesSeen].map(([name, count]) => `${name}: ${count}`).sort().join(', ');
console.log(`info echoes per node: ${spread || 'none'}; ${Date.now() - started} ms in all`);
clearTimeout(globalTimer);
console.log(failures ? `${failures} check(s) FAILED` : 'all checks passed');
process.exit(failures ? 1 : 0);
