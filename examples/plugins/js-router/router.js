// A sluice route plugin in JavaScript (world `router` of wit/plugin.wit,
// sluice:plugin@0.2.0).
//
//   x-beta: 1      -> backend `beta`
//   GET /hello     -> answered by the plugin itself, greeting printed with console.log
//   anything else  -> backend `web`
//
// console.log / console.error lines reach the proxy log, tagged with the
// plugin's name. The plugin gets no files and no network (see
// docs/PLUGINS-LANGUAGES.md).

import { log } from 'sluice:plugin/host@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

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
  // Settings arrive as JSON; this plugin has none, but refuses typos.
  // Throwing refuses them.
  init(settings) {
    const keys = Object.keys(JSON.parse(settings));
    if (keys.length > 0) {
      throw `unknown settings: ${keys.join(', ')}`;
    }
    log('info', 'js-router ready');
    // The manifest: the backends `pick` names (sluice checks them against
    // the config) and the only request header it reads.
    return { backends: ['web', 'beta'], headers: { tag: 'only', val: ['x-beta'] } };
  },
};

export const route = {
  pick(request) {
    if (header(request, 'x-beta') === '1') {
      return forward('beta');
    }
    if (request.path === '/hello') {
      const greeting = `hello from JavaScript, ${request.conn.clientAddr}`;
      console.log(`js-router: ${greeting}`);
      return {
        tag: 'respond',
        val: {
          status: 200,
          headers: [{ name: 'content-type', value: encoder.encode('text/plain; charset=utf-8') }],
          body: encoder.encode(`${greeting}\n`),
        },
      };
    }
    return forward('web');
  },
};
