// {{name}}: a sluice sniff plugin in JavaScript (world `sniffer` of wit/plugin.wit,
// sluice:plugin@0.2.0). `classify` is called with the first bytes of each new
// connection, again each time more arrive, until it decides.
//
//   "PING\r\n"     -> answered by the plugin itself with "PONG\r\n", then closed
//   anything else  -> the `backend` setting, or the listener's default backend
//
// console.log / console.error lines reach the proxy log, tagged with the
// plugin's name. A plugin gets no files and no network.

import { log } from 'sluice:plugin/host@0.2.0';

const encoder = new TextEncoder();
const PING = encoder.encode('PING\r\n');

// The settings, from the plugin's `settings` table in the sluice config.
let backend = undefined;

export const setup = {
  // Called once per instance with the settings as JSON. Throwing refuses
  // them: sluice then refuses to load the plugin and prints the message.
  init(json) {
    const given = JSON.parse(json);
    for (const [key, value] of Object.entries(given)) {
      if (key !== 'backend') {
        throw `unknown setting \`${key}\` (known: backend)`;
      }
      if (typeof value !== 'string' || value === '') {
        throw 'setting `backend` must be a backend name';
      }
    }
    backend = given.backend;
    log('info', '{{name}} ready');
    // The manifest: every backend a verdict can name (sluice checks them
    // against the config). Sniff plugins see no headers, so `headers` is unused.
    return { backends: backend === undefined ? [] : [backend], headers: { tag: 'all' } };
  },
};

export const sniff = {
  classify(conn, head, complete) {
    const prefix = head.subarray(0, PING.length);
    const startsLikePing = prefix.every((byte, i) => byte === PING[i]);
    if (startsLikePing && head.length >= PING.length) {
      console.log(`ping from ${conn.clientAddr}`);
      return { tag: 'reply', val: { data: encoder.encode('PONG\r\n'), thenClose: true } };
    }
    if (startsLikePing && !complete) {
      return { tag: 'need-more' };
    }
    return backend === undefined ? { tag: 'forward-default' } : { tag: 'forward', val: backend };
  },
};
