// RFC 8785 (JSON Canonicalization Scheme) for the values receipts hold: objects, arrays,
// strings, booleans, null and safe integers. Receipts carry no floats (money is a decimal
// string), so a non-integer number is refused rather than formatted.

/** @param {unknown} value @returns {string} */
export function canonicalize(value) {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new Error('only safe integers are canonicalized here');
    return String(value);
  }
  if (typeof value === 'string') return quote(value);
  if (Array.isArray(value)) return '[' + value.map(canonicalize).join(',') + ']';
  if (typeof value === 'object') {
    // Members sorted by their names' UTF-16 code units: JS string comparison is exactly that.
    const names = Object.keys(value).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return '{' + names.map((n) => quote(n) + ':' + canonicalize(/** @type {any} */ (value)[n])).join(',') + '}';
  }
  throw new Error('not a JSON value: ' + typeof value);
}

const SHORT = { '"': '\\"', '\\': '\\\\', '\b': '\\b', '\t': '\\t', '\n': '\\n', '\f': '\\f', '\r': '\\r' };

/** @param {string} s */
function quote(s) {
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch in SHORT) out += SHORT[/** @type {keyof typeof SHORT} */ (ch)];
    else if (code < 0x20) out += '\\u' + code.toString(16).padStart(4, '0');
    else out += ch;
  }
  return out + '"';
}

/** The bytes a receipt's signatures sign: JCS of the receipt without both signatures.
 * @param {Record<string, unknown>} receipt @returns {Uint8Array} */
export function signedBytes(receipt) {
  const body = Object.fromEntries(Object.entries(receipt).filter(([k]) => k !== 'signature' && k !== 'countersignature'));
  return new TextEncoder().encode(canonicalize(body));
}
