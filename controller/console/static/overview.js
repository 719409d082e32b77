import { render, header, live, since, fmtDuration, fmtShare, fmtTime, escapeHtml } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const HISTORY = 600; // live values kept per KPI for its trend (10 min at one update a second)
const history = new Map(); // key -> [{t: Date, v: number|null}]
const labels = new Map(); // key -> {label, fmt}
let trendKey = null;
let last = null;

// --- helpers ----------------------------------------------------------------------------

/** Replace a container's HTML only when it changed, and put the keyboard focus back on the
 *  element with the same data-key (live updates must not steal focus from an operator). */
function linkClass(link) {
  return { up: "st-ok", degraded: "st-warn", connecting: "st-warn", down: "st-bad" }[link] || "st-warn";
}

function stateClass(state) {
  const s = (state || "").toLowerCase();
  if (s === "execute") return "st-ok";
  if (["aborted", "aborting", "stopped", "stopping", "clearing"].includes(s)) return "st-bad";
  if (!s) return "";
  return "st-warn";
}

function laneClass(status) {
  return { available: "st-ok", full: "st-warn", blocked: "st-bad" }[status] || "st-warn";
}

function shareClass(share) {
  if (share === null || share === undefined) return "";
  if (share >= 0.95) return "txt-ok";
  if (share >= 0.9) return "txt-warn";
  return "txt-bad";
}

