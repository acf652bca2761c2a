// The lines of a log query: a list that renders only the blocks of rows
// near the viewport (100k lines stay responsive), each row expandable to
// its labels, the fields a parser would extract, and its context.
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { AnsiUp } from 'ansi_up';
import { get } from './api.js';
import { levelColour } from './charts.jsx';
import { fields } from './fields.js';
import { streamSelector, withField, withMatcher, withStage } from './logql.js';

const BLOCK = 100;
const ROW = 22; // px, a row's height before it is measured
const ansi = new AnsiUp();
ansi.use_classes = true;

const time = (ns) => {
  const d = new Date(Number(BigInt(ns) / 1000000n));
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
};

/** Labels that say which stream a line is of, shortest first. */
const SHOWN = ['node_name', 'namespace', 'pod_name', 'container_name', 'path', 'stream'];
const compact = (labels) => SHOWN.filter((k) => labels[k]).map((k) => labels[k]).join(' ');

function Text({ line, marks }) {
  if (line.includes('\u001b[')) {
    // ansi_up escapes the text itself.
    return <span class="text" dangerouslySetInnerHTML={{ __html: ansi.ansi_to_html(line) }} />;
  }
  if (!marks.length) return <span class="text">{line}</span>;
  const spans = [];
  for (const re of marks) {
    re.lastIndex = 0;
    let m;
    while ((m = re.exec(line)) && spans.length < 100) {
      if (!m[0].length) { re.lastIndex++; continue; }
      spans.push([m.index, m.index + m[0].length]);
    }
  }
  spans.sort((a, b) => a[0] - b[0]);
  const out = [];
  let at = 0;
  for (const [s, e] of spans) {
    if (s < at) continue;
    out.push(line.slice(at, s), <mark>{line.slice(s, e)}</mark>);
    at = e;
  }
  out.push(line.slice(at));
  return <span class="text">{out}</span>;
}

function Details({ row, query, onQuery }) {
  const [context, setContext] = useState(null);
  const parsed = fields(row.line);
  const showContext = async () => {
    const selector = streamSelector(row.labels);
    const ns = BigInt(row.ts);
    const around = async (params) => (await get('/loki/api/v1/query_range', { query: selector, limit: 10, ...params })).body.data.result
      .flatMap((s) => s.values.map(([t, l]) => ({ ts: t, line: l })));
    try {
      const [before, after] = await Promise.all([
        around({ start: (ns - 86400000000000n).toString(), end: ns.toString(), direction: 'backward' }),
        around({ start: (ns + 1n).toString(), end: (ns + 86400000000000n).toString(), direction: 'forward' }),
      ]);
      const sort = (a, b) => (BigInt(a.ts) < BigInt(b.ts) ? -1 : 1);
      setContext({ before: before.sort(sort), after: after.sort(sort) });
    } catch (e) { setContext({ error: e.message }); }
  };
  const filterButtons = (forQuery, outQuery) => (
    <span class="actions">
      <button type="button" title="Filter for this value" aria-label="Filter for this value" onClick={() => onQuery(forQuery)}>=</button>
      <button type="button" title="Filter out this value" aria-label="Filter out this value" onClick={() => onQuery(outQuery)}>!=</button>
    </span>
  );
  // Stream labels filter in the selector; structured metadata and parsed
  // labels with a label filter after the query's own stages.
  const table = (caption, entries, forValue, testid) => entries.length > 0 && (
    <table data-testid={testid}>
      <caption>{caption}</caption>
      <tbody>{entries.map(([k, v]) => (
        <tr key={k}><th scope="row">{k}</th><td>{v}</td><td>{filterButtons(forValue(k, '=', v), forValue(k, '!=', v))}</td></tr>
      ))}</tbody>
    </table>
  );
  const stage = (k, op, v) => withStage(query, `| ${k}${op}${JSON.stringify(v)}`);
  return (
    <div class="details" data-testid="details">
      {table('Labels', Object.entries(row.labels), (k, op, v) => withMatcher(query, k, op, v), 'labels')}
      {table('Structured metadata', Object.entries(row.metadata || {}), stage, 'metadata')}
      {table('Parsed labels', Object.entries(row.parsed || {}), stage, 'parsed')}
      {parsed.fields.length > 0 && (
        <table data-testid="fields">
          <caption>Fields ({parsed.parser})</caption>
          <tbody>{parsed.fields.map(([k, v]) => (
            <tr key={k}><th scope="row">{k}</th><td>{v}</td><td>{filterButtons(withField(query, parsed.parser, k, '=', v), withField(query, parsed.parser, k, '!=', v))}</td></tr>
          ))}</tbody>
        </table>
      )}
      <button type="button" onClick={showContext}>Show context</button>
      {context && (context.error ? <p class="error">{context.error}</p> : (
        <ol class="context" data-testid="context">
          {context.before.map((c) => <li key={`b${c.ts}`}><time>{time(c.ts)}</time> {c.line}</li>)}
          <li class="current"><time>{time(row.ts)}</time> {row.line}</li>
          {context.after.map((c) => <li key={`a${c.ts}`}><time>{time(c.ts)}</time> {c.line}</li>)}
        </ol>
      ))}
    </div>
  );
}

