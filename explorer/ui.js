// DOM helpers: elements, copy buttons, times, and the loading, empty and error states.

/** h('a', {href: '#/x'}, 'text', child...) builds an element; attributes starting with "on"
 * are listeners. No innerHTML anywhere: API text is always text.
 * @param {string} tag @param {Record<string, any>} [attrs] @param {...any} children */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** @param {Element} el @param {any[]} children */
function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A value with a button that copies it exactly (addresses, amounts, ids).
 * @param {string} text @param {string} label what is copied, for screen readers */
export function copyable(text, label) {
  const button = h('button', { type: 'button', class: 'copy', 'aria-label': 'Copy ' + label, title: 'Copy ' + label, onclick: () => copyText(button, text) }, 'Copy');
  return h('span', { class: 'copyable' }, h('code', {}, text), button);
}

/** An amount exactly as the API gives it (a decimal string), with its unit and a copy button.
 * @param {string} amount @param {string} [unit] */
export function amount(amount, unit = 'AITBC') {
  return h('span', { class: 'amount' }, copyable(amount, 'amount ' + amount), ' ', h('span', { class: 'unit' }, unit));
}

/** A link to an account's page, with a copy button. @param {string} address */
export function addressLink(address) {
  return h('span', { class: 'copyable' }, h('a', { href: '#/account/' + encodeURIComponent(address) }, h('code', {}, address)),
    h('button', { type: 'button', class: 'copy', 'aria-label': 'Copy address ' + address, title: 'Copy address', onclick: (/** @type {Event} */ e) => copyText(/** @type {HTMLButtonElement} */ (e.currentTarget), address) }, 'Copy'));
}

/** @param {HTMLButtonElement} button @param {string} text */
async function copyText(button, text) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Copy failed';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}

/** Unix seconds as an ISO time in UTC. @param {number} s */
export function time(s) {
  return h('time', { datetime: new Date(s * 1000).toISOString() }, new Date(s * 1000).toISOString().replace('T', ' ').replace('.000Z', ' UTC'));
}

/** Unix ms as an ISO time in UTC. @param {number} ms */
export function timeMs(ms) {
  return time(Math.floor(ms / 1000));
}

export const loading = (what) => h('p', { class: 'state loading', role: 'status' }, 'Loading ' + what + '…');
export const empty = (what) => h('p', { class: 'state empty', role: 'status' }, what);
export const failure = (/** @type {unknown} */ e) => h('p', { class: 'state error', role: 'alert' }, 'Could not load: ' + (e instanceof Error ? e.message : String(e)));

/** A definition list of label/value rows. @param {[string, any][]} rows */
export function fields(rows) {
  return h('dl', { class: 'fields' }, rows.filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** A table with a caption; rows are arrays of cells.
 * @param {string} caption @param {string[]} head @param {any[][]} rows */
export function table(caption, head, rows) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', {}, h('caption', {}, caption), h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, c) : h('td', { 'data-label': head[i] }, c))))))));
}
