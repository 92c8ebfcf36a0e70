// facecloak serve: the page. Plain JavaScript, no libraries, nothing loaded from anywhere but this server.
// Each photo: POST its bytes to /api/jobs, poll the job, fetch the results into this page (blob: URLs), then
// DELETE the job so the server forgets the photo. Downloads and the zip are made here from those blobs.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const results = [];  // {name, blob} of every protected photo, for the zip
let total = 0, finished = 0;

// Access token (servers bound to a non-loopback address): taken from ?token= once, then kept out of the URL.
const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("facecloak-token", params.get("token"));
  history.replaceState(null, "", location.pathname);
}
const token = sessionStorage.getItem("facecloak-token");

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["X-Facecloak-Token"] = token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

function showPageError(message) {
  const p = $("#page-error");
  p.textContent = message;
  p.hidden = !message;
}

async function loadInfo() {
  try {
    const info = await (await api("/api/info")).json();
    const box = $("#levels");
    for (const [name, level] of Object.entries(info.levels)) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio"; input.name = "level"; input.value = name;
      input.checked = name === info.default_level;
      label.append(input, " ", level.label);
      box.append(label);
    }
    const l = info.limits;
    $("#limits").textContent = `${info.readable}; up to ${Math.round(l.max_upload_bytes / 2 ** 20)} MiB and ` +
      `${Math.round(l.max_pixels / 1e6)} megapixels per photo.`;
  } catch (e) {
    showPageError(`Cannot reach the facecloak server: ${e.message}`);
  }
}

function updateSummary() {
  $("#summary").hidden = total === 0;
  $("#overall").max = Math.max(total, 1);
  $("#overall").value = finished;
  $("#overall-text").textContent = `${finished} of ${total} photos finished`;
  $("#zip").disabled = results.length === 0;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(3));

