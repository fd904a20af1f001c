// musicfn's page: wires the views together (API key, health, tabs, create, catalogue,
// analyse). No framework and no build step: ES modules served as they are.

import { api, apiKey, setApiKey } from "./api.js";
import { initCatalogue } from "./catalogue.js";
import { initCreate, showModels } from "./create.js";
import { $, clearError } from "./ui.js";
import { initUpload } from "./upload.js";

function initKey(onChange) {
  const input = $("#api-key");
  const summary = $("#key-summary");
  const show = () => {
    summary.textContent = apiKey() ? "API key ✓" : "API key";
  };
  input.value = apiKey();
  show();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    show();
    clearError();
    $("#key-box").open = false;
    onChange();
  });
  $("#key-forget").addEventListener("click", () => {
    setApiKey("");
    input.value = "";
    show();
  });
}

async function showHealth() {
  const badge = $("#health");
  try {
    const h = await api.health();
    const engine = h.engine && h.engine.ok ? h.engine : null;
    badge.textContent = h.ok ? "ready" : "degraded";
    badge.className = "health " + (h.ok ? "ok" : "down");
    const down = ["s3", "catalogue", "engine"].filter((k) => h[k] && !h[k].ok);
    badge.title = h.ok
      ? (h.version ? `musicfn ${h.version}` : "musicfn") +
        (engine && engine.model ? ` · ${engine.model}` : "")
      : `down: ${down.join(", ")}`;
  } catch {
    badge.textContent = "offline";
    badge.className = "health down";
  }
}

function initTabs(onShow) {
  const tabs = [...document.querySelectorAll("[data-tab]")];
  const select = (name) => {
    for (const tab of tabs) {
      const on = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", String(on));
      $(`#tab-${tab.dataset.tab}`).hidden = !on;
    }
    onShow(name);
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      history.replaceState(null, "", "#" + tab.dataset.tab);
      select(tab.dataset.tab);
    });
  }
  const initial = location.hash.slice(1);
  select(tabs.some((t) => t.dataset.tab === initial) ? initial : "create");
  return (name) => {
    history.replaceState(null, "", "#" + name);
    select(name);
  };
}

function init() {
  $("#error-close").addEventListener("click", clearError);
  const jobs = initCreate();
  let showTab = () => {};
  // "Again" / "Vary" from a catalogue row: the new job appears in the Create view.
  const catalogue = initCatalogue(async (body) => {
    const rec = await jobs.submit(body);
    showTab("create");
    return rec;
  });
  initUpload();
  let catalogueLoaded = false;
  showTab = initTabs((name) => {
    if (name === "catalogue" && !catalogueLoaded) {
      catalogueLoaded = true;
      catalogue.refresh();
    }
  });
  // A key entered after a 401: show what the catalogue holds now.
  initKey(() => {
    showModels();
    if (catalogueLoaded) catalogue.refresh();
  });
  showHealth();
  setInterval(showHealth, 30_000);
  document.body.dataset.ready = "1";
}

init();
