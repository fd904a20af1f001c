// One finished track: waveform, player, analysis figures, download and re-run buttons.
// Used for jobs, catalogue rows and stored uploads; plain analyses of an upload use the
// same card without the buttons.

import { api, audioBlob, bodyFromRecord, randomSeed } from "./api.js";
import { $, busy, duration, el, fixed } from "./ui.js";
import { Waveform } from "./waveform.js";

function card() {
  return $("#track-template").content.firstElementChild.cloneNode(true);
}

function fillFacts(dl, facts) {
  dl.replaceChildren();
  for (const [label, value] of facts) {
    dl.append(el("div", { class: "fact" }, el("dt", {}, label), el("dd", {}, value)));
  }
}

function keyLabel(key, mode) {
  return key ? `${key}${mode ? " " + mode : ""}` : "–";
}

function slug(text) {
  const s = String(text || "track").toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return s.replace(/^-+|-+$/g, "").slice(0, 40) || "track";
}

// The player plays the presigned URL; if the browser cannot reach the bucket directly, it
// falls back to the bytes through the ingress (with the API key) as a blob URL.
function attachAudio(audio, rec) {
  let fellBack = false;
  const fallback = async () => {
    if (fellBack) return;
    fellBack = true;
    try {
      audio.src = URL.createObjectURL(await audioBlob(rec.id));
    } catch (err) {
      audio.replaceWith(el("p", { class: "muted" }, "audio unavailable: " + err.message));
    }
  };
  audio.addEventListener("error", fallback);
  if (rec.audio_url) audio.src = rec.audio_url;
  else fallback();
}

async function download(rec) {
  const blob = await audioBlob(rec.id);
  const ext = ((rec.record.audio && rec.record.audio.format) || "wav").toLowerCase();
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: `${slug(rec.record.prompt)}-${rec.id}.${ext}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// A completed GenerationRecord. `submit(body)` starts a new job (the Create view's).
export function trackCard(rec, submit) {
  const node = card();
  const sc = rec.record;
  const s = sc.summary || {};
  const audio = sc.audio || {};
  node.dataset.id = rec.id;
  fillFacts($(".facts", node), [
    ["BPM", fixed(s.bpm, 1)],
    ["Key", keyLabel(s.key, s.mode)],
    ["Loudness", fixed(s.lufs, 1, " LUFS")],
    ["True peak", fixed(s.true_peak_dbtp, 1, " dBTP")],
    ["Duration", duration(audio.duration_s)],
    ["Seed", sc.seed === null || sc.seed === undefined ? "–" : String(sc.seed)],
    ["Engine", [...new Set([sc.engine, sc.model].filter(Boolean))].join(" · ") || "–"],
    ["Format", audio.format ? `${audio.format} ${audio.sample_rate / 1000} kHz` : "–"],
  ]);
  const player = $(".player", node);
  attachAudio(player, rec);
  const canvas = $(".wave", node);
  api.waveform(rec.id).then((peaks) => {
    new Waveform(canvas, peaks).follow(player);
    canvas.dataset.drawn = "1";
  }).catch((err) => {
    canvas.replaceWith(el("p", { class: "muted" }, "no waveform: " + err.message));
  });
  const dl = $(".download", node);
  dl.addEventListener("click", () => busy(dl, () => download(rec)));
  const again = $(".again", node);
  const vary = $(".vary", node);
  if (sc.kind !== "generation" || !submit) {
    again.remove();
    vary.remove();
  } else {
    again.addEventListener("click", () => busy(again, () => submit(bodyFromRecord(sc, sc.seed))));
    vary.addEventListener("click", () => busy(vary, () => submit(bodyFromRecord(sc, randomSeed()))));
  }
  return node;
}

// An analysis of an upload that was not stored: the local file plays in the player.
export function analysisCard(analysis, file) {
  const node = card();
  fillFacts($(".facts", node), [
    ["BPM", analysis.tempo ? fixed(analysis.tempo.bpm, 1) : "–"],
    ["Key", analysis.key ? analysis.key.label : "–"],
    ["Loudness", fixed(analysis.integrated_lufs, 1, " LUFS")],
    ["Peak", fixed(analysis.peak_dbfs, 1, " dBFS")],
    ["Duration", duration(analysis.duration_s)],
    ["Format", `${analysis.channels} ch · ${analysis.sample_rate / 1000} kHz`],
  ]);
  const player = $(".player", node);
  player.src = URL.createObjectURL(file);
  const canvas = $(".wave", node);
  requestAnimationFrame(() => {
    new Waveform(canvas, analysis.waveform).follow(player);
    canvas.dataset.drawn = "1";
  });
  $(".actions", node).remove();
  return node;
}
