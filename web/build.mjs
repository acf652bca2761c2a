// Builds the page into dist/ (committed, embedded by src/api/web.rs):
// app.js (Preact and uPlot bundled and minified by esbuild), app.css and
// index.html naming both by their content's hash. `node build.mjs --check`
// fails when dist/ differs from what the sources build (CI runs it).
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const check = process.argv.includes('--check');

const js = await build({
  entryPoints: [join(here, 'src/main.jsx')],
  bundle: true,
  minify: true,
  write: false,
  format: 'esm',
  target: ['es2020'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none',
  logLevel: 'warning',
});
const css = [
  readFileSync(join(here, 'node_modules/uplot/dist/uPlot.min.css'), 'utf8'),
  readFileSync(join(here, 'src/app.css'), 'utf8'),
].join('\n');
const hash = (text) => createHash('sha256').update(text).digest('hex').slice(0, 12);
const app = js.outputFiles[0].text;
const html = readFileSync(join(here, 'src/index.html'), 'utf8')
  .replace('APP_JS', `/ui/app.js?v=${hash(app)}`)
  .replace('APP_CSS', `/ui/app.css?v=${hash(css)}`);
const files = { 'app.js': app, 'app.css': css, 'index.html': html };

mkdirSync(dist, { recursive: true });
let differs = [];
for (const [name, text] of Object.entries(files)) {
  const path = join(dist, name);
  let old = null;
  try { old = readFileSync(path, 'utf8'); } catch {}
  if (old !== text) differs.push(name);
  if (!check) writeFileSync(path, text);
}
if (check && differs.length) {
  console.error(`web/dist is not what web/src builds (${differs.join(', ')}): run \`npm run build\` in web/ and commit web/dist`);
  process.exit(1);
}
console.log(`web/dist: app.js ${app.length} B, app.css ${css.length} B${check ? ' (up to date)' : ''}`);
