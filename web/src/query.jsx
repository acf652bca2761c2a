// The query view: a LogQL bar with completion and parse errors, the time
// range, the level histogram, and the lines (or a metric query's chart),
// with a live tail.
import { useEffect, useRef, useState } from 'preact/hooks';
import { CATEGORIZED, get, tail } from './api.js';
import { Histogram, MetricChart } from './charts.jsx';
import { Lines } from './lines.jsx';
import { completionAt, errorOffset, highlights, isMetric } from './logql.js';
import { RANGES, bounds, step } from './state.js';

const LIVE_CAP = 10000;
const toNs = (ms) => `${BigInt(Math.floor(ms)) * 1000000n}`;

/** Rows from a `streams` result; a value's third element (asked with
 *  categorize-labels) holds its structured metadata and parsed labels. */
function rowsOf(result, start = 0) {
  const rows = [];
  let id = start;
  for (const s of result) {
    // Uncategorised (the live tail), the level rides among the labels.
    const { detected_level: streamLevel, ...labels } = s.stream;
    for (const [ts, line, categories] of s.values) {
      const metadata = { ...(streamLevel ? { detected_level: streamLevel } : {}), ...((categories && categories.structuredMetadata) || {}) };
      const parsed = (categories && categories.parsed) || {};
      const level = metadata.detected_level || 'unknown';
      rows.push({ id: id++, ts, labels, metadata, parsed, level, line });
    }
  }
  rows.sort((a, b) => (BigInt(b.ts) > BigInt(a.ts) ? 1 : BigInt(b.ts) < BigInt(a.ts) ? -1 : 0));
  return rows;
}

function QueryBar({ value, onRun, error }) {
  const [text, setText] = useState(value);
  const [menu, setMenu] = useState(null); // { items, at, word }
  const input = useRef(null);
  useEffect(() => setText(value), [value]);
  const complete = async (t, pos) => {
    const what = completionAt(t, pos);
    if (!what) { setMenu(null); return; }
    try {
      const path = what.kind === 'name' ? '/loki/api/v1/labels' : `/loki/api/v1/label/${encodeURIComponent(what.name)}/values`;
      const { body } = await get(path);
      const items = (body.data || []).filter((x) => x.startsWith(what.word) && x !== what.word).slice(0, 50);
      setMenu(items.length ? { items, at: 0, word: what.word, kind: what.kind, pos } : null);
    } catch { setMenu(null); }
  };
  const accept = (item) => {
    const pos = menu.pos;
    const head = text.slice(0, pos - menu.word.length);
    const tail = text.slice(pos);
    // A value goes inside the quotes: escaped as a LogQL string.
    const insert = menu.kind === 'name' ? `${item}=` : JSON.stringify(item).slice(1, -1);
    const next = `${head}${insert}${menu.kind === 'name' ? '"' : ''}${tail}`;
    setText(next);
    setMenu(null);
    const at = head.length + insert.length + (menu.kind === 'name' ? 1 : 0);
    requestAnimationFrame(() => { input.current.focus(); input.current.setSelectionRange(at, at); complete(next, at); });
  };
  const onKeyDown = (e) => {
    if (menu && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
      e.preventDefault();
      const n = menu.items.length;
      setMenu({ ...menu, at: (menu.at + (e.key === 'ArrowDown' ? 1 : n - 1)) % n });
    } else if (menu && (e.key === 'Tab' || (e.key === 'Enter' && !e.shiftKey))) {
      e.preventDefault();
      accept(menu.items[menu.at]);
    } else if (e.key === 'Escape') {
      setMenu(null);
    } else if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      onRun(text);
    }
  };
  const offset = error ? errorOffset(text, error) : null;
  return (
    <div class="querybar">
      <label for="query">LogQL</label>
      <textarea id="query" ref={input} rows={Math.min(6, text.split('\n').length)} value={text} spellcheck={false}
        aria-invalid={error ? 'true' : 'false'} aria-describedby={error ? 'query-error' : undefined}
        aria-autocomplete="list" aria-controls="completions" placeholder='{namespace="shop"} |= "error"'
        onInput={(e) => { setText(e.target.value); complete(e.target.value, e.target.selectionStart); }}
        onKeyDown={onKeyDown} onBlur={() => setTimeout(() => setMenu(null), 150)} />
      <button type="button" class="primary" onClick={() => onRun(text)}>Run query</button>
      {menu && (
        <ul id="completions" role="listbox" class="completions" data-testid="completions">
          {menu.items.map((item, i) => (
            <li key={item} role="option" aria-selected={i === menu.at} class={i === menu.at ? 'active' : ''}
              onMouseDown={(e) => { e.preventDefault(); accept(item); }}>{item}</li>
          ))}
        </ul>
      )}
      {error && (
        <div id="query-error" class="error" role="alert" data-testid="query-error">
          {offset !== null && <pre class="caret" aria-hidden="true">{text.split('\n').join(' ')}{'\n'}{' '.repeat(offset)}^</pre>}
          {error}
        </div>
      )}
    </div>
  );
}

