// Run the plugin natively in Node (no component build needed): `npm test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
const { setup, route } = await import('../plugin.js');
const { logged } = await import('./host-stub.mjs');

const encoder = new TextEncoder();
const conn = { listener: 'test', clientAddr: '127.0.0.1:50000', localAddr: '127.0.0.1:8080' };

function request(path, headers = {}) {
  return {
    method: 'GET',
    path,
    authority: 'www.test',
    headers: Object.entries(headers).map(([name, value]) => ({ name, value: encoder.encode(value) })),
    conn,
  };
}

test('declares its backends and the one header it reads', () => {
  const manifest = setup.init('{}');
  assert.deepEqual(manifest.backends, ['web', 'beta']);
  assert.deepEqual(manifest.headers, { tag: 'only', val: ['x-beta'] });
  assert.ok(logged.includes('[info] {{name}} ready'));
});

test('routes by the x-beta header', () => {
  setup.init('{}');
  assert.equal(route.pick(request('/')).val.backend, 'web');
  assert.equal(route.pick(request('/', { 'x-beta': '1' })).val.backend, 'beta');
});

test('answers /hello itself', () => {
  setup.init('{}');
  const decision = route.pick(request('/hello'));
  assert.equal(decision.tag, 'respond');
  assert.equal(decision.val.status, 200);
  assert.match(new TextDecoder().decode(decision.val.body), /^hello from {{name}}, 127\.0\.0\.1:50000/);
});

test('takes its backends from the settings and refuses unknown ones', () => {
  setup.init('{"backend": "app"}');
  assert.equal(route.pick(request('/')).val.backend, 'app');
  assert.throws(() => setup.init('{"bakend": "app"}'), /unknown setting `bakend`/);
});
