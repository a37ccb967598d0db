// The explorer's pages. Each renders into `main` and returns a function that stops what it
// started (polling). Every value shown comes from the API as it gave it.
import { get, keys } from './api.js';
import { lineChart } from './chart.js';
import { addressLink, amount, copyable, empty, failure, fields, h, loading, table, time, timeMs } from './ui.js';
import { verifyReceipt } from './verify.js';

/** Seconds between refreshes of the newest receipts. */
export const POLL_MS = 5000;
/** Receipts per page. */
export const PAGE_SIZE = 20;

/** @param {HTMLElement} main @param {string} title @param {...any} rest */
function page(main, title, ...rest) {
  document.title = title + ' · aitbc explorer';
  main.replaceChildren(h('h1', { tabindex: '-1' }, title), ...rest);
}

const receiptLink = (/** @type {string} */ id) => h('a', { href: '#/receipt/' + encodeURIComponent(id) }, h('code', {}, id));

/** A datetime-local input's value (UTC) as unix seconds. @param {string} v */
const seconds = (v) => (v ? String(Math.floor(Date.parse(v + 'Z') / 1000)) : '');
/** @param {string | null} s */
const localValue = (s) => (s ? new Date(Number(s) * 1000).toISOString().slice(0, 16) : '');

/** The receipts list: newest first, filtered, paged, refreshed while on the first page.
 * @param {HTMLElement} main @param {URLSearchParams} params */
export function receipts(main, params) {
  const filter = {
    client: params.get('client') ?? '', provider: params.get('provider') ?? '', model: params.get('model') ?? '',
    since: params.get('since') ?? '', until: params.get('until') ?? '',
  };
  const input = (/** @type {string} */ name, /** @type {string} */ label, /** @type {string} */ value, type = 'text') =>
    h('label', {}, label, h('input', { name, type, value, autocomplete: 'off', spellcheck: 'false' }));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter receipts' },
    input('client', 'Client address', filter.client), input('provider', 'Provider address', filter.provider),
    input('model', 'Model', filter.model),
    input('since', 'Completed from (UTC)', localValue(filter.since), 'datetime-local'),
    input('until', 'Completed until (UTC)', localValue(filter.until), 'datetime-local'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Filter'), h('a', { href: '#/receipts', class: 'button secondary' }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    for (const k of ['client', 'provider', 'model']) if (String(data.get(k) ?? '').trim()) q.set(k, String(data.get(k)).trim());
    for (const k of ['since', 'until']) if (data.get(k)) q.set(k, seconds(String(data.get(k))));
    location.hash = '#/receipts' + (q.size ? '?' + q : '');
  });
  const results = h('div', { 'aria-live': 'polite' }, loading('receipts'));
  const status = h('p', { class: 'meta' });
  page(main, 'Receipts', h('p', { class: 'lede' }, 'Every recent receipt on the network, newest first. Receipts are public proofs of work done and paid.'), form, status, results);

  /** @type {(string | undefined)[]} */
  const cursors = [undefined];
  let at = 0;
  let shown = '';
  const load = async (/** @type {boolean} */ quiet) => {
    if (!quiet) results.replaceChildren(loading('receipts'));
    try {
      const pageData = await get('/v1/explorer/receipts', { ...filter, limit: PAGE_SIZE, cursor: cursors[at] });
      const text = JSON.stringify(pageData);
      if (quiet && text === shown) return;
      shown = text;
      render(pageData);
      status.textContent = at === 0 ? `Updated ${new Date().toISOString().slice(11, 19)} UTC; refreshes every ${POLL_MS / 1000} s.` : `Page ${at + 1}.`;
    } catch (e) {
      results.replaceChildren(failure(e));
    }
  };
  const render = (/** @type {{items: any[], next_cursor?: string}} */ data) => {
    const rows = data.items.map((r) => [receiptLink(r.receipt_id), time(r.completed_at), addressLink(r.client), addressLink(r.provider), r.model ?? '—', r.units, amount(r.price)]);
    const nav = h('nav', { class: 'pager', 'aria-label': 'Pages' },
      h('button', { type: 'button', disabled: at === 0, onclick: () => { at -= 1; load(false); } }, '← Newer'),
      h('span', {}, `Page ${at + 1}`),
      h('button', { type: 'button', disabled: !data.next_cursor, onclick: () => { cursors[at + 1] = data.next_cursor; at += 1; load(false); } }, 'Older →'));
    results.replaceChildren(
      data.items.length ? table('Receipts, newest first', ['Receipt', 'Completed', 'Client', 'Provider', 'Model', 'GPU-seconds', 'Price'], rows)
        : empty(at === 0 ? 'No receipts match.' : 'No older receipts.'),
      nav);
  };
  load(false);
  const timer = setInterval(() => { if (at === 0) load(true); }, POLL_MS);
  return () => clearInterval(timer);
}

