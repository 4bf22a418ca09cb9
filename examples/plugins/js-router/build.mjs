// Build router.js into a WebAssembly component for sluice:
//
//   npm ci && node build.mjs            -> js-router.wasm
//
// Uses the componentize-js API (pinned in package-lock.json): jco 1.35.0's
// `componentize` command line is broken. The default engine features stay
// on (console.log, Math.random, Date.now use the virtual WASI sluice
// provides); only `fetch` is left out, because plugins get no network and
// sluice refuses a component that imports wasi:http.

import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'js-router.wasm');

const { component } = await componentize({
  sourcePath: join(here, 'router.js'),
  witPath: join(here, '..', '..', '..', 'wit'),
  worldName: 'router',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
