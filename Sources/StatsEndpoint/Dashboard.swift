/// The live dashboard: one self-contained page (no CDN, no external file) that polls `/stats`
/// every second and draws pool utilisation, growth events, lock contention, connections,
/// bytes per second, backpressure, a failures panel (resets, accept errors by reason, write
/// and linger timeouts, drain outcomes) where a counter that moved since the last poll is red,
/// and for a relay an upstreams table (state, connections, share of the balancer's picks,
/// failed connects, health checks, connect time p99), hidden when there is no upstream.
enum Dashboard {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fastalloc-server</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  #status { color: #666; margin-bottom: 1em; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1em; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .8em 1em; }
  .card h2 { font-size: 1em; margin: 0 0 .5em; }
  .big { font-size: 1.6em; font-weight: 600; }
  .bar { height: 16px; background: #eee; border-radius: 3px; overflow: hidden; margin: 2px 0 8px; }
  .bar > div { height: 100%; background: #3b7dd8; }
  .bar.hot > div { background: #d8553b; }
  tr.hot td, .alarm { color: #b3261e; font-weight: 600; }
  td.rate, .detail { color: #666; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: 2px 6px; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }
  canvas { width: 100%; height: 120px; }
  .wide { grid-column: 1 / -1; }
</style>
</head>
<body>
<h1>fastalloc-server</h1>
<div id="status">loading /stats ...</div>
<div class="grid">
  <div class="card"><h2>Connections</h2><div class="big" id="connections">-</div>
    <div id="connectionsDetail"></div></div>
  <div class="card"><h2>Failures</h2><div id="failuresSummary"></div><table id="failures"></table></div>
  <div class="card wide" id="upstreamsCard" hidden><h2>Upstreams</h2><div id="upstreamsSummary"></div>
    <table id="upstreams"></table></div>
  <div class="card"><h2>Bytes per second</h2><div class="big" id="bytesRate">-</div>
    <canvas id="bytesChart" width="600" height="120"></canvas></div>
  <div class="card"><h2>Pool utilisation</h2><div id="pools"></div></div>
  <div class="card"><h2>Overflow lock contention</h2><div class="big" id="contention">-</div>
    <div id="lockDetail"></div><canvas id="lockChart" width="600" height="120"></canvas></div>
  <div class="card"><h2>Overflow growth events</h2><div id="growthSummary"></div>
    <canvas id="growthChart" width="600" height="120"></canvas><table id="growth"></table></div>
  <div class="card"><h2>Backpressure</h2><table id="backpressure"></table></div>
</div>
<script>
"use strict";
const history = { bytes: [], contention: [] };
let previous = null;
function fmt(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return String(Math.round(n));
}
function perSecond(n) { return n >= 10 ? fmt(n) : n.toFixed(1); }
function bar(label, used, capacity, high) {
  const fraction = capacity > 0 ? used / capacity : 0;
  const hot = fraction > 0.8 ? " hot" : "";
  return `<div>${label}: ${used} / ${capacity} in use (${(fraction * 100).toFixed(0)} %), high water ${high}</div>` +
         `<div class="bar${hot}"><div style="width:${Math.min(100, fraction * 100).toFixed(1)}%"></div></div>`;
}
function line(canvas, values, color) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
  values.forEach((v, i) => {
    const x = values.length > 1 ? i * w / (values.length - 1) : 0;
    const y = h - 4 - (v / max) * (h - 8);
    i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#666"; ctx.fillText(fmt(max), 4, 12);
}
function timeline(canvas, events) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const span = Math.max(60, ...events.map(e => e.seconds_ago));
  ctx.strokeStyle = "#ccc"; ctx.beginPath(); ctx.moveTo(0, h - 20); ctx.lineTo(w, h - 20); ctx.stroke();
  ctx.fillStyle = "#666"; ctx.fillText(`${Math.round(span)} s ago`, 4, h - 4); ctx.fillText("now", w - 28, h - 4);
  const maxCapacity = Math.max(1, ...events.map(e => e.capacity_after));
  events.forEach(e => {
    const x = w - (e.seconds_ago / span) * w;
    const y = h - 20 - (e.capacity_after / maxCapacity) * (h - 30);
    ctx.fillStyle = "#d8553b"; ctx.fillRect(x - 3, y, 6, h - 20 - y);
  });
}
// The failure counters of /stats totals, one row each (the drain's cut is a failure; what
// completed during a drain is shown beside it).
function failureCounts(t, s) {
  const accept = t.accept_errors ?? {};
  const drain = t.drain_connections ?? {};
  const sum = o => Object.values(o).reduce((a, b) => a + b, 0);
  return [
    { key: "client_resets", label: "client resets", value: t.client_resets ?? 0 },
    { key: "upstream_connect_failures", label: "upstream connect failures", value: t.upstream_connect_failures ?? 0 },
    { key: "upstream_unavailable", label: "no upstream (client closed)", value: t.upstream_unavailable ?? 0 },
    { key: "upstream_resets", label: "upstream resets", value: t.upstream_resets ?? 0 },
    { key: "accept_errors", label: "accept errors", value: sum(accept),
      detail: [["process file limit", accept.process_file_limit ?? 0], ["system file limit", accept.system_file_limit ?? 0],
               ["memory", accept.memory ?? 0], ["other", accept.other ?? 0]] },
    { key: "write_timeouts", label: "write timeouts", value: t.write_timeouts ?? 0 },
    { key: "stalled_evictions", label: "stalled evictions", value: t.stalled_evictions ?? 0 },
    { key: "linger_timeouts", label: "linger timeouts", value: t.linger_timeouts ?? 0 },
    { key: "proxy_protocol_errors", label: "PROXY header refusals", value: sum(t.proxy_protocol_errors ?? {}),
      detail: Object.entries(t.proxy_protocol_errors ?? {}).filter(([, n]) => n > 0) },
    { key: "drain_cut", label: "drain cut / completed", value: drain.cut ?? 0,
      text: `${drain.cut ?? 0} / ${drain.completed ?? 0}` },
    { key: "reload_failures", label: "reloads refused", value: s.config?.reload_failures ?? 0 },
    { key: "upgrade_failures", label: "upgrades failed", value: s.upgrades?.failed ?? 0 },
  ];
}
function escapeHTML(text) {
  return String(text).replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}
function seconds(v) {
  if (v >= 1) return v.toFixed(2) + " s";
  if (v >= 0.001) return +(v * 1e3).toFixed(2) + " ms";
  return +(v * 1e6).toFixed(0) + " µs";
}
// The bound of the bucket where a fraction q of the connects is reached (a histogram's answer:
// "at most"); above every bound when they are in the last bucket.
function quantile(h, q) {
  if (!h || !h.count) return "-";
  let seen = 0;
  for (let i = 0; i < h.counts.length; i++) {
    seen += h.counts[i];
    if (seen >= q * h.count) return i < h.bounds.length ? "≤ " + seconds(h.bounds[i]) : "> " + seconds(h.bounds[h.bounds.length - 1]);
  }
  return "-";
}
// A relay's upstreams (none in echo mode: the card stays hidden). A down upstream's row is red.
function renderUpstreams(upstreams) {
  document.getElementById("upstreamsCard").hidden = upstreams.length === 0;
  if (upstreams.length === 0) return;
  const selected = upstreams.reduce((sum, u) => sum + u.selected, 0);
  const up = upstreams.filter(u => u.up).length;
  const summary = document.getElementById("upstreamsSummary");
  summary.textContent = `${up} of ${upstreams.length} up; ${selected} connection(s) balanced`;
  summary.className = up < upstreams.length ? "alarm" : "";
  document.getElementById("upstreams").innerHTML =
    "<tr><th>upstream</th><th>state</th><th>active</th><th>share of selections</th><th>failed connects</th>" +
    "<th>checks passed / failed</th><th>connect p99</th></tr>" + upstreams.map(u => {
      const f = u.connect_failures;
      const failed = f.refused + f.timeout + f.other;
      const reasons = [["refused", f.refused], ["timeout", f.timeout], ["other", f.other]].filter(r => r[1] > 0)
        .map(r => `${r[0]} ${r[1]}`).join(", ");
      const share = selected > 0 ? (100 * u.selected / selected).toFixed(1) + " %" : "-";
      const name = escapeHTML(u.address) + (u.entry !== u.address ? ` <span class="detail">(${escapeHTML(u.entry)})</span>` : "");
      return `<tr class="upstream${u.up ? "" : " hot"}"><td>${name}</td>` +
             `<td>${u.up ? "up" : "DOWN"}${u.backup ? " (backup)" : ""}</td><td>${u.connections_active}</td>` +
             `<td>${share}</td><td>${failed}${reasons ? ` <span class="detail">${reasons}</span>` : ""}</td>` +
             `<td>${u.health_checks.passed} / ${u.health_checks.failed}</td><td>${quantile(u.connect_seconds, 0.99)}</td></tr>`;
    }).join("");
}
function render(s) {
  const now = s.monotonic_seconds;  // the server's clock: rates stay right however the page is timed
  document.getElementById("status").textContent =
    (s.draining ? "DRAINING" : "serving") + " · " + s.workers.length + " worker(s) · buffers of " + (s.buffer_size_bytes / 1024) + " KiB · updated " + new Date().toLocaleTimeString();
  document.getElementById("connections").textContent = s.totals.connections_active;
  document.getElementById("connectionsDetail").textContent =
    `accepted ${s.totals.connections_accepted}, closed ${s.totals.connections_closed ?? 0}, rejected ${s.totals.connections_rejected}, idle timeouts ${s.totals.idle_timeouts}`;
  let pools = "";
  s.workers.forEach(w => { pools += bar(`worker ${w.worker} (local)`, w.buffers.in_use, w.buffers.capacity, w.buffers.high_water); });
  pools += bar("overflow (shared)", s.overflow.in_use, s.overflow.capacity, s.overflow.high_water);
  pools += `<div>overflow may grow to ${s.overflow.max_capacity}; draws ${s.overflow.draws}, failed draws ${s.overflow.draw_failures}</div>`;
  document.getElementById("pools").innerHTML = pools;
  if (previous) {
    const dt = Math.max(0.001, now - previous.time);
    const bytes = (s.totals.bytes_received + s.totals.bytes_sent - previous.bytes) / dt;
    const acquisitions = s.overflow.lock.acquisitions - previous.acquisitions;
    const contended = s.overflow.lock.contended - previous.contended;
    history.bytes.push(bytes); history.contention.push(contended / dt);
    if (history.bytes.length > 120) { history.bytes.shift(); history.contention.shift(); }
    document.getElementById("bytesRate").textContent = fmt(bytes) + "B/s";
    document.getElementById("contention").textContent =
      fmt(contended / dt) + "/s (" + (acquisitions > 0 ? (100 * contended / acquisitions).toFixed(2) : "0.00") + " % of acquisitions)";
  }
  document.getElementById("lockDetail").textContent =
    `acquisitions ${s.overflow.lock.acquisitions}, contended ${s.overflow.lock.contended}, waited ${s.overflow.lock.wait_seconds.toFixed(4)} s`;
  line(document.getElementById("bytesChart"), history.bytes, "#3b7dd8");
  line(document.getElementById("lockChart"), history.contention, "#d8553b");
  document.getElementById("growthSummary").textContent =
    `${s.overflow.growth_events} growth event(s); capacity ${s.overflow.capacity} of at most ${s.overflow.max_capacity}`;
  timeline(document.getElementById("growthChart"), s.overflow.recent_growth_events);
  document.getElementById("growth").innerHTML = "<tr><th>when</th><th>capacity</th></tr>" +
    s.overflow.recent_growth_events.slice().reverse().map(e =>
      `<tr><td>${e.seconds_ago.toFixed(1)} s ago</td><td>${e.capacity_before} → ${e.capacity_after}</td></tr>`).join("");
  document.getElementById("backpressure").innerHTML =
    `<tr><td>backpressure pauses</td><td>${s.totals.backpressure_pauses}</td></tr>` +
    `<tr><td>buffer waits</td><td>${s.totals.buffer_waits}</td></tr>` +
    `<tr><td>buffers in use (all pools)</td><td>${s.totals.buffers_in_use}</td></tr>`;
  renderUpstreams(s.upstreams ?? []);
  const failures = failureCounts(s.totals, s);
  const dt = previous ? Math.max(0.001, now - previous.time) : 0;
  let moving = 0;
  document.getElementById("failures").innerHTML =
    "<tr><th>what</th><th>total</th><th>now</th><th></th></tr>" + failures.map(f => {
      const delta = previous && previous.failures[f.key] !== undefined ? f.value - previous.failures[f.key] : 0;
      if (delta > 0) moving++;
      const detail = f.detail ? f.detail.filter(d => d[1] > 0).map(d => `${d[0]} ${d[1]}`).join(", ") : "";
      return `<tr${delta > 0 ? ' class="hot"' : ""}><td>${f.label}</td><td>${f.text ?? f.value}</td>` +
             `<td class="rate">${delta > 0 ? "+" + perSecond(delta / dt) + "/s" : ""}</td><td class="detail">${detail}</td></tr>`;
    }).join("");
  const summary = document.getElementById("failuresSummary");
  summary.textContent = moving > 0 ? `${moving} kind(s) of failure rising now` : "nothing rising since the last poll";
  summary.className = moving > 0 ? "alarm" : "";
  previous = { time: now, bytes: s.totals.bytes_received + s.totals.bytes_sent,
               acquisitions: s.overflow.lock.acquisitions, contended: s.overflow.lock.contended,
               failures: Object.fromEntries(failures.map(f => [f.key, f.value])) };
}
async function poll() {
  try {
    const response = await fetch("/stats", { cache: "no-store" });
    render(await response.json());
  } catch (error) {
    document.getElementById("status").textContent = "cannot reach /stats: " + error;
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"""#
}
