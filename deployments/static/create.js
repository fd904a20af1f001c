// The Create view: the prompt form and the list of this tab's jobs with live progress.
// Jobs are polled (GET /v1/generations/{id}) until they complete or fail; their ids are kept
// in sessionStorage so a reload shows them again.

import { api, parseSeed } from "./api.js";
import { $, busy, clearError, el, statusBadge, when } from "./ui.js";
import { trackCard } from "./track.js";

const JOBS_STORAGE = "musicfn.jobs";
const POLL_MS = 700;
const RETRY_MS = 3000;
const MAX_JOBS = 30;

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

class Jobs {
  constructor(list, empty) {
    this.list = list;
    this.empty = empty;
    this.items = new Map(); // id -> {node, timer}
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
    for (const id of ids) this.add({ id, status: "pending", record: null }, false);
  }

  async submit(body) {
    clearError();
    const rec = await api.createGeneration(body);
    this.add(rec, true);
    return rec;
  }

  add(rec, scroll) {
    if (this.items.has(rec.id)) return;
    const node = el("li", { class: "job card", dataset: { id: rec.id, status: rec.status } });
    this.list.prepend(node);
    this.items.set(rec.id, { node, timer: null });
    this.empty.hidden = true;
    this.save();
    this.render(rec);
    if (scroll) node.scrollIntoView({ block: "nearest" });
    if (rec.status !== "completed" && rec.status !== "failed") this.poll(rec.id);
  }

  poll(id, delay = POLL_MS) {
    const item = this.items.get(id);
    if (!item) return;
    item.timer = setTimeout(async () => {
      try {
        const rec = await api.getGeneration(id);
        this.render(rec);
        if (rec.status !== "completed" && rec.status !== "failed") this.poll(id);
      } catch (err) {
        if (err.status === 404) this.forget(id);
        else {
          this.note(id, err.message);
          this.poll(id, RETRY_MS); // a restart, a blip or a changed key: keep trying
        }
      }
    }, delay);
  }

  forget(id) {
    const item = this.items.get(id);
    if (!item) return;
    clearTimeout(item.timer);
    item.node.remove();
    this.items.delete(id);
    this.empty.hidden = this.items.size > 0;
    this.save();
  }

  note(id, message) {
    const item = this.items.get(id);
    if (item) $(".job-note", item.node).textContent = message;
  }

  render(rec) {
    const item = this.items.get(rec.id);
    if (!item) return;
    const node = item.node;
    const sc = rec.record;
    if (node.dataset.status === "completed" && $(".track", node)) return;
    node.dataset.status = rec.status;
    // The engine reports a fraction while it generates; otherwise the bar is indeterminate.
    const progress = typeof rec.progress === "number" ? rec.progress : null;
    const head = el("header", { class: "job-head" },
      el("strong", { class: "job-prompt" }, sc ? sc.prompt : rec.id),
      statusBadge(rec.status));
    const meta = el("p", { class: "muted small" },
      sc ? `${when(sc.created_at)} · seed ${sc.seed ?? "random"} · ${sc.model || ""}` : "");
    const children = [head, meta];
    if (rec.status === "pending" || rec.status === "processing") {
      children.push(el("progress", { max: 1, value: progress, "aria-label": "progress" }));
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

export function initCreate() {
  const jobs = new Jobs($("#jobs"), $("#jobs-empty"));
  jobs.restore();
  const form = $("#gen-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#generate"), () => jobs.submit(formBody(form)));
  });
  return jobs;
}
