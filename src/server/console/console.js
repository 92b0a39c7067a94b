// guardrank reviewer console. Vanilla JS, no dependencies; served from /console/app.js under a
// strict Content-Security-Policy. Text from the server is only ever set with textContent.
"use strict";

const KEY_STORE = "guardrank.admin_key";
const SVG_NS = "http://www.w3.org/2000/svg";
const RULE_FIELDS = ["id", "languages", "cwe", "severity", "message", "patterns", "unless", "examples",
  "target", "mode"];

const ui = {
  view: "queue",
  items: [],
  selected: 0,
  note: "",
  busy: false,
  figuresTimer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function key() {
  return sessionStorage.getItem(KEY_STORE);
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// Calls the API with the stored key; throws ApiError with the problem+json detail.
async function api(method, path, body, withKey) {
  const headers = { "Accept": "application/json" };
  const k = withKey === undefined ? key() : withKey;
  if (k) headers["Authorization"] = "Bearer " + k;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) {
    const detail = data && typeof data === "object" ? (data.detail || data.title) : text;
    throw new ApiError(r.status, `${r.status}: ${detail || r.statusText}`);
  }
  return data;
}

function status(id, text, isError) {
  const e = $(id);
  e.textContent = text || "";
  e.classList.toggle("error", !!isError);
}

// ---- login ----

async function login(candidate) {
  const models = await api("GET", "/admin/models", undefined, candidate);
  sessionStorage.setItem(KEY_STORE, candidate);
  $("model-version").textContent = models.served || models.live || "?";
  $("login").hidden = true;
  $("nav").hidden = false;
  $("whoami").hidden = false;
  if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
  show(ui.view);
}

function logout() {
  sessionStorage.removeItem(KEY_STORE);
  clearInterval(ui.figuresTimer);
  ui.figuresTimer = null;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("nav").hidden = true;
  $("whoami").hidden = true;
  $("login").hidden = false;
  $("admin-key").value = "";
  $("admin-key").focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  const candidate = $("admin-key").value.trim();
  const err = $("login-error");
  err.hidden = true;
  try {
    await login(candidate);
  } catch (e) {
    err.textContent = e.status === 401 || e.status === 403
      ? `Key refused (${e.status}): an admin key is needed.`
      : `Cannot sign in: ${e.message}`;
    err.hidden = false;
  }
}

function show(view) {
  ui.view = view;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== view;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.view === view);
  clearInterval(ui.figuresTimer);
  ui.figuresTimer = null;
  if (view === "queue") loadQueue();
  if (view === "rules") loadRules();
  if (view === "figures") {
    loadFigures();
    ui.figuresTimer = setInterval(loadFigures, 5000);
  }
}

// ---- review queue ----

async function loadQueue() {
  try {
    const data = await api("GET", "/admin/review?status=pending&limit=50");
    ui.items = (data && data.items) || [];
    ui.selected = Math.min(ui.selected, Math.max(0, ui.items.length - 1));
    status("queue-status", ui.items.length ? "" : "Nothing awaits review.");
  } catch (e) {
    ui.items = [];
    status("queue-status", e.status === 404 ? "This server has no review queue (404)." : e.message, true);
  }
  renderQueue();
}

// Splits text into lines of code points (findings count columns in Unicode scalar values).
function codeLines(text) {
  return text.split("\n").map((l) => Array.from(l));
}

// Marks, per line, which findings cover each character (line/column 1-based, end exclusive).
function marks(lines, findings) {
  const m = lines.map((l) => new Array(l.length + 1).fill(null));
  findings.forEach((f, fi) => {
    if (!f || !Number.isInteger(f.line)) return;
    const endLine = Number.isInteger(f.end_line) ? f.end_line : f.line;
    for (let ln = f.line; ln <= endLine && ln <= lines.length; ln++) {
      const row = m[ln - 1];
      if (!row) continue;
      const from = ln === f.line ? Math.max(1, f.column || 1) : 1;
      const to = ln === endLine && Number.isInteger(f.end_column) ? f.end_column : lines[ln - 1].length + 1;
      for (let c = from; c < to && c <= lines[ln - 1].length; c++) {
        row[c - 1] = row[c - 1] === null ? [fi] : row[c - 1].concat(fi);
      }
    }
  });
  return m;
}

