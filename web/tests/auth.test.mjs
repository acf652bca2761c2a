// The page with access control on, over a stand-in Kubernetes node (the
// test kit's loadgen: a fake API server with TokenReview and
// SubjectAccessReview, and a kubelet writing container logs).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BINARY, LOADGEN, browser, freePort, shot } from './harness.mjs';

let dir, loadgen, daemon, chrome, page, url;
const wait = async (what, ok, ms = 30000) => {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mrs-ui-k8s-'));
  // Eight pods over team-0 … team-3; alice may read team-1 alone.
  loadgen = spawn(LOADGEN, ['--pods', '8', '--rate', '40', '--out', dir, '--churn-every', '0s',
    '--user', 'alice-token=alice:team-1'], { stdio: 'ignore' });
  await wait('the stand-in node', () => existsSync(join(dir, 'kubeconfig')));
  const port = await freePort('127.0.0.45');
  url = `http://127.0.0.45:${port}`;
  daemon = spawn(BINARY, ['--log-collector', 'kubernetes', '--root-path', join(dir, 'var/log/containers'),
    '--kubeconfig', join(dir, 'kubeconfig'), '--data-directory', join(dir, 'data'), '--node-name', 'node-1',
    '--listen', `127.0.0.45:${port}`], { stdio: 'ignore' });
  await wait('the daemon', async () => { try { return (await fetch(`${url}/ready`)).ok; } catch { return false; } });
  chrome = await browser();
  page = await chrome.context.newPage();
});
after(async () => {
  await chrome?.close();
  daemon?.kill('SIGTERM');
  loadgen?.kill('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('with access control the page asks for a token and shows only what it may read', async () => {
  const denied = await fetch(`${url}/loki/api/v1/labels`);
  assert.equal(denied.status, 401, 'the API needs a token');
  await page.goto(url);
  await page.locator('#token').waitFor();
  await shot(page, 'token');
  await page.locator('#token').fill('alice-token');
  await page.getByRole('button', { name: 'Use this token' }).click();
  // Namespaces at the top of the list, then pods and containers.
  const top = page.locator('main.start > .tree > li > .entry a');
  await wait('team-1 listed', async () => (await top.allTextContents()).includes('team-1'));
  assert.deepEqual(await top.allTextContents(), ['team-1']);
  assert.match(await page.locator('h1').textContent(), /Namespaces/);
  await shot(page, 'start-kubernetes');
  // Her live tail works too: the token goes as a WebSocket subprotocol.
  await page.goto(`${url}/?q=${encodeURIComponent('{namespace="team-1"}')}&live=1&from=now-5m`);
  const rows = page.locator('[data-testid=line]');
  await rows.first().waitFor();
  const before = Number(await page.locator('[data-testid=lines]').getAttribute('data-count'));
  await wait('live lines', async () => Number(await page.locator('[data-testid=lines]').getAttribute('data-count')) > before, 20000);
  const labels = await page.locator('[data-testid=line] .labels').allTextContents();
  assert.ok(labels.every((l) => l.includes('team-1')), labels.slice(0, 3).join(' | '));
  await shot(page, 'live-kubernetes');
});
