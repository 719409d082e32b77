import { api, can, header, fmtTime, escapeHtml } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const CLOSED = ["released", "cleared", "seized", "referred", "exception"];

function humanReason(name) {
  const s = String(name).toLowerCase().replace(/_/g, " ").replace(/\bxray\b/g, "x-ray");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function stateBadge(state) {
  if (!state) return "";
  const cls = { released: "st-ok", cleared: "st-ok", seized: "st-bad", exception: "st-bad", referred: "st-warn",
    in_inspection: "st-warn", recirculating: "st-warn", active: "st-bad" }[state] || "";
  return `<span class="badge ${cls}">${escapeHtml(state.replace(/_/g, " "))}</span>`;
}

const KIND_LABEL = {
  transition: "Scan",
  decision: "Decision",
  confirmation: "Divert",
  deadline_miss: "Deadline miss",
  illegal_transition: "Illegal transition",
  inspection_result: "Inspection",
  command: "Command",
  alarm: "Alarm",
};

function what(r) {
  const d = r.data || {};
  const parts = [];
  switch (r.kind) {
    case "transition":
      if (r.state_to === "scanned") parts.push("read at the scan tunnel");
      break;
    case "decision": {
      parts.push(`to <strong>${escapeHtml(r.destination || "?")}</strong>${r.lane !== null ? ` lane ${escapeHtml(r.lane)}` : ""}`);
      if (d.risk) parts.push(`risk ${escapeHtml(d.risk.channel)} ${escapeHtml(d.risk.score)}${d.risk.declared ? ` · declared ${escapeHtml(d.risk.declared)}` : ""}`);
      else if ("risk" in d) parts.push("no risk result");
      if (d.xray) {
        const top = Object.entries(d.xray.scores || {}).sort((a, b) => b[1] - a[1])[0];
        parts.push(`x-ray ${escapeHtml(d.xray.status)}${top ? ` · top ${escapeHtml(top[0].replace(/_/g, " "))} ${Number(top[1]).toFixed(2)}` : ""}${d.xray.detail ? ` · ${escapeHtml(d.xray.detail)}` : ""}`);
      }
      if (d.held) parts.push(`<span class="txt-warn">held</span>`);
      if (d.review) parts.push(`review: ${escapeHtml(typeof d.review === "object" ? JSON.stringify(d.review) : d.review)}`);
      if (d.lap) parts.push(`lap ${escapeHtml(d.lap)}`);
      break;
    }
    case "confirmation":
      parts.push(`PLC: ${escapeHtml(d.status || "?")}${r.lane !== null ? ` into lane ${escapeHtml(r.lane)}` : ""}`);
      break;
    case "inspection_result":
      parts.push(`outcome <strong>${escapeHtml(d.outcome || r.state_to)}</strong>`);
      if (d.note) parts.push(`note: “${escapeHtml(d.note)}”`);
      break;
    case "command": {
      const verb = { hold: "placed a hold", lift: "lifted the hold", inspect: "recorded an inspection", verdict: "gave a verdict", close: "closed the parcel", ack: "acknowledged an alarm" }[d.command] || escapeHtml(d.command || "command");
      parts.push(verb);
      if (d.outcome) parts.push(`outcome ${escapeHtml(d.outcome)}`);
      for (const k of ["reason", "note", "comment"]) if (d[k]) parts.push(`${k}: “${escapeHtml(d[k])}”`);
      if (d.accepted === false) parts.push(`<span class="txt-bad">refused: ${escapeHtml(d.refused || "")}</span>`);
      break;
    }
    default:
      for (const [k, v] of Object.entries(d)) parts.push(`${escapeHtml(k)}: ${escapeHtml(typeof v === "object" ? JSON.stringify(v) : v)}`);
  }
  return parts.join(" · ");
}

// Durations here count the hub's clock (each record's `ts`, the controller's seconds), as the
// 150 s target does; the wall times (when each entry was written) may run at another pace, e.g.
// a twin running faster than real time, so they are only shown, not subtracted.
const HUB_NOTE = "seconds on the hub's clock (the controller's ts), what the 150 s target counts";

/** Hub seconds as the trace shows them, the unit in the label ("(hub s)"): 4.2, 37.0, 1234. */
function hubSeconds(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s)) return "—";
  const text = Math.abs(s) < 1000 ? Math.abs(s).toFixed(1) : String(Math.round(Math.abs(s)));
  return s < 0 ? `−${text}` : text;
}

const parcelKey = (r) => `${r.line} #${r.tracking_id}`;

/** Each parcel's (line and tracking id) first entry, its scan; and the HAWB's first scan. */
function scans(records) {
  const first = new Map();
  for (const r of records) if (r.line && !first.has(parcelKey(r))) first.set(parcelKey(r), r);
  const scan = records.find((r) => r.kind === "transition" && r.state_to === "scanned") || first.values().next().value || records[0];
  return { first, scan };
}