function renderCode(text, findings) {
  const pre = el("pre", "code");
  const lines = codeLines(text);
  const m = marks(lines, findings);
  lines.forEach((chars, li) => {
    const line = el("span", "line");
    line.appendChild(el("span", "ln", li + 1));
    let i = 0;
    while (i < chars.length) {
      const key = m[li][i] ? m[li][i].join(",") : "";
      let j = i;
      while (j < chars.length && (m[li][j] ? m[li][j].join(",") : "") === key) j++;
      const run = chars.slice(i, j).join("");
      if (key) {
        const mark = el("mark", "finding", run);
        mark.title = key.split(",").map((x) => findings[Number(x)].rule_id).join(", ");
        line.appendChild(mark);
      } else {
        line.appendChild(document.createTextNode(run));
      }
      i = j;
    }
    line.appendChild(document.createTextNode("\n"));
    pre.appendChild(line);
  });
  return pre;
}

function renderQueue() {
  const list = $("queue-list");
  list.replaceChildren();
  $("queue-count").textContent = ui.items.length ? `(${ui.items.length})` : "";
  ui.items.forEach((it, idx) => {
    const li = el("li", "item" + (idx === ui.selected ? " selected" : ""));
    li.dataset.id = String(it.id);
    li.addEventListener("click", () => select(idx));
    const head = el("div", "item-head");
    head.appendChild(el("span", "user", it.user_id));
    const risk = typeof it.risk === "number" ? it.risk : NaN;
    head.appendChild(el("span", "risk" + (risk >= 0.9 ? " high" : ""), `risk ${isNaN(risk) ? "?" : risk.toFixed(2)}`));
    head.appendChild(el("span", "meta", `${it.request_id || ""} / ${it.candidate_id || ""}`));
    head.appendChild(el("span", "meta", it.created_at || ""));
    li.appendChild(head);
    const findings = Array.isArray(it.findings) ? it.findings : [];
    const fl = el("ul", "findings");
    for (const f of findings) {
      const where = f.line ? ` (line ${f.line}, col ${f.column})` : "";
      const fi = el("li", "sev-" + (f.severity || "none"));
      fi.appendChild(el("code", null, f.rule_id || (typeof f === "string" ? f : "?")));
      fi.appendChild(document.createTextNode(` ${f.cwe || ""} ${f.severity || ""}: ${f.message || ""}${where}`));
      fl.appendChild(fi);
    }
    li.appendChild(fl);
    if (typeof it.text === "string") li.appendChild(renderCode(it.text, findings));
    else li.appendChild(el("p", "meta", "text not retained (retain_text is off)"));
    list.appendChild(li);
  });
}

function select(idx) {
  if (!ui.items.length) return;
  ui.selected = Math.max(0, Math.min(ui.items.length - 1, idx));
  const nodes = $("queue-list").children;
  for (let i = 0; i < nodes.length; i++) nodes[i].classList.toggle("selected", i === ui.selected);
  const node = nodes[ui.selected];
  if (node && node.scrollIntoView) node.scrollIntoView({ block: "nearest" });
}

async function verdict(kind) {
  const it = ui.items[ui.selected];
  if (!it || ui.busy) return;
  ui.busy = true;
  const body = { verdict: kind };
  if (ui.note) body.note = ui.note;
  try {
    await api("POST", `/admin/review/${encodeURIComponent(it.id)}`, body);
    ui.items = ui.items.filter((x) => x.id !== it.id);
    ui.selected = Math.min(ui.selected, Math.max(0, ui.items.length - 1));
    ui.note = "";
    status("queue-status", `Recorded ${kind} for item ${it.id}.`);
    renderQueue();
  } catch (e) {
    status("queue-status", `Verdict not recorded: ${e.message}`, true);
  } finally {
    ui.busy = false;
  }
}

