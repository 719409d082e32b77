import { api, can, header, fmtTime, escapeHtml } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const PAGE = 100;
let offset = 0;

const KINDS = [
  ["decision", "Decision"], ["transition", "Scan / transition"], ["confirmation", "Divert"],
  ["inspection_result", "Inspection"], ["command", "Command"], ["alarm", "Alarm"],
  ["deadline_miss", "Deadline miss"], ["illegal_transition", "Illegal transition"],
];

function toIso(local) {
  if (!local) return "";
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function query(extra = {}) {
  const form = $("filters");
  const params = new URLSearchParams();
  for (const name of ["since", "until"]) {
    const iso = toIso(form.elements[name].value);
    if (iso) params.set(name, iso);
  }
  for (const name of ["line", "hawb", "reason", "user", "text"]) {
    const v = form.elements[name].value.trim();
    if (v) params.set(name, v);
  }
  for (const box of form.querySelectorAll("input[name=kind]:checked")) params.append("kind", box.value);
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params;
}

/** The CSV download: the whole search (every matching record, newest first), not one page. */
function syncLinks() {
  $("csv").href = `/api/v1/audit?${query({ format: "csv" })}`;
}

function humanReason(name) {
  const s = String(name).toLowerCase().replace(/_/g, " ").replace(/\bxray\b/g, "x-ray");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function detail(r) {
  const d = r.data || {};
  const bits = [];
  if (r.kind === "command") {
    bits.push(escapeHtml(d.command || ""));
    for (const k of ["outcome", "source", "reason", "note", "comment"]) if (d[k]) bits.push(`${k}: ${escapeHtml(d[k])}`);
    if (d.accepted === false) bits.push(`<span class="txt-bad">refused: ${escapeHtml(d.refused || "")}</span>`);
  } else if (r.kind === "alarm") {
    bits.push(`<span class="mono">${escapeHtml(d.source || "")}</span> ${escapeHtml(d.message || "")}`);
  } else if (r.kind === "decision") {
    bits.push(`→ ${escapeHtml(r.destination)}${r.lane !== null ? ` lane ${escapeHtml(r.lane)}` : ""}`);
  } else if (r.kind === "confirmation") {
    bits.push(`${escapeHtml(d.status || "")}${r.lane !== null ? ` lane ${escapeHtml(r.lane)}` : ""}`);
  } else if (r.kind === "inspection_result") {
    bits.push(`${escapeHtml(d.outcome || "")}${d.note ? ` · ${escapeHtml(d.note)}` : ""}`);
  }
  if (r.reasons.length) bits.push(r.reasons.map((x) => `<span class="reason" title="${escapeHtml(x.code)}">${escapeHtml(humanReason(x.name))}</span>`).join(" "));
  return bits.join(" · ");
}

async function search() {
  syncLinks();
  $("error").textContent = "";
  let page;
  try {
    page = await api(`/api/v1/audit?${query({ limit: PAGE, offset })}`);
  } catch (e) {
    $("error").textContent = e.field ? `${e.field}: ${e.message}` : e.message;
    return;
  }
  $("total").textContent = page.total.toLocaleString("en-US");
  if (!page.records.length) {
    $("results").innerHTML = `<p class="empty">Nothing in the audit trail matches.</p>`;
  } else {
    $("results").innerHTML = `<table><thead><tr><th class="num">Seq</th><th>Time</th><th>Kind</th><th>Line #id</th><th>HAWB</th><th>State</th><th>Detail</th><th>User</th></tr></thead><tbody>${
      page.records.map((r) => `<tr>
        <td class="num muted">${escapeHtml(r.seq)}</td>
        <td class="nowrap">${escapeHtml(fmtTime(r.wall_time))}</td>
        <td>${escapeHtml(r.kind.replace(/_/g, " "))}</td>
        <td>${r.line ? `${escapeHtml(r.line)}${r.tracking_id ? ` <span class="muted">#${escapeHtml(r.tracking_id)}</span>` : ""}` : ""}</td>
        <td>${r.hawb ? `<a class="mono" href="/trace?hawb=${encodeURIComponent(r.hawb)}">${escapeHtml(r.hawb)}</a>` : ""}</td>
        <td>${r.state_from ? `${escapeHtml(r.state_from.replace(/_/g, " "))} → ` : ""}${escapeHtml((r.state_to || "").replace(/_/g, " "))}</td>
        <td class="wrap">${detail(r)}</td>
        <td>${r.user ? escapeHtml(r.user) : `<span class="dim">system</span>`}</td>
      </tr>`).join("")}</tbody></table>`;
  }
  const from = page.total ? offset + 1 : 0;
  const to = Math.min(offset + page.records.length, page.total);
  $("pager").innerHTML = `
    <button type="button" class="btn btn-small" data-page="prev" ${offset === 0 ? "disabled" : ""}>← Newer</button>
    <span>${from.toLocaleString("en-US")}–${to.toLocaleString("en-US")} of ${page.total.toLocaleString("en-US")}</span>
    <button type="button" class="btn btn-small" data-page="next" ${offset + PAGE >= page.total ? "disabled" : ""}>Older →</button>`;
  // the URL holds the query, so a search can be bookmarked or sent to a colleague
  const url = `/audit?${query(offset ? { offset } : {})}`;
  history.replaceState(null, "", url);
}

$("pager").addEventListener("click", (event) => {
  const button = event.target.closest("[data-page]");
  if (!button || button.disabled) return;
  offset = button.dataset.page === "next" ? offset + PAGE : Math.max(0, offset - PAGE);
  search().then(() => { const again = $("pager").querySelector(`[data-page="${button.dataset.page}"]`); if (again && !again.disabled) again.focus(); });
});

await header("audit");
if (!can("audit")) {
  $("denied").hidden = false;
} else {
  $("audit-page").hidden = false;
  $("kinds").innerHTML = KINDS.map(([v, label]) => `<label class="check"><input type="checkbox" name="kind" value="${v}"> ${escapeHtml(label)}</label>`).join("");
  try {
    const { reasons } = await api("/api/v1/reasons");
    $("reason").insertAdjacentHTML("beforeend", reasons.map((r) => `<option value="${escapeHtml(r.code)}">${escapeHtml(r.code)} ${escapeHtml(humanReason(r.name))}</option>`).join(""));
  } catch (e) {
    $("error").textContent = `reasons: ${e.message}`;
  }
  // restore a query from the URL
  const params = new URLSearchParams(location.search);
  const form = $("filters");
  for (const name of ["line", "hawb", "reason", "user", "text"]) if (params.get(name)) form.elements[name].value = params.get(name);
  for (const name of ["since", "until"]) if (params.get(name)) form.elements[name].value = toLocalInput(params.get(name));
  for (const kind of params.getAll("kind")) { const box = form.querySelector(`input[name=kind][value="${CSS.escape(kind)}"]`); if (box) box.checked = true; }
  offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; search(); });
  form.addEventListener("reset", () => setTimeout(() => { offset = 0; search(); }, 0));
  form.addEventListener("input", syncLinks);
  form.addEventListener("change", syncLinks);
  form.elements.since.focus();
  search();
}
