// What the page needs to know of LogQL: where the cursor is for
// completion, how to add a matcher or a filter, and whether a query is a
// metric query (the server parses; this only reads enough to help).

/** What to complete at `pos` of `text`: a label name, or the values of
 *  `name`, with the partial word typed so far. */
export function completionAt(text, pos) {
  const before = text.slice(0, pos);
  let depth = 0, inString = false, open = -1;
  for (let i = 0; i < before.length; i++) {
    const c = before[i];
    if (inString) { if (c === '\\') i++; else if (c === inString) inString = false; continue; }
    if (c === '"' || c === '`') inString = c;
    else if (c === '{') { depth++; open = i; }
    else if (c === '}') depth--;
  }
  if (depth <= 0) return null;
  const inside = before.slice(open + 1);
  const value = /([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)$/.exec(inside);
  if (value) return { kind: 'value', name: value[1], word: value[3] };
  if (inString) return null;
  const name = /(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)?$/.exec(inside);
  if (name) return { kind: 'name', word: name[1] || '' };
  return null;
}

/** Whether `query` is a metric query (its result is a chart). */
export const isMetric = (query) => !/^\s*\{/.test(query);

const quote = (v) => JSON.stringify(v);

/** `query` with the stream matcher `name op value` added to its selector. */
export function withMatcher(query, name, op, value) {
  const close = selectorEnd(query);
  if (close < 0) return query;
  const inner = query.slice(query.indexOf('{') + 1, close).trim();
  const matcher = `${name}${op}${quote(value)}`;
  return `${query.slice(0, query.indexOf('{') + 1)}${inner ? `${inner}, ` : ''}${matcher}${query.slice(close)}`;
}

/** `query` with a pipeline stage appended (log queries only). */
export const withStage = (query, stage) => `${query.trim()} ${stage}`;

/** `query` keeping only lines whose field `name` (found by `parser`) is
 *  (`=`) or is not (`!=`) `value`. */
export function withField(query, parser, name, op, value) {
  const has = new RegExp(`\\|\\s*${parser}(\\s|$)`).test(query);
  return withStage(query, `${has ? '' : `| ${parser} `}| ${name}${op}${quote(value)}`);
}

/** The index of the selector's closing brace, or -1. */
function selectorEnd(query) {
  let inString = false;
  for (let i = query.indexOf('{') + 1; i > 0 && i < query.length; i++) {
    const c = query[i];
    if (inString) { if (c === '\\') i++; else if (c === inString) inString = false; continue; }
    if (c === '"' || c === '`') inString = c;
    else if (c === '}') return i;
  }
  return -1;
}

/** The line filters of `query` (`|= "x"`, `|~ "re"`), to highlight. */
export function highlights(query) {
  const out = [];
  const re = /\|([=~])\s*("(?:[^"\\]|\\.)*"|`[^`]*`)/g;
  let m;
  while ((m = re.exec(query))) {
    let text;
    try { text = m[2][0] === '`' ? m[2].slice(1, -1) : JSON.parse(m[2]); } catch { continue; }
    if (!text) continue;
    try {
      out.push(new RegExp(m[1] === '=' ? text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : text, 'g'));
    } catch {}
  }
  return out;
}

/** Where a server parse error points ("parse error at 1:25: …"), as an
 *  offset into `query`. */
export function errorOffset(query, message) {
  const m = /at (\d+):(\d+)/.exec(message || '');
  if (!m) return null;
  const lines = query.split('\n');
  let offset = 0;
  for (let i = 0; i < Number(m[1]) - 1 && i < lines.length; i++) offset += lines[i].length + 1;
  return Math.min(query.length, offset + Number(m[2]) - 1);
}

/** The selector matching exactly the stream `labels`. */
export const streamSelector = (labels) =>
  `{${Object.entries(labels).filter(([k]) => k !== 'detected_level').map(([k, v]) => `${k}=${quote(v)}`).join(', ')}}`;
