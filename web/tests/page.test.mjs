// The page in a real browser against the real binary: each test drives it
// as a person would and saves a screenshot under target/ui-screenshots/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { browser, daemon, serviceLines, shot } from './harness.mjs';

const APP = serviceLines('shop', 300);
const DB = serviceLines('db', 40, ['error', 'info']);
const files = { 'shop/app.log': APP, 'db/db.log': DB, 'plain.log': ['\u001b[31mred alert\u001b[0m plain text', 'second plain line'] };
let node, chrome, page;

before(async () => {
  node = await daemon('127.0.0.40', files, APP.length + DB.length + 2);
  chrome = await browser();
  page = await chrome.context.newPage();
});
after(async () => { await chrome?.close(); await node?.stop(); });

const open = async (params = {}) => {
  const qs = new URLSearchParams(params).toString();
  await page.goto(`${node.url}/${qs ? `?${qs}` : ''}`);
};
const lines = () => page.locator('[data-testid=line] .text').allTextContents();
const settle = () => page.waitForFunction(() => !document.querySelector('.status')?.textContent.includes('Loading'));

test('the start page lists every file of the folder and opens its logs', async () => {
  await open();
  const sources = page.locator('[data-testid=source] a');
  await sources.first().waitFor();
  const names = await sources.allTextContents();
  for (const f of Object.keys(files)) assert.ok(names.some((n) => n.endsWith(f)), `${f} in ${names}`);
  await shot(page, 'start');
  await page.locator('[data-testid=source] a', { hasText: 'db/db.log' }).click();
  await page.locator('[data-testid=line]').first().waitFor();
  assert.match(decodeURIComponent(page.url()), /q=\{path="[^"]*db\/db\.log"\}/);
  assert.equal(await page.locator('[data-testid=line]').count(), DB.length);
});

test('a query shows exactly the lines it matches, the filter text highlighted', async () => {
  await open({ q: '{path=~".+app.log"} |= "needle=yes"' });
  await page.locator('[data-testid=line]').first().waitFor();
  await settle();
  const want = APP.filter((l) => l.includes('needle=yes')).reverse();
  assert.deepEqual(await lines(), want);
  assert.equal(await page.locator('[data-testid=line] mark').first().textContent(), 'needle=yes');
  await shot(page, 'query');
});

test("the histogram's bars add up to the lines of each level", async () => {
  await open({ q: '{path=~".+app.log"}', wrap: '1' });
  await page.locator('[data-testid=histogram-totals] td').first().waitFor({ state: 'attached' });
  const totals = Object.fromEntries(await page.locator('[data-testid=histogram-totals] td').evaluateAll(
    (cells) => cells.map((c) => [c.dataset.level, Number(c.textContent)])));
  const want = {};
  for (const l of APP) { const level = /level=(\w+)/.exec(l)[1]; want[level] = (want[level] || 0) + 1; }
  assert.deepEqual(totals, want);
  // The list holds every line (it renders only those near the viewport).
  assert.equal(await page.locator('[data-testid=lines]').getAttribute('data-count'), String(APP.length));
  const first = await page.locator('[data-testid=line]').evaluateAll((r) => r.slice(0, 5).map((x) => x.dataset.level));
  assert.deepEqual(first, APP.slice(-5).reverse().map((l) => /level=(\w+)/.exec(l)[1]));
  await shot(page, 'histogram');
});

test('dragging across the histogram narrows the range', async () => {
  await open({ q: '{path=~".+app.log"}' });
  const plot = page.locator('[data-testid=histogram] .u-over');
  await plot.waitFor();
  const box = await plot.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction(() => new URLSearchParams(location.search).get('from')?.match(/^\d+$/));
  const p = new URL(page.url()).searchParams;
  const span = Number(p.get('to')) - Number(p.get('from'));
  assert.ok(span > 0 && span < 0.5 * 3600e3, `a narrower range: ${span} ms`);
  await page.goBack();
  await page.waitForFunction(() => !new URLSearchParams(location.search).get('from'));
});

test('a line expands to its labels and fields, and filters from them', async () => {
  await open({ q: '{path=~".+db.log"} | logfmt' });
  const first = page.locator('[data-testid=line]').first();
  await first.locator('.summary').click();
  // Stream labels, structured metadata and the query's parsed labels apart.
  assert.match(await first.locator('[data-testid=labels]').textContent(), /path/);
  assert.match(await first.locator('[data-testid=metadata]').textContent(), /detected_level\s*info/);
  assert.match(await first.locator('[data-testid=parsed]').textContent(), /seq\s*39/);
  const fields = first.locator('[data-testid=fields]');
  await fields.waitFor();
  const text = await fields.textContent();
  assert.match(text, /service\s*db/);
  assert.match(text, /seq\s*39/);
  assert.match(await first.locator('[data-testid=details]').textContent(), /path/);
  await shot(page, 'details');
  await fields.locator('tr', { hasText: 'level' }).getByRole('button', { name: 'Filter for this value' }).click();
  await page.waitForFunction(() => new URLSearchParams(location.search).get('q').includes('| logfmt | level="info"'));
  await settle();
  await page.locator('[data-testid=line]').first().waitFor();
  assert.equal(await page.locator('[data-testid=line]').count(), DB.filter((l) => l.includes('level=info')).length);
});

test('context shows the lines around one', async () => {
  await open({ q: '{path=~".+app.log"} |= "seq=150 "' });
  const row = page.locator('[data-testid=line]').first();
  await row.locator('.summary').click();
  await row.getByRole('button', { name: 'Show context' }).click();
  const context = row.locator('[data-testid=context] li');
  await context.first().waitFor();
  const text = await context.allTextContents();
  assert.ok(text.some((t) => t.includes('seq=149 ')) && text.some((t) => t.includes('seq=151 ')), text.join('\n'));
  await shot(page, 'context');
});

test('a live tail receives a line appended to a file', async () => {
  await open({ q: '{path=~".+plain.log"}', live: '1' });
  await page.locator('[data-testid=line]').first().waitFor();
  await page.waitForTimeout(500);
  node.append('plain.log', ['a brand new line from the live tail']);
  await page.locator('[data-testid=line]', { hasText: 'a brand new line from the live tail' }).waitFor({ timeout: 15000 });
  assert.equal(await page.locator('.text .ansi-red-fg').first().textContent(), 'red alert');
  await shot(page, 'live');
});

test('a parse error is shown where it is', async () => {
  await open({ q: '{path="x"' });
  const error = page.locator('[data-testid=query-error]');
  await error.waitFor();
  assert.match(await error.textContent(), /parse error/);
  assert.match(await error.locator('.caret').textContent(), /\n\s+\^$/);
  await shot(page, 'parse-error');
});

test('the URL round-trips the query, range and options', async () => {
  const from = String(Date.now() - 30 * 60e3), to = String(Date.now());
  await open({ q: '{path=~".+db.log"} |= "seq=3"', from, to, wrap: '1', limit: '5000' });
  await page.locator('[data-testid=line]').first().waitFor();
  await settle();
  assert.equal(await page.locator('#query').inputValue(), '{path=~".+db.log"} |= "seq=3"');
  assert.ok(await page.getByLabel('Wrap lines').isChecked());
  assert.equal(await page.getByLabel('Limit').inputValue(), '5000');
  const p = new URL(page.url()).searchParams;
  assert.equal(p.get('from'), from);
  assert.equal(p.get('to'), to);
  await page.locator('#query').fill('{path=~".+app.log"}');
  await page.locator('#query').press('Enter');
  await page.waitForFunction(() => new URLSearchParams(location.search).get('q') === '{path=~".+app.log"}');
  await page.goBack();
  await page.waitForFunction(() => new URLSearchParams(location.search).get('q').includes('db.log'));
  await page.waitForFunction(() => document.querySelector('#query').value === '{path=~".+db.log"} |= "seq=3"');
  assert.ok(await page.getByLabel('Wrap lines').isChecked());
});

test('label names and values are completed from the API', async () => {
  await open({ q: '{path=~".+db.log"}' });
  const input = page.locator('#query');
  await input.fill('');
  await input.pressSequentially('{pa');
  await page.locator('[data-testid=completions] li', { hasText: 'path' }).waitFor();
  await input.press('Tab');
  await page.locator('[data-testid=completions] li').first().waitFor();
  const values = await page.locator('[data-testid=completions] li').allTextContents();
  assert.ok(values.some((v) => v.endsWith('db/db.log')), values.join(', '));
  await shot(page, 'completion');
});

test('a metric query draws a chart', async () => {
  await open({ q: 'sum by (path) (count_over_time({path=~".+log"}[1m]))' });
  await page.locator('[data-testid=metric-chart] canvas').waitFor();
  await shot(page, 'metric');
});

test('dark mode follows the system and keeps the text readable', async () => {
  await page.emulateMedia({ colorScheme: 'dark' });
  try {
    await open({ q: '{path=~".+app.log"} |= "needle=yes"' });
    await page.locator('[data-testid=line]').first().waitFor();
    const [bg, fg] = await page.evaluate(() => {
      const s = getComputedStyle(document.body);
      return [s.backgroundColor, s.color];
    });
    // Relative luminance contrast, WCAG's formula.
    const lum = (rgb) => {
      const [r, g, b] = rgb.match(/\d+/g).slice(0, 3).map((v) => {
        const c = Number(v) / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const [l1, l2] = [lum(bg), lum(fg)].sort((x, y) => y - x);
    assert.ok(lum(bg) < 0.05, `a dark background: ${bg}`);
    assert.ok((l1 + 0.05) / (l2 + 0.05) >= 7, `contrast of ${fg} on ${bg}`);
    await shot(page, 'dark');
  } finally {
    await page.emulateMedia({ colorScheme: 'light' });
  }
});
