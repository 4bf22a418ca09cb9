// End-to-end test of the example against a running stack (./run.sh).
//
//   node e2e.mjs
//   BASE_URL=http://127.0.0.1:8080 FLASH_PORT=8843 node e2e.mjs
//
// Prints one line per check and exits 1 if any failed (2 on the global
// timeout). Uses only Node built-ins and socket.io-client.
import net from 'node:net';
import http from 'node:http';
import vm from 'node:vm';
import { io } from 'socket.io-client';

const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const base = new URL(BASE_URL);
const HOST = base.hostname;
const PUBLIC_PORT = Number(base.port || 80);
const FLASH_PORT = Number(process.env.FLASH_PORT || 8843);
const API_HOST = process.env.API_HOST || 'api.localhost';
const POLL_CLIENTS = Number(process.env.POLL_CLIENTS || 20);
const POLL_ROUNDS = Number(process.env.POLL_ROUNDS || 20);
const GLOBAL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 90_000);
const STEP_TIMEOUT_MS = 10_000;
// What the nodes should see as the client address: sluice's X-Forwarded-For.
const EXPECTED_CLIENT = process.env.EXPECTED_CLIENT || '127.0.0.1';

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

async function check(id, title, fn) {
  try {
    const detail = await withTimeout(fn(), STEP_TIMEOUT_MS * 3, `${title} timed out`);
    pass(id, detail ? `${title}: ${detail}` : title);
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

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// ---- Socket.IO helpers ----

/** A new client (never multiplexed) that fails on any connect_error or reconnect. */
function client(options = {}) {
  const socket = io(BASE_URL, {
    forceNew: true,
    timeout: STEP_TIMEOUT_MS,
    reconnectionAttempts: 3,
    ...options,
  });
  sockets.add(socket);
  socket.problems = [];
  socket.on('connect_error', (err) => socket.problems.push(`connect_error: ${err.message}`));
  socket.io.on('reconnect_attempt', (n) => socket.problems.push(`reconnect attempt ${n}`));
  socket.on('disconnect', (reason) => {
    if (reason !== 'io client disconnect') socket.problems.push(`disconnected: ${reason}`);
  });
  return socket;
}

function connected(socket) {
  if (socket.connected) return Promise.resolve();
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    }),
    STEP_TIMEOUT_MS,
    'no connect',
  );
}

async function echo(socket, payload) {
  const answer = await socket.timeout(STEP_TIMEOUT_MS).emitWithAck('echo', payload);
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

// ---- Plain HTTP and TCP helpers ----

function get(path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port: PUBLIC_PORT, path, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(STEP_TIMEOUT_MS, () => req.destroy(new Error(`GET ${path}: no answer`)));
    req.on('error', reject);
    req.end();
  });
}

function flashPolicy(port) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const conn = net.connect({ host: HOST, port }, () => conn.write('<policy-file-request/>\0'));
    conn.setTimeout(STEP_TIMEOUT_MS, () => conn.destroy(new Error(`port ${port}: no answer/close`)));
    conn.on('data', (c) => chunks.push(c));
    conn.on('error', reject);
    conn.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

// ---- The checks ----

await check('(a)', 'default transports: polling, then upgrade to websocket', async () => {
  const socket = client();
  await connected(socket);
  const first = socket.io.engine.transport.name;
  const before = await echo(socket, 'a-before-upgrade');
  await upgraded(socket);
  const transport = socket.io.engine.transport.name;
  assert(transport === 'websocket', `transport after upgrade is ${transport}`);
  const after = await echo(socket, 'a-after-upgrade');
  noProblems(socket);
  return `connected over ${first}, echo from ${before.node}; upgraded to ${transport}, echo from ${after.node}`;
});

await check('(b)', 'websocket-only client', async () => {
  const socket = client({ transports: ['websocket'] });
  await connected(socket);
  const transport = socket.io.engine.transport.name;
  assert(transport === 'websocket', `transport is ${transport}`);
  const answers = [];
  for (let i = 0; i < 5; i++) answers.push(await echo(socket, `b-${i}`));
  noProblems(socket);
  return `5 echoes over ${transport} from ${[...new Set(answers.map((a) => a.node))].join(', ')}`;
});