function renderVerdict(box, faces, notes) {
  box.replaceChildren();
  if (!faces.length) {
    const p = document.createElement("p");
    p.className = "face-summary";
    p.textContent = `No face found. ${notes.join("; ")}`;
    box.append(p);
  }
  for (const face of faces) {
    const p = document.createElement("p");
    p.className = "face-summary " + (face.matched_by > 0 ? "matched" : "unmatched");
    p.textContent = `Face ${face.index + 1}: ${face.summary} (${face.pixels_changed} pixels changed)`;
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>model</th><th>similarity before</th><th>after</th><th>threshold</th>" +
      "<th>still matched?</th></tr></thead>";
    const body = document.createElement("tbody");
    for (const m of face.models) {
      const tr = document.createElement("tr");
      const verdict = m.matched === null ? "no threshold" : (m.matched ? "yes, still matched" : "no");
      for (const text of [m.model, fmt(m.before), fmt(m.after), fmt(m.threshold), verdict]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      tr.lastChild.className = m.matched ? "matched" : "unmatched";
      body.append(tr);
    }
    table.append(body);
    box.append(p, table);
  }
  box.hidden = false;
}

async function protectOne(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  $("#results").prepend(card);
  const stage = (text) => { $(".stage-text", card).textContent = text; };
  const fail = (message) => {
    card.dataset.status = "failed";
    stage("failed");
    const p = $(".error", card);
    p.textContent = message;
    p.hidden = false;
  };
  $(".name", card).textContent = file.name;
  const original = URL.createObjectURL(file);
  $(".original", card).src = original;
  const level = ($("input[name=level]:checked") || {}).value || "";
  const query = new URLSearchParams({ level, output: $("#output").value, name: file.name });
  const started = performance.now();
  let id = null;
  try {
    const job = await (await api(`/api/jobs?${query}`, { method: "POST", body: file })).json();
    id = job.id;
    card.dataset.job = id;
    let state = job;
    while (state.status === "queued" || state.status === "running") {
      card.dataset.status = state.status;
      stage(state.status === "queued" && state.queue_position
        ? `waiting: ${state.queue_position} photo(s) ahead` : state.stage);
      await sleep(400);
      state = await (await api(`/api/jobs/${id}`)).json();
    }
    if (state.status === "failed") throw new Error(state.error);
    stage("fetching the result");
    const image = await (await api(state.urls.image)).blob();
    const heat = state.urls.heatmap ? await (await api(state.urls.heatmap)).blob() : null;
    const url = URL.createObjectURL(image);
    $(".protected", card).src = url;
    if (heat) $(".heatmap", card).src = URL.createObjectURL(heat);
    else $(".heatmap", card).closest("figure").hidden = true;
    $(".views", card).hidden = false;
    renderVerdict($(".verdict", card), state.faces, state.notes);
    const link = $(".download", card);
    link.href = url;
    link.download = state.download_name;
    $(".actions", card).hidden = false;
    results.push({ name: state.download_name, blob: image });
    card.dataset.status = "done";
    card.dataset.seconds = ((performance.now() - started) / 1000).toFixed(2);
    stage(`done in ${card.dataset.seconds} s`);
  } catch (e) {
    fail(e.message);  // the server's messages name the photo already; the card's title does too
  } finally {
    // The page now holds what it needs; the server forgets the photo at once.
    if (id) api(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => {});
    finished += 1;
    updateSummary();
  }
}

function addFiles(files) {
  showPageError("");
  const list = Array.from(files);
  total += list.length;
  updateSummary();
  list.forEach(protectOne);  // the server queues them; one worker holds the models
}

// ---- a minimal zip writer (stored entries: photos are already compressed) --------------------------------
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
async function makeZip(entries) {
  const parts = [], central = [];
  let offset = 0;
  const used = new Set();
  for (const entry of entries) {
    let name = entry.name, n = 1;
    while (used.has(name)) name = entry.name.replace(/(\.[^.]*)?$/, `_${++n}$1`);
    used.add(name);
    const data = new Uint8Array(await entry.blob.arrayBuffer());
    const nameBytes = new TextEncoder().encode(name);
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    [[0, 0x04034b50, 4], [4, 20, 2], [6, 0x0800, 2], [8, 0, 2], [10, 0, 2], [12, 0x21, 2], [14, crc, 4],
     [18, data.length, 4], [22, data.length, 4], [26, nameBytes.length, 2], [28, 0, 2]]
      .forEach(([at, v, size]) => (size === 4 ? local.setUint32(at, v, true) : local.setUint16(at, v, true)));
    const dir = new DataView(new ArrayBuffer(46));
    [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [8, 0x0800, 2], [10, 0, 2], [12, 0, 2], [14, 0x21, 2],
     [16, crc, 4], [20, data.length, 4], [24, data.length, 4], [28, nameBytes.length, 2], [30, 0, 2],
     [32, 0, 2], [34, 0, 2], [36, 0, 2], [38, 0, 4], [42, offset, 4]]
      .forEach(([at, v, size]) => (size === 4 ? dir.setUint32(at, v, true) : dir.setUint16(at, v, true)));
    parts.push(local, nameBytes, data);
    central.push(dir, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const size = central.reduce((s, p) => s + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  [[0, 0x06054b50, 4], [8, entries.length, 2], [10, entries.length, 2], [12, size, 4], [16, offset, 4]]
    .forEach(([at, v, s]) => (s === 4 ? end.setUint32(at, v, true) : end.setUint16(at, v, true)));
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

// ---- wiring ------------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  loadInfo();
  const drop = $("#drop");
  $("#files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles(e.dataTransfer.files); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("#files").click(); });
  $("#zip").addEventListener("click", async () => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await makeZip(results));
    a.download = "facecloak_protected.zip";
    document.body.append(a);
    a.click();
    a.remove();
  });
  $("#clear").addEventListener("click", () => {
    $("#results").replaceChildren();
    results.length = 0; total = 0; finished = 0;
    updateSummary();
  });
});