function humanReason(name) {
  const s = String(name).toLowerCase().replace(/_/g, " ").replace(/\bxray\b/g, "x-ray");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function windowLabel(w) {
  const s = parseInt(w, 10);
  if (!Number.isFinite(s)) return w;
  return s % 3600 === 0 ? `${s / 3600} h` : `${s / 60} min`;
}

function num(v) {
  return v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US");
}

function record(key, value, label, fmt) {
  labels.set(key, { label, fmt });
  let series = history.get(key);
  if (!series) history.set(key, (series = []));
  series.push({ t: new Date(), v: value === undefined ? null : value });
  if (series.length > HISTORY) series.shift();
}

function kpiButton(key, label, value, fmt, detail = "", cls = "") {
  record(key, value, label, fmt);
  const shown = fmt(value);
  return `<div class="kpi"><span class="label">${escapeHtml(label)}</span>
    <button type="button" class="value ${cls}" data-kpi="${escapeHtml(key)}" data-key="kpi-${escapeHtml(key)}"
      title="Show the trend of ${escapeHtml(label)}">${escapeHtml(shown)}</button>
    ${detail ? `<span class="detail">${escapeHtml(detail)}</span>` : ""}</div>`;
}

// --- sections ---------------------------------------------------------------------------

function renderKpis(o) {
  const k = o.kpis;
  $("target").textContent = `${Math.round(k.target_s)} s`;
  const share = k.overall.share;
  record("share", share, `Cleared within ${Math.round(k.target_s)} s · today`, fmtShare);
  const main = $("k-share");
  main.textContent = fmtShare(share);
  main.className = `value huge ${shareClass(share)}`;
  $("k-share-d").textContent = `${num(k.overall.hits)} within · ${num(k.overall.misses)} over (closed late or still open)`;

  const rolling = Object.entries(k.rolling).map(([w, s]) =>
    kpiButton(`roll-${w}`, `Last ${windowLabel(w)}`, s.share, fmtShare, `${num(s.hits)} / ${num(s.hits + s.misses)}`, shareClass(s.share)));
  render($("rolling"), rolling.join(""));

  const counts = [
    kpiButton("decisions", "Decisions", k.decisions, num),
    kpiButton("open", "Open parcels", o.open_parcels, num),
    kpiButton("pending", "Pending", k.pending, num),
    kpiButton("misses", "Deadline misses", k.deadline_misses, num, "", k.deadline_misses ? "txt-warn" : ""),
    kpiButton("recirc", "Recirculations", k.recirculations, num),
    kpiButton("holds", "Holds", o.holds, num),
  ];
  render($("counts"), counts.join(""));
}

function renderLines(o) {
  if (!o.lines.length) { render($("lines"), `<p class="empty">No lines configured.</p>`); return; }
  const html = o.lines.map((l) => {
    record(`line-${l.line}`, l.share ? l.share.share : null, `Line ${l.line} cleared within target · today`, fmtShare);
    const lanes = l.lanes.map((lane) => {
      record(`lane-${l.line}-${lane.id}`, lane.per_min, `${l.line} lane ${lane.id} parcels/min`, (v) => v === null || v === undefined ? "—" : v.toFixed(1));
      return `<tr>
        <td class="num">${escapeHtml(lane.id)}</td>
        <td>${escapeHtml(lane.kind)}</td>
        <td><span class="badge ${laneClass(lane.status)}">${escapeHtml(lane.status)}</span></td>
        <td class="num">${num(lane.decided)}</td>
        <td class="num"><button type="button" class="link-btn" data-kpi="lane-${escapeHtml(l.line)}-${escapeHtml(lane.id)}" data-key="lane-${escapeHtml(l.line)}-${escapeHtml(lane.id)}">${lane.per_min === null ? "—" : escapeHtml(lane.per_min.toFixed(1))}</button></td>
      </tr>`;
    }).join("");
    const hb = l.heartbeat_age_s;
    const hbCls = hb === null ? "" : hb > 5 ? "txt-bad" : hb > 2 ? "txt-warn" : "";
    return `<div class="line-card">
      <div class="line-head">
        <span class="line-name">${escapeHtml(l.line)}</span>
        <span class="badge ${linkClass(l.link)}" title="PLC link">link ${escapeHtml(l.link)}</span>
        <span class="badge ${stateClass(l.state)}" title="PackML state">${escapeHtml(l.state || "no state")}</span>
        <button type="button" class="line-share link-btn ${shareClass(l.share && l.share.share)}" data-kpi="line-${escapeHtml(l.line)}" data-key="line-${escapeHtml(l.line)}" title="${escapeHtml(l.line)}: share cleared within target today (${escapeHtml(l.share ? `${l.share.hits} of ${l.share.hits + l.share.misses}` : "no verdicts yet")}); click for its trend">${escapeHtml(fmtShare(l.share && l.share.share))}</button>
      </div>
      <dl class="facts">
        <div><dt>Heartbeat</dt><dd class="${hbCls}">${hb === null ? "—" : escapeHtml(fmtDuration(hb))}</dd></div>
        <div><dt>On belt</dt><dd>${num(l.on_belt)}</dd></div>
        <div><dt>At inspection</dt><dd>${num(l.at_inspection)}</dd></div>
        <div><dt>To review</dt><dd>${num(l.awaiting_review)}</dd></div>
      </dl>
      <table class="lanes"><thead><tr><th class="num">Lane</th><th>Kind</th><th>Status</th><th class="num">Decided</th><th class="num">Parcels/min</th></tr></thead>
      <tbody>${lanes}</tbody></table>
    </div>`;
  }).join("");
  render($("lines"), html);
}

function renderAlarms(o) {
  $("alarm-count").textContent = o.alarms.length ? String(o.alarms.length) : "";
  if (!o.alarms.length) { render($("alarms"), `<p class="empty ok-line">No active alarms.</p>`); return; }
  const order = { critical: 0, warning: 1, info: 2 };
  const rows = [...o.alarms].sort((a, b) => order[a.severity] - order[b.severity] || a.since_s - b.since_s).map((a) => `
    <tr class="sev-row-${escapeHtml(a.severity)}">
      <td><span class="badge sev-badge-${escapeHtml(a.severity)}">${escapeHtml(a.severity)}</span></td>
      <td class="wrap"><div class="mono alarm-src">${escapeHtml(a.source)}</div><div>${escapeHtml(a.message)}</div></td>
      <td class="num" title="raised ${escapeHtml(fmtTime(a.since))}">${escapeHtml(fmtDuration(since(a.since, o.taken_at)))}<div class="ack-state">${a.acknowledged_by ? `<span class="muted">ack ${escapeHtml(a.acknowledged_by)}</span>` : `<span class="txt-warn">not acked</span>`}</div></td>
    </tr>`).join("");
  render($("alarms"), `<table class="alarm-table"><thead><tr><th>Severity</th><th>Source · message</th><th class="num">Active for</th></tr></thead><tbody>${rows}</tbody></table>`);
}

function renderHours(o) {
  const hours = o.kpis.by_hour;
  const nowHour = Math.floor(o.clock_s / 3600) % 24;
  const byHour = new Map(hours.map((h) => [h.hour % 24, h]));
  const max = Math.max(1, ...hours.map((h) => h.hits + h.misses));
  const W = 400, H = 130, left = 30, bottom = 16, top = 8;
  const bw = (W - left) / 24;
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  let bars = "";
  for (let h = 0; h < 24; h++) {
    const d = byHour.get(h);
    const x = left + h * bw + 2;
    if (d) {
      const yh = y(d.hits), ym = y(d.hits + d.misses);
      bars += `<g><title>${String(h).padStart(2, "0")}:00 — ${d.hits} within, ${d.misses} over (${escapeHtml(fmtShare(d.share))})</title>
        <rect x="${x}" y="${yh}" width="${bw - 4}" height="${Math.max(0, H - bottom - yh)}" class="bar-ok"/>
        <rect x="${x}" y="${ym}" width="${bw - 4}" height="${Math.max(0, yh - ym)}" class="bar-bad"/></g>`;
    }
    if (h % 3 === 0) bars += `<text x="${x + (bw - 4) / 2}" y="${H - 4}" class="axis" text-anchor="middle">${String(h).padStart(2, "0")}</text>`;
    if (h === nowHour) bars += `<rect x="${x - 1}" y="${H - bottom + 1}" width="${bw - 2}" height="2" class="now-mark"/>`;
  }
  const grid = [0, 0.5, 1].map((f) => {
    const v = Math.round(max * f);
    return `<line x1="${left}" x2="${W}" y1="${y(v)}" y2="${y(v)}" class="grid"/><text x="${left - 4}" y="${y(v) + 4}" class="axis" text-anchor="end">${v}</text>`;
  }).join("");
  const caption = hours.length ? "" : `<p class="empty">No clearance verdicts yet today.</p>`;
  render($("hours"), `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="Parcels cleared per hour today, within and over target">${grid}${bars}</svg>${caption}`);
}

function barRows(entries, total, clsOf, nameOf) {
  if (!entries.length) return `<p class="empty">None yet.</p>`;
  return `<table class="bars">${entries.map(([name, n]) => {
    const pct = total ? (100 * n) / total : 0;
    return `<tr><td class="bar-name" title="${escapeHtml(name)}">${escapeHtml(nameOf(name))}</td>
      <td class="num">${num(n)}</td>
      <td class="bar-cell"><span class="hbar ${clsOf(name)}" style="width:${pct.toFixed(1)}%"></span></td>
      <td class="num muted">${pct.toFixed(1)} %</td></tr>`;
  }).join("")}</table>`;
}

function renderBuckets(o) {
  const b = Object.entries(o.kpis.buckets);
  const total = b.reduce((s, [, n]) => s + n, 0);
  const cls = (name) => name.startsWith("<=") ? "bar-ok-bg" : name.startsWith(">") ? "bar-bad-bg" : "bar-warn-bg";
  render($("buckets"), barRows(b, total, cls, (n) => n.replace("<=", "≤ ").replace(">", "> ").replace("-", "–")));
  const states = Object.entries(o.kpis.by_state).sort((a, c) => c[1] - a[1]);
  render($("states"), states.length ? `<span class="muted">Closed as</span> ${states.map(([state, n]) =>
    `<span class="state state-${escapeHtml(state)}">${escapeHtml(state.replace(/_/g, " "))}</span> <strong>${num(n)}</strong>`).join(" · ")}` : "");
  const reasons = Object.entries(o.kpis.by_reason).sort((a, c) => c[1] - a[1]);
  const rtotal = reasons.reduce((s, [, n]) => s + n, 0);
  render($("reasons"), barRows(reasons, rtotal, () => "bar-info-bg", humanReason));
}

function renderOpen(o) {
  $("open-count").textContent = num(o.open_parcels);
  const fast = o.speed && o.speed !== 1;
  $("open-note").textContent = fast ? `oldest first · hub clock ×${o.speed}` : "oldest first · click to trace";
  $("open-note").title = fast ? `the hub's clock runs ${o.speed} times as fast as the wall's here: ages are hub seconds` : "";
  if (!o.oldest_open.length) { render($("open"), `<p class="empty">No open parcels.</p>`); return; }
  const rows = o.oldest_open.map((p) => {
    const href = `/trace?hawb=${encodeURIComponent(p.hawb)}`;
    const key = `open-${p.line}-${p.tracking_id}`;
    return `<tr class="clickable" data-href="${escapeHtml(href)}">
      <td><a href="${escapeHtml(href)}" data-key="${escapeHtml(key)}" class="mono">${escapeHtml(p.hawb)}</a></td>
      <td class="nowrap">${escapeHtml(p.line)} <span class="muted">#${escapeHtml(p.tracking_id)}</span></td>
      <td><span class="state state-${escapeHtml(p.state)}">${escapeHtml(p.state.replace(/_/g, " "))}</span>${p.laps ? ` <span class="muted">lap ${escapeHtml(p.laps)}</span>` : ""}</td>
      <td class="num ${p.age_s > o.kpis.target_s ? "txt-bad" : ""}" title="scanned ${escapeHtml(fmtTime(p.arrived_at))}">${escapeHtml(fmtDuration(p.age_s))}</td>
    </tr>`;
  }).join("");
  render($("open"), `<table><thead><tr><th>HAWB</th><th>Line #id</th><th>State</th><th class="num" title="since the scan on the hub's clock: what the ${escapeHtml(Math.round(o.kpis.target_s))} s target counts">Age (hub s)</th></tr></thead><tbody>${rows}</tbody></table>`);
}

// --- trends -----------------------------------------------------------------------------

function renderTrend() {
  if (!trendKey) return;
  const series = history.get(trendKey) || [];
  const meta = labels.get(trendKey) || { label: trendKey, fmt: String };
  $("trend-title").textContent = `Trend: ${meta.label}`;
  const values = series.filter((p) => p.v !== null && p.v !== undefined);
  if (values.length < 2) {
    $("trend-range").textContent = "";
    render($("trend-chart"), `<p class="empty">Collecting live values… (${values.length} so far; the trend covers the time since this page opened)</p>`);
    return;
  }
  const vs = values.map((p) => p.v);
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (hi === lo) { hi += 1; lo -= 1; }
  const W = 900, H = 90, pad = 4;
  const t0 = series[0].t.getTime(), t1 = series[series.length - 1].t.getTime();
  const span = Math.max(1, t1 - t0);
  const pts = values.map((p) => `${(pad + (W - 2 * pad) * (p.t.getTime() - t0) / span).toFixed(1)},${(pad + (H - 2 * pad) * (1 - (p.v - lo) / (hi - lo))).toFixed(1)}`).join(" ");
  $("trend-range").textContent = `${fmtTime(series[0].t)} – ${fmtTime(series[series.length - 1].t)} · min ${meta.fmt(Math.min(...vs))} · max ${meta.fmt(Math.max(...vs))} · now ${meta.fmt(vs[vs.length - 1])}`;
  render($("trend-chart"), `<svg class="spark" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${escapeHtml(meta.label)} over the last ${values.length} live updates"><polyline points="${pts}" class="spark-line" vector-effect="non-scaling-stroke"/></svg>`);
}

function openTrend(key) {
  trendKey = key;
  $("trend").hidden = false;
  document.querySelectorAll("[data-kpi]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.kpi === key)));
  renderTrend();
}

document.addEventListener("click", (event) => {
  const kpi = event.target.closest("[data-kpi]");
  if (kpi) { openTrend(kpi.dataset.kpi); return; }
  const row = event.target.closest("tr.clickable");
  if (row && !event.target.closest("a")) location.assign(row.dataset.href);
});
$("trend-close").addEventListener("click", () => { trendKey = null; $("trend").hidden = true; });
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && trendKey) { trendKey = null; $("trend").hidden = true; }
});

function update(o) {
  last = o;
  renderKpis(o);
  renderLines(o);
  renderAlarms(o);
  renderHours(o);
  renderBuckets(o);
  renderOpen(o);
  renderTrend();
  document.body.dataset.updated = o.taken_at;
}

await header("overview");
live(update);