await check('(c)', `polling-only: ${POLL_CLIENTS} clients x ${POLL_ROUNDS} echo round trips`, async () => {
  const perNode = new Map();
  const run = async (n) => {
    const socket = client({ transports: ['polling'] });
    try {
      await connected(socket);
      let node;
      for (let i = 0; i < POLL_ROUNDS; i++) {
        const answer = await echo(socket, `c-${n}-${i}-${'x'.repeat(i * 10)}`);
        assert(!node || node === answer.node, `client ${n} moved from ${node} to ${answer.node} within one session`);
        node = answer.node;
        assert(socket.io.engine.transport.name === 'polling', `client ${n} is on ${socket.io.engine.transport.name}`);
      }
      noProblems(socket, `client ${n}`);
      perNode.set(node, (perNode.get(node) || 0) + 1);
    } catch (err) {
      // Report what went wrong first (e.g. a connect_error before the echo failed).
      throw new Error(socket.problems[0] ? `client ${n}: ${socket.problems[0]}` : err.message);
    }
  };
  const results = await Promise.allSettled(Array.from({ length: POLL_CLIENTS }, (_, n) => run(n)));
  const errors = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  const shown = [...new Set(errors.map((e) => e.replace(/^client \d+: /, '')))].slice(0, 3).join(' | ');
  assert(errors.length === 0, `${errors.length} of ${POLL_CLIENTS} clients failed: ${shown}`);
  const spread = [...perNode].map(([name, count]) => `${name}=${count}`).join(', ');
  return `${POLL_CLIENTS * POLL_ROUNDS} echoes, no connect_error or reconnect; clients per node: ${spread}`;
});

await check('(d)', `Flash policy on ports ${PUBLIC_PORT} and ${FLASH_PORT}`, async () => {
  const seen = [];
  for (const port of [PUBLIC_PORT, FLASH_PORT]) {
    const reply = await flashPolicy(port);
    assert(reply.length > 0, `port ${port}: empty reply`);
    assert(reply[reply.length - 1] === 0, `port ${port}: reply does not end with NUL`);
    const xml = reply.subarray(0, reply.length - 1).toString('utf8');
    assert(!xml.includes('\0'), `port ${port}: more than one NUL`);
    assert(/<cross-domain-policy>[\s\S]*<\/cross-domain-policy>$/.test(xml), `port ${port}: not a policy: ${JSON.stringify(xml)}`);
    const ports = /to-ports="([^"]*)"/.exec(xml);
    assert(ports && (ports[1] === '*' || ports[1].split(',').includes(String(PUBLIC_PORT))),
      `port ${port}: the policy does not allow port ${PUBLIC_PORT}: ${ports && ports[1]}`);
    seen.push(`${port}: ${reply.length} bytes, to-ports="${ports[1]}"`);
  }
  return seen.join('; ');
});

await check('(e)', 'GET / serves the page; /socket.io/socket.io.js is served', async () => {
  const page = await get('/');
  assert(page.status === 200, `GET / -> ${page.status}`);
  assert(/text\/html/.test(page.headers['content-type'] || ''), `GET / content-type ${page.headers['content-type']}`);
  assert(page.body.includes('src="/socket.io/socket.io.js"'), 'the page does not load /socket.io/socket.io.js');
  assert(page.body.includes('id="result"'), 'the page has no #result element');
  const script = await get('/socket.io/socket.io.js');
  assert(script.status === 200, `GET /socket.io/socket.io.js -> ${script.status}`);
  assert(/javascript/.test(script.headers['content-type'] || ''), `socket.io.js content-type ${script.headers['content-type']}`);
  assert(script.body.length > 10_000 && script.body.includes('Socket.IO'), `socket.io.js looks wrong (${script.body.length} bytes)`);
  const missing = await get('/no-such-page');
  assert(missing.status === 404 && missing.body.includes('(web)'), `GET /no-such-page -> ${missing.status} ${missing.body.trim()}`);
  return `/ ${page.body.length} bytes of HTML, socket.io.js ${script.body.length} bytes`;
});

