// The API as the page uses it: the Loki read API plus /status, with the
// bearer token (kept in session storage) when access control is on.
const TOKEN = 'monitoring-rs-token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN) || '',
  set: (t) => (t ? sessionStorage.setItem(TOKEN, t) : sessionStorage.removeItem(TOKEN)),
};

/** An answer the API refused, with its status and message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Listeners told when the API wants a token (401). */
const needsToken = new Set();
export const onNeedsToken = (f) => (needsToken.add(f), () => needsToken.delete(f));

/** GET `path` with `params`; the JSON answer, its warnings and the peers
 *  that did not answer. */
export async function get(path, params = {}, signal, extra = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const headers = { ...extra };
  if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
  const response = await fetch(url, { headers, signal });
  const text = await response.text();
  if (!response.ok) {
    if (response.status === 401) needsToken.forEach((f) => f());
    let message = text.trim();
    try { message = JSON.parse(text).message || message; } catch {}
    throw new ApiError(response.status, message || response.statusText);
  }
  const body = JSON.parse(text);
  const missing = (response.headers.get('x-monitoring-missing-peers') || '')
    .split(',').map((s) => s.trim()).filter(Boolean);
  return { body, warnings: body.warnings || [], missing };
}

/** Asks for stream labels, structured metadata and parsed labels apart
 *  (as Grafana does). */
export const CATEGORIZED = { 'X-Loki-Response-Encoding-Flags': 'categorize-labels' };

/** A WebSocket live tail of `query`; the token goes as a subprotocol, as
 *  the Kubernetes API server takes it (a browser cannot set headers). */
export function tail(query, start) {
  const url = new URL('/loki/api/v1/tail', location.origin);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('query', query);
  url.searchParams.set('start', start);
  url.searchParams.set('limit', '100');
  const protocols = ['monitoring-rs'];
  if (token.get()) {
    const b64 = btoa(unescape(encodeURIComponent(token.get())))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    protocols.push(`base64url.bearer.authorization.k8s.io.${b64}`);
  }
  return new WebSocket(url, protocols);
}