/** One receipt: every field, its job, its settlement, and its signatures checked here.
 * @param {HTMLElement} main @param {string} id */
export function receipt(main, id) {
  page(main, 'Receipt', loading('the receipt'));
  (async () => {
    let detail;
    try {
      detail = await get('/v1/explorer/receipts/' + encodeURIComponent(id));
    } catch (e) {
      main.replaceChildren(h('h1', { tabindex: '-1' }, 'Receipt'), failure(e));
      return;
    }
    const r = detail.receipt;
    const verdict = h('p', { class: 'verdict pending', role: 'status', 'data-verdict': 'pending' }, 'Checking the signatures in this browser…');
    const sig = (/** @type {any} */ s) => s ? fields([['Algorithm', s.alg], ['Key id', copyable(s.key_id, 'key id')], ['Signature', copyable(s.sig, 'signature')]]) : 'none';
    const job = detail.job;
    page(main, 'Receipt ' + r.receipt_id,
      h('section', { 'aria-labelledby': 'verify-h' }, h('h2', { id: 'verify-h' }, 'Signature'), verdict,
        h('p', { class: 'meta' }, 'Checked with WebCrypto Ed25519 over the RFC 8785 canonical form of the receipt without its signatures, against the keys the marketplace publishes at ', h('a', { href: '/v1/keys' }, '/v1/keys'), '.')),
      h('section', { 'aria-labelledby': 'fields-h' }, h('h2', { id: 'fields-h' }, 'Fields'), fields([
        ['Receipt id', copyable(r.receipt_id, 'receipt id')], ['Version', r.version], ['Job', copyable(r.job_id, 'job id')],
        ['GPU listing', copyable(r.gpu_id, 'GPU id')], ['Attempt', r.attempt], ['Provider', addressLink(r.provider)], ['Client', addressLink(r.client)],
        ['Units', h('span', {}, copyable(r.units, 'units'), ' ', r.unit_type)], ['Unit price', amount(r.unit_price, 'AITBC per unit')], ['Price', amount(r.price)],
        ['Model', r.model ?? '—'],
        ...(r.prompt_tokens != null ? [['Prompt tokens', r.prompt_tokens], ['Completion tokens', r.completion_tokens]] : []),
        ['Started', time(r.started_at)], ['Completed', time(r.completed_at)],
        ['Provider signature', sig(r.signature)], ['Countersignature', sig(r.countersignature)],
      ])),
      h('section', { 'aria-labelledby': 'job-h' }, h('h2', { id: 'job-h' }, 'Job'), fields([
        ['Job id', copyable(job.job_id, 'job id')], ['State', h('span', { class: 'badge ' + job.state }, job.state)], ['Attempt', job.attempt], ['Tier', job.tier],
        ['Model', job.model ?? '—'], ['Units held for', job.units_max], ['Unit price', amount(job.unit_price, 'AITBC per unit')],
        ['Held in escrow', amount(job.max_price)], ['Price', job.price ? amount(job.price) : '—'],
        ['Created', timeMs(job.created_at_ms)], ['Claimed', job.claimed_at_ms ? timeMs(job.claimed_at_ms) : '—'], ['Finished', job.finished_at_ms ? timeMs(job.finished_at_ms) : '—'],
      ])),
      h('section', { 'aria-labelledby': 'settle-h' }, h('h2', { id: 'settle-h' }, 'Settlement'),
        detail.due ? fields([['Hold', amount(detail.due.hold)], ['Price', amount(detail.due.price)], ['Platform fee', amount(detail.due.fee)], ['SLA penalty', amount(detail.due.penalty)]]) : empty('Nothing due.'),
        detail.settlement ? fields([['Settled in batch', copyable(detail.settlement.batch_id, 'batch id')], ['Transfer', copyable(detail.settlement.transfer_id, 'transfer id')], ['Settled', timeMs(detail.settlement.settled_at_ms)]])
          : h('p', { class: 'state', 'data-settlement': 'pending' }, 'Not settled yet: settlement runs in batches after a short grace period.')),
      h('details', {}, h('summary', {}, 'Raw JSON'), h('pre', {}, JSON.stringify(r, null, 2))));
    try {
      const result = await verifyReceipt(r, await keys());
      verdict.className = 'verdict ' + (result.valid ? 'valid' : 'invalid');
      verdict.dataset.verdict = result.valid ? 'valid' : 'invalid';
      verdict.textContent = result.valid ? '✓ Valid: the provider signature and the marketplace countersignature verify.' : '✗ Invalid: ' + result.reason;
    } catch (e) {
      verdict.className = 'verdict invalid';
      verdict.dataset.verdict = 'invalid';
      verdict.textContent = '✗ Could not check: ' + (e instanceof Error ? e.message : String(e));
    }
  })();
}

