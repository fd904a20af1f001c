// The Analyse view: send a file to POST /v1/analyses (multipart field "file") and show the
// analysis with its waveform; with "store" the normalised copy becomes a catalogue track.

import { api } from "./api.js";
import { $, busy, clearError, el } from "./ui.js";
import { analysisCard, trackCard } from "./track.js";

export function initUpload() {
  const form = $("#upload-form");
  const result = $("#upload-result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#upload-go"), async () => {
      clearError();
      const file = $("#upload-file").files[0];
      if (!file) throw new Error("choose an audio file first");
      const query = { preset: $("#upload-preset").value };
      if ($("#upload-store").checked) query.store = "true";
      result.replaceChildren(el("p", { class: "muted" }, `Analysing ${file.name}…`));
      try {
        const answer = await api.analyse(file, query);
        const title = el("h2", {}, answer.filename);
        const body = answer.track ? trackCard(answer.track, null)
          : analysisCard(answer.analysis, file);
        result.replaceChildren(el("div", { class: "card upload-card" }, title, body));
      } catch (err) {
        result.replaceChildren();
        throw err;
      }
    });
  });
}
