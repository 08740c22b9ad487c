// The HTTP API as the dashboard uses it: the API key on every call, JSON errors as ApiError.

const KEY = "conveyor.apiKey";

export const auth = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

/** An answer that was not 2xx, carrying the API's {"error": {code, message, details}}. */
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.details = err.details ?? null;
    this.body = body;
  }
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const key = auth.key;
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

export function url(path, query) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search;
}

async function parse(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: "bad_response", message: text.slice(0, 200) } };
  }
}

/** GET (or another method with a JSON body); resolves to the parsed body, rejects with ApiError. */
export async function api(path, { method = "GET", body, query, signal, allow = [] } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(url(path, query), init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { error: { code: "network", message: "The server could not be reached." } });
  }
  const data = await parse(res);
  if (!res.ok && !allow.includes(res.status)) {
    if (res.status === 401) window.dispatchEvent(new CustomEvent("conveyor:unauthorized"));
    throw new ApiError(res.status, data);
  }
  return data;
}

let streamToken = null;
let streamTimer = null;

/**
 * Fetch a short-lived stream token and keep it fresh. Browsers cannot send
 * headers with an EventSource, so a stream's URL carries this token: the API
 * key itself never appears in a URL (or in a server's access log).
 */
export async function prepareStreams() {
  clearTimeout(streamTimer);
  streamToken = null;
  if (!auth.key) return;
  try {
    const answer = await api("/api/v1/session/stream-token", { method: "POST" });
    streamToken = answer.token;
    // Renew well before expiry; an open stream stays open past it.
    streamTimer = setTimeout(prepareStreams, Math.max(30, answer.expires_in - 60) * 1000);
  } catch {
    streamTimer = setTimeout(prepareStreams, 10_000);
  }
}

/** An EventSource on ``path`` (a route ending in /events), authenticated by the stream token. */
export function events(path, query = {}) {
  if (typeof EventSource === "undefined") return null;
  const q = { ...query };
  if (streamToken) q.stream_token = streamToken;
  return new EventSource(url(path, q));
}

/** Upload one file as multipart field ``file``; ``onProgress(sent, total)`` follows the upload. */
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else {
        if (xhr.status === 401) window.dispatchEvent(new CustomEvent("conveyor:unauthorized"));
        reject(new ApiError(xhr.status, data));
      }
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, { error: { code: "network", message: "The upload was interrupted." } })),
    );
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}