function openNote() {
  $("note-box").hidden = false;
  $("note").value = ui.note;
  $("note").focus();
}

function onNoteKey(ev) {
  if (ev.key === "Enter") {
    ui.note = $("note").value.trim();
    status("queue-status", ui.note ? `Note kept for the next verdict: ${ui.note}` : "");
  } else if (ev.key !== "Escape") {
    return;
  }
  ev.preventDefault();
  $("note-box").hidden = true;
  $("note").blur();
}

function onKey(ev) {
  if (ui.view !== "queue" || $("queue").hidden) return;
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA")) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {
    j: () => select(ui.selected + 1),
    k: () => select(ui.selected - 1),
    i: () => verdict("insecure"),
    s: () => verdict("safe"),
    n: openNote,
    r: loadQueue,
  };
  const act = actions[ev.key];
  if (act) {
    ev.preventDefault();
    act();
  }
}

// ---- rules ----

function ruleList(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.rules)) return data.rules;
  return [];
}

function editable(rule) {
  const out = {};
  for (const f of RULE_FIELDS) if (rule[f] !== undefined && rule[f] !== null) out[f] = rule[f];
  return out;
}

async function loadRules() {
  const body = $("rules-table").tBodies[0];
  try {
    const data = await api("GET", "/admin/rules");
    const rules = ruleList(data);
    const disabled = data && Array.isArray(data.disabled)
      ? data.disabled.map((d) => (d && typeof d === "object" ? d.rule_id || d.id : d)) : [];
    body.replaceChildren();
    for (const r of rules) {
      const tr = el("tr");
      tr.dataset.id = r.id;
      tr.appendChild(el("td", "mono", r.id));
      tr.appendChild(el("td", null, (r.languages || []).join(", ")));
      tr.appendChild(el("td", null, r.severity || ""));
      tr.appendChild(el("td", null, r.mode || "enforce"));
      const by = r.patched_by ? `by ${r.patched_by}` : "";
      const state = [r.source || r.origin, by, r.enabled === false || r.disabled === true ? "disabled" : ""]
        .filter(Boolean).join(" ");
      tr.appendChild(el("td", null, state));
      const td = el("td");
      const edit = el("button", null, "Edit");
      edit.type = "button";
      edit.addEventListener("click", () => editRule(r));
      const off = el("button", "danger", "Disable");
      off.type = "button";
      off.addEventListener("click", () => disableRule(r.id));
      td.append(edit, off);
      tr.appendChild(td);
      body.appendChild(tr);
    }
    const off = disabled.length ? ` Disabled: ${disabled.join(", ")} (save one again to enable it).` : "";
    status("rules-status", `${rules.length} active rules.${off}`);
  } catch (e) {
    status("rules-status", e.status === 404 ? "This server has no rule routes (404)." : e.message, true);
  }
}

function editRule(rule) {
  $("rule-json").value = JSON.stringify(editable(rule), null, 2);
  $("rule-error").hidden = true;
  $("rule-json").focus();
}

function newRule() {
  editRule({
    id: "python.example.new-rule", languages: ["python"], cwe: "CWE-000", severity: "medium",
    message: "what is wrong", patterns: ["dangerous_call\\("], unless: [],
    examples: { insecure: ["dangerous_call(x)"], secure: ["safe_call(x)"] }, mode: "monitor",
  });
}

async function saveRule() {
  const err = $("rule-error");
  err.hidden = true;
  let rule;
  try {
    rule = JSON.parse($("rule-json").value);
  } catch (e) {
    err.textContent = `Not JSON: ${e.message}`;
    err.hidden = false;
    return;
  }
  try {
    await api("POST", "/admin/rules", rule);
    await loadRules();
    status("rules-status", `Saved ${rule.id}.`);
  } catch (e) {
    err.textContent = `Refused: ${e.message}`;
    err.hidden = false;
  }
}

