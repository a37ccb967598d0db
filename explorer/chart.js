// Line charts as inline SVG, drawn here (no library). Values come as decimal strings; they are
// turned into numbers only to place points on screen, never for arithmetic the page shows: the
// labels print the strings as the API gave them.
import { h } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 640;
const H = 220;
const PAD = { left: 64, right: 12, top: 12, bottom: 28 };

/** @param {string} tag @param {Record<string, string | number>} attrs @param {...Node} kids */
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...kids);
  return el;
}

/** A line chart of series over time.
 * @param {string} title
 * @param {{name: string, points: {t: number, value: string | null}[]}[]} series  t in unix ms
 * @param {string} unit */
export function lineChart(title, series, unit) {
  const all = series.flatMap((x) => x.points).filter((p) => p.value !== null);
  const figure = h('figure', { class: 'chart' }, h('figcaption', {}, title));
  if (!all.length) {
    figure.append(h('p', { class: 'state empty' }, 'No data in this window.'));
    return figure;
  }
  const ts = series.flatMap((x) => x.points.map((p) => p.t));
  const t0 = Math.min(...ts);
  const t1 = Math.max(...ts);
  const maxPoint = all.reduce((a, b) => (Number(b.value) > Number(a.value) ? b : a));
  const vmax = Number(maxPoint.value) || 1;
  const x = (/** @type {number} */ t) => PAD.left + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (/** @type {number} */ v) => H - PAD.bottom - (v / vmax) * (H - PAD.top - PAD.bottom);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: highest ${maxPoint.value} ${unit}` });
  svg.append(s('line', { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: 'axis' }));
  svg.append(s('line', { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: 'axis' }));
  svg.append(s('text', { x: PAD.left - 6, y: PAD.top + 10, 'text-anchor': 'end', class: 'tick' }, document.createTextNode(String(maxPoint.value))));
  svg.append(s('text', { x: PAD.left - 6, y: H - PAD.bottom, 'text-anchor': 'end', class: 'tick' }, document.createTextNode('0')));
  const label = (/** @type {number} */ t) => new Date(t).toISOString().slice(5, 16).replace('T', ' ');
  svg.append(s('text', { x: PAD.left, y: H - 8, class: 'tick' }, document.createTextNode(label(t0))));
  svg.append(s('text', { x: W - PAD.right, y: H - 8, 'text-anchor': 'end', class: 'tick' }, document.createTextNode(label(t1) + ' UTC')));
  series.forEach((one, i) => {
    const pts = one.points.filter((p) => p.value !== null);
    const d = pts.map((p, j) => `${j ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(Number(p.value)).toFixed(1)}`).join(' ');
    if (d) svg.append(s('path', { d, class: `line c${i % 6}` }));
    for (const p of pts) {
      const dot = s('circle', { cx: x(p.t).toFixed(1), cy: y(Number(p.value)).toFixed(1), r: 3, class: `dot c${i % 6}` });
      dot.append(s('title', {}, document.createTextNode(`${one.name} ${label(p.t)}: ${p.value} ${unit}`)));
      svg.append(dot);
    }
  });
  figure.append(svg);
  if (series.length > 1 || series[0]?.name) {
    figure.append(h('ul', { class: 'legend' }, series.map((one, i) => h('li', { class: `c${i % 6}` }, one.name))));
  }
  return figure;
}
