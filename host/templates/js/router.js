// {{name}}: a sluice route plugin in JavaScript (world `router` of wit/plugin.wit,
// sluice:plugin@0.2.0). `pick` is called once for every HTTP request.
//
//   x-beta: 1      -> the `beta-backend` setting (default `beta`)
//   GET /hello     -> answered by the plugin itself (and printed with console.log)
//   anything else  -> the `backend` setting (default `web`)
//
// console.log / console.error lines reach the proxy log, tagged with the
// plugin's name. A plugin gets no files and no network.

import { log } from 'sluice:plugin/host@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// The settings, from the plugin's `settings` table in the sluice config.
const defaults = { backend: 'web', 'beta-backend': 'beta' };
let settings = defaults;

function header(request, name) {
  const found = request.headers.find((h) => h.name === name);
  return found === undefined ? undefined : decoder.decode(found.value);
}

function forward(backend) {
  return {
    tag: 'forward',
    val: { backend, affinity: undefined, setHeaders: [], removeHeaders: [], rewritePath: undefined },
  };
}

export const setup = {
  // Called once per instance with the settings as JSON. Throwing refuses
  // them: sluice then refuses to load the plugin and prints the message.
  init(json) {
    const given = JSON.parse(json);
    for (const [key, value] of Object.entries(given)) {
      if (!(key in defaults)) {
        throw `unknown setting \`${key}\` (known: ${Object.keys(defaults).join(', ')})`;
      }
      if (typeof value !== 'string' || value === '') {
        throw `setting \`${key}\` must be a backend name`;
      }
    }
    settings = { ...defaults, ...given };
    log('info', '{{name}} ready');
    // The manifest: every backend a decision can name (sluice checks them
    // against the config), and the only request headers `pick` reads.
    return {
      backends: [settings.backend, settings['beta-backend']],
      headers: { tag: 'only', val: ['x-beta'] },
    };
  },
};

export const route = {
  pick(request) {
    if (header(request, 'x-beta') === '1') {
      return forward(settings['beta-backend']);
    }
    if (request.path === '/hello') {
      const greeting = `hello from {{name}}, ${request.conn.clientAddr}`;
      console.log(greeting);
      return {
        tag: 'respond',
        val: {
          status: 200,
          headers: [{ name: 'content-type', value: encoder.encode('text/plain; charset=utf-8') }],
          body: encoder.encode(`${greeting}\n`),
        },
      };
    }
    return forward(settings.backend);
  },
};
