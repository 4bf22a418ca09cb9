// Node module hooks for the tests: `sluice:plugin/host@…` (which sluice
// provides to the component) resolves to host-stub.mjs.
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('sluice:plugin/')) {
    return { url: new URL('./host-stub.mjs', import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