/** Basis points as an exact percentage ("8750" is "87.50%"), by integer arithmetic.
 * @param {number} bps */
export function bpsPercent(bps) {
  return `${Math.trunc(bps / 100)}.${String(bps % 100).padStart(2, '0')}%`;
}

/** GPU listings by region and model. @param {HTMLElement} main @param {URLSearchParams} params */
export function gpus(main, params) {
  const results = h('div', {}, loading('GPUs'));
  page(main, 'GPUs', h('p', { class: 'lede' }, 'GPU listings by region: strategy, current price per GPU-second (basic tier, the strategy applied now), utilization, reputation (the score from measured success, start times, SLA breaches and client ratings) and whether a worker is online.'), results);
  const load = async () => {
    try {
      const rows = await get('/v1/explorer/gpus', { region: params.get('region'), model: params.get('model') });
      if (!rows.length) return results.replaceChildren(empty('No GPUs are listed.'));
      const regions = [...new Set(rows.map((/** @type {any} */ r) => r.region))].sort();
      results.replaceChildren(...regions.map((region) => table('Region ' + region, ['GPU', 'Provider', 'Models', 'Strategy', 'Base price per hour', 'Current price per GPU-second', 'Utilization', 'Reputation', 'Jobs active / capacity', 'Completed jobs', 'Online'],
        rows.filter((/** @type {any} */ r) => r.region === region).map((/** @type {any} */ r) => [
          h('span', {}, r.name, h('br'), h('code', { class: 'small' }, r.gpu_id)), addressLink(r.provider), r.models.join(', ') || '—', r.strategy, amount(r.base_price),
          Object.keys(r.prices).length ? h('ul', { class: 'plain' }, Object.entries(r.prices).map(([m, p]) => h('li', {}, m + ': ', amount(String(p))))) : '—',
          r.utilization, h('span', { 'data-reputation': String(r.reputation.score_bps) }, bpsPercent(r.reputation.score_bps)),
          `${r.active_jobs} / ${r.max_concurrent_jobs}`, String(r.completed_jobs),
          h('span', { class: 'badge ' + (r.online ? 'online' : 'offline') }, r.online ? 'online' : 'offline'),
        ]))));
    } catch (e) {
      results.replaceChildren(failure(e));
    }
  };
  load();
  const timer = setInterval(load, POLL_MS);
  return () => clearInterval(timer);
}

/** @param {URLSearchParams} params */
function windowPicker(params, base) {
  const current = params.get('interval') ?? 'hour';
  return h('nav', { class: 'pager', 'aria-label': 'Time buckets' }, ['minute', 'hour', 'day'].map((i) =>
    h('a', { href: `${base}?interval=${i}`, class: 'button' + (i === current ? '' : ' secondary'), 'aria-current': i === current ? 'true' : undefined }, 'Per ' + i)));
}