async function disableRule(id) {
  if (!window.confirm(`Disable rule ${id}?`)) return;
  try {
    await api("DELETE", `/admin/rules/${encodeURIComponent(id)}`);
    await loadRules();
    status("rules-status", `Disabled ${id}.`);
  } catch (e) {
    status("rules-status", `Not disabled: ${e.message}`, true);
  }
}

// ---- figures ----

const pct = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)} %` : "–");

// Per-interval values from cumulative samples.
function deltas(samples, f) {
  const out = [];
  for (let i = 1; i < samples.length; i++) out.push(f(samples[i - 1], samples[i]));
  return out;
}

function ratio(a, b) {
  return a + b > 0 ? a / (a + b) : null;
}

// A small SVG sparkline; null values are gaps.
function sparkline(target, values, max) {
  const w = 160, h = 36;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("class", "sparkline");
  const nums = values.filter((v) => typeof v === "number");
  const top = max !== undefined ? max : Math.max(1, ...nums);
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (typeof v !== "number") { pen = false; return; }
    const x = values.length > 1 ? (i * (w - 2)) / (values.length - 1) + 1 : w / 2;
    const y = h - 2 - (Math.min(v, top) / top) * (h - 4);
    d += `${pen ? "L" : "M"}${x.toFixed(1)} ${y.toFixed(1)} `;
    pen = true;
  });
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", d.trim() || `M0 ${h - 2} L${w} ${h - 2}`);
  svg.appendChild(path);
  $(target).replaceChildren(svg);
}

async function loadFigures() {
  try {
    const f = await api("GET", "/admin/figures");
    const s = f.samples.concat([f.totals]);
    $("fig-requests").textContent = String(f.totals.rank_requests);
    $("fig-block-rate").textContent = pct(f.block_rate);
    $("fig-accept-risky").textContent = pct(f.acceptance_rate_risky);
    $("fig-accept-safe").textContent = pct(f.acceptance_rate_safe);
    $("fig-model").textContent = f.model_version;
    $("model-version").textContent = f.model_version;
    $("fig-users").textContent = `${f.users} users with a learned policy`;
    sparkline("spark-requests", deltas(s, (a, b) => b.rank_requests - a.rank_requests));
    sparkline("spark-block", deltas(s, (a, b) => ratio(b.blocked - a.blocked,
      (b.candidates - a.candidates) - (b.blocked - a.blocked))), 1);
    sparkline("spark-accept-risky", deltas(s, (a, b) => ratio(b.accepted_risky - a.accepted_risky,
      b.rejected_risky - a.rejected_risky)), 1);
    sparkline("spark-accept-safe", deltas(s, (a, b) => ratio(b.accepted_safe - a.accepted_safe,
      b.rejected_safe - a.rejected_safe)), 1);
    const body = $("movers").tBodies[0];
    body.replaceChildren();
    for (const m of f.temperature_movers) {
      const tr = el("tr");
      tr.append(el("td", "mono", m.user_id), el("td", null, m.temperature.toFixed(2)),
        el("td", null, m.change.toFixed(2)), el("td", null, m.at));
      body.appendChild(tr);
    }
    status("figures-status", f.temperature_movers.length ? "" : "No user's temperature has moved yet.");
  } catch (e) {
    status("figures-status", e.message, true);
    if (e.status === 401) logout();
  }
}

// ---- start ----

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", logout);
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => show(t.dataset.view));
  $("rule-new").addEventListener("click", newRule);
  $("rules-reload").addEventListener("click", loadRules);
  $("rule-save").addEventListener("click", saveRule);
  $("note").addEventListener("keydown", onNoteKey);
  document.addEventListener("keydown", onKey);
  const k = key();
  if (k) login(k).catch(() => logout());
  else $("admin-key").focus();
  document.documentElement.dataset.console = "ready";
});
