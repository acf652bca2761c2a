// What the browser tests share: a folder of generated logs, the real
// binary collecting it on a loopback address, and headless Chromium.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, appendFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
export const BINARY = process.env.MONITORING_RS_BIN || join(root, 'target/debug/monitoring-rs');
/** The test kit's stand-in Kubernetes node. */
export const LOADGEN = process.env.LOADGEN_BIN || join(root, 'target/debug/loadgen');
export const SHOTS = join(root, 'target/ui-screenshots');
mkdirSync(SHOTS, { recursive: true });

/** A free port on `host`. */
export function freePort(host) {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.once('error', fail);
    s.listen(0, host, () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

/** Lines of a generated service: logfmt with a level, a sequence number
 *  and a word to search for. */
export function serviceLines(name, count, levels = ['info', 'info', 'warn', 'error', 'debug']) {
  return Array.from({ length: count }, (_, i) => {
    const level = levels[i % levels.length];
    return `ts=2026-12-01T10:00:${String(i % 60).padStart(2, '0')}Z level=${level} service=${name} seq=${i} msg="handled request ${i}"${i % 7 === 0 ? ' needle=yes' : ''}`;
  });
}

/** Starts the daemon on `host` over a new folder holding `files`
 *  ({ relative path: [lines] }), with more flags `args`; waits until it
 *  holds `expect` lines. */
export async function daemon(host, files, expect, args = []) {
  const dir = mkdtempSync(join(tmpdir(), 'mrs-ui-'));
  const logs = join(dir, 'logs');
  for (const [path, lines] of Object.entries(files)) {
    mkdirSync(dirname(join(logs, path)), { recursive: true });
    writeFileSync(join(logs, path), lines.map((l) => `${l}\n`).join(''));
  }
  const port = await freePort(host);
  const child = spawn(BINARY, [
    '--log-collector', 'directory', '--root-path', logs, '--data-directory', join(dir, 'data'),
    '--listen', `${host}:${port}`, ...args,
  ], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const url = `http://${host}:${port}`;
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      const r = await fetch(`${url}/status`);
      if (r.ok && (await r.json()).store.entries >= expect) break;
    } catch {}
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the daemon did not collect ${expect} lines: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url, logs,
    append: (path, lines) => appendFileSync(join(logs, path), lines.map((l) => `${l}\n`).join('')),
    /** Stops the daemon (waiting for it to exit) and removes its folder. */
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((ok) => child.once('exit', ok));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Headless Chromium as this machine runs it. */
export async function browser() {
  const profile = mkdtempSync(join(tmpdir(), 'mrs-chromium-'));
  // A fresh profile each run (Playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1366, height: 800 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return { context, close: async () => { await context.close(); rmSync(profile, { recursive: true, force: true }); } };
}

/** Saves a screenshot of `page` for a reviewer. */
export const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