/** Prices and utilization over time. @param {HTMLElement} main @param {URLSearchParams} params */
export function market(main, params) {
  const interval = params.get('interval') ?? 'hour';
  const now = h('div', {}, loading('the market'));
  const charts = h('div', {}, loading('the history'));
  page(main, 'Market', h('p', { class: 'lede' }, 'Prices and utilization by region and model, from the receipts of each time bucket.'), windowPicker(params, '#/market'), charts, h('h2', {}, 'Now'), now);
  (async () => {
    try {
      const regions = await get('/v1/market');
      now.replaceChildren(table('Regions now', ['Region', 'Listings', 'Online', 'GPUs', 'Demand', 'Price range per GPU-second'],
        regions.map((/** @type {any} */ r) => [r.region, String(r.listings), String(r.online), String(r.gpus), (r.demand_bps / 100) + ' %',
          Object.keys(r.models).length ? h('ul', { class: 'plain' }, Object.entries(r.models).map(([m, [lo, hi]]) => h('li', {}, m + ': ', amount(lo), ' – ', amount(hi)))) : '—'])));
    } catch (e) {
      now.replaceChildren(failure(e));
    }
    try {
      const history = await get('/v1/market/history', { interval, buckets: 48 });
      const name = (/** @type {any} */ s) => `${s.region} · ${s.model}`;
      const pick = (/** @type {string} */ field) => history.series.map((/** @type {any} */ s) => ({ name: name(s), points: s.points.map((/** @type {any} */ p) => ({ t: p.t_ms, value: p[field] ?? null })) }));
      charts.replaceChildren(
        history.series.length ? '' : empty('No receipts in this window.'),
        lineChart('Mean price per GPU-second', pick('unit_price'), 'AITBC'),
        lineChart('Utilization (metered GPU time over listed GPU time)', pick('utilization'), ''),
        lineChart('Receipts per ' + interval, history.series.map((/** @type {any} */ s) => ({ name: name(s), points: s.points.map((/** @type {any} */ p) => ({ t: p.t_ms, value: String(p.receipts) })) })), 'receipts'),
        history.truncated ? h('p', { class: 'meta' }, 'Only the newest receipts of this window are counted.') : '');
    } catch (e) {
      charts.replaceChildren(failure(e));
    }
  })();
}

/** A provider's earnings or a client's spending. @param {HTMLElement} main @param {string} address @param {URLSearchParams} params */
export function account(main, address, params) {
  const interval = params.get('interval') ?? 'hour';
  page(main, 'Account', loading('the account'));
  (async () => {
    try {
      const a = await get('/v1/explorer/accounts/' + encodeURIComponent(address), { interval, buckets: 48 });
      const provider = a.role === 'provider';
      page(main, (provider ? 'Provider ' : 'Client ') + a.address,
        fields([['Address', copyable(a.address, 'address')], ['Role', a.role], ['Receipts', String(a.receipts)], ['GPU-seconds', a.units],
          [provider ? 'Earned (gross, before the platform fee)' : 'Spent', amount(a.amount)],
          ['First receipt', a.first_completed_at ? time(a.first_completed_at) : undefined], ['Latest receipt', a.last_completed_at ? time(a.last_completed_at) : undefined]]),
        a.truncated ? h('p', { class: 'meta' }, 'Totals cover the newest receipts only.') : '',
        h('p', {}, h('a', { href: `#/receipts?${provider ? 'provider' : 'client'}=${encodeURIComponent(a.address)}` }, 'This account\'s receipts →')),
        windowPicker(params, '#/account/' + encodeURIComponent(address)),
        lineChart((provider ? 'Earnings' : 'Spending') + ' per ' + interval, [{ name: '', points: a.points.map((/** @type {any} */ p) => ({ t: p.t_ms, value: p.amount })) }], 'AITBC'));
    } catch (e) {
      main.replaceChildren(h('h1', { tabindex: '-1' }, 'Account'), failure(e));
    }
  })();
}
