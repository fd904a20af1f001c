// The Create view: the prompt form and the list of this tab's jobs with live progress.
// An unfinished job follows its Server-Sent Events (GET /v1/generations/{id}/events): each
// status frame updates its row; at a terminal status the full record is fetched once
// (GET /v1/generations/{id}) and shown. Job ids are kept in sessionStorage so a reload shows
// them again.

import { api, parseSeed, request, toJson } from "./api.js";
import { $, busy, clearError, el, statusBadge, when } from "./ui.js";
import { trackCard } from "./track.js";

const JOBS_STORAGE = "musicfn.jobs";
const RETRY_MIN_MS = 1000; // a lost stream is retried after 1 s, 2 s, 4 s … up to 10 s
const RETRY_MAX_MS = 10_000;
// A browser opens ~6 HTTP/1.1 connections per host: a few streams at most, the other
// unfinished jobs are polled meanwhile and take a stream when one ends.
const MAX_STREAMS = 3;
const WAIT_MS = 2000;
const MAX_JOBS = 30;
const FINISHED = new Set(["completed", "failed", "canceled"]);

function number(value) {
  const t = String(value).trim();
  return t === "" ? undefined : Number(t);
}

// The POST /v1/generations body from the form. Values go to the API as typed: the API is the
// one place that validates, and its message is what the person sees.
export function formBody(form) {
  const data = new FormData(form);
  const body = {
    prompt: String(data.get("prompt") || ""),
    duration_s: number(data.get("duration")),
    loudness: { preset: data.get("preset") },
    output: { format: data.get("format") },
  };
  const engine = data.get("engine");
  if (engine) body.engine = engine;
  const model = String(data.get("model") || "").trim();
  if (model) body.model = model;
  const seed = parseSeed(data.get("seed") || "");
  if (seed !== null) body.seed = seed;
  const bpm = number(data.get("bpm"));
  if (bpm !== undefined) body.bpm = bpm;
  const key = String(data.get("key") || "").trim();
  if (key) body.key = key;
  const stems = data.getAll("stems");
  if (stems.length) body.stems = stems;
  return body;
}

// The reference audio chosen in the form: {kind, file, trackId} (kind "" = none). A track id
// goes into the JSON body; a file makes the request multipart (the JSON as the part
// "request", the file as the part named by its kind).
export function formReference(form) {
  const data = new FormData(form);
  const kind = String(data.get("ref_kind") || "");
  const file = data.get("ref_file");
  return {
    kind,
    file: file instanceof File && file.size > 0 ? file : null,
    trackId: String(data.get("ref_track") || "").trim(),
  };
}

// POST /v1/generations with the body and, when chosen, its reference audio.
export function createWithReference(body, ref) {
  if (!ref || !ref.kind) return api.createGeneration(body);
  if (ref.file) {
    const form = new FormData();
    form.append("request", new Blob([toJson(body)], { type: "application/json" }));
    form.append(ref.kind, ref.file, ref.file.name);
    return request("POST", "v1/generations", { body: form });
  }
  if (ref.trackId) return api.createGeneration({ ...body, [ref.kind]: { track_id: ref.trackId } });
  return api.createGeneration(body); // a kind without audio: nothing to refer to
}

// The engine reports a fraction while it generates; otherwise the bar is indeterminate.
function setProgress(bar, progress) {
  if (typeof progress === "number" && Number.isFinite(progress)) {
    bar.value = Math.min(1, Math.max(0, progress));
  } else {
    bar.removeAttribute("value");
  }
}

class Jobs {
  constructor(list, empty) {
    this.list = list;
    this.empty = empty;
    // id -> {id, node, record, controller, timer, wake, waiting}
    this.items = new Map();
    this.streams = 0; // open event streams
  }

  save() {
    const ids = [...this.items.keys()].slice(-MAX_JOBS);
    sessionStorage.setItem(JOBS_STORAGE, JSON.stringify(ids));
  }

