// sharq's dashboard: one page, no library. It draws what /api/v1/live pushes (a snapshot a
// second and group events as they happen) and swaps strategies through the admin API.
"use strict";

const HISTORY = 300; // samples kept per group for the charts: five minutes at one a second
const ROWS = 200; // table rows drawn at most; search narrows the rest

const state = {
  snapshot: null,
  selected: null, // "group\u0000filter"
  history: new Map(), // key -> [{t, queued, lag}]
  token: "",
  source: null,
};

const $ = (id) => document.getElementById(id);
const key = (g) => g.group + "\u0000" + g.filter;
const fmt = (n) => (n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : String(Math.round(n * 10) / 10));
const text = (el, value) => { el.textContent = value; return el; };
const make = (tag, cls, value) => { const el = document.createElement(tag); if (cls) el.className = cls; if (value !== undefined) el.textContent = value; return el; };

function readToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    state.token = decodeURIComponent(match[1]);
    sessionStorage.setItem("sharq-token", state.token);
    history.replaceState(null, "", location.pathname);
  } else {
    state.token = sessionStorage.getItem("sharq-token") || "";
  }
  $("s-token").value = state.token;
}

function connect() {
  if (state.source) state.source.close();
  const params = new URLSearchParams();
  if (state.selected) params.set("watch", state.selected.split("\u0000")[0]);
  if (state.token) params.set("token", state.token);
  const source = new EventSource("/api/v1/live?" + params.toString());
  state.source = source;
  source.addEventListener("open", () => text($("status"), "live").className = "status live");
  source.addEventListener("error", () => text($("status"), "reconnecting…").className = "status down");
  source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("events", (e) => JSON.parse(e.data).forEach(addEvent));
  source.addEventListener("event", (e) => addEvent(JSON.parse(e.data)));
  source.addEventListener("missed", (e) => addEvent({ at_ms: Date.now(), kind: "missed", group: "", filter: "", detail: e.data + " events" }));
}

function onSnapshot(snapshot) {
  state.snapshot = snapshot;
  const seen = new Set();
  for (const g of snapshot.groups) {
    const k = key(g);
    seen.add(k);
    let h = state.history.get(k);
    if (!h) state.history.set(k, (h = []));
    h.push({ t: snapshot.at_ms, queued: g.queued, lag: g.lag_seconds });
    if (h.length > HISTORY) h.shift();
  }
  for (const k of state.history.keys()) if (!seen.has(k)) state.history.delete(k);
  const b = snapshot.broker;
  text($("totals"), `v${b.version} · ${b.sessions_online} online / ${b.sessions_offline} offline · in ${fmt(b.received_rate)}/s · out ${fmt(b.sent_rate)}/s · dropped ${fmt(b.dropped)} · ${snapshot.groups.length} groups`);
  const list = $("builtins");
  if (!list.children.length) b.strategies.forEach((name) => list.appendChild(Object.assign(make("option"), { value: name })));
  drawTable();
  drawDetail();
}

function sorted(groups) {
  const by = $("sort").value;
  const q = $("search").value.trim().toLowerCase();
  const shown = q ? groups.filter((g) => g.group.toLowerCase().includes(q) || g.filter.toLowerCase().includes(q)) : groups.slice();
  const num = { rate: (g) => g.rate, queued: (g) => g.queued, lag: (g) => g.lag_seconds, dropped: (g) => g.dropped };
  if (by === "name") shown.sort((a, b) => a.group.localeCompare(b.group) || a.filter.localeCompare(b.filter));
  else shown.sort((a, b) => num[by](b) - num[by](a) || a.group.localeCompare(b.group));
  return shown;
}

function drawTable() {
  const groups = state.snapshot ? state.snapshot.groups : [];
  const shown = sorted(groups);
  text($("count"), shown.length > ROWS ? `top ${ROWS} of ${shown.length}` : `${shown.length} of ${groups.length}`);
  const body = document.createElement("tbody");
  for (const g of shown.slice(0, ROWS)) {
    const row = make("tr");
    row.dataset.key = key(g);
    if (key(g) === state.selected) row.className = "selected";
    const cells = [g.group, g.filter, g.strategy + (g.pinned ? " (pinned)" : ""), `${g.members_online}/${g.members_online + g.members_offline}`, fmt(g.rate), fmt(g.queued), g.lag_seconds.toFixed(1) + "s", fmt(g.dropped), fmt(g.failures)];
    cells.forEach((c) => row.appendChild(make("td", null, c)));
    row.addEventListener("click", () => select(key(g)));
    body.appendChild(row);
  }
  $("groups").replaceChild(body, $("groups").tBodies[0]);
}

