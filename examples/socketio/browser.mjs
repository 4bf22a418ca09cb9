// A real browser against the running stack: headless Chromium (Debian's
// `chromium` package), driven by playwright-core, loads the page from sluice
// over HTTPS (and over plain HTTP, same port), waits until the page's own
// Socket.IO client has connected and echoed, reads #result from the DOM and
// saves a screenshot. No browser is downloaded: playwright-core only drives
// the Chromium found at CHROMIUM.
//
//   node browser.mjs
//   PAGE_URL=https://localhost:8080/ SCREENSHOT=/tmp/page.png node browser.mjs
//
// Settings (environment):
//   PAGE_URL        https://localhost:8080/       the page over TLS (the screenshot is of this one)
//   HTTP_PAGE_URL   http://127.0.0.1:8080/        the same page over plain HTTP ("" to skip)
//   CHROMIUM        /usr/bin/chromium
//   SCREENSHOT      <repo>/target/socketio-e2e/page.png
//   STICKY_COOKIE   sluice_sio
//   BROWSER_TIMEOUT_MS  90000                     the whole run (a cold launch may take 45 s of it)
//
// Prints one line per check (`ok` / `FAIL`); exits 1 if any failed, 2 on the
// global timeout.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const PAGE_URL = process.env.PAGE_URL || 'https://localhost:8080/';
const HTTP_PAGE_URL = process.env.HTTP_PAGE_URL ?? 'http://127.0.0.1:8080/';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.resolve(process.env.SCREENSHOT || path.join(here, '..', '..', 'target', 'socketio-e2e', 'page.png'));
const STICKY_COOKIE = process.env.STICKY_COOKIE || 'sluice_sio';
const GLOBAL_TIMEOUT_MS = Number(process.env.BROWSER_TIMEOUT_MS || 90_000);
const STEP_TIMEOUT_MS = 15_000;
// A cold Chromium start on a busy 2-core machine has taken more than 15 s (CI, 2026-12-01).
const LAUNCH_TIMEOUT_MS = 45_000;

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--ignore-certificate-errors', // the example's certificate is self-signed
];

let failures = 0;
let context;
let userDataDir;

function cleanup() {
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}

const globalTimer = setTimeout(async () => {
  console.log(`FAIL global timeout: the browser test did not finish within ${GLOBAL_TIMEOUT_MS} ms`);
  // Closing can hang on a wedged browser; give it a moment, then leave.
  setTimeout(() => {
    cleanup();
    process.exit(2);
  }, 3000).unref();
  await context?.close().catch(() => {});
  cleanup();
  process.exit(2);
}, GLOBAL_TIMEOUT_MS);

function pass(message) {
  console.log(`ok   ${message}`);
}
function fail(message) {
  failures++;
  console.log(`FAIL ${message}`);
}

/** Load `url`, wait for #result to settle, return what the page shows. */
async function visit(page, url) {
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // HTTP errors are reported with their URL by the `response` handler.
    if (msg.type() === 'error' && !/^Failed to load resource/.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`${res.status()} for ${res.request().method()} ${res.url()}`);
  });
  page.on('requestfailed', (req) => problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));

  const response = await page.goto(url, { waitUntil: 'load', timeout: STEP_TIMEOUT_MS });
  if (!response || response.status() !== 200) throw new Error(`GET ${url} -> ${response && response.status()}`);
  // Settled: the echo came back (ok) or the page gave up (error).
  await page.waitForSelector('#result[data-state="ok"], #result[data-state="error"]', { timeout: STEP_TIMEOUT_MS });
  const shown = await page.evaluate(() => {
    const result = document.getElementById('result');
    const nav = performance.getEntriesByType('navigation')[0];
    return {
      state: result.dataset.state,
      text: result.textContent,
      node: result.dataset.node || null,
      page: document.getElementById('page').textContent,
      protocol: location.protocol,
      httpVersion: nav ? nav.nextHopProtocol : '?',
    };
  });
  if (shown.state !== 'ok') {
    throw new Error(`#result says ${JSON.stringify(shown.text)}${problems.length ? ` (${problems.join('; ')})` : ''}`);
  }
  if (!/^echo:hello-\w+ from node-\w+$/.test(shown.text)) throw new Error(`#result text ${JSON.stringify(shown.text)}`);
  // A browser's Socket.IO client upgrades to WebSocket after the polling handshake.
  await page.waitForFunction(
    () => /websocket/.test(document.getElementById('transport').textContent),
    null,
    { timeout: STEP_TIMEOUT_MS },
  );
  shown.transport = await page.textContent('#transport');
  // Failed requests other than polls cut short by navigation are problems.
  const real = problems.filter((p) => !/net::ERR_ABORTED/.test(p));
  if (real.length) throw new Error(real.join('; '));
  return shown;
}

try {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} does not exist: install Debian's chromium (apt-get install chromium) or set CHROMIUM`);
  }
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    ignoreHTTPSErrors: true,
    viewport: { width: 1000, height: 600 },
    timeout: LAUNCH_TIMEOUT_MS,
  });
  console.log(`info ${CHROMIUM} ${context.browser()?.version() ?? ''}`.trim());

  const page = context.pages()[0] || (await context.newPage());
  try {
    const shown = await visit(page, PAGE_URL);
    if (shown.protocol !== 'https:') throw new Error(`the page was loaded over ${shown.protocol}`);
    // All cookies: the sticky one has Path=/socket.io/, so it does not apply to the page's URL.
    const host = new URL(PAGE_URL).hostname;
    const cookies = await context.cookies();
    const sticky = cookies.find((c) => c.name === STICKY_COOKIE && c.domain === host);
    if (!sticky) {
      throw new Error(`no ${STICKY_COOKIE} cookie in the browser (have: ${cookies.map((c) => c.name).join(', ') || 'none'})`);
    }
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    pass(`${PAGE_URL} (${shown.httpVersion}): #result = "${shown.text}", transport "${shown.transport}", ` +
      `page "${shown.page}", cookie ${sticky.name}=${sticky.value} (path ${sticky.path}, httpOnly ${sticky.httpOnly}, ` +
      `sameSite ${sticky.sameSite}); screenshot ${SCREENSHOT}`);
  } catch (err) {
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => {});
    fail(`${PAGE_URL}: ${err.message} (screenshot ${SCREENSHOT})`);
  }

  if (HTTP_PAGE_URL) {
    const plain = await context.newPage();
    try {
      const shown = await visit(plain, HTTP_PAGE_URL);
      if (shown.protocol !== 'http:') throw new Error(`the page was loaded over ${shown.protocol}`);
      pass(`${HTTP_PAGE_URL} (${shown.httpVersion}): #result = "${shown.text}", transport "${shown.transport}"`);
    } catch (err) {
      fail(`${HTTP_PAGE_URL}: ${err.message}`);
    }
  }
} catch (err) {
  fail(`browser: ${err.message}`);
} finally {
  await context?.close().catch(() => {});
  cleanup();
}

clearTimeout(globalTimer);
console.log(failures ? `${failures} browser check(s) FAILED` : 'browser checks passed');
process.exit(failures ? 1 : 0);
