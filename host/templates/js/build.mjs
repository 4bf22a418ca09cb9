// Build plugin.js into a WebAssembly component for sluice:
//
//   npm ci && npm run build          -> {{name}}.wasm
//
// Uses the componentize-js API (pinned in package-lock.json). Only the
// `http` and `fetch-event` engine features are left out: plugins get no
// network, and sluice refuses a component that imports wasi:http.

import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, '{{name}}.wasm');

const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: join(here, 'wit'),
  worldName: '{{world}}',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
