// Receipt verification in the browser: the same rules as core/src/receipt.rs. The provider's
// signature and the marketplace's countersignature are Ed25519 (WebCrypto) over the JCS bytes
// of the receipt without its signatures, checked only against keys from GET /v1/keys, never a
// key the receipt carries.
import { signedBytes } from './jcs.js';

/** Members a receipt may have; any other makes it invalid (nothing unsigned rides along). */
export const RECEIPT_MEMBERS = ['version', 'receipt_id', 'job_id', 'gpu_id', 'attempt', 'provider', 'client', 'units',
  'unit_type', 'unit_price', 'price', 'model', 'started_at', 'completed_at', 'prompt_tokens', 'completion_tokens',
  'signature', 'countersignature'];

/** Receipt versions this page verifies (core's RECEIPT_VERSION_MIN..=RECEIPT_VERSION). */
export const RECEIPT_VERSIONS = [1, 2];

/** The rules a receipt's version sets (core's `ReceiptBody::check`): version 1 meters only
 * GPU-seconds and carries no token counts; token counts come in pairs.
 * @param {Record<string, any>} r @returns {string | null} what breaks them */
export function versionProblem(r) {
  if (!RECEIPT_VERSIONS.includes(r.version)) return 'receipt version ' + r.version + ' is not supported';
  const hasTokens = r.prompt_tokens != null || r.completion_tokens != null;
  if (r.version === 1 && r.unit_type !== 'gpu_seconds') return 'a version 1 receipt cannot carry units other than gpu_seconds';
  if (r.version === 1 && hasTokens) return 'a version 1 receipt cannot carry token counts';
  if ((r.prompt_tokens == null) !== (r.completion_tokens == null)) return 'token counts come in pairs';
  return null;
}

/** @typedef {{key_id: string, alg: string, public_key: string}} KeyEntry */
/** @typedef {{keys: KeyEntry[], marketplace_key_id?: string}} KeyDocument */
/** @typedef {{ok: boolean, reason: string}} Check */

/** @param {string} b64 */
function base64Bytes(b64) {
  const text = atob(b64);
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

/** A decimal string as an integer count of 10^-places, without floats.
 * @param {string} text @param {number} places */
export function scaled(text, places) {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m) throw new Error('not a decimal: ' + text);
  const frac = (m[2] ?? '');
  if (frac.length > places) throw new Error('too many decimals: ' + text);
  return BigInt(m[1] + frac.padEnd(places, '0'));
}

/** price == round_half_up(units x unit_price) to the nano (9 places): units have 3, unit prices 12.
 * @param {{units: string, unit_price: string, price: string}} r */
export function priceMatches(r) {
  const product = scaled(r.units, 3) * scaled(r.unit_price, 12); // 15 places
  const divisor = 10n ** 6n;
  const rounded = product / divisor + ((product % divisor) * 2n >= divisor ? 1n : 0n);
  return rounded === scaled(r.price, 9);
}

/** @param {Uint8Array} message @param {{alg?: string, key_id?: string, sig?: string} | undefined} signature
 * @param {Map<string, KeyEntry>} keys @returns {Promise<Check>} */
export async function verifySignature(message, signature, keys) {
  if (!signature) return { ok: false, reason: 'no signature' };
  if (signature.alg !== 'Ed25519') return { ok: false, reason: 'unsupported algorithm ' + signature.alg };
  const entry = keys.get(signature.key_id ?? '');
  if (!entry) return { ok: false, reason: 'unknown key ' + signature.key_id };
  let sig;
  let pub;
  try {
    sig = base64Bytes(signature.sig ?? '');
    pub = base64Bytes(entry.public_key);
  } catch {
    return { ok: false, reason: 'signature or key is not base64' };
  }
  if (sig.length !== 64) return { ok: false, reason: 'bad signature (not 64 bytes)' };
  try {
    const key = await crypto.subtle.importKey('raw', pub, { name: 'Ed25519' }, false, ['verify']);
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, sig, message);
    return ok ? { ok: true, reason: 'valid' } : { ok: false, reason: 'bad signature' };
  } catch (e) {
    return { ok: false, reason: 'this browser cannot verify Ed25519: ' + (e instanceof Error ? e.message : String(e)) };
  }
}

/** Verifies a receipt against a key document: the provider's signature by a provider key,
 * the countersignature (when present) by the marketplace key.
 * @param {Record<string, any>} receipt @param {KeyDocument} doc */
export async function verifyReceipt(receipt, doc) {
  const market = doc.marketplace_key_id;
  const providerKeys = new Map(doc.keys.filter((k) => k.key_id !== market).map((k) => [k.key_id, k]));
  const marketKeys = new Map(doc.keys.filter((k) => k.key_id === market).map((k) => [k.key_id, k]));
  const extra = Object.keys(receipt).filter((k) => !RECEIPT_MEMBERS.includes(k));
  if (extra.length) return result({ ok: false, reason: 'unexpected member ' + extra.join(', ') }, null);
  const versionError = versionProblem(receipt);
  if (versionError) return result({ ok: false, reason: versionError }, null);
  let priceOk;
  try {
    priceOk = priceMatches(receipt);
  } catch (e) {
    return result({ ok: false, reason: e instanceof Error ? e.message : String(e) }, null);
  }
  if (!priceOk) return result({ ok: false, reason: 'price is not units x unit_price' }, null);
  const message = signedBytes(receipt);
  const provider = await verifySignature(message, receipt.signature, providerKeys);
  const counter = receipt.countersignature ? await verifySignature(message, receipt.countersignature, marketKeys) : null;
  return result(provider, counter);
}

/** @param {Check} provider @param {Check | null} counter */
function result(provider, counter) {
  const valid = provider.ok && (counter === null || counter.ok);
  const reason = !provider.ok ? 'provider signature: ' + provider.reason : counter && !counter.ok ? 'countersignature: ' + counter.reason : 'valid';
  return { valid, reason, provider, counter };
}