function select(k) {
  const reconnect = !state.selected || state.selected.split("\u0000")[0] !== k.split("\u0000")[0];
  state.selected = k;
  $("s-result").textContent = "";
  if (reconnect) connect();
  drawTable();
  drawDetail();
}

function drawDetail() {
  const g = state.snapshot && state.snapshot.groups.find((x) => key(x) === state.selected);
  $("detail").hidden = !g;
  if (!g) return;
  text($("d-name"), g.group);
  text($("d-filter"), g.filter + (g.declared ? " · declared" : ""));
  const settings = Object.entries(g.settings || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  text($("d-strategy"), `strategy ${g.strategy} (${g.strategy_version})${g.strategy_overridden ? " · set through the API" : ""}${g.pinned ? " · pinned to the fallback" : ""} · in flight ${g.in_flight} · acked ${fmt(g.acked)}${g.dead_lettered ? " · dead-lettered " + fmt(g.dead_lettered) : ""}${settings ? " · " + settings : ""}`);
  text($("d-rate"), `${fmt(g.rate)} msg/s in all`);
  const bars = $("d-members");
  bars.replaceChildren();
  const members = g.members || [];
  const total = members.reduce((sum, m) => sum + m.rate, 0);
  for (const m of members) {
    const share = total > 0 ? m.rate / total : 0;
    const bar = make("div", "bar" + (m.online ? "" : " offline"));
    bar.dataset.client = m.client_id;
    bar.dataset.share = share.toFixed(4);
    bar.appendChild(make("span", "label", m.client_id));
    const track = make("span", "track");
    const fill = make("span", "fill");
    fill.style.width = (share * 100).toFixed(1) + "%";
    track.appendChild(fill);
    bar.appendChild(track);
    bar.appendChild(make("span", "value", `${(share * 100).toFixed(0)}% · ${fmt(m.rate)}/s · ${fmt(m.dispatched)} total`));
    bars.appendChild(bar);
  }
  if (!members.length) bars.appendChild(make("p", "muted", g.members ? "no members" : "waiting for member data…"));
  drawReasons($("d-redelivered"), g.redelivered_by);
  drawReasons($("d-dropped"), g.dropped_by);
  drawReasons($("d-failures"), g.failures_by ? Object.entries(g.failures_by).concat([["handled while pinned", g.pinned_messages]]) : null);
  const h = state.history.get(state.selected) || [];
  chart($("c-depth"), h.map((p) => p.queued));
  chart($("c-lag"), h.map((p) => p.lag));
}

function drawReasons(table, pairs) {
  table.replaceChildren();
  for (const [reason, n] of pairs || []) {
    const row = make("tr", n > 0 ? "nonzero" : "");
    row.appendChild(make("td", null, reason.replaceAll("_", " ")));
    row.appendChild(make("td", "num", fmt(n)));
    table.appendChild(row);
  }
}

function chart(canvas, values) {
  if (canvas.clientWidth && canvas.width !== canvas.clientWidth) canvas.width = canvas.clientWidth;
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  ctx.fillStyle = "#888";
  ctx.font = "11px sans-serif";
  ctx.fillText(fmt(max), 4, 12);
  if (values.length < 2) return;
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (Math.max(values.length, 60) - 1)) * w;
    const y = h - 4 - (v / max) * (h - 20);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function addEvent(e) {
  const list = $("events");
  const item = make("li", "ev-" + e.kind);
  const time = new Date(e.at_ms).toLocaleTimeString();
  item.textContent = `${time} ${e.kind.replaceAll("_", " ")} ${e.group}${e.filter ? " " + e.filter : ""}${e.detail ? ": " + e.detail : ""}`;
  list.insertBefore(item, list.firstChild);
  while (list.children.length > 100) list.removeChild(list.lastChild);
}

async function swap(event) {
  event.preventDefault();
  const g = state.selected.split("\u0000")[0];
  const result = $("s-result");
  let params;
  try { params = JSON.parse($("s-params").value || "{}"); } catch (e) { text(result, "params: not JSON"); return; }
  state.token = $("s-token").value.trim();
  sessionStorage.setItem("sharq-token", state.token);
  text(result, "swapping…");
  const response = await fetch("/api/v1/groups/" + encodeURIComponent(g) + "/strategy", {
    method: "PUT",
    headers: { "content-type": "application/json", authorization: "Bearer " + state.token },
    body: JSON.stringify({ strategy: $("s-strategy").value.trim(), params }),
  });
  const body = await response.json().catch(() => ({}));
  text(result, response.ok ? `now ${body.strategy} (${body.groups_swapped} swapped)` : `refused: ${body.error || response.status}`).className = response.ok ? "ok" : "err";
}

readToken();
$("search").addEventListener("input", drawTable);
$("sort").addEventListener("change", drawTable);
$("swap").addEventListener("submit", swap);
connect();
