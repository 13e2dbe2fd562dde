// The token-reward inspector (services/reward/inspector). Model text is only ever written with
// textContent: a prediction holding HTML or script renders as text.
"use strict";

const PAGE_SIZE = 50;
const CHUNK = 256; // samples per /v1/token-rewards request
const state = { results: [], page: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function kindOf(r) {
  if (r.status === "unscored") return "unscored";
  return r.correct ? "correct" : "wrong";
}

function say(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

// --- loading ------------------------------------------------------------------------------

function headers() {
  const key = $("key").value.trim();
  sessionStorage.setItem("rlmec-key", key);
  const h = { "Content-Type": "application/json" };
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const e = data.error || {};
    throw new Error(`${response.status} ${e.type || ""}: ${e.message || response.statusText}`);
  }
  return data;
}

function parseLines(text, what) {
  const rows = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      rows.push(JSON.parse(line));
    } catch (err) {
      throw new Error(`${what} line ${i + 1}: not valid JSON (${err.message})`);
    }
  });
  if (!rows.length) throw new Error(`${what}: no line to read; write one JSON object per line`);
  return rows;
}

async function scoreSamples() {
  const samples = parseLines($("samples").value, "samples");
  const params = { edit_penalty: $("edit-penalty").checked };
  const results = [];
  for (let i = 0; i < samples.length; i += CHUNK) {
    say(`scoring ${i + 1}-${Math.min(i + CHUNK, samples.length)} of ${samples.length} ...`);
    const body = await call("POST", "/v1/token-rewards", { samples: samples.slice(i, i + CHUNK), params });
    results.push(...body.results);
  }
  return results;
}

async function openBatch() {
  const id = $("batch").value.trim();
  if (!id) throw new Error("type a batch id (the one /v1/rollouts returned)");
  say(`opening batch ${id} ...`);
  const batch = await call("GET", `/v1/rollouts/${encodeURIComponent(id)}/result`);
  return batch.results;
}

async function readFile() {
  const file = $("file").files[0];
  const rows = parseLines(await file.text(), file.name);
  return rows.flatMap((r) => (Array.isArray(r.results) ? r.results : [r])); // a ScoredBatch or results
}

async function load(loader) {
  try {
    const results = await loader();
    state.results = results;
    state.page = 0;
    fillReasons();
    render();
    say(`${results.length} results loaded`);
  } catch (err) {
    say(String(err.message || err), true);
  }
}

// --- filters and pages --------------------------------------------------------------------

function fillReasons() {
  const select = $("reason");
  const reasons = [...new Set(state.results.map((r) => r.reason).filter(Boolean))].sort();
  select.replaceChildren(el("option", null, "any"));
  select.firstChild.value = "";
  for (const reason of reasons) {
    const option = el("option", null, reason);
    option.value = reason;
    select.append(option);
  }
}

function shown() {
  const kinds = new Set([...document.querySelectorAll(".kind:checked")].map((c) => c.value));
  const reason = $("reason").value;
  return state.results.filter((r) => kinds.has(kindOf(r)) && (!reason || r.reason === reason));
}

function render() {
  $("view").hidden = false;
  for (const kind of ["wrong", "correct", "unscored"]) {
    $(`n-${kind}`).textContent = `(${state.results.filter((r) => kindOf(r) === kind).length})`;
  }
  const rows = shown();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  $("page").textContent = `page ${state.page + 1} of ${pages} (${rows.length} shown)`;
  const start = state.page * PAGE_SIZE;
  $("results").replaceChildren(...rows.slice(start, start + PAGE_SIZE).map(card));
}

// --- one result ---------------------------------------------------------------------------

function shade(value, floor, cap) {
  if (value < 0) return `rgba(220, 38, 38, ${0.25 + 0.75 * Math.min(1, floor < 0 ? value / floor : 1)})`;
  if (value > 0) return `rgba(46, 160, 67, ${0.15 + 0.6 * Math.min(1, cap > 0 ? value / cap : 1)})`;
  return "";
}

