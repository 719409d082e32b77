import { render, api, can, header, live, since, toast, fmtDuration, fmtTime, escapeHtml } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
let offset = 0;
let lastActive = [];
let ackSource = null;

const SEV_ORDER = { critical: 0, warning: 1, info: 2 };

// --- active alarms (live) ----------------------------------------------------------------

function renderActive(o) {
  lastActive = o.alarms;
  $("active-count").textContent = o.alarms.length ? String(o.alarms.length) : "";
  if (!o.alarms.length) { render($("active"), `<p class="empty ok-line">No active alarms.</p>`); return; }
  const mayAck = can("acknowledge");
  const rows = [...o.alarms].sort((a, b) => SEV_ORDER[a.severity] - SEV_ORDER[b.severity] || a.since_s - b.since_s).map((a) => {
    const ack = a.acknowledged_by
      ? `<span class="muted">by ${escapeHtml(a.acknowledged_by)}</span>${a.comment ? `: ${escapeHtml(a.comment)}` : ""}`
      : `<span class="txt-warn">unacknowledged</span>`;
    const button = mayAck
      ? `<button type="button" class="btn btn-small ${a.acknowledged_by ? "" : "btn-primary"}" data-ack="${escapeHtml(a.source)}" data-key="ack-${escapeHtml(a.source)}">${a.acknowledged_by ? "Comment again" : "Acknowledge"}</button>`
      : "";
    return `<tr class="sev-row-${escapeHtml(a.severity)}">
      <td><span class="badge sev-badge-${escapeHtml(a.severity)}">${escapeHtml(a.severity)}</span></td>
      <td class="mono">${escapeHtml(a.source)}</td>
      <td class="wrap">${escapeHtml(a.message)}</td>
      <td class="num" title="raised ${escapeHtml(fmtTime(a.since))}">${escapeHtml(fmtDuration(since(a.since, o.taken_at)))}</td>
      <td class="wrap">${ack}</td>
      ${mayAck ? `<td class="actions-cell">${button}</td>` : ""}
    </tr>`;
  }).join("");
  render($("active"), `<table><thead><tr><th>Severity</th><th>Source</th><th>Message</th><th class="num">Active for</th><th>Acknowledged</th>${mayAck ? "<th></th>" : ""}</tr></thead><tbody>${rows}</tbody></table>`);
}

function openAck(source) {
  const alarm = lastActive.find((a) => a.source === source);
  ackSource = source;
  $("ack-source").textContent = source;
  $("ack-message").textContent = alarm ? alarm.message : "";
  const sev = alarm ? alarm.severity : "warning";
  $("ack-sev").className = `badge sev-badge-${sev}`;
  $("ack-sev").textContent = sev;
  $("ack-comment").value = "";
  $("ack-error").textContent = "";
  $("ack-submit").disabled = false;
  $("ack-dialog").showModal();
  $("ack-comment").focus();
}

$("active").addEventListener("click", (event) => {
  const button = event.target.closest("[data-ack]");
  if (button) openAck(button.dataset.ack);
});
$("ack-cancel").addEventListener("click", () => $("ack-dialog").close());
$("ack-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const comment = $("ack-comment").value.trim();
  $("ack-submit").disabled = true;
  try {
    const answer = await api("/api/v1/alarms/ack", { method: "POST", body: { source: ackSource, comment } });
    $("ack-dialog").close();
    toast(answer.message || `alarm ${ackSource} acknowledged`, "ok");
    const back = document.querySelector(`[data-ack="${CSS.escape(ackSource)}"]`);
    if (back) back.focus();
  } catch (e) {
    $("ack-error").textContent = e.message;
    $("ack-submit").disabled = false;
  }
});
// Ctrl+Enter in the comment sends it (Enter alone makes a new line)
$("ack-comment").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); $("ack-form").requestSubmit(); }
});

// --- history -----------------------------------------------------------------------------

function toIso(local) {
  if (!local) return "";
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

function query(extra = {}) {
  const form = new FormData($("filters"));
  const params = new URLSearchParams();
  const line = (form.get("line") || "").trim();
  if (line) params.set("line", line);
  if (form.get("severity")) params.set("severity", form.get("severity"));
  const since = toIso(form.get("since"));
  if (since) params.set("since", since);
  const until = toIso(form.get("until"));
  if (until) params.set("until", until);
  const text = (form.get("text") || "").trim();
  if (text) params.set("text", text);
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params;
}

function severityOf(source) {
  // the server's rule (schemas.severity), for rows that do not carry it
  if (["plc-link", "plc-heartbeat", "telegrams-lost", "journal", "recovery"].some((w) => source.includes(w))) return "critical";
  if (source.includes("conflict")) return "info";
  return "warning";
}

/** The CSV download: the whole search (every matching alarm, newest first), not one page. */
function syncCsv() {
  $("csv").href = `/api/v1/alarms/history?${query({ format: "csv" })}`;
}

async function loadHistory() {
  syncCsv();
  $("history-error").textContent = "";
  let page;
  try {
    page = await api(`/api/v1/alarms/history?${query({ limit: PAGE, offset })}`);
  } catch (e) {
    $("history-error").textContent = e.message;
    return;
  }
  if (!page.records.length) {
    render($("history"), `<p class="empty">No alarms match.</p>`);
  } else {
    const rows = page.records.map((r) => {
      const source = String(r.data.source ?? "");
      const sev = severityOf(source);
      const raised = r.state_to === "active";
      return `<tr>
        <td class="nowrap">${escapeHtml(fmtTime(r.wall_time))}</td>
        <td><span class="badge sev-badge-${sev}">${sev}</span></td>
        <td>${raised ? `<span class="txt-bad">raised</span>` : `<span class="txt-ok">cleared</span>`}</td>
        <td>${escapeHtml(r.line)}</td>
        <td class="mono">${escapeHtml(source)}</td>
        <td class="wrap">${escapeHtml(r.data.message ?? "")}</td>
      </tr>`;
    }).join("");
    render($("history"), `<table><thead><tr><th>Time</th><th>Severity</th><th>Event</th><th>Line</th><th>Source</th><th>Message</th></tr></thead><tbody>${rows}</tbody></table>`);
  }
  const from = page.total ? offset + 1 : 0;
  const to = Math.min(offset + PAGE, page.total);
  render($("pager"), `
    <button type="button" class="btn btn-small" data-page="prev" data-key="prev" ${offset === 0 ? "disabled" : ""}>← Newer</button>
    <span>${from}–${to} of ${page.total}</span>
    <button type="button" class="btn btn-small" data-page="next" data-key="next" ${offset + PAGE >= page.total ? "disabled" : ""}>Older →</button>`);
}

$("pager").addEventListener("click", (event) => {
  const button = event.target.closest("[data-page]");
  if (!button || button.disabled) return;
  offset = button.dataset.page === "next" ? offset + PAGE : Math.max(0, offset - PAGE);
  loadHistory();
});

$("filters").addEventListener("submit", (event) => { event.preventDefault(); offset = 0; loadHistory(); });
$("filters").addEventListener("reset", () => setTimeout(() => { offset = 0; loadHistory(); }, 0));
$("filters").addEventListener("input", syncCsv);
$("filters").addEventListener("change", syncCsv);

await header("alarms");
$("ack-hint").textContent = can("acknowledge") ? "" : "your role may watch alarms, not acknowledge them";
live(renderActive);
loadHistory();
// new alarms arrive in the history as they are raised: refresh the first page now and then
setInterval(() => { if (offset === 0 && !document.hidden) loadHistory(); }, 10000);
