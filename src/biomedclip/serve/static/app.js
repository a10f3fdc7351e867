"use strict";
// The BiomedCLIP page: text search -> grid of figures; image + labels -> zero-shot bar chart.

const $ = (id) => document.getElementById(id);

function showMessage(id, text, isError = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function callApi(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function figureCard(hit) {
  const card = document.createElement("article");
  card.className = "figure";
  const img = document.createElement("img");
  img.src = hit.image_url;
  img.alt = hit.label ? `${hit.label} (${hit.pmcid})` : `figure ${hit.id}`;
  img.loading = "lazy";
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  const link = document.createElement(hit.pmc_url ? "a" : "span");
  if (hit.pmc_url) { link.href = hit.pmc_url; link.target = "_blank"; link.rel = "noopener"; }
  link.textContent = [hit.pmcid, hit.label || hit.fig_id].filter(Boolean).join(" · ") || `figure ${hit.id}`;
  const score = document.createElement("span");
  score.textContent = hit.score.toFixed(3);
  score.title = "cosine similarity";
  meta.append(link, score);
  const caption = document.createElement("p");
  caption.className = "caption";
  caption.textContent = hit.caption || "(no caption)";
  caption.title = "click to expand";
  caption.addEventListener("click", () => caption.classList.toggle("open"));
  body.append(meta, caption);
  if (hit.license) {
    const license = document.createElement("span");
    license.className = "license";
    license.textContent = `license: ${hit.license}`;
    body.append(license);
  }
  card.append(img, body);
  return card;
}

async function search(event) {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  const button = event.submitter || $("search-form").querySelector("button");
  button.disabled = true;
  showMessage("search-message", "Searching…");
  try {
    const params = new URLSearchParams({ q, k: $("k").value });
    const data = await callApi(`/search?${params}`);
    $("results").replaceChildren(...data.results.map(figureCard));
    showMessage("search-message", `${data.results.length} figures for “${data.query}”`);
  } catch (error) {
    $("results").replaceChildren();
    showMessage("search-message", error.message, true);
  } finally {
    button.disabled = false;
  }
}

function setImage(file) {
  const input = $("image");
  if (file && input.files[0] !== file) {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
  }
  const chosen = input.files[0];
  if (!chosen) return;
  const preview = $("preview");
  preview.src = URL.createObjectURL(chosen);
  preview.hidden = false;
  $("drop-text").textContent = chosen.name;
}

function drawChart(data) {
  const rows = data.ranking.map(({ label, probability }) => {
    const row = document.createElement("div");
    row.className = "bar-row";
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    name.title = label;
    const track = document.createElement("div");
    track.className = "bar-track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(probability * 100).toFixed(1)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(probability * 100).toFixed(1)}%`;
    row.append(name, track, value);
    return row;
  });
  $("chart").replaceChildren(...rows);
}

async function classify(event) {
  event.preventDefault();
  const file = $("image").files[0];
  if (!file) { showMessage("classify-message", "Choose or drop an image first.", true); return; }
  const form = new FormData();
  form.append("image", file);
  form.append("labels", $("labels").value);
  const button = event.submitter || $("classify-form").querySelector("button");
  button.disabled = true;
  showMessage("classify-message", "Classifying…");
  try {
    const data = await callApi("/classify", { method: "POST", body: form });
    drawChart(data);
    showMessage("classify-message", `Most likely: ${data.ranking[0].label}`);
  } catch (error) {
    $("chart").replaceChildren();
    showMessage("classify-message", error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function showStatus() {
  try {
    const health = await callApi("/healthz");
    $("status").textContent = `model ${health.model} · ${health.figures.toLocaleString()} figures indexed`;
  } catch (error) {
    $("status").textContent = `service unavailable (${error.message})`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", search);
  $("classify-form").addEventListener("submit", classify);
  $("image").addEventListener("change", () => setImage());
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) setImage(event.dataTransfer.files[0]);
  });
  showStatus();
});