// The text with one span per token (characters between tokens as plain text); EOS, which has
// no characters, as a chip.
function tokenLine(text, values, style) {
  const line = el("div", "tokens");
  let cursor = 0;
  values.offsets.forEach(([start, end], i) => {
    const value = values.values[i];
    if (end <= start) {
      const eos = el("span", "tok eos", "EOS");
      style(eos, value);
      line.append(eos);
      return;
    }
    if (start > cursor) line.append(document.createTextNode(text.slice(cursor, start)));
    const piece = text.slice(Math.max(start, cursor), end);
    const span = el("span", "tok", piece);
    style(span, value);
    line.append(span);
    cursor = Math.max(cursor, end);
  });
  if (cursor < text.length) line.append(document.createTextNode(text.slice(cursor)));
  return line;
}

function rewardStyle(floor, cap) {
  return (span, value) => {
    span.dataset.value = String(value);
    span.title = `${JSON.stringify(span.textContent)}: ${value.toFixed(3)}`;
    const colour = shade(value, floor, cap);
    if (colour) span.style.backgroundColor = colour;
  };
}

function weightStyle(span, value) {
  span.dataset.weight = String(value);
  span.title = `${JSON.stringify(span.textContent)}: imitation weight ${value}`;
  span.classList.add(value >= 1 ? "edited" : "kept");
}

// Word-level diff (longest common subsequence) of one step.
function wordDiff(a, b) {
  const x = a.match(/\s+|\S+/g) || [];
  const y = b.match(/\s+|\S+/g) || [];
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(["same", x[i]]); i++; j++; }
    else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) { out.push(["del", x[i]]); i++; }
    else { out.push(["ins", y[j]]); j++; }
  }
  return out;
}

function diffBlock(prediction, rewrite, located) {
  const block = el("div", "diff");
  const old = prediction.split("\n"), fresh = rewrite.split("\n");
  for (let k = 0; k < Math.max(old.length, fresh.length); k++) {
    const line = el("div", k === located ? "line located" : "line");
    line.append(el("span", "step", k === located ? "\u25b6 " : "  "));
    for (const [op, word] of wordDiff(old[k] || "", fresh[k] || "")) {
      line.append(op === "same" ? document.createTextNode(word) : el("span", op, word));
    }
    block.append(line);
  }
  return block;
}

function card(r) {
  const kind = kindOf(r);
  const box = el("article", `card ${kind}`);
  box.dataset.id = r.id ?? "";
  const where = r.located_step === null || r.located_step === undefined ? "" : `, located step ${r.located_step}`;
  box.append(el("h3", null, `${kind} \u00b7 ${r.id ?? "(no id)"} \u00b7 answer ${JSON.stringify(r.predicted_answer)}, reference ${JSON.stringify(r.reference_answer)}${where}`));
  box.append(el("div", "question", r.question));
  const params = r.params || {};
  box.append(el("div", "label", "prediction"));
  if (r.rewards) {
    const line = tokenLine(r.prediction, r.rewards, rewardStyle(params.floor ?? -0.1, params.cap ?? 0.5));
    line.classList.add("prediction");
    box.append(line);
  } else {
    box.append(el("div", "tokens prediction", r.prediction));
  }
  if (r.status === "unscored") {
    box.append(el("div", "reason", `unscored: ${r.reason}`), el("div", "message", r.message || ""));
  }
  if (r.rewrite && kind !== "correct") {
    box.append(el("div", "label", "GRM rewrite, against the prediction"));
    box.append(diffBlock(r.prediction, r.rewrite, r.located_step));
  }
  if (r.imitation_weights && kind === "wrong") {
    box.append(el("div", "label", "imitation weights on the rewrite (1.0: edited, 0.5: kept)"));
    const line = tokenLine(r.regular_sequence || r.rewrite || "", r.imitation_weights, weightStyle);
    line.classList.add("weights");
    box.append(line);
  }
  return box;
}

// --- wiring -------------------------------------------------------------------------------

$("key").value = sessionStorage.getItem("rlmec-key") || "";
$("score").addEventListener("click", () => load(scoreSamples));
$("open").addEventListener("click", () => load(openBatch));
$("file").addEventListener("change", () => load(readFile));
document.querySelectorAll(".kind").forEach((c) => c.addEventListener("change", () => { state.page = 0; render(); }));
$("reason").addEventListener("change", () => { state.page = 0; render(); });
$("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); render(); });
$("next").addEventListener("click", () => { state.page += 1; render(); });
