// What the tests give plugin.js in place of sluice's `host` interface:
// `log` keeps the lines so a test can look at them.
export const logged = [];
export function log(level, message) {
  logged.push(`[${level}] ${message}`);
}