function RangePicker({ state, go }) {
  const [start, end] = bounds(state);
  const local = (ms) => { const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000); return d.toISOString().slice(0, 19); };
  const absolute = !String(state.from).startsWith('now');
  const zoomOut = () => {
    const span = end - start;
    go({ from: String(Math.round(start - span / 2)), to: String(Math.round(Math.min(Date.now(), end + span / 2))), live: false });
  };
  return (
    <fieldset class="range">
      <legend class="sr-only">Time range</legend>
      <label>Range <select value={absolute ? 'absolute' : state.from} onChange={(e) => e.target.value !== 'absolute' && go({ from: e.target.value, to: 'now' })}>
        {RANGES.map(([v, l]) => <option key={v} value={v}>{l}</option>)}
        {absolute && <option value="absolute">Custom</option>}
      </select></label>
      <label>From <input type="datetime-local" step="1" value={local(start)} onChange={(e) => go({ from: String(new Date(e.target.value).getTime()), to: String(end), live: false })} /></label>
      <label>To <input type="datetime-local" step="1" value={local(end)} onChange={(e) => go({ from: String(start), to: String(new Date(e.target.value).getTime()), live: false })} /></label>
      <button type="button" onClick={zoomOut}>Zoom out</button>
    </fieldset>
  );
}

