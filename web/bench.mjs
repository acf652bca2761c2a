// What the page costs with a large result: time to the first lines, the
// script heap with 100,000 lines listed, and how long a scroll to the end
// takes to paint. `make bench-ui`; figures in target/bench/ui.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { browser, daemon, serviceLines } from './tests/harness.mjs';

const N = Number(process.env.BENCH_UI_LINES || 100000);
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const node = await daemon('127.0.0.44', { 'big/app.log': serviceLines('big', N) }, N, ['--max-limit', String(N)]);
const chrome = await browser();
const page = await chrome.context.newPage();
const cdp = await page.context().newCDPSession(page);
await cdp.send('Performance.enable');
const firstPaint = [], fullList = [], heap = [], scroll = [];
for (let run = 0; run < 3; run++) {
  const started = Date.now();
  await page.goto(`${node.url}/`);
  await page.locator('[data-testid=source]').first().waitFor();
  firstPaint.push(Date.now() - started);
  const t = Date.now();
  await page.goto(`${node.url}/?q=${encodeURIComponent('{path=~".+app.log"}')}&limit=${N}`);
  await page.waitForFunction((n) => document.querySelector('[data-testid=lines]')?.dataset.count === String(n), N, { timeout: 120000 });
  fullList.push(Date.now() - t);
  await cdp.send('HeapProfiler.collectGarbage');
  const { metrics } = await cdp.send('Performance.getMetrics');
  heap.push(metrics.find((m) => m.name === 'JSHeapUsedSize').value / 2 ** 20);
  const s = Date.now();
  await page.locator('[data-testid=lines]').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=line] .text')].some((t) => t.textContent.includes('seq=0 ')));
  scroll.push(Date.now() - s);
}
const report = {
  lines: N,
  start_page_ms: median(firstPaint),
  query_to_all_lines_listed_ms: median(fullList),
  js_heap_mib_with_all_lines: Math.round(median(heap) * 10) / 10,
  scroll_to_end_ms: median(scroll),
};
mkdirSync(join(process.cwd(), '../target/bench'), { recursive: true });
writeFileSync(join(process.cwd(), '../target/bench/ui.json'), JSON.stringify(report, null, 2));
console.log(report);
await chrome.close();
await node.stop();
