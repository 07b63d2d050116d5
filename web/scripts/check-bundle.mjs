// Fails the build when the marketplace page's JavaScript (the entry chunk and every chunk it
// imports statically; lazily loaded chunks such as supabase-js excluded) is over 100 KB gzipped.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const LIMIT = 100 * 1024;
const dist = new URL("../dist/", import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(dist, ".vite/manifest.json"), "utf8"));
const seen = new Set();
let total = 0;
function visit(key) {
  if (seen.has(key)) return;
  seen.add(key);
  const chunk = manifest[key];
  total += gzipSync(readFileSync(join(dist, chunk.file))).length;
  for (const dep of chunk.imports ?? []) visit(dep);
}
visit("index.html");
const kb = (total / 1024).toFixed(1);
if (total > LIMIT) {
  console.error(`marketplace JavaScript is ${kb} KB gzipped, over the 100 KB budget`);
  process.exit(1);
}
console.log(`marketplace JavaScript: ${kb} KB gzipped (budget 100 KB), ${seen.size} chunk(s)`);
