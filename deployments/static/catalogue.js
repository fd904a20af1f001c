// The Catalogue view: GET /v1/generations with its filters, newest first, paged with the
// opaque next_cursor. A row opens into the full track card (record + waveform).

import { api } from "./api.js";
import { $, busy, clearError, duration, el, fixed, statusBadge, when } from "./ui.js";
import { trackCard } from "./track.js";

// <input type=date> gives a local calendar day; the API wants UTC instants, and created_to
// is exclusive: "to 2026-11-22" means before the start of the 23rd.
function dayStart(value, plusDays = 0) {
  if (!value) return undefined;
  const d = new Date(value + "T00:00:00");
  d.setDate(d.getDate() + plusDays);
  return d.toISOString();
}

export function filterQuery(form) {
  const data = new FormData(form);
  const text = (name) => String(data.get(name) || "").trim() || undefined;
  return {
    prompt: text("prompt"),
    status: text("status"),
    bpm_min: text("bpm_min"),
    bpm_max: text("bpm_max"),
    key: text("key"),
    mode: text("mode"),
    created_from: dayStart(text("created_from")),
    created_to: dayStart(text("created_to"), 1),
    limit: text("limit"),
  };
}

function row(sc, submit) {
  const s = sc.summary || {};
  const open = el("button", { type: "button", class: "link open", "aria-expanded": "false" },
    sc.prompt || (sc.source ? sc.source.key : sc.id));
  const node = el("li", { class: "cat-row card", dataset: { id: sc.id, status: sc.status } },
    el("div", { class: "cat-head" }, open, statusBadge(sc.status)),
    el("p", { class: "muted small" }, [
      when(sc.created_at),
      s.bpm ? `${fixed(s.bpm, 0)} BPM` : null,
      s.key ? `${s.key} ${s.mode || ""}`.trim() : null,
      s.lufs !== null && s.lufs !== undefined ? fixed(s.lufs, 1, " LUFS") : null,
      sc.audio ? duration(sc.audio.duration_s) : null,
      sc.engine,
    ].filter(Boolean).join(" · ")));
  if (sc.status === "failed" && sc.error) {
    node.append(el("p", { class: "job-error" }, sc.error.message));
  }
  open.addEventListener("click", () => busy(open, async () => {
    const shown = $(".track", node);
    if (shown) {
      shown.remove();
      open.setAttribute("aria-expanded", "false");
      return;
    }
    if (sc.status !== "completed") return;
    node.append(trackCard(await api.getGeneration(sc.id), submit));
    open.setAttribute("aria-expanded", "true");
  }));
  return node;
}

export function initCatalogue(submit) {
  const form = $("#filter-form");
  const list = $("#catalogue");
  const summary = $("#cat-summary");
  const next = $("#cat-next");
  const first = $("#cat-first");
  let query = {};
  let cursor = null;
  let page = 1;

  async function load(newQuery, pageCursor, pageNumber) {
    clearError();
    next.disabled = first.disabled = true;
    try {
      const result = await api.listGenerations({ ...newQuery, cursor: pageCursor || undefined });
      query = newQuery;
      cursor = result.next_cursor;
      page = pageNumber;
      list.replaceChildren(...result.items.map((sc) => row(sc, submit)));
      const n = result.items.length;
      summary.textContent = n ? `Page ${page}: ${n} track${n === 1 ? "" : "s"}`
        : "No tracks match.";
    } finally {
      next.disabled = !cursor;
      first.disabled = page === 1;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#f-apply"), () => load(filterQuery(form), null, 1));
  });
  form.addEventListener("reset", () => {
    setTimeout(() => busy(null, () => load(filterQuery(form), null, 1)));
  });
  next.addEventListener("click", () => busy(null, () => load(query, cursor, page + 1)));
  first.addEventListener("click", () => busy(null, () => load(query, null, 1)));
  return { refresh: () => busy(null, () => load(filterQuery(form), null, 1)) };
}