export function QueryView({ state, go }) {
  const [result, setResult] = useState(null); // { kind, rows | matrix, histogram, warnings }
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const limit = state.limit;
  const [paused, setPaused] = useState(false);
  const [live, setLive] = useState([]);
  const held = useRef([]);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  const metric = isMetric(state.q);

  useEffect(() => {
    if (!state.q) return undefined;
    const abort = new AbortController();
    const [start, end] = bounds(state);
    setBusy(true);
    setError('');
    (async () => {
      try {
        if (metric) {
          const { body, warnings, missing } = await get('/loki/api/v1/query_range', { query: state.q, start: toNs(start), end: toNs(end), step: `${step(start, end, 200)}s` }, abort.signal);
          setResult({ kind: body.data.resultType, data: body.data.result, warnings, missing });
          return;
        }
        const s = step(start, end);
        // Buckets on whole steps: each counts the lines of the step that
        // ends at its time, so the first ends one step after the start.
        const first = Math.ceil(start / 1000 / s) * s;
        const last = Math.ceil(end / 1000 / s) * s;
        const [lines, histogram] = await Promise.all([
          get('/loki/api/v1/query_range', { query: state.q, start: toNs(start), end: toNs(end), limit, direction: 'backward' }, abort.signal, CATEGORIZED),
          get('/loki/api/v1/query_range', { query: `sum by (detected_level) (count_over_time(${state.q} [${s}s]))`, start: toNs(first * 1000), end: toNs(last * 1000), step: `${s}s` }, abort.signal),
        ]);
        const times = [];
        for (let t = first; t <= last; t += s) times.push(t);
        const bucket = (t) => first + Math.round((Number(t) - first) / s) * s;
        const series = histogram.body.data.result.map((r) => ({ level: r.metric.detected_level || 'unknown', points: new Map(r.values.map(([t, v]) => [bucket(t), Number(v)])) }));
        setResult({
          kind: 'streams', rows: rowsOf(lines.body.data.result), times, series,
          warnings: [...lines.warnings, ...histogram.warnings], missing: [...new Set([...lines.missing, ...histogram.missing])],
        });
      } catch (e) {
        if (e.name !== 'AbortError') { setError(e.message); setResult(null); }
      } finally { setBusy(false); }
    })();
    return () => abort.abort();
  }, [state.q, state.from, state.to, limit]);

  useEffect(() => {
    if (!state.live || !state.q || metric) return undefined;
    setLive([]);
    held.current = [];
    let next = 1e9;
    const socket = tail(state.q, toNs(Date.now()));
    socket.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      const rows = rowsOf((msg.streams || []).map((s) => ({ stream: s.stream, values: s.values })), next);
      next += rows.length;
      if (pausedRef.current) { held.current = [...rows, ...held.current].slice(0, LIVE_CAP); return; }
      setLive((old) => [...rows, ...old].slice(0, LIVE_CAP));
    };
    socket.onerror = () => setError('The live tail was closed by the server.');
    return () => socket.close();
  }, [state.live, state.q]);

  const resume = () => { setLive((old) => [...held.current, ...old].slice(0, LIVE_CAP)); held.current = []; setPaused(false); };
  const rows = result && result.rows ? (state.live ? [...live, ...result.rows].slice(0, LIVE_CAP + limit) : result.rows) : [];
  const marks = highlights(state.q);
  // The server's warnings name the peers that did not answer; the header
  // alone (an answer without warnings) is said here.
  const notes = !result ? [] : result.warnings && result.warnings.length
    ? [...new Set(result.warnings)]
    : (result.missing || []).map((p) => `No answer from ${p}: the result may be partial.`);
  return (
    <main class="query">
      <QueryBar value={state.q} error={error} onRun={(q) => go({ q }, true)} />
      <div class="toolbar">
        <RangePicker state={state} go={(p) => go(p, true)} />
        {!metric && <>
          <label><input type="checkbox" checked={state.live} onChange={(e) => go({ live: e.target.checked })} /> Live</label>
          {state.live && <button type="button" onClick={() => (paused ? resume() : setPaused(true))}>{paused ? `Resume (${held.current.length})` : 'Pause'}</button>}
          <label><input type="checkbox" checked={state.wrap} onChange={(e) => go({ wrap: e.target.checked })} /> Wrap lines</label>
          <label>Limit <select value={limit} onChange={(e) => go({ limit: Number(e.target.value) }, true)}>
            {[100, 1000, 5000, 20000, 100000].map((n) => <option key={n} value={n}>{n}</option>)}
          </select></label>
        </>}
        <span class="status" role="status" aria-live="polite">{busy ? 'Loading…' : result && result.rows ? `${rows.length} lines` : ''}</span>
      </div>
      {notes.map((n) => <p key={n} class="warning" role="note" data-testid="warning">{n}</p>)}
      {result && result.kind === 'streams' && <>
        <Histogram times={result.times} series={result.series} onZoom={(from, to) => go({ from: String(from), to: String(to), live: false }, true)} />
        <Lines rows={rows} wrap={state.wrap} marks={marks} query={state.q} onQuery={(q) => go({ q }, true)} />
      </>}
      {result && result.kind === 'matrix' && <MetricChart result={result.data} />}
      {result && result.kind === 'vector' && (
        <table class="vector"><tbody>{result.data.map((s) => <tr key={JSON.stringify(s.metric)}><th scope="row">{JSON.stringify(s.metric)}</th><td>{s.value[1]}</td></tr>)}</tbody></table>
      )}
    </main>
  );
}
