// The fields `| json` and `| logfmt` would extract from a line, for the
// expanded view (flattened the way Loki names them: a_b for {"a":{"b":…}}).
export function fields(line) {
  const t = line.trim();
  if (t.startsWith('{') && t.endsWith('}')) {
    try {
      const out = [];
      const walk = (prefix, v) => {
        if (v && typeof v === 'object' && !Array.isArray(v)) {
          for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}_${k}` : k, x);
        } else if (!Array.isArray(v)) {
          out.push([prefix.replace(/[^A-Za-z0-9_]/g, '_'), v === null ? '' : String(v)]);
        }
      };
      walk('', JSON.parse(t));
      return { parser: 'json', fields: out };
    } catch {}
  }
  const out = [];
  const re = /([A-Za-z_][A-Za-z0-9_.\-]*)=("(?:[^"\\]|\\.)*"|\S*)/g;
  let m;
  while ((m = re.exec(line))) {
    let v = m[2];
    if (v.startsWith('"')) { try { v = JSON.parse(v); } catch { v = v.slice(1, -1); } }
    out.push([m[1].replace(/[^A-Za-z0-9_]/g, '_'), v]);
  }
  return out.length ? { parser: 'logfmt', fields: out } : { parser: null, fields: [] };
}
