import { api, can, header, live, session, toast, fmtDuration, fmtTime, escapeHtml } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const STORE = "cargogate.inspection.recent";
const KEEP = 50;
const OUTCOMES = { cleared: "Cleared", seized: "Seized", referred: "Referred" };
let busy = false;

// --- the list of outcomes recorded at this station (this browser) --------------------------

function loadRecent() {
  try { return JSON.parse(localStorage.getItem(STORE) || "[]"); } catch (e) { return []; }
}

function saveRecent(list) {
  try { localStorage.setItem(STORE, JSON.stringify(list.slice(0, KEEP))); } catch (e) { /* storage full or off */ }
}

function renderRecent() {
  const list = loadRecent();
  if (!list.length) { $("recent").innerHTML = `<p class="empty">Nothing recorded at this station yet.</p>`; return; }
  $("recent").innerHTML = `<table><thead><tr><th>Time</th><th>HAWB</th><th>Outcome</th><th class="num" title="from scan to the outcome, on the hub's clock">Clearance (hub s)</th><th>Officer</th><th>Note / answer</th></tr></thead><tbody>${
    list.map((r) => `<tr class="${r.accepted ? "" : "refused"}">
      <td class="nowrap">${escapeHtml(fmtTime(r.at))}</td>
      <td><a class="mono" href="/trace?hawb=${encodeURIComponent(r.hawb)}">${escapeHtml(r.hawb)}</a></td>
      <td>${r.accepted ? `<span class="badge out-${escapeHtml(r.outcome)}">${escapeHtml(OUTCOMES[r.outcome] || r.outcome)}</span>` : `<span class="badge st-bad">refused</span>`}</td>
      <td class="num">${r.clearance_s === null || r.clearance_s === undefined ? "—" : escapeHtml(fmtDuration(r.clearance_s))}</td>
      <td>${escapeHtml(r.user)}</td>
      <td class="wrap">${r.accepted ? escapeHtml(r.note || "") : `<span class="txt-bad">${escapeHtml(r.message)}</span>`}</td>
    </tr>`).join("")}</tbody></table>`;
}

// --- recording -----------------------------------------------------------------------------

function showAnswer(kind, html) {
  const el = $("answer");
  el.hidden = false;
  el.className = `answer answer-${kind}`;
  el.innerHTML = html;
}

async function record(outcome) {
  if (busy) return;
  const hawb = $("hawb").value.trim();
  if (!hawb) {
    showAnswer("error", `<div class="answer-title">Scan or type the HAWB first</div>`);
    $("hawb").setAttribute("aria-invalid", "true");
    $("hawb").focus();
    return;
  }
  $("hawb").removeAttribute("aria-invalid");
  const note = $("note").value.trim();
  busy = true;
  document.querySelectorAll(".outcome").forEach((b) => { b.disabled = true; });
  const me = await session();
  const entry = { at: new Date().toISOString(), hawb, outcome, note, user: me.user, accepted: false, message: "", clearance_s: null };
  try {
    const answer = await api("/api/v1/inspections", { method: "POST", body: { hawb, outcome, note } });
    Object.assign(entry, { accepted: answer.accepted, message: answer.message, clearance_s: answer.clearance_s });
    showAnswer(outcome, `
      <div class="answer-title"><span class="mono">${escapeHtml(hawb)}</span> <span class="badge out-${escapeHtml(outcome)}">${escapeHtml(OUTCOMES[outcome])}</span> — parcel closed</div>
      <div class="answer-clearance"><span class="label">Clearance time</span>
        <span class="big" id="clearance">${answer.clearance_s === null || answer.clearance_s === undefined ? "—" : escapeHtml(fmtDuration(answer.clearance_s))}</span>
        <span class="muted">from scan to this outcome, on the hub's clock</span></div>
      <div class="muted">${escapeHtml(answer.message)}</div>`);
    toast(`${hawb}: ${OUTCOMES[outcome]}`, "ok");
    loadWaiting(true);
    $("hawb").value = "";
    $("note").value = "";
  } catch (e) {
    entry.message = e.message;
    showAnswer("error", `<div class="answer-title">Not recorded: <span class="mono">${escapeHtml(hawb)}</span></div><div class="answer-message">${escapeHtml(e.message)}</div>`);
    if (e.field === "hawb") $("hawb").setAttribute("aria-invalid", "true");
    if (e.status === 0 || e.status >= 500) entry.message = `not recorded: ${e.message}`;
  } finally {
    if (entry.message !== "log in first") {
      const list = loadRecent();
      list.unshift(entry);
      saveRecent(list);
      renderRecent();
    }
    busy = false;
    document.querySelectorAll(".outcome").forEach((b) => { b.disabled = !can("inspect"); });
    $("hawb").focus();
    $("hawb").select();
  }
}

