// budgetnas dashboard: plain JS over the REST API (no build step, no network beyond this server).
"use strict";

const $ = (sel) => document.querySelector(sel);

// A server with BUDGETNAS_READS_REQUIRE_TOKEN answers reads only with a token: the one typed into
// the header's field, kept in this browser's localStorage and sent on every call.
const TOKEN_KEY = "budgetnas.readToken";

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const token = localStorage.getItem(TOKEN_KEY);
  const headers = { ...(options.headers || {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) throw new Unauthorized(`${path}: HTTP 401`);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function ago(iso) {
  if (!iso) return ["never", "bad"];
  const s = (Date.now() - Date.parse(iso)) / 1000;
  const text = s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
  return [text, s < 120 ? "ok" : "stale"];
}

function spaceLabel(space) {
  const extra = Object.entries(space).filter(([k]) => k !== "space" && k !== "num_classes").map(([k, v]) => `${k}=${v}`);
  return `${space.space}${extra.length ? " (" + extra.join(", ") + ")" : ""}`;
}

async function renderDevices() {
  const { devices } = await api("/v1/devices");
  const body = $("[data-testid=devices] tbody");
  body.replaceChildren(...devices.map((d) => {
    const [when, cls] = ago(d.last_heartbeat);
    const facts = Object.entries(d.facts || {}).slice(0, 4).map(([k, v]) => `${k}: ${v}`).join(" · ");
    return el("tr", { "data-device": d.name }, el("td", {}, d.name), el("td", { class: "muted" }, facts),
      el("td", {}, when), el("td", { class: cls }, cls === "ok" ? "online" : "offline"));
  }));
  if (!devices.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no devices registered")));
}

async function renderLuts() {
  const { luts } = await api("/v1/luts");
  const body = $("[data-testid=luts] tbody");
  body.replaceChildren(...luts.map((l) => {
    const p = l.progress || {};
    const total = (p.queued || 0) + (p.leased || 0) + (p.done || 0) + (p.failed || 0);
    const pct = (100 * (l.coverage || 0)).toFixed(1);
    const bar = el("span", { class: "bar", title: `${p.done || 0}/${total} jobs done` },
      el("span", { style: `width:${total ? (100 * (p.done || 0)) / total : 0}%` }));
    const cal = l.calibration ? `×${l.calibration.slope.toFixed(3)} + ${l.calibration.intercept.toFixed(2)} ms (n=${l.calibration.n_models})` : "—";
    const m = l.meta || {};
    return el("tr", { "data-lut": l.id },
      el("td", {}, l.id), el("td", {}, spaceLabel(m.space || {})), el("td", {}, m.device), el("td", {}, m.backend),
      el("td", {}, m.batch), el("td", {}, m.threads), el("td", {}, l.status),
      el("td", { "data-testid": `coverage-${l.id}` }, `${l.n_measured}/${l.n_keys} (${pct}%)`),
      el("td", {}, total ? bar : el("span", { class: "muted" }, "no jobs"), total ? ` ${p.done || 0}/${total}` : ""),
      el("td", { class: "muted" }, cal));
  }));
  if (!luts.length) body.append(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "no LUTs yet")));
  fillSelect($("#fidelity-lut"), luts.map((l) => [l.id, `#${l.id} ${(l.meta || {}).device || ""} ${(l.meta || {}).backend || ""}`]));
}

function fillSelect(select, options) {
  const current = select.value;
  const values = options.map(([v]) => String(v));
  if (values.join() === [...select.options].map((o) => o.value).join()) return;
  select.replaceChildren(...options.map(([v, label]) => el("option", { value: v }, label)));
  if (values.includes(current)) select.value = current;
}

// ---- tiny SVG scatter --------------------------------------------------------------------
const NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function scatter(target, series, { xLabel, yLabel, diagonal = false, lines = [] }) {
  const W = 420, H = 320, L = 52, R = 12, T = 12, B = 40;
  const pts = series.flatMap((s) => s.points);
  target.replaceChildren();
  if (!pts.length) return;
  let xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (diagonal) { x0 = y0 = Math.min(x0, y0); x1 = y1 = Math.max(x1, y1); }
  const padX = (x1 - x0 || 1) * 0.05, padY = (y1 - y0 || 1) * 0.05;
  x0 -= padX; x1 += padX; y0 -= padY; y1 += padY;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  target.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#d0d4db" }));
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4, yv = y0 + ((y1 - y0) * i) / 4;
    const tx = svg("text", { x: sx(xv), y: H - B + 14, "text-anchor": "middle" }); tx.textContent = xv.toPrecision(3);
    const ty = svg("text", { x: L - 4, y: sy(yv) + 4, "text-anchor": "end" }); ty.textContent = yv.toPrecision(3);
    target.append(tx, ty);
  }
  const xl = svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }); xl.textContent = xLabel;
  const yl = svg("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle" });
  yl.textContent = yLabel;
  target.append(xl, yl);
  if (diagonal) target.append(svg("line", { x1: sx(x0), y1: sy(y0), x2: sx(x1), y2: sy(y1), stroke: "#8a93a3", "stroke-dasharray": "4 3" }));
  for (const x of lines) target.append(svg("line", { x1: sx(x), y1: T, x2: sx(x), y2: H - B, stroke: "#e0a0a0", "stroke-dasharray": "2 3" }));
  for (const s of series) {
    for (const [x, y] of s.points) target.append(svg("circle", { cx: sx(x), cy: sy(y), r: 3.2, fill: s.color, "fill-opacity": 0.75, class: "point" }));
  }
}