function summary(hawb, records) {
  const parcels = new Map();
  for (const r of records) {
    if (!r.line) continue;
    const key = `${r.line} #${r.tracking_id}`;
    const p = parcels.get(key) || { first: r, last: r, closing: null, state: "" };
    p.last = r;
    if (r.state_to) p.state = r.state_to;
    if (CLOSED.includes(r.state_to) && ["transition", "confirmation", "inspection_result"].includes(r.kind)) p.closing = r;
    parcels.set(key, p);
  }
  const held = records.filter((r) => r.kind === "command" && r.data.accepted && ["hold", "lift"].includes(r.data.command)).pop();
  const cards = [...parcels.entries()].map(([key, p]) => {
    const took = p.closing ? p.closing.ts - p.first.ts : null;
    const closed = took !== null
      ? ` · <span class="closed-after" title="${escapeHtml(HUB_NOTE)}">closed after <span class="num">${escapeHtml(hubSeconds(took))}</span> (hub s)</span>`
      : " · still open";
    return `<div class="kpi"><span class="label">Parcel ${escapeHtml(key)}</span>
      <span class="value">${stateBadge(p.state)}</span>
      <span class="detail">first seen ${escapeHtml(fmtTime(p.first.wall_time))}${closed}</span></div>`;
  }).join("");
  const holdNote = held
    ? held.data.command === "hold"
      ? `<div class="kpi"><span class="label">Hold</span><span class="value"><span class="badge st-bad">held</span></span><span class="detail">by ${escapeHtml(held.user)}: ${escapeHtml(held.data.reason || "")}</span></div>`
      : `<div class="kpi"><span class="label">Hold</span><span class="value muted small-value">lifted</span><span class="detail">by ${escapeHtml(held.user)}</span></div>`
    : "";
  const links = [];
  if (can("hold")) links.push(`<a class="btn btn-small" href="/holds?hawb=${encodeURIComponent(hawb)}">Hold this HAWB…</a>`);
  const waiting = [...parcels.values()].some((p) => p.state === "in_inspection");
  if (waiting && can("inspect")) links.push(`<a class="btn btn-small btn-primary" href="/inspection?hawb=${encodeURIComponent(hawb)}">Record inspection…</a>`);
  return `<section class="panel trace-summary">
    <div class="trace-head"><h1 class="mono">${escapeHtml(hawb)}</h1><span class="muted">${records.length} journal entr${records.length === 1 ? "y" : "ies"}</span><span class="right">${links.join(" ")}</span></div>
    <div class="kpi-row">${cards}${holdNote}</div></section>`;
}

async function trace(hawb) {
  const result = $("result");
  result.innerHTML = `<p class="empty">Looking up ${escapeHtml(hawb)}…</p>`;
  let records;
  try {
    records = await api(`/api/v1/parcels/${encodeURIComponent(hawb)}`);
  } catch (e) {
    if (e.status === 404) {
      result.innerHTML = `<section class="panel notfound"><h2>No record of this HAWB</h2>
        <p>The journal has no entry for <strong class="mono">${escapeHtml(hawb)}</strong>: it was never scanned on these lines, held or inspected here. Check the label and try again.</p></section>`;
    } else {
      result.innerHTML = `<section class="panel"><p class="form-error">${escapeHtml(e.message)}</p></section>`;
    }
    document.title = `${hawb} · Trace · CargoGate`;
    return;
  }
  document.title = `${hawb} · Trace · CargoGate`;
  // since the scan of the entry's own parcel; entries of no parcel (holds) since the first scan
  const { first, scan } = scans(records);
  const rows = records.map((r) => {
    const since = r.ts - (r.line && first.has(parcelKey(r)) ? first.get(parcelKey(r)) : scan).ts;
    const reasons = r.reasons.map((x) => `<span class="reason" title="code ${escapeHtml(x.code)} · ${escapeHtml(x.name)}">${escapeHtml(humanReason(x.name))}</span>`).join(" ");
    return `<tr class="kind-${escapeHtml(r.kind)}">
      <td class="nowrap">${escapeHtml(fmtTime(r.wall_time))}</td>
      <td class="num muted since-scan">${since < 0 ? "" : "+"}${escapeHtml(hubSeconds(since))}</td>
      <td><span class="kind">${escapeHtml(KIND_LABEL[r.kind] || r.kind)}</span></td>
      <td class="nowrap">${r.line ? `${escapeHtml(r.line)} <span class="muted">#${escapeHtml(r.tracking_id)}</span>` : ""}</td>
      <td class="nowrap">${r.state_from ? `${escapeHtml(r.state_from.replace(/_/g, " "))} → ` : ""}${stateBadge(r.state_to)}</td>
      <td class="wrap">${what(r)}${reasons ? `<div class="reasons">${reasons}</div>` : ""}</td>
      <td>${r.user ? escapeHtml(r.user) : `<span class="dim">system</span>`}</td>
    </tr>`;
  }).join("");
  result.innerHTML = summary(hawb, records) + `<section class="panel section-gap">
    <h2>Timeline <span class="right muted">oldest first · policy ${escapeHtml(records.find((r) => r.policy_version)?.policy_version || "—")}</span></h2>
    <div class="table-wrap"><table class="timeline"><thead><tr><th>Time</th><th class="num" title="${escapeHtml(HUB_NOTE)}">Since scan <span class="unit">(hub s)</span></th><th>What</th><th>Line #id</th><th>State</th><th>Detail</th><th>Who</th></tr></thead>
    <tbody>${rows}</tbody></table></div></section>`;
}

await header("trace");
const hawb = (new URLSearchParams(location.search).get("hawb") || "").trim();
$("hawb").value = hawb;
if (hawb) {
  await trace(hawb);
} else {
  $("result").innerHTML = "";
}
$("hawb").focus();
$("hawb").select();
