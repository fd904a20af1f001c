// The musicfn HTTP API as the page uses it. Every URL is relative to the page, so the page
// works under any route prefix. Errors come back as ApiError carrying the API's own
// {code, message}.

import { readEvents } from "./sse.js";

const KEY_STORAGE = "musicfn.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORAGE, value);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = apiKey();
  if (key) h["X-API-Key"] = key;
  return h;
}

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") message = body.message;
    if (body && typeof body.code === "string") code = body.code;
    else if (body && typeof body.detail === "string") message = body.detail;
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, code, message);
}

// Seeds go up to 2^53-1 (exact in JS numbers); older records may hold bigger ones: those
// travel as BigInt.
// JSON.parse hands the reviver the number's source text (where the browser supports it).
function reviveSeeds(key, value, context) {
  if (key === "seed" && typeof value === "number" && !Number.isSafeInteger(value) &&
      context && typeof context.source === "string") {
    return BigInt(context.source);
  }
  return value;
}

export function toJson(value) {
  return JSON.stringify(value, (k, v) => (typeof v === "bigint" ? `@@bigint:${v}@@` : v))
    .replace(/"@@bigint:(-?\d+)@@"/g, "$1");
}

// A seed as typed: a number when exact, else a BigInt (the API says if it is too big).
export function parseSeed(text) {
  const t = String(text).trim();
  if (t === "") return null;
  if (!/^-?\d+$/.test(t)) return t; // not an integer: the API says what is wrong
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : BigInt(t);
}

// fetch + JSON, throwing ApiError for any non-2xx answer (and for network failures).
export async function request(method, path, { json, body, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += "?" + qs;
  }
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = toJson(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, "network_error", "cannot reach musicfn: " + err.message);
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return JSON.parse(await response.text(), reviveSeeds);
}

export const api = {
  // With the key, /healthz adds details (version, engine); without it, only ok/degraded.
  health: async () => {
    const r = await fetch("healthz", { headers: headers() });
    return r.json();
  },
  createGeneration: (body) => request("POST", "v1/generations", { json: body }),
  getGeneration: (id) => request("GET", `v1/generations/${encodeURIComponent(id)}`),
  listGenerations: (query) => request("GET", "v1/generations", { query }),
  waveform: (id) => request("GET", `v1/generations/${encodeURIComponent(id)}/waveform`),
  // {models: [{name, engine, default, supports, loaded_on}], replicas}
  models: () => request("GET", "v1/models"),
  // 200/202 with the record ({id, status, ...}); 409 job_finished when it is already over.
  cancelGeneration: (id) => request("POST", `v1/generations/${encodeURIComponent(id)}/cancel`),
  generationEvents: (id, signal) => generationEvents(id, signal),
  analyse: (file, query) => {
    const form = new FormData();
    form.append("file", file, file.name);
    return request("POST", "v1/analyses", { body: form, query });
  },
};

// The audio bytes through the ingress (works wherever the page works, key included).
export async function audioBlob(id) {
  const url = `v1/generations/${encodeURIComponent(id)}/audio?inline=1`;
  let response;
  try {
    response = await fetch(url, { headers: headers() });
  } catch (err) {
    throw new ApiError(0, "network_error", "cannot reach musicfn: " + err.message);
  }
  if (!response.ok) throw await errorOf(response);
  return response.blob();
}

// A job's Server-Sent Events (GET v1/generations/{id}/events): its frames, {event, data, id},
// as they come, until the server closes the stream. fetch() rather than EventSource, which
// cannot send the key. Errors before the stream starts are the API's own (401, 404); a
// network failure, before or during the stream, is ApiError network_error. Aborting
// `signal` ends it with the AbortError.
async function* generationEvents(id, signal) {
  const url = `v1/generations/${encodeURIComponent(id)}/events`;
  let response;
  try {
    response = await fetch(url, { headers: headers({ Accept: "text/event-stream" }),
                                  cache: "no-store", signal });
  } catch (err) {
    if (signal && signal.aborted) throw err;
    throw new ApiError(0, "network_error", "cannot reach musicfn: " + err.message);
  }
  if (!response.ok) throw await errorOf(response);
  const type = response.headers.get("Content-Type") || "";
  if (!type.startsWith("text/event-stream") || !response.body) {
    if (response.body) response.body.cancel().catch(() => {});
    throw new ApiError(response.status, "not_a_stream",
                       `expected an event stream, got ${type || "nothing"}`);
  }
  try {
    yield* readEvents(response.body);
  } catch (err) {
    if (signal && signal.aborted) throw err;
    throw new ApiError(0, "network_error", "lost the connection to musicfn: " + err.message);
  }
}

// The generation body that reproduces a stored record's request, with the given seed.
export function bodyFromRecord(record, seed) {
  const gen = (record.request && record.request.generation) || {};
  const out = (record.request && record.request.output) || {};
  const body = { prompt: gen.prompt || record.prompt, duration_s: gen.duration_s, seed };
  if (gen.model) body.model = gen.model;
  for (const name of ["stems", "bpm", "key", "chords", "style"]) {
    if (gen[name] !== null && gen[name] !== undefined) body[name] = gen[name];
  }
  const params = gen.params || {};
  for (const name of ["top_k", "top_p", "temperature", "cfg_coef"]) {
    if (typeof params[name] === "number") body[name] = params[name];
  }
  // All three, nulls included: an absent preset would mean the server's default ("podcast").
  body.loudness = { preset: out.preset ?? null, target_lufs: out.target_lufs ?? null,
                    ceiling_dbtp: out.ceiling_dbtp ?? null };
  const enc = out.encoding || {};
  const output = {};
  if (enc.format === "wav" || enc.format === "flac") output.format = enc.format;
  const depth = { PCM_16: 16, PCM_24: 24, PCM_32: 32 }[enc.subtype];
  if (depth) output.bit_depth = depth;
  if (enc.sample_rate) output.sample_rate = enc.sample_rate;
  body.output = output;
  return body;
}

// A fresh random seed (53 bits: exact in JSON numbers, the API's 0..2^53-1).
export function randomSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (words[0] & 0x1fffff) * 0x100000000 + words[1];
}