async function renderFidelity() {
  const id = $("#fidelity-lut").value;
  const note = $("#fidelity-note");
  if (!id) { note.textContent = "no LUT selected"; $("#fidelity").replaceChildren(); return; }
  let data;
  try { data = await api(`/v1/luts/${id}/validation`); } catch (e) { data = { models: [] }; }
  const models = data.models || [];
  if (!models.length) { note.textContent = "no measured whole models for this LUT yet"; $("#fidelity").replaceChildren(); return; }
  const lut = await api(`/v1/luts/${id}`);
  note.textContent = `${models.length} measured whole models: predicted (${lut.calibration ? "calibrated" : "raw LUT sum, not calibrated"}) vs measured`;
  // corrected_ms: the measurement on the LUT session's scale, what the calibration is fitted to
  const ratio = data.sessions && data.sessions.sessions_corrected ? data.sessions.session_ratio : null;
  if (ratio) note.textContent += ` (measurements divided by the session ratio x${ratio.toFixed(3)})`;
  scatter($("#fidelity"), [{ color: "#2f6fde", points: models.map((m) => [m.corrected_ms ?? m.measured_ms, m.predicted_ms]) }],
    { xLabel: "measured latency (ms)", yLabel: "predicted latency (ms)", diagonal: true });
}

async function renderFrontier() {
  const { checkpoints } = await api("/v1/checkpoints");
  const select = $("#frontier-ckpt");
  fillSelect(select, checkpoints.map((c) => [c.id, c.name]));
  const note = $("#frontier-note");
  const ckpt = checkpoints.find((c) => String(c.id) === select.value);
  if (!ckpt) { note.textContent = "no generator checkpoints yet"; $("#frontier").replaceChildren(); return; }
  const [lo, hi] = (ckpt.meta || {}).budget_range || [];
  if (!(hi > lo)) { note.textContent = "checkpoint has no budget range"; return; }
  const budgets = Array.from({ length: 8 }, (_, i) => lo + ((hi - lo) * (i + 1)) / 8);
  const results = await Promise.all(budgets.map((b) => api("/v1/generate", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ checkpoint: ckpt.id, budget: b, seed: 0 }),  // seeded: a stable frontier
  })));
  note.textContent = `${budgets.length} budgets from ${lo.toFixed(2)} to ${hi.toFixed(2)} ms (dashed lines)`;
  scatter($("#frontier"), [{ color: "#1a7f37", points: results.map((r) => [r.latency_ms, r.accuracy]) }],
    { xLabel: "predicted latency (ms)", yLabel: "predicted accuracy", lines: budgets });
  $("#frontier").dataset.points = JSON.stringify(results.map((r) => [r.latency_ms, r.accuracy]));
}

async function refresh() {
  try {
    const h = await api("/healthz");
    $("#health").textContent = `server ${h.status}, db ${h.db}`;
    $("#health").className = h.status === "ok" ? "ok" : "bad";
  } catch (e) {
    $("#health").textContent = "server unreachable"; $("#health").className = "bad"; return;
  }
  try {
    await Promise.all([renderDevices(), renderLuts()]);
    await Promise.all([renderFidelity(), renderFrontier()]);
  } catch (e) {
    if (!(e instanceof Unauthorized)) throw e;
    const had = localStorage.getItem(TOKEN_KEY);
    $("#health").textContent = had ? "the read token was refused: enter another" : "this server needs a read token";
    $("#health").className = "bad";
    return;
  }
  $("#updated").textContent = new Date().toLocaleTimeString();
  document.body.dataset.loaded = "true";
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("#token").value.trim();
  if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
  $("#token").value = "";
  refresh();
});
$("#fidelity-lut").addEventListener("change", renderFidelity);
$("#frontier-ckpt").addEventListener("change", renderFrontier);
refresh();
setInterval(refresh, 5000);
