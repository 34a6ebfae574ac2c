// The control API's live view (GET /): one self-contained page, shipped in the binary, that
// polls the API's own JSON and metrics (no external script, font or CDN; the Content
// Security Policy the API sends allows nothing else). It shows the live connections, the
// recent ends with their cause and the mechanism that noticed, counts of both, and the
// detection-latency histogram by mechanism. A token for an API started with
// --control-token-file is taken from the address's fragment (http://host:port/#TOKEN),
// which browsers never send to the server.
#include "dashboard_page.hpp"

namespace deadpeer::detail {

const std::string_view dashboard_page = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>deadpeer: heartbeat-server</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2329; background: #fafbfc; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  #status { color: #56606b; }
  #status.down { color: #b3261e; font-weight: 600; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #e3e7eb; white-space: nowrap; }
  th { background: #eef1f4; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .empty { color: #7a848f; font-style: italic; }
  .counts span { display: inline-block; margin: 0 1em .3em 0; padding: .1em .5em; background: #eef1f4; border-radius: 3px; }
  .bars { display: grid; grid-template-columns: 8em 1fr 4em; gap: 2px .6em; align-items: center; }
  .bar { height: .9em; background: #3b7dd8; min-width: 1px; }
  .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5em; }
  @media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<h1>heartbeat-server</h1>
<div id="status">connecting to the control API…</div>

<h2>Live connections (<span id="live-count">0</span>)</h2>
<table id="connections">
  <thead><tr><th>client</th><th>peer</th><th>state</th><th>age</th><th>last heard</th>
  <th>interval</th><th>RTT</th><th>kernel</th><th>detector timeout</th></tr></thead>
  <tbody><tr><td colspan="9" class="empty">none</td></tr></tbody>
</table>

<div class="cols">
<div>
<h2>Recent ends</h2>
<table id="ends">
  <thead><tr><th>ended</th><th>client</th><th>peer</th><th>cause</th><th>detected by</th><th>silence</th></tr></thead>
  <tbody><tr><td colspan="6" class="empty">none yet</td></tr></tbody>
</table>
</div>
<div>
<h2>Ends by cause</h2><div id="by-cause" class="counts"><span class="empty">none yet</span></div>
<h2>Ends by the mechanism that noticed</h2><div id="by-detector" class="counts"><span class="empty">none yet</span></div>
<h2>Detection latency (silence before the verdict)</h2><div id="latency" class="bars"></div>
</div>
</div>

<script>
"use strict";
const token = decodeURIComponent(location.hash.slice(1));
const headers = token ? { Authorization: "Bearer " + token } : {};
let nextEvent = 0;
const ends = [];
const byCause = {}, byDetector = {};

function text(tag, value, cls) {
  const cell = document.createElement(tag);
  cell.textContent = value;
  if (cls) cell.className = cls;
  return cell;
}
function duration(ms) {
  if (ms === undefined || ms === null || ms < 0) return "–";
  if (ms < 1) return (ms * 1000).toFixed(0) + " µs";
  if (ms < 1000) return ms.toFixed(ms < 10 ? 2 : 0) + " ms";
  const s = ms / 1000;
  if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const m = s / 60;
  return m < 120 ? m.toFixed(1) + " min" : (m / 60).toFixed(1) + " h";
}
function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = text("td", emptyText, "empty");
    td.colSpan = columns;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    tbody.append(tr);
  }
}
async function get(path) {
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return path === "/metrics" ? response.text() : response.json();
}
function status(ok, message) {
  const el = document.getElementById("status");
  el.textContent = message;
  el.className = ok ? "" : "down";
}

async function refreshConnections() {
  const list = await get("/connections");
  document.getElementById("live-count").textContent = list.length;
  const rows = list.map(c => {
    const row = [text("td", c.client_id || "(handshaking)"), text("td", c.peer), text("td", c.state),
      text("td", duration(c.age_ms), "num"), text("td", duration(c.last_heard_ms_ago), "num"),
      text("td", duration(c.interval_ms), "num"),
      // The heartbeat's RTT where this side pinged; else the kernel's smoothed estimate.
      text("td", c.rtt && c.rtt.samples ? duration(c.rtt.last_ms ?? c.rtt.mean_ms)
               : c.kernel && c.kernel.rtt_us ? duration(c.kernel.rtt_us / 1000) + " (tcp)" : "–", "num"),
      text("td", c.kernel ? c.kernel.state : "–"),
      text("td", c.detector ? duration(c.detector.timeout_ms) : duration(c.dead_after_ms), "num")];
    row[0].dataset.client = c.client_id;
    return row;
  });
  fill(document.querySelector("#connections tbody"), rows, 9, "none");
}

async function refreshEvents() {
  const body = await get("/events?since=" + nextEvent);
  for (const e of body.events) {
    ends.unshift(e);
    byCause[e.cause] = (byCause[e.cause] || 0) + 1;
    byDetector[e.detected_by] = (byDetector[e.detected_by] || 0) + 1;
  }
  nextEvent = body.next;
  ends.splice(50);
  const rows = ends.map(e => {
    const row = [text("td", new Date(e.ended_unix_ms).toLocaleTimeString()), text("td", e.client_id),
      text("td", e.peer), text("td", e.cause), text("td", e.detected_by), text("td", duration(e.silence_ms), "num")];
    row[1].dataset.ended = e.client_id;
    return row;
  });
  fill(document.querySelector("#ends tbody"), rows, 6, "none yet");
  for (const [id, counts] of [["by-cause", byCause], ["by-detector", byDetector]]) {
    const el = document.getElementById(id);
    const keys = Object.keys(counts).sort((a, b) => counts[b] - counts[a]);
    el.replaceChildren(...(keys.length ? keys.map(k => text("span", k + ": " + counts[k]))
                                       : [text("span", "none yet", "empty")]));
  }
}

// Prometheus text: the detection-latency buckets per mechanism, turned into counts per bucket.
async function refreshLatency() {
  const metrics = await get("/metrics");
  const cumulative = {};
  const pattern = /^deadpeer_detection_latency_seconds_bucket\{detected_by="([^"]*)",le="([^"]*)"\} (\S+)$/;
  for (const line of metrics.split("\n")) {
    const m = pattern.exec(line);
    if (!m) continue;
    (cumulative[m[1]] = cumulative[m[1]] || []).push([m[2], Number(m[3])]);
  }
  const el = document.getElementById("latency");
  const items = [];
  for (const [mechanism, buckets] of Object.entries(cumulative)) {
    let previous = 0;
    for (const [le, total] of buckets) {
      const n = total - previous;
      previous = total;
      if (n > 0) items.push([mechanism + " ≤ " + (le === "+Inf" ? "∞" : duration(Number(le) * 1000)), n]);
    }
  }
  const most = Math.max(1, ...items.map(i => i[1]));
  el.replaceChildren();
  if (items.length === 0) el.append(text("span", "no detections yet", "empty"));
  for (const [label, n] of items) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * n / most) + "%";
    el.append(text("span", label), bar, text("span", String(n), "num"));
  }
}

async function tick() {
  try {
    await Promise.all([refreshConnections(), refreshEvents(), refreshLatency()]);
    status(true, "live · updated " + new Date().toLocaleTimeString());
  } catch (error) {
    status(false, "cannot reach the control API: " + error.message);
  }
}
tick();
setInterval(tick, 1000);
</script>
</body>
</html>
)html";

}  // namespace deadpeer::detail