  restore() {
    let ids = [];
    try {
      ids = JSON.parse(sessionStorage.getItem(JOBS_STORAGE) || "[]");
    } catch {
      ids = [];
    }
    for (const id of ids) this.add({ id, status: "pending", record: null }, false, true);
  }

  async submit(body, ref = null) {
    clearError();
    const rec = await createWithReference(body, ref);
    this.add(rec, true);
    return rec;
  }

  // `sync`: fetch the record before following the stream (a restored id knows nothing yet).
  add(rec, scroll, sync = false) {
    if (this.items.has(rec.id)) return;
    const node = el("li", { class: "job card", dataset: { id: rec.id, status: rec.status } });
    this.list.prepend(node);
    const item = { id: rec.id, node, record: null, controller: null, timer: null,
                   wake: null, waiting: false };
    this.items.set(rec.id, item);
    this.empty.hidden = true;
    this.save();
    this.render(rec);
    if (scroll) node.scrollIntoView({ block: "nearest" });
    if (!FINISHED.has(rec.status)) this.follow(item, sync);
  }

  // Stream, and when the stream ends without a terminal status or fails (a restart, a blip,
  // a changed key): wait (1 s doubling to 10 s; back to 1 s after a stream that delivered),
  // re-sync with one GET, and stream again. Ends when the job is over or forgotten.
  async follow(item, sync) {
    const alive = () => this.items.get(item.id) === item;
    let delay = RETRY_MIN_MS;
    while (alive()) {
      let synced = true;
      if (sync) {
        const rec = await this.sync(item);
        if (!alive() || (rec && FINISHED.has(rec.status))) return;
        synced = rec !== null;
      }
      sync = true;
      if (this.streams >= MAX_STREAMS) {
        item.waiting = true; // woken when a stream ends
        await this.pause(item, synced ? WAIT_MS : delay);
        item.waiting = false;
        if (!synced) delay = Math.min(delay * 2, RETRY_MAX_MS);
        continue;
      }
      const { frames, finished } = await this.stream(item);
      if (!alive()) return;
      if (finished) {
        const rec = await this.sync(item); // the full record, once
        if (!alive() || (rec && FINISHED.has(rec.status))) return;
      } else if (frames > 0) {
        delay = RETRY_MIN_MS;
      }
      await this.pause(item, delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  // One connection to the job's event stream: {frames, finished}.
  async stream(item) {
    const controller = new AbortController();
    item.controller = controller;
    this.streams += 1;
    let frames = 0;
    try {
      for await (const frame of api.generationEvents(item.id, controller.signal)) {
        if (frame.event !== "status") continue;
        let state;
        try {
          state = JSON.parse(frame.data);
        } catch {
          continue;
        }
        frames += 1;
        this.note(item, "");
        this.update(item, state);
        if (FINISHED.has(state.status)) return { frames, finished: true }; // closes it
      }
    } catch (err) {
      // A 404 may be a service without the stream route rather than an unknown job: the GET
      // that follows decides (and forgets the job if it is gone).
      if (!controller.signal.aborted && err.status !== 404) this.note(item, err.message);
    } finally {
      if (item.controller === controller) item.controller = null;
      this.streams -= 1;
      for (const other of this.items.values()) {
        if (other.waiting && other.wake) {
          other.wake();
          break;
        }
      }
    }
    return { frames, finished: false };
  }

  // GET the record and show it: the record, or null when that failed (a note says why).
  async sync(item) {
    try {
      const rec = await api.getGeneration(item.id);
      this.note(item, "");
      this.render(rec);
      return rec;
    } catch (err) {
      if (err.status === 404) this.forget(item.id);
      else this.note(item, err.message);
      return null;
    }
  }

  pause(item, ms) {
    return new Promise((resolve) => {
      item.wake = () => {
        clearTimeout(item.timer);
        item.timer = null;
        item.wake = null;
        resolve();
      };
      item.timer = setTimeout(item.wake, ms);
    });
  }

  // Jobs waiting to reconnect try now (after a new API key, say).
  retry() {
    for (const item of this.items.values()) if (item.wake) item.wake();
  }

  async cancel(item) {
    clearError();
    try {
      const rec = await api.cancelGeneration(item.id); // 409 job_finished: the banner says so
      // Over already ("canceled"): say so now; else the stream tells when it is.
      if (rec && FINISHED.has(rec.status)) this.update(item, { status: rec.status });
    } finally {
      if (item.wake) item.wake(); // between streams: re-sync now, not after the backoff
    }
  }

  forget(id) {
    const item = this.items.get(id);
    if (!item) return;
    this.items.delete(id);
    if (item.controller) item.controller.abort();
    if (item.wake) item.wake();
    item.node.remove();
    this.empty.hidden = this.items.size > 0;
    this.save();
  }

  note(item, message) {
    const note = $(".job-note", item.node);
    if (note) note.textContent = message;
  }

  // A status frame ({status, progress}): the row changes in place (the Cancel button keeps its
  // focus); a terminal status drops the bar and the button until the record comes.
  update(item, { status, progress }) {
    const node = item.node;
    if (typeof status !== "string" || !this.items.has(item.id)) return;
    if (node.dataset.status === "completed" && $(".track", node)) return;
    const live = $(".job-live", node);
    if (!FINISHED.has(status) && !live) { // shown as over, going again: draw the row anew
      this.render({ id: item.id, status, progress, record: null });
      return;
    }
    if (FINISHED.has(status)) live?.remove();
    else setProgress($("progress", live), progress);
    node.dataset.status = status;
    $(".job-head .badge", node).replaceWith(statusBadge(status));
  }

  render(rec) {
    const item = this.items.get(rec.id);
    if (!item) return;
    const node = item.node;
    if (rec.record) item.record = rec.record;
    const sc = item.record;
    if (node.dataset.status === "completed" && $(".track", node)) return;
    node.dataset.status = rec.status;
    const head = el("header", { class: "job-head" },
      el("strong", { class: "job-prompt" }, sc ? sc.prompt : rec.id),
      statusBadge(rec.status));
    const meta = el("p", { class: "muted small" },
      sc ? `${when(sc.created_at)} · seed ${sc.seed ?? "random"} · ${sc.model || ""}` : "");
    const children = [head, meta];
    if (!FINISHED.has(rec.status)) {
      const bar = el("progress", { max: 1, "aria-label": "progress" });
      setProgress(bar, rec.progress);
      const cancel = el("button", { type: "button", class: "secondary job-cancel" }, "Cancel");
      cancel.addEventListener("click", () => busy(cancel, () => this.cancel(item)));
      children.push(el("div", { class: "job-live" }, bar, cancel));
    }
    if (rec.status === "failed" && sc && sc.error) {
      children.push(el("p", { class: "job-error" },
        sc.error.message, " ", el("code", {}, sc.error.stage ? `${sc.error.stage}: ${sc.error.code}` : sc.error.code)));
    }
    children.push(el("p", { class: "job-note muted small" }));
    if (rec.status === "completed") children.push(trackCard(rec, (body) => this.submit(body)));
    node.replaceChildren(...children);
  }
}

// The model field offers what this deployment serves (GET /v1/models), default first.
export async function showModels(list = $("#models"), input = $("#model")) {
  let served;
  try {
    served = (await api.models()).models;
  } catch {
    return; // no key yet, or an older service: the built-in suggestions stay
  }
  list.replaceChildren(...served.map((m) => {
    const option = document.createElement("option");
    option.value = m.name;
    option.label = `${m.engine}${m.default ? " · default" : ""}`;
    return option;
  }));
  const fallback = served.find((m) => m.default);
  if (fallback) input.placeholder = `default: ${fallback.name}`;
}

export function initCreate() {
  showModels();
  const jobs = new Jobs($("#jobs"), $("#jobs-empty"));
  jobs.restore();
  const form = $("#gen-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#generate"), () => jobs.submit(formBody(form), formReference(form)));
  });
  return jobs;
}
