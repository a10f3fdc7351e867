"use strict";
// The BiomedCLIP page: search figures by text or image (with server-side filters), view a figure in full;
// classify an image zero-shot over typed labels.

const $ = (id) => document.getElementById(id);
const FILTERS = [["year-min", "year_min"], ["year-max", "year_max"], ["journal", "journal"],
  ["license", "license"], ["split", "split"]];
const state = { image: null, imageUrl: null, opener: null, searched: false };

// Scores that all but coincide mean the model does not tell these figures apart (an untrained or collapsed
// model): say so instead of letting 1.000 and 0.999 read as two near-perfect matches.
const FLAT_SCORE_SPREAD = 0.01;
function flatScoresNote(results) {
  if (results.length < 2) return "";
  const scores = results.map((hit) => hit.score);
  const spread = Math.max(...scores) - Math.min(...scores);
  return spread < FLAT_SCORE_SPREAD
    ? ` · similarities differ by less than ${FLAT_SCORE_SPREAD}: this model barely tells these figures apart`
    : "";
}

// Images far smaller than where they are shown (28 px scans) are scaled up with sharp pixels, not blurred.
function markPixelated(img) {
  const mark = () => img.classList.toggle("pixelated", img.naturalWidth > 0 && img.naturalWidth < 128);
  if (img.complete) mark(); else img.addEventListener("load", mark, { once: true });
}

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

// ---- search -------------------------------------------------------------------------------------------

function filterValues() {
  const values = {};
  for (const [id, name] of FILTERS) {
    const value = $(id).value.trim();
    if (value) values[name] = value;
  }
  return values;
}

function describeFilters(values) {
  const parts = [];
  const [from, to] = [values.year_min, values.year_max];
  if (from && to) parts.push(from === to ? from : `${from}–${to}`);
  else if (from) parts.push(`from ${from}`);
  else if (to) parts.push(`to ${to}`);
  for (const name of ["journal", "license", "split"]) if (values[name]) parts.push(values[name]);
  return parts.join(" · ");
}

function figureTitle(hit) {
  const figure = hit.label || hit.fig_id || `Figure ${hit.id}`;
  if (!hit.parent) return figure;
  return hit.panel_label ? `Panel ${hit.panel_label} of ${figure}` : `A panel of ${figure}`;
}

// A caption with one part (a panel's own subcaption) marked; the whole caption when the part is not in it.
function markedCaption(element, caption, part) {
  element.replaceChildren();
  const text = caption || "(no caption)";
  const at = part ? text.indexOf(part) : -1;
  if (at < 0) {
    element.textContent = text;
    return false;
  }
  const mark = document.createElement("mark");
  mark.className = "subcaption";
  mark.textContent = part;
  element.append(text.slice(0, at), mark, text.slice(at + part.length));
  return true;
}

// A panel's parent figure under the panel, its caption with the panel's subcaption marked.
async function showParent(hit) {
  const section = $("viewer-parent");
  section.hidden = true;
  if (hit.parent_id === null || hit.parent_id === undefined) return;
  try {
    const parent = await callApi(`/figures/${hit.parent_id}`);
    if ($("viewer").dataset.hit !== String(hit.id)) return;  // another figure was opened meanwhile
    $("viewer-parent-title").textContent = `From ${figureTitle(parent)}`;
    $("viewer-parent-image").src = parent.image_url;
    $("viewer-parent-image").alt = `${figureTitle(parent)}, the figure this panel was cut from`;
    markedCaption($("viewer-parent-caption"), parent.caption, hit.subcaption);
    section.hidden = false;
  } catch (_) { /* the parent cannot be shown: the panel alone is */ }
}

function figureCard(hit) {
  const card = document.createElement("article");
  card.className = "figure";
  const open = document.createElement("button");
  open.type = "button";
  open.className = "thumb";
  open.setAttribute("aria-label", `View ${figureTitle(hit)}${hit.journal ? `, ${hit.journal}` : ""} in full`);
  const img = document.createElement("img");
  img.src = hit.image_url;
  markPixelated(img);
  img.alt = "";
  img.loading = "lazy";
  open.append(img);
  open.addEventListener("click", () => openViewer(hit, open));

  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = figureTitle(hit);
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  score.title = "cosine similarity to the query";
  meta.append(title, score);
  const source = document.createElement("p");
  source.className = "source";
  source.textContent = [hit.journal, hit.year].filter(Boolean).join(" · ") || hit.pmcid || "";
  const caption = document.createElement("p");
  caption.className = "caption";
  caption.textContent = hit.caption || "(no caption)";
  body.append(meta, source, caption);
  card.append(open, body);
  return card;
}

async function runSearch() {
  const values = filterValues();
  const k = $("k").value;
  let request;
  let subject;
  if (state.image) {
    const form = new FormData();
    form.append("image", state.image);
    form.append("k", k);
    for (const [name, value] of Object.entries(values)) form.append(name, value);
    request = callApi("/search", { method: "POST", body: form });
    subject = `like ${state.image.name || "your image"}`;
  } else {
    const q = $("query").value.trim();
    if (!q) {
      showMessage("search-message", "Type what to look for, or choose an image.", true);
      $("query").focus();
      return;
    }
    request = callApi(`/search?${new URLSearchParams({ q, k, ...values })}`);
    subject = `for “${q}”`;
  }
  const button = $("search-button");
  button.disabled = true;
  $("results").setAttribute("aria-busy", "true");
  showMessage("search-message", "Searching…");
  try {
    const data = await request;
    $("results").replaceChildren(...data.results.map(figureCard));
    $("examples").hidden = true;
    state.searched = true;
    const filters = describeFilters(values);
    const where = filters ? ` (filters: ${filters})` : "";
    showMessage("search-message", data.results.length
      ? `${data.results.length} figures ${subject}${where}${flatScoresNote(data.results)}`
      : `No figures ${subject}${where}.${filters ? " Try fewer filters." : ""}`);
  } catch (error) {
    $("results").replaceChildren();
    showMessage("search-message", error.message, true);
  } finally {
    button.disabled = false;
    $("results").removeAttribute("aria-busy");
  }
}

function setQueryImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    showMessage("search-message", "That is not an image file.", true);
    return false;
  }
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = file;
  state.imageUrl = URL.createObjectURL(file);
  $("query-thumb").src = state.imageUrl;
  $("query-image-name").textContent = file.name || "image";
  $("query-image").hidden = false;
  $("query").hidden = true;
  return true;
}

function clearQueryImage() {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = state.imageUrl = null;
  $("search-image").value = "";
  $("query-image").hidden = true;
  $("query").hidden = false;
  $("query").focus();
}

function updateFilterSummary() {
  const text = describeFilters(filterValues());
  $("filter-summary").textContent = text ? `(${text})` : "";
}

async function loadFilters() {
  try {
    const facets = await callApi("/filters");
    for (const name of ["journal", "license", "split"]) {
      const select = $(name);
      for (const value of facets[name]) select.append(new Option(value, value));
      select.disabled = facets[name].length === 0;
    }
    for (const id of ["year-min", "year-max"]) {
      if (facets.year_min != null) { $(id).min = facets.year_min; $(id).max = facets.year_max; }
    }
    if (facets.year_min != null) {
      $("year-min").placeholder = facets.year_min;
      $("year-max").placeholder = facets.year_max;
    }
  } catch (_) { /* filters stay empty; searching still works */ }
}

// ---- the full view of one figure ------------------------------------------------------------------------

function fact(list, term, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  list.append(dt, dd);
}

function openViewer(hit, opener) {
  const viewer = $("viewer");
  $("viewer-image").src = hit.image_url;
  markPixelated($("viewer-image"));
  $("viewer-image").alt = `${figureTitle(hit)}: ${(hit.caption || "").slice(0, 200)}`;
  $("viewer-title").textContent = figureTitle(hit);
  markedCaption($("viewer-caption"), hit.caption, hit.subcaption);
  viewer.dataset.hit = String(hit.id);
  showParent(hit);
  const facts = $("viewer-facts");
  facts.replaceChildren();
  let article = hit.pmcid || null;
  if (hit.pmc_url) {
    article = document.createElement("a");
    article.href = hit.pmc_url;
    article.target = "_blank";
    article.rel = "noopener";
    article.textContent = hit.pmcid;
  }
  fact(facts, "Article", article);
  fact(facts, "Journal", hit.journal);
  fact(facts, "Year", hit.year);
  fact(facts, "License", hit.license || "unknown: check the article");
  fact(facts, "Split", hit.split);
  fact(facts, "Similarity", hit.score.toFixed(3));
  const link = $("viewer-article");
  link.hidden = !hit.pmc_url;
  if (hit.pmc_url) link.href = hit.pmc_url;
  $("viewer-full").href = hit.image_url;
  $("viewer-similar").onclick = () => findSimilar(hit);
  state.opener = opener;
  viewer.showModal();
  $("viewer-close").focus();
}

async function findSimilar(hit) {
  try {
    const response = await fetch(hit.image_url);
    if (!response.ok) throw new Error(`${response.status}: the figure's image is unavailable`);
    const blob = await response.blob();
    const file = new File([blob], `${figureTitle(hit)}`, { type: blob.type || "image/jpeg" });
    $("viewer").close();
    if (setQueryImage(file)) await runSearch();
  } catch (error) {
    $("viewer").close();
    showMessage("search-message", error.message, true);
  }
}

// ---- zero-shot classification ---------------------------------------------------------------------------

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

// ---- wiring ---------------------------------------------------------------------------------------------

function acceptDrops(zone, onFile) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFile(event.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); runSearch(); });
  $("image-button").addEventListener("click", () => $("search-image").click());
  $("search-image").addEventListener("change", () => {
    if (setQueryImage($("search-image").files[0])) runSearch();
  });
  $("clear-image").addEventListener("click", clearQueryImage);
  acceptDrops($("search-panel"), (file) => { if (setQueryImage(file)) runSearch(); });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file && !$("viewer").open && setQueryImage(file)) runSearch();
  });
  for (const chip of document.querySelectorAll("#examples .chip")) {
    chip.addEventListener("click", () => { clearQueryImage(); $("query").value = chip.textContent; runSearch(); });
  }
  for (const [id] of FILTERS.concat([["k"]])) {
    $(id).addEventListener("change", () => { updateFilterSummary(); if (state.searched) runSearch(); });
  }
  $("clear-filters").addEventListener("click", () => {
    for (const [id] of FILTERS) $(id).value = "";
    updateFilterSummary();
    if (state.searched) runSearch();
  });
  $("filters").open = window.matchMedia("(min-width: 760px)").matches;
  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
    if (event.key === "/" && !typing && !$("viewer").open) { event.preventDefault(); $("query").focus(); }
  });

  const viewer = $("viewer");
  $("viewer-close").addEventListener("click", () => viewer.close());
  viewer.addEventListener("click", (event) => { if (event.target === viewer) viewer.close(); });
  viewer.addEventListener("close", () => {
    $("viewer-image").removeAttribute("src");
    if (state.opener && state.opener.isConnected) state.opener.focus();
  });

  $("classify-form").addEventListener("submit", classify);
  $("image").addEventListener("change", () => setImage());
  acceptDrops($("drop"), setImage);

  showStatus();
  loadFilters();
});