document.querySelectorAll(".outcome").forEach((b) => b.addEventListener("click", () => record(b.dataset.outcome)));

// A barcode scanner types the HAWB then Enter: Enter moves on to the note, and from the note
// to the Cleared button (a second Enter there records it; Tab reaches Seized and Referred).
$("hawb").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    if ($("hawb").value.trim()) $("note").focus();
  }
});
$("note").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); $("btn-cleared").focus(); }
});
$("record").addEventListener("submit", (event) => event.preventDefault());
// F1 / F2 / F3 record from anywhere on the page
document.addEventListener("keydown", (event) => {
  const outcome = { F1: "cleared", F2: "seized", F3: "referred" }[event.key];
  if (!outcome || !can("inspect") || document.querySelector("dialog[open]")) return;
  event.preventDefault();
  record(outcome);
});

// --- parcels waiting at inspection (live) --------------------------------------------------

const WAITING_MAX = 1000; // the API's largest list
let waiting = null; // every parcel waiting at inspection, oldest first (GET /parcels/open)
let atInspection = null; // the lines' own count, from the live stream
let loading = false;
let again = false; // asked for while a request was under way: load once more after it
let loadedAt = 0;

/** Fetch the parcels waiting at inspection: at most once a second (unless `now`, after an
 *  outcome was recorded), one request at a time. */
async function loadWaiting(now = false) {
  if (loading) { again = again || now; return; }
  if (!now && Date.now() - loadedAt < 1000) return;
  loading = true;
  try {
    waiting = await api(`/api/v1/parcels/open?state=in_inspection&limit=${WAITING_MAX}`);
    loadedAt = Date.now();
    renderWaiting();
  } catch (e) {
    if (e.status !== 401) renderWaitingHtml(`<p class="form-error">${escapeHtml(e.message)}</p>`);
  } finally {
    loading = false;
  }
  if (again) { again = false; loadWaiting(true); }
}

function renderWaiting() {
  if (waiting === null) return;
  const full = waiting.length >= WAITING_MAX; // more wait than one list holds: the lines say how many
  $("waiting-count").textContent = full ? Math.max(atInspection || 0, waiting.length).toLocaleString("en-US") : String(waiting.length);
  $("waiting-note").textContent = full ? `the oldest ${WAITING_MAX.toLocaleString("en-US")} shown` : "oldest first · click to fill in";
  if (!waiting.length) { renderWaitingHtml(`<p class="empty">No parcel waits at inspection.</p>`); return; }
  renderWaitingHtml(`<table><thead><tr><th>HAWB</th><th>Line #id</th><th class="num">Scanned</th>
    <th class="num" title="since the scan on the hub's clock: what the clearance target counts">Age (hub s)</th></tr></thead><tbody>${
    waiting.map((p) => `<tr class="clickable" data-hawb="${escapeHtml(p.hawb)}">
      <td><button type="button" class="link-btn hawb-fill mono" data-fill="${escapeHtml(p.hawb)}" data-key="fill-${escapeHtml(p.hawb)}">${escapeHtml(p.hawb)}</button></td>
      <td class="nowrap">${escapeHtml(p.line)} <span class="muted">#${escapeHtml(p.tracking_id)}</span></td>
      <td class="num nowrap muted">${escapeHtml(fmtTime(p.arrived_at))}</td>
      <td class="num">${escapeHtml(fmtDuration(p.age_s))}</td></tr>`).join("")}</tbody></table>`);
}

function renderWaitingHtml(html) {
  const el = $("waiting");
  if (el._html === html) return;
  const key = document.activeElement && el.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  el.innerHTML = html;
  el._html = html;
  if (key) { const again = el.querySelector(`[data-key="${CSS.escape(key)}"]`); if (again) again.focus(); }
}

function onOverview(o) {
  atInspection = o.lines.reduce((n, l) => n + l.at_inspection, 0);
  loadWaiting();
}

$("waiting").addEventListener("click", (event) => {
  const row = event.target.closest("[data-hawb]");
  if (!row) return;
  $("hawb").value = row.dataset.hawb;
  $("hawb").removeAttribute("aria-invalid");
  $("note").focus();
});

$("clear-recent").addEventListener("click", () => {
  saveRecent([]);
  renderRecent();
  $("hawb").focus();
});

// focus first, before anything else loads: a scanner may fire as soon as the page shows
$("hawb").focus();
renderRecent();
await header("inspection");
if (!can("inspect")) {
  $("denied").hidden = false;
  document.querySelectorAll(".outcome").forEach((b) => { b.disabled = true; });
}
const me = await session();
$("station").textContent = `logged in: ${me.user} (${me.role})`;
const preset = new URLSearchParams(location.search).get("hawb");
if (preset) { $("hawb").value = preset; $("note").focus(); } else { $("hawb").focus(); }
live(onOverview);
