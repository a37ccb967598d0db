// Browser tests of the explorer against a running marketplace with a real workload
// (scripts/explorer-test.sh sets it up and passes EXPLORER_URL). Chromium is Debian's, driven by
// playwright-core; nothing is downloaded.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.EXPLORER_URL ?? assert.fail('EXPLORER_URL is not set');
const SHOTS = process.env.EXPLORER_SCREENSHOTS ?? join(tmpdir(), 'explorer-screenshots');
const JOBS = Number(process.env.EXPLORER_JOBS ?? '0');
const ROOT = new URL('../../', import.meta.url);
const WIDTHS = [375, 1280];

/** One Chromium with a fresh profile; each test opens its own pages. */
let context;
let userDataDir;

before(async () => {
  userDataDir = mkdtempSync(join(tmpdir(), 'explorer-chromium-'));
  // playwright passes the fresh profile as --user-data-dir.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic'],
  });
});

after(async () => {
  await context?.close();
  rmSync(userDataDir, { recursive: true, force: true });
});

async function api(path) {
  const response = await fetch(BASE + path);
  assert.equal(response.status, 200, `${path}: HTTP ${response.status}`);
  return response.json();
}

/** Every receipt, newest first, through the API's pages. */
async function allReceipts(query = '') {
  const out = [];
  let cursor;
  for (let i = 0; i < 100; i++) {
    const page = await api(`/v1/explorer/receipts?limit=100${query}${cursor ? '&cursor=' + cursor : ''}`);
    out.push(...page.items);
    if (!page.next_cursor) return out;
    cursor = page.next_cursor;
  }
  assert.fail('more than 100 pages');
}

/** A page at a width that records console errors and uncaught exceptions. */
async function open(width = 1280) {
  const page = await context.newPage();
  await page.setViewportSize({ width, height: 900 });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  return { page, errors, close: () => page.close() };
}

