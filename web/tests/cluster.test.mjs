// The page of one node answering for two: lines from both, and a warning
// naming the node that stopped answering.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { browser, daemon, serviceLines, shot } from './harness.mjs';

let a, b, chrome, page;
before(async () => {
  b = await daemon('127.0.0.47', { 'b.log': serviceLines('node-b', 5) }, 5);
  a = await daemon('127.0.0.46', { 'a.log': serviceLines('node-a', 5) }, 5, ['--peers', new URL(b.url).host]);
  chrome = await browser();
  page = await chrome.context.newPage();
});
after(async () => { await chrome?.close(); await a?.stop(); await b?.stop(); });

test("one node's page shows the cluster's lines and says which node is missing", async () => {
  const q = encodeURIComponent('{path=~".+log"}');
  await page.goto(`${a.url}/?q=${q}`);
  await page.locator('[data-testid=line]').first().waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid=lines]').dataset.count === '10');
  const labels = await page.locator('[data-testid=line] .labels').allTextContents();
  assert.ok(labels.some((l) => l.endsWith('a.log')) && labels.some((l) => l.endsWith('b.log')), labels.join(' | '));
  await b.stop();
  await page.reload();
  const warning = page.locator('[data-testid=warning]').first();
  await warning.waitFor();
  assert.match(await warning.textContent(), new RegExp(new URL(b.url).host.replace(/\./g, '\\.')));
  await page.waitForFunction(() => document.querySelector('[data-testid=lines]').dataset.count === '5');
  await shot(page, 'cluster-partial');
});
