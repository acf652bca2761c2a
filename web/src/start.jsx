// The start page: what is collected — namespaces, pods and containers
// (or files) — with line rates and sizes, newest activity first; each
// opens its logs.
import { useEffect, useState } from 'preact/hooks';
import { get } from './api.js';
import { href } from './state.js';

const ALL = '{service_name=~".+"}';
const key = (labels) => JSON.stringify(Object.entries(labels).filter(([k]) => k !== 'detected_level').sort());
const q = (pairs) => `{${pairs.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}}`;
const size = (b) => (b >= 1 << 30 ? `${(b / 2 ** 30).toFixed(1)} GiB` : b >= 1 << 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);
const rate = (r) => (r >= 100 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2));
const ago = (s) => {
  if (!s) return 'no lines in 24 h';
  const d = Date.now() / 1000 - s;
  return d < 120 ? 'active now' : d < 7200 ? `${Math.round(d / 60)} min ago` : `${Math.round(d / 3600)} h ago`;
};

/** Streams with their figures: lines in the last 10 minutes (the rate),
 *  bytes in the last hour, the last 10-minute bucket with lines (within
 *  24 h). */
async function streams() {
  const now = Math.floor(Date.now() / 1000);
  const [series, counts, bytes] = await Promise.all([
    get('/loki/api/v1/series', { 'match[]': ALL, start: `${(now - 7 * 86400)}000000000`, end: `${now + 60}000000000` }),
    get('/loki/api/v1/query_range', { query: `count_over_time(${ALL}[10m])`, start: `${now - 86400}000000000`, end: `${now}000000000`, step: '600s' }),
    get('/loki/api/v1/query', { query: `bytes_over_time(${ALL}[1h])`, time: `${now}000000000` }),
  ]);
  const byKey = new Map();
  for (const labels of series.body.data) byKey.set(key(labels), { labels, lines: 0, bytes: 0, last: 0 });
  for (const s of counts.body.data.result) {
    const e = byKey.get(key(s.metric)) || { labels: s.metric, lines: 0, bytes: 0, last: 0 };
    for (const [t, v] of s.values) {
      if (Number(v) > 0) e.last = Math.max(e.last, Number(t));
      if (Number(t) >= now) e.lines = Number(v);
    }
    byKey.set(key(s.metric), e);
  }
  for (const s of bytes.body.data.result) {
    const e = byKey.get(key(s.metric));
    if (e) e.bytes = Number(s.value[1]);
  }
  return { list: [...byKey.values()], warnings: [...series.warnings, ...counts.warnings], missing: [...new Set([...series.missing, ...counts.missing])] };
}

function group(list, names) {
  if (!names.length) return null;
  const [name, ...rest] = names;
  const groups = new Map();
  for (const s of list) {
    const v = s.labels[name];
    if (v === undefined) continue;
    if (!groups.has(v)) groups.set(v, []);
    groups.get(v).push(s);
  }
  return [...groups.entries()].map(([value, members]) => ({
    name, value, members,
    lines: members.reduce((a, s) => a + s.lines, 0),
    bytes: members.reduce((a, s) => a + s.bytes, 0),
    last: Math.max(...members.map((s) => s.last)),
    children: group(members, rest),
  })).sort((a, b) => b.last - a.last || b.lines - a.lines || String(a.value).localeCompare(String(b.value)));
}

function Tree({ nodes, path, open }) {
  return (
    <ul class="tree">
      {nodes.map((n) => {
        const pairs = [...path, [n.name, n.value]];
        return (
          <li key={n.value}>
            <div class="entry" data-testid="source">
              <a href={href({ q: q(pairs), from: 'now-1h', to: 'now' })} onClick={open}>{n.value}</a>
              <span class="figures">{rate(n.lines / 10)} lines/min · {size(n.bytes)} in the last hour · {ago(n.last)}</span>
            </div>
            {n.children && <Tree nodes={n.children} path={pairs} open={open} />}
          </li>
        );
      })}
    </ul>
  );
}

export function Start({ open }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => { streams().then(setData, (e) => setError(e.message)); }, []);
  if (error) return <main><p class="error" role="alert">{error}</p></main>;
  if (!data) return <main><p role="status">Loading what is collected…</p></main>;
  const kubernetes = data.list.some((s) => s.labels.namespace);
  const nodes = kubernetes
    ? group(data.list, ['namespace', 'pod_name', 'container_name'])
    : group(data.list, ['path']);
  return (
    <main class="start">
      <h1>{kubernetes ? 'Namespaces, pods and containers' : 'Files'}</h1>
      {data.missing.map((p) => <p key={p} class="warning" role="note">No answer from {p}: the list may be partial.</p>)}
      {nodes && nodes.length ? <Tree nodes={nodes} path={[]} open={open} /> : <p>Nothing collected yet.</p>}
    </main>
  );
}
