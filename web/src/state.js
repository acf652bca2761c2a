// What the page shows, kept in the URL so that it can be shared and the
// back button works: ?q=<LogQL>&from=<ms|now-1h>&to=<ms|now>&limit=N&live=1&wrap=1.
export const RANGES = [
  ['now-5m', 'Last 5 minutes'], ['now-15m', 'Last 15 minutes'], ['now-1h', 'Last hour'],
  ['now-6h', 'Last 6 hours'], ['now-24h', 'Last 24 hours'], ['now-7d', 'Last 7 days'],
];
const UNITS = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

export function read() {
  const p = new URLSearchParams(location.search);
  return {
    q: p.get('q') || '',
    from: p.get('from') || 'now-1h',
    to: p.get('to') || 'now',
    live: p.get('live') === '1',
    wrap: p.get('wrap') === '1',
    limit: Number(p.get('limit')) || 1000,
  };
}

export function href(state) {
  const p = new URLSearchParams();
  if (state.q) p.set('q', state.q);
  if (state.q && state.from !== 'now-1h') p.set('from', state.from);
  if (state.q && state.to !== 'now') p.set('to', state.to);
  if (state.q && state.limit && state.limit !== 1000) p.set('limit', String(state.limit));
  if (state.live) p.set('live', '1');
  if (state.wrap) p.set('wrap', '1');
  const s = p.toString();
  return s ? `/?${s}` : '/';
}

/** A time (`now`, `now-1h`, epoch ms) as epoch ms. */
export function resolve(t, now = Date.now()) {
  if (t === 'now') return now;
  const m = /^now-(\d+)([smhd])$/.exec(t);
  if (m) return now - Number(m[1]) * UNITS[m[2]];
  const n = Number(t);
  return Number.isFinite(n) ? n : now;
}

/** The range as [start, end] epoch ms. */
export const bounds = (state) => {
  const now = Date.now();
  return [resolve(state.from, now), resolve(state.to, now)];
};

/** A step (seconds) giving about `points` buckets over [start, end]. */
export function step(start, end, points = 120) {
  const nice = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const want = Math.max(1, (end - start) / 1000 / points);
  return nice.find((s) => s >= want) || 86400;
}
