// The explorer's reads, from this origin's API. Answers are JSON; errors are problem+json,
// turned into an Error carrying the problem's detail.

/** @param {string} path @param {Record<string, string | number | undefined | null>} [query] */
export async function get(path, query = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  const url = path + (params.size ? '?' + params : '');
  let response;
  try {
    response = await fetch(url, { headers: { accept: 'application/json' } });
  } catch (e) {
    throw new Error('the API did not answer: ' + (e instanceof Error ? e.message : String(e)));
  }
  const text = await response.text();
  let body;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    throw new Error(`HTTP ${response.status}: not JSON`);
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${body?.detail ?? body?.title ?? 'error'}`);
  return body;
}

let keyDocument = null;
/** GET /v1/keys, read once per page load. */
export async function keys() {
  keyDocument ??= get('/v1/keys');
  return keyDocument;
}