async function shoot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}-${page.viewportSize().width}.png`), fullPage: true });
}

const receiptIds = (page) => page.locator('tbody tr th a code').allTextContents();

test('the pages are served with their content types and a strict CSP', async () => {
  for (const [path, type] of [['/explorer/', 'text/html'], ['/explorer/app.js', 'text/javascript'], ['/explorer/style.css', 'text/css']]) {
    const response = await fetch(BASE + path);
    assert.equal(response.status, 200, path);
    assert.ok(response.headers.get('content-type').startsWith(type), `${path}: ${response.headers.get('content-type')}`);
    assert.match(response.headers.get('content-security-policy'), /^default-src 'self'/);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
  }
  assert.equal((await fetch(BASE + '/explorer/nope.js')).status, 404);
  const redirect = await fetch(BASE + '/explorer', { redirect: 'manual' });
  assert.equal(redirect.headers.get('location'), '/explorer/');
});

test('the JS canonical form and verifier agree with samples/receipts/vectors.json', async () => {
  const vectors = JSON.parse(readFileSync(new URL('samples/receipts/vectors.json', ROOT), 'utf8'));
  const { page, errors, close } = await open();
  await page.goto(BASE + '/explorer/');
  const results = await page.evaluate(async (v) => {
    const { signedBytes } = await import('/explorer/jcs.js');
    const { verifyReceipt } = await import('/explorer/verify.js');
    const doc = { keys: [v.provider_key.public, v.marketplace_key.public], marketplace_key_id: v.marketplace_key.public.key_id };
    const providerOnly = { keys: [v.provider_key.public] };
    const out = [];
    for (const x of v.valid) {
      const canonical = new TextDecoder().decode(signedBytes(x.receipt));
      out.push({ name: x.name, kind: 'canonical', ok: canonical === x.canonical });
      out.push({ name: x.name, kind: 'valid', ok: (await verifyReceipt(x.receipt, doc)).valid });
      // The countersignature verifies only under the marketplace key, never the provider's.
      const swapped = { ...x.receipt, signature: x.receipt.countersignature };
      out.push({ name: x.name, kind: 'counter-not-provider', ok: !(await verifyReceipt(swapped, providerOnly)).valid });
    }
    for (const x of v.tampered) out.push({ name: x.name, kind: 'tampered', ok: !(await verifyReceipt(x.receipt, doc)).valid });
    return out;
  }, vectors);
  assert.equal(results.length, vectors.valid.length * 3 + vectors.tampered.length);
  for (const r of results) assert.ok(r.ok, `${r.kind}: ${r.name}`);
  assert.deepEqual(errors, []);
  await close();
});

test('the receipts page shows what the API returns, newest first', async () => {
  const expected = await api('/v1/explorer/receipts?limit=20');
  assert.ok(expected.items.length > 0);
  for (const width of WIDTHS) {
    const { page, errors, close } = await open(width);
    await page.goto(BASE + '/explorer/#/receipts');
    await page.locator('tbody tr').first().waitFor();
    assert.deepEqual(await receiptIds(page), expected.items.map((r) => r.receipt_id));
    const first = page.locator('tbody tr').first();
    assert.ok((await first.textContent()).includes(expected.items[0].price), 'the price as the API states it');
    await shoot(page, 'receipts');
    assert.deepEqual(errors, []);
    await close();
  }
});

test('paging reaches the oldest receipt', async () => {
  const all = await allReceipts();
  assert.ok(all.length >= JOBS, `${all.length} receipts for ${JOBS} jobs`);
  const { page, errors, close } = await open();
  await page.goto(BASE + '/explorer/#/receipts');
  const seen = [];
  for (let i = 0; i < 50; i++) {
    await page.locator('tbody tr').first().waitFor();
    await page.locator('.pager span', { hasText: `Page ${i + 1}` }).waitFor();
    seen.push(...(await receiptIds(page)));
    const older = page.getByRole('button', { name: 'Older →' });
    if (await older.isDisabled()) break;
    await older.click();
  }
  // The last page may be followed by an empty one (the cursor cannot know it was the last).
  assert.deepEqual(seen, all.map((r) => r.receipt_id));
  assert.equal(seen.at(-1), all.at(-1).receipt_id, 'the oldest receipt is reached');
  assert.deepEqual(errors, []);
  await close();
});

test('filtering by an address shows exactly that address\'s receipts', async () => {
  const all = await allReceipts();
  const clients = [...new Set(all.map((r) => r.client))];
  assert.ok(clients.length >= 2, 'the workload has two clients');
  const address = clients.find((c) => all.filter((r) => r.client === c).length < all.length);
  // The API's filtered list is exactly that client's receipts (newest first by their own
  // completion time, so ties within a second may order differently than the unfiltered list).
  const filtered = await allReceipts('&client=' + address);
  assert.deepEqual(filtered.map((r) => r.receipt_id).sort(), all.filter((r) => r.client === address).map((r) => r.receipt_id).sort());
  const expected = filtered.slice(0, 20);
  const { page, errors, close } = await open();
  await page.goto(BASE + '/explorer/#/receipts');
  await page.getByLabel('Client address').fill(address);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL((u) => u.hash.includes('client='));
  await page.locator('tbody tr').first().waitFor();
  await page.waitForFunction((n) => document.querySelectorAll('tbody tr').length === n, expected.length);
  assert.deepEqual(await receiptIds(page), expected.map((r) => r.receipt_id));
  const shownClients = await page.locator('tbody tr td:nth-child(3) code').allTextContents();
  assert.ok(shownClients.every((c) => c === address), 'every row is that client\'s');
  assert.deepEqual(errors, []);
  await close();
});

test('a receipt\'s page shows every field, its job and settlement, and a valid signature checked in the browser', async () => {
  const [newest] = (await api('/v1/explorer/receipts?limit=1')).items;
  const detail = await api('/v1/explorer/receipts/' + newest.receipt_id);
  for (const width of WIDTHS) {
    const { page, errors, close } = await open(width);
    await page.goto(BASE + '/explorer/#/receipt/' + newest.receipt_id);
    const verdict = page.locator('.verdict');
    await page.locator('.verdict[data-verdict="valid"], .verdict[data-verdict="invalid"]').waitFor();
    assert.equal(await verdict.getAttribute('data-verdict'), 'valid', await verdict.textContent());
    const text = await page.locator('main').textContent();
    for (const field of ['receipt_id', 'job_id', 'gpu_id', 'provider', 'client', 'units', 'unit_price', 'price', 'model']) {
      assert.ok(text.includes(String(newest[field])), `the page shows ${field} = ${newest[field]}`);
    }
    assert.ok(text.includes(newest.signature.sig) && text.includes(newest.countersignature.sig), 'both signatures');
    assert.equal(detail.job.state, 'settled', 'the workload was settled before the tests');
    assert.ok(text.includes(detail.settlement.batch_id) && text.includes(detail.due.fee), 'the settlement and its fee');
    assert.ok(!text.includes('"values"'), 'no job result on a public page');
    await shoot(page, 'receipt');
    assert.deepEqual(errors, []);
    await close();
  }
});

/** Opens a receipt's page with the API's answer changed by `tamper`. */
async function verdictOf(id, tamper) {
  const { page, errors, close } = await open();
  await page.route(`**/v1/explorer/receipts/${id}`, async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    tamper(body.receipt);
    await route.fulfill({ response, json: body });
  });
  await page.goto(BASE + '/explorer/#/receipt/' + id);
  await page.locator('.verdict[data-verdict="valid"], .verdict[data-verdict="invalid"]').waitFor();
  const result = { verdict: await page.locator('.verdict').getAttribute('data-verdict'), text: await page.locator('.verdict').textContent() };
  assert.deepEqual(errors, []);
  await close();
  return result;
}

test('a receipt whose signature was altered shows as invalid, with the reason', async () => {
  const [newest] = (await api('/v1/explorer/receipts?limit=1')).items;
  const flipped = await verdictOf(newest.receipt_id, (r) => {
    const bytes = Buffer.from(r.signature.sig, 'base64');
    bytes[10] ^= 0x01;
    r.signature.sig = bytes.toString('base64');
  });
  assert.equal(flipped.verdict, 'invalid');
  assert.match(flipped.text, /provider signature: bad signature/);
  const unknown = await verdictOf(newest.receipt_id, (r) => { r.signature.key_id = 'not-a-registered-key'; });
  assert.equal(unknown.verdict, 'invalid');
  assert.match(unknown.text, /unknown key/);
  const price = await verdictOf(newest.receipt_id, (r) => { r.units = r.units + '1'; });
  assert.equal(price.verdict, 'invalid');
});

test('the GPUs page lists what the API lists, by region', async () => {
  const gpus = await api('/v1/explorer/gpus');
  assert.equal(new Set(gpus.map((g) => g.region)).size, 2, 'two regions');
  for (const width of WIDTHS) {
    const { page, errors, close } = await open(width);
    await page.goto(BASE + '/explorer/#/gpus');
    await page.locator('tbody tr').first().waitFor();
    const ids = await page.locator('tbody tr th code').allTextContents();
    assert.deepEqual(ids.sort(), gpus.map((g) => g.gpu_id).sort());
    const text = await page.locator('main').textContent();
    for (const g of gpus) {
      assert.ok(text.includes(g.base_price) && text.includes(g.strategy) && text.includes(g.utilization), `${g.gpu_id} as the API states`);
      for (const price of Object.values(g.prices)) assert.ok(text.includes(price), `current price ${price}`);
    }
    assert.equal(await page.locator('.badge.online').count(), gpus.filter((g) => g.online).length);
    const scores = await page.locator('[data-reputation]').evaluateAll((els) => els.map((e) => [e.dataset.reputation, e.textContent]));
    assert.deepEqual(scores.map(([bps]) => bps).sort(), gpus.map((g) => String(g.reputation.score_bps)).sort(), 'each listing\'s reputation as the API states');
    for (const [bps, shown] of scores) assert.equal(shown, `${Math.trunc(bps / 100)}.${String(bps % 100).padStart(2, '0')}%`);
    await shoot(page, 'gpus');
    assert.deepEqual(errors, []);
    await close();
  }
});

test('the market page draws the history as charts', async () => {
  const history = await api('/v1/market/history?interval=minute&buckets=48');
  assert.ok(history.series.length >= 2, 'a series per region and model');
  const receipts = history.series.reduce((n, s) => n + s.points.reduce((m, p) => m + p.receipts, 0), 0);
  assert.equal(receipts, (await allReceipts()).length, 'every receipt of the window is counted');
  for (const width of WIDTHS) {
    const { page, errors, close } = await open(width);
    await page.goto(BASE + '/explorer/#/market?interval=minute');
    await page.locator('figure.chart svg').first().waitFor();
    assert.equal(await page.locator('figure.chart svg').count(), 3);
    assert.equal(await page.locator('figure.chart').first().locator('.legend li').count(), history.series.length);
    await page.locator('tbody tr').first().waitFor();
    await shoot(page, 'market');
    assert.deepEqual(errors, []);
    await close();
  }
});

test('a provider\'s and a client\'s pages show their totals as the API does', async () => {
  const [newest] = (await api('/v1/explorer/receipts?limit=1')).items;
  for (const address of [newest.provider, newest.client]) {
    const summary = await api(`/v1/explorer/accounts/${address}?interval=hour&buckets=48`);
    assert.ok(summary.receipts > 0);
    for (const width of WIDTHS) {
      const { page, errors, close } = await open(width);
      await page.goto(BASE + '/explorer/#/account/' + address);
      await page.locator('figure.chart').waitFor();
      const text = await page.locator('main').textContent();
      assert.ok(text.includes(summary.amount) && text.includes(summary.units) && text.includes(summary.role));
      await shoot(page, `account-${summary.role}`);
      assert.deepEqual(errors, []);
      await close();
    }
  }
});

test('pages are navigable by keyboard', async () => {
  const { page, errors, close } = await open();
  await page.goto(BASE + '/explorer/#/receipts');
  await page.locator('tbody tr').first().waitFor();
  await page.focus('header nav a[href="#/receipts"]');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'GPUs');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, 'solid', 'focus is visible');
  await page.keyboard.press('Enter');
  await page.waitForURL((u) => u.hash === '#/gpus');
  await page.locator('tbody tr').first().waitFor();
  assert.deepEqual(errors, []);
  await close();
});
