// The one place that talks HTTP. Every error body of the proxy carries `error` (a sentence a
// person can act on) and, for a bad request field, `field`; ApiError keeps both so the UI can
// put the message next to the field at fault.

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
    this.field = body && typeof body.field === "string" ? body.field : null;
    this.fields = body && Array.isArray(body.fields) ? body.fields : [];
  }
}

// A 401 from any call but the login's own means the session is gone (it expired, the key was
// removed, or keys were switched on): the one listener (the login panel) is told, and the
// caller gets a message for a person instead of the server's advice for API clients.
let unauthorizedListener = () => {};

export function onUnauthorized(listener) {
  unauthorizedListener = listener;
}

const LOGGED_OUT = "You are not logged in (the session ended): log in again, then retry.";

function failure(status, message, body, { auth = true } = {}) {
  if (status === 401 && auth) {
    const err = new ApiError(status, LOGGED_OUT, body);
    unauthorizedListener(err);
    return err;
  }
  return new ApiError(status, message, body);
}

function messageOf(response, body) {
  if (body && typeof body.error === "string" && body.error) return body.error;
  if (body && typeof body.detail === "string" && body.detail) return body.detail;
  return `${response.status} ${response.statusText || "error"}`.trim();
}

/** JSON.parse that keeps integers past 2^53 (seeds) exact, as strings of digits. */
export function parseJson(text) {
  return JSON.parse(text, (_key, value, context) => {
    if (typeof value === "number" && !Number.isSafeInteger(value) && Number.isInteger(value)) {
      const source = context && context.source;
      if (typeof source === "string" && /^-?\d+$/.test(source)) return source;
    }
    return value;
  });
}

function parseBody(text) {
  if (!text) return null;
  try {
    return parseJson(text);
  } catch {
    return null;
  }
}

/**
 * fetch() with JSON in and out; throws ApiError with the server's own message. `auth: false`:
 * a 401 is this call's own answer (a wrong key at login), not the session ending.
 */
export async function request(
  method,
  path,
  { json, rawBody, signal, keepalive = false, auth = true } = {},
) {
  // no-store: job state must be fresh, and `GET /` answers HTML or JSON by Accept without
  // `Vary: Accept`, so a cached copy of the page would otherwise answer the health check.
  // keepalive: the request outlives the page (clean-up sent while it is being closed).
  const init = { method, headers: { Accept: "application/json" }, cache: "no-store", signal, keepalive };
  if (rawBody !== undefined || json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = rawBody !== undefined ? rawBody : JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "Cannot reach the server. Is the proxy running?");
  }
  const body = parseBody(await response.text());
  if (!response.ok) throw failure(response.status, messageOf(response, body), body, { auth });
  return body;
}

/**
 * POST one file as multipart/form-data under `field`. XMLHttpRequest, not fetch(): only it
 * reports upload progress, which a 100 MB video needs. Resolves with the JSON answer; rejects
 * with ApiError like request(), or with an AbortError when `signal` aborts.
 */
export function sendFile(path, field, file, { onProgress = () => {}, signal } = {}) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new DOMException("The upload was cancelled.", "AbortError"));
      return;
    }
    const xhr = new XMLHttpRequest();
    const abort = () => xhr.abort();
    signal?.addEventListener("abort", abort, { once: true });
    const settle = (fn, value) => {
      signal?.removeEventListener("abort", abort);
      fn(value);
    };
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      const body = parseBody(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) {
        settle(resolve, body);
      } else {
        const status = { status: xhr.status, statusText: xhr.statusText };
        settle(reject, failure(xhr.status, messageOf(status, body), body));
      }
    });
    // A server refusing an oversized body before reading it may just close the connection,
    // which the browser reports as a network error, not as the 413 it sent.
    xhr.addEventListener("error", () =>
      settle(
        reject,
        new ApiError(0, "The upload did not get through: the server cannot be reached or closed the connection (a very large file may be over its upload limit)."),
      ),
    );
    xhr.addEventListener("abort", () =>
      settle(reject, new DOMException("The upload was cancelled.", "AbortError")),
    );
    const form = new FormData();
    form.append(field, file, file.name);
    xhr.send(form);
  });
}