function Row({ row, open, toggle, marks, query, onQuery }) {
  return (
    <li class={`row${open ? ' open' : ''}`} data-level={row.level} data-testid="line">
      <button type="button" class="summary" aria-expanded={open} onClick={toggle}>
        <span class="level" style={{ background: levelColour(row.level) }} title={row.level} />
        <time>{time(row.ts)}</time>
        <span class="labels">{compact(row.labels)}</span>
        <Text line={row.line} marks={marks} />
      </button>
      {open && <Details row={row} query={query} onQuery={onQuery} />}
    </li>
  );
}

/** `rows`: [{ id, ts, labels, level, line }], newest first. */
export function Lines({ rows, wrap, marks, query, onQuery }) {
  const scroller = useRef(null);
  const [view, setView] = useState({ top: 0, height: 800 });
  const [open, setOpen] = useState(() => new Set());
  const heights = useRef(new Map());
  const [, remeasured] = useState(0);
  const blocks = Math.ceil(rows.length / BLOCK);
  // Heights measured for other lines or another wrapping are no guide,
  // and rows of another query are not the ones that were open.
  useEffect(() => { heights.current = new Map(); }, [wrap, query]);
  useEffect(() => setOpen(new Set()), [query]);
  useEffect(() => {
    const el = scroller.current;
    let frame = 0;
    const update = () => { frame = 0; setView({ top: el.scrollTop, height: el.clientHeight }); };
    const onScroll = () => { if (!frame) frame = requestAnimationFrame(update); };
    el.addEventListener('scroll', onScroll, { passive: true });
    update();
    return () => el.removeEventListener('scroll', onScroll);
  }, []);
  const estimate = (b) => heights.current.get(b) ?? Math.min(BLOCK, rows.length - b * BLOCK) * ROW;
  const items = [];
  let offset = 0;
  for (let b = 0; b < blocks; b++) {
    const h = estimate(b);
    const near = offset + h >= view.top - view.height && offset <= view.top + 2 * view.height;
    items.push({ b, near, h });
    offset += h;
  }
  useLayoutEffect(() => {
    let changed = false;
    for (const el of scroller.current.querySelectorAll('[data-block]')) {
      const b = Number(el.dataset.block);
      const h = el.offsetHeight;
      if (el.dataset.rendered === '1' && heights.current.get(b) !== h) { heights.current.set(b, h); changed = true; }
    }
    if (changed) remeasured((n) => n + 1);
  });
  const toggle = (id) => setOpen((s) => { const n = new Set(s); n.has(id) ? n.delete(id) : n.add(id); return n; });
  return (
    <div ref={scroller} class={`lines${wrap ? ' wrap' : ''}`} tabIndex={0} aria-label="Log lines" data-testid="lines" data-count={rows.length}>
      {items.map(({ b, near, h }) => (near ? (
        <ol key={b} data-block={b} data-rendered="1" class="block">
          {rows.slice(b * BLOCK, (b + 1) * BLOCK).map((row) => (
            <Row key={row.id} row={row} open={open.has(row.id)} toggle={() => toggle(row.id)} marks={marks} query={query} onQuery={onQuery} />
          ))}
        </ol>
      ) : <div key={b} data-block={b} style={{ height: `${h}px` }} />))}
    </div>
  );
}
