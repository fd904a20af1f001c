// Small DOM and formatting helpers shared by the page's views.

export function $(selector, root = document) {
  return root.querySelector(selector);
}

// el("li", {class: "x", dataset: {id: 1}}, "text", child) — text children are never parsed
// as HTML, so prompts and API messages cannot inject markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// The page's one error banner: the API's message, its code beside it.
export function showError(err) {
  const box = $("#error");
  $("#error-text").textContent = err && err.message ? err.message : String(err);
  $("#error-code").textContent = err && err.code ? err.code : "";
  box.hidden = false;
  if (err && err.status === 401) $("#key-box").open = true;
}

export function clearError() {
  $("#error").hidden = true;
  $("#error-text").textContent = "";
  $("#error-code").textContent = "";
}

export function fixed(value, digits, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits) + unit;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Number(seconds);
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.round(s - 60 * m)).padStart(2, "0")}`;
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function statusBadge(status) {
  return el("span", { class: `badge ${status}` }, status);
}

// Disable a button while an async action runs; errors go to the banner.
export async function busy(button, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}