await check('(f)', `X-Forwarded-For reaches the nodes (clientAddress ${EXPECTED_CLIENT})`, async () => {
  const polling = client({ transports: ['polling'] });
  const websocket = client({ transports: ['websocket'] });
  await Promise.all([connected(polling), connected(websocket)]);
  const details = [];
  for (const [label, socket] of [['polling', polling], ['websocket', websocket]]) {
    const answer = await echo(socket, `f-${label}`);
    assert(answer.clientAddress === EXPECTED_CLIENT, `${label}: clientAddress is ${JSON.stringify(answer.clientAddress)}`);
    const who = await socket.timeout(STEP_TIMEOUT_MS).emitWithAck('whoami');
    const xff = who.headers['x-forwarded-for'];
    assert(xff === EXPECTED_CLIENT, `${label}: handshake X-Forwarded-For is ${JSON.stringify(xff)}`);
    const proto = who.headers['x-forwarded-proto'];
    assert(proto === base.protocol.replace(':', ''), `${label}: X-Forwarded-Proto is ${JSON.stringify(proto)}`);
    details.push(`${label}: ${answer.clientAddress} (proto ${proto}, node ${answer.node})`);
    noProblems(socket, label);
  }
  // A client-supplied X-Forwarded-For is appended to, not replaced.
  const spoof = client({ transports: ['polling'], extraHeaders: { 'x-forwarded-for': '203.0.113.9' } });
  await connected(spoof);
  const spoofed = await echo(spoof, 'f-spoof');
  assert(spoofed.clientAddress === `203.0.113.9, ${EXPECTED_CLIENT}`, `with a client X-Forwarded-For: ${JSON.stringify(spoofed.clientAddress)}`);
  // The web app sees the same headers.
  const who = JSON.parse((await get('/whoami')).body);
  assert(who.app === 'web' && who.xForwardedFor === EXPECTED_CLIENT && who.xForwardedProto === 'http',
    `/whoami: ${JSON.stringify(who)}`);
  details.push(`appended: "${spoofed.clientAddress}"; /whoami: ${who.xForwardedFor}, ${who.xForwardedProto}`);
  return details.join('; ');
});

await check('(g)', `Host: ${API_HOST} goes to the api app`, async () => {
  const api = await get('/whoami', { host: `${API_HOST}:${PUBLIC_PORT}` });
  assert(api.status === 200, `GET /whoami with Host ${API_HOST} -> ${api.status}`);
  const who = JSON.parse(api.body);
  assert(who.app === 'api', `answered by ${who.app}`);
  assert(who.xForwardedHost === `${API_HOST}:${PUBLIC_PORT}`, `X-Forwarded-Host ${who.xForwardedHost}`);
  const web = JSON.parse((await get('/whoami')).body);
  assert(web.app === 'web', `without the Host, answered by ${web.app}`);
  return `api.localhost -> ${who.app}, 127.0.0.1 -> ${web.app}`;
});

// There is no browser here: run the page's own inline script in a VM with a
// minimal DOM, `io` being socket.io-client pointed at the proxy. This checks
// the page logic end to end (not the served bundle, which (e) fetches).
await check('(h)', "the page's script connects, echoes and fills #result", async () => {
  const page = await get('/');
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
  const pageIo = (...args) => {
    assert(args.length === 0, 'the page should call io() without arguments (same origin)');
    return client();
  };
  vm.runInNewContext(inline[0], { document, io: pageIo, Math, console });
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (result.dataset.state === 'pending' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert(result.dataset.state === 'ok', `#result is ${JSON.stringify(result.textContent)} (state ${result.dataset.state})`);
  assert(/^echo:hello-\w+ from node-\w+$/.test(result.textContent), `#result text ${JSON.stringify(result.textContent)}`);
  // Give the page's socket a moment to upgrade, as a browser's would.
  const [socket] = sockets;
  await upgraded(socket);
  return `#result = "${result.textContent}", transport now ${socket.io.engine.transport.name}`;
});

const spread = [...nodesSeen].map(([name, count]) => `${name}: ${count}`).join(', ');
console.log(`info echoes per node: ${spread || 'none'} (client-ip affinity: all loopback clients share one node)`);
clearTimeout(globalTimer);
console.log(failures ? `${failures} check(s) FAILED` : 'all checks passed');
process.exit(failures ? 1 : 0);