// JSON.stringify cannot write integers past 2^53 exactly (seeds go up to 2^64-1), so large
// integers typed by the user travel as placeholders and are spliced back in as digits.
const BIG = "\u0000big:";

export function bigInt(digits) {
  return `${BIG}${digits}`;
}

export function stringifyWithBigInts(value) {
  return JSON.stringify(value).replace(/"\\u0000big:(\d+)"/g, "$1");
}

export const api = {
  // The web UI's session: who this page is, and whether the proxy asks for a key at all.
  me: () => request("GET", "/api/auth/me", { auth: false }),
  login: (key) => request("POST", "/api/auth/login", { json: { key }, auth: false }),
  logout: () => request("POST", "/api/auth/logout", { auth: false }),

  health: () => request("GET", "/"),
  models: () => request("GET", "/api/models"),
  backends: () => request("GET", "/api/backends"),
  jobs: ({ limit = 50, offset = 0 } = {}) =>
    request("GET", `/api/jobs?limit=${limit}&offset=${offset}`),
  job: (id) => request("GET", `/api/jobs/${encodeURIComponent(id)}`),
  createJob: (body) => request("POST", "/api/jobs", { rawBody: stringifyWithBigInts(body) }),
  startJob: (id) => request("POST", `/api/jobs/${encodeURIComponent(id)}/start`),
  stopJob: (id) => request("POST", `/api/jobs/${encodeURIComponent(id)}/stop`),
  deleteJob: (id) => request("DELETE", `/api/jobs/${encodeURIComponent(id)}`),
  // An input file for image-/video-to-video, stored ahead of the job; a create call names its id.
  upload: (kind, file, options) =>
    sendFile(`/api/uploads?kind=${encodeURIComponent(kind)}`, "file", file, options),
  deleteUpload: (id, { keepalive = false } = {}) =>
    request("DELETE", `/api/uploads/${encodeURIComponent(id)}`, { keepalive }),

  // Prompt tools (a language model; every route answers 503 with `error` when none is set).
  // The prompt session travels in a cookie the server sets on the first session request.
  toolsStatus: () => request("GET", "/api/prompt-tools/status"),
  enhance: (roughPrompt) => request("POST", "/api/enhance", { json: { rough_prompt: roughPrompt } }),
  initialize: (prompt) => request("POST", "/api/initialize", { json: { prompt } }),
  update: (userRequest) => request("POST", "/api/update", { json: { user_request: userRequest } }),
  history: () => request("GET", "/api/history"),
  parameters: () => request("GET", "/api/parameters"),
  variations: (selectedIndices, totalCount) =>
    request("POST", "/api/generate-variations", {
      json: { selected_indices: selectedIndices, total_count: totalCount },
    }),
  draftScenes: (brief, scenes) => request("POST", "/api/scenes/draft", { json: { brief, scenes } }),

  // Batches (seed 004) and scene generations (seed 003), listed by the native batches API.
  batchInference: (body) => request("POST", "/api/video/batch_inference", { json: body }),
  batches: ({ limit = 20, offset = 0 } = {}) =>
    request("GET", `/api/batches?limit=${limit}&offset=${offset}`),
  batch: (id) => request("GET", `/api/batches/${encodeURIComponent(id)}`),
  deleteBatch: (id) => request("DELETE", `/api/batches/${encodeURIComponent(id)}`),
  createSession: (body) => request("POST", "/api/session", { json: body }),
  session: (id) => request("GET", `/api/session/${encodeURIComponent(id)}`),
  generateScenes: (sessionId) =>
    request("POST", "/api/videos/generate-scenes", { json: { session_id: sessionId } }),
  // wait: false answers 202 at once; the new job is followed on the event stream.
  regenerateScene: (sessionId, scenario) =>
    request("POST", "/api/videos/regenerate-scene", {
      json: { session_id: sessionId, scenario, wait: false },
    }),
};

export const urls = {
  batchZip: (id) => `/api/video/batch_download/${encodeURIComponent(id)}`,
  finalVideo: (id) => `/api/videos/final/${encodeURIComponent(id)}`,
};
