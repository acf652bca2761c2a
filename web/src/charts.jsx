// Charts, drawn by uPlot: the volume histogram stacked by level (drag
// across it to zoom) and metric query results as time series. Each has a
// table of its figures beside it for screen readers (and tests).
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export const LEVELS = ['critical', 'fatal', 'error', 'warn', 'info', 'debug', 'trace', 'unknown'];
const LEVEL_COLOURS = {
  critical: '#b0006a', fatal: '#8b0000', error: '#d62728', warn: '#e6a100', info: '#2ca02c',
  debug: '#1f77b4', trace: '#7f7f7f', unknown: '#9aa0a6',
};
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];

export const levelColour = (level) => LEVEL_COLOURS[level] || LEVEL_COLOURS.unknown;

function usePlot(make, deps) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current) return undefined;
    // A canvas knows no currentColor: axes take the text colour (dark mode).
    const plot = make(box.current, box.current.clientWidth || 800, getComputedStyle(box.current).color);
    if (!plot) return undefined;
    const resize = new ResizeObserver(() => plot.setSize({ width: box.current.clientWidth, height: plot.height }));
    resize.observe(box.current);
    return () => { resize.disconnect(); plot.destroy(); };
  }, deps);
  return box;
}

/** `series`: [{ level, points: Map<seconds, count> }] over `times`. */
export function Histogram({ times, series, onZoom }) {
  const levels = LEVELS.filter((l) => series.some((s) => s.level === l))
    .concat(series.map((s) => s.level).filter((l) => !LEVELS.includes(l)));
  const counts = levels.map((l) => {
    const s = series.find((x) => x.level === l);
    return times.map((t) => (s && s.points.get(t)) || 0);
  });
  const box = usePlot((el, width, fg) => {
    // Stacked: each band is drawn from the running total of those below.
    const stacked = [];
    let acc = times.map(() => 0);
    for (const c of counts) { acc = acc.map((a, i) => a + c[i]); stacked.push(acc); }
    const bars = uPlot.paths.bars({ size: [0.9, 40] });
    return new uPlot({
      width, height: 120, legend: { show: false }, cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: [{ stroke: fg, grid: { show: false } }, { stroke: fg, size: 40, grid: { stroke: 'rgba(128,128,128,.2)' } }],
      series: [{}, ...levels.map((l) => ({ label: l, fill: levelColour(l), stroke: levelColour(l), paths: bars, points: { show: false } })).reverse()],
      hooks: { setSelect: [(u) => {
        if (u.select.width < 3) return;
        const from = u.posToVal(u.select.left, 'x'), to = u.posToVal(u.select.left + u.select.width, 'x');
        u.setSelect({ width: 0, height: 0 }, false);
        onZoom(Math.floor(from * 1000), Math.ceil(to * 1000));
      }] },
    }, [times, ...stacked.slice().reverse()], el);
  }, [JSON.stringify(times), JSON.stringify(counts)]);
  const totals = levels.map((l, i) => [l, counts[i].reduce((a, b) => a + b, 0)]);
  return (
    <section class="histogram" aria-label="Lines over time, by level">
      <div ref={box} class="plot" data-testid="histogram" />
      <table class="sr-only" data-testid="histogram-totals">
        <caption>Lines per level in the range</caption>
        <tbody>{totals.map(([l, n]) => <tr key={l}><th scope="row">{l}</th><td data-level={l}>{n}</td></tr>)}</tbody>
      </table>
      <ul class="legend">{totals.map(([l, n]) => <li key={l}><span class="swatch" style={{ background: levelColour(l) }} />{l} {n}</li>)}</ul>
    </section>
  );
}

/** A metric query's matrix: [{ metric, values: [[s, "v"]] }]. */
export function MetricChart({ result }) {
  const times = [...new Set(result.flatMap((s) => s.values.map((v) => Number(v[0]))))].sort((a, b) => a - b);
  const name = (m) => {
    const e = Object.entries(m);
    return e.length ? `{${e.map(([k, v]) => `${k}="${v}"`).join(', ')}}` : '{}';
  };
  const data = result.map((s) => {
    const at = new Map(s.values.map((v) => [Number(v[0]), Number(v[1])]));
    return times.map((t) => (at.has(t) ? at.get(t) : null));
  });
  const box = usePlot((el, width, fg) => new uPlot({
    width, height: 300, scales: { x: { time: true } },
    axes: [{ stroke: fg }, { stroke: fg, size: 60, grid: { stroke: 'rgba(128,128,128,.2)' } }],
    series: [{}, ...result.map((s, i) => ({ label: name(s.metric), stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false }))],
  }, [times, ...data], el), [JSON.stringify(result)]);
  return (
    <section class="metric" aria-label="Metric query result">
      <div ref={box} class="plot" data-testid="metric-chart" />
      <table class="sr-only"><tbody>{result.map((s) => (
        <tr key={name(s.metric)}><th scope="row">{name(s.metric)}</th><td>{s.values.length} points</td></tr>
      ))}</tbody></table>
    </section>
  );
}
