// Run the plugin natively in Node (no component build needed): `npm test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
const { setup, sniff } = await import('../plugin.js');
const { logged } = await import('./host-stub.mjs');

const encoder = new TextEncoder();
const conn = { listener: 'test', clientAddr: '127.0.0.1:50000', localAddr: '127.0.0.1:8080' };

test('declares no backend without settings', () => {
  assert.deepEqual(setup.init('{}').backends, []);
  assert.ok(logged.includes('[info] {{name}} ready'));
});

test('answers PING itself, waiting for the whole line', () => {
  setup.init('{}');
  assert.deepEqual(sniff.classify(conn, encoder.encode('PI'), false), { tag: 'need-more' });
  const verdict = sniff.classify(conn, encoder.encode('PING\r\n'), false);
  assert.equal(verdict.tag, 'reply');
  assert.equal(new TextDecoder().decode(verdict.val.data), 'PONG\r\n');
  assert.equal(verdict.val.thenClose, true);
});

test('sends everything else to the default backend, or the configured one', () => {
  setup.init('{}');
  assert.deepEqual(sniff.classify(conn, encoder.encode('GET / HTTP/1.1\r\n'), false), { tag: 'forward-default' });
  assert.deepEqual(sniff.classify(conn, encoder.encode('PI'), true), { tag: 'forward-default' });
  assert.deepEqual(setup.init('{"backend": "ssh"}').backends, ['ssh']);
  assert.deepEqual(sniff.classify(conn, encoder.encode('SSH-2.0'), false), { tag: 'forward', val: 'ssh' });
  assert.throws(() => setup.init('{"backnd": "ssh"}'), /unknown setting `backnd`/);
});
