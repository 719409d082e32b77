import { render, api, can, header, live, since, toast, fmtDuration, fmtTime, escapeHtml } from "/static/common.js";

const $ = (id) => document.getElementById(id);
let holds = [];
let count = null;
let liftHawb = null;

function renderHolds() {
  $("hold-count").textContent = String(holds.length);
  if (!holds.length) { render($("holds"), `<p class="empty">No HAWB is held.</p>`); return; }
  const mayLift = can("hold");
  const rows = [...holds].sort((a, b) => a.since_s - b.since_s).map((h) => `<tr>
    <td><a class="mono" href="/trace?hawb=${encodeURIComponent(h.hawb)}">${escapeHtml(h.hawb)}</a></td>
    <td class="wrap">${escapeHtml(h.reason)}</td>
    <td>${escapeHtml(h.user)}</td>
    <td class="nowrap">${escapeHtml(fmtTime(h.since))}</td>
    <td class="num">${escapeHtml(fmtDuration(since(h.since)))}</td>
    ${mayLift ? `<td class="actions-cell"><button type="button" class="btn btn-small btn-danger" data-lift="${escapeHtml(h.hawb)}" data-key="lift-${escapeHtml(h.hawb)}">Lift…</button></td>` : ""}
  </tr>`).join("");
  render($("holds"), `<table><thead><tr><th>HAWB</th><th>Reason</th><th>Placed by</th><th>Since</th><th class="num">Held for</th>${mayLift ? "<th></th>" : ""}</tr></thead><tbody>${rows}</tbody></table>`);
}

async function loadHolds() {
  try {
    holds = await api("/api/v1/holds");
  } catch (e) {
    render($("holds"), `<p class="form-error">${escapeHtml(e.message)}</p>`);
    return;
  }
  renderHolds();
}

// --- place ---------------------------------------------------------------------------------

function fieldError(message, field) {
  $("place-error").textContent = message;
  for (const id of ["hawb", "reason"]) $(id).removeAttribute("aria-invalid");
  if (field === "hawb" || field === "reason") { $(field).setAttribute("aria-invalid", "true"); $(field).focus(); }
}

$("place").addEventListener("submit", async (event) => {
  event.preventDefault();
  const hawb = $("hawb").value.trim();
  const reason = $("reason").value.trim();
  if (!hawb) return fieldError("scan or type the HAWB to hold", "hawb");
  if (!reason) return fieldError("say why the HAWB is held", "reason");
  fieldError("");
  $("place-submit").disabled = true;
  try {
    const answer = await api("/api/v1/holds", { method: "POST", body: { hawb, reason } });
    toast(answer.message, "ok");
    $("hawb").value = "";
    $("reason").value = "";
    $("hawb").focus();
    await loadHolds();
  } catch (e) {
    fieldError(e.message, e.field);
  } finally {
    $("place-submit").disabled = false;
  }
});
// a scanner ends the HAWB with Enter: move on to the reason instead of submitting half a form
$("hawb").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); if ($("hawb").value.trim()) $("reason").focus(); }
});

// --- lift ----------------------------------------------------------------------------------

$("holds").addEventListener("click", (event) => {
  const button = event.target.closest("[data-lift]");
  if (!button) return;
  const hold = holds.find((h) => h.hawb === button.dataset.lift);
  liftHawb = button.dataset.lift;
  $("lift-hawb").textContent = liftHawb;
  $("lift-who").textContent = hold ? hold.user : "";
  $("lift-why").textContent = hold ? hold.reason : "";
  $("lift-reason").value = "";
  $("lift-error").textContent = "";
  $("lift-submit").disabled = false;
  $("lift-dialog").showModal();
  $("lift-reason").focus();
});
$("lift-cancel").addEventListener("click", () => $("lift-dialog").close());
$("lift-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reason = $("lift-reason").value.trim();
  if (!reason) { $("lift-error").textContent = "say why the hold is lifted"; $("lift-reason").focus(); return; }
  $("lift-submit").disabled = true;
  try {
    const answer = await api(`/api/v1/holds/${encodeURIComponent(liftHawb)}/lift`, { method: "POST", body: { reason } });
    $("lift-dialog").close();
    toast(answer.message, "ok");
    await loadHolds();
    const next = document.querySelector("[data-lift]") || $("hawb");
    if (next && !next.closest("[hidden]")) next.focus();
  } catch (e) {
    $("lift-error").textContent = e.message;
    $("lift-submit").disabled = false;
  }
});

await header("holds");
if (can("hold")) {
  $("place-panel").hidden = false;
  const preset = new URLSearchParams(location.search).get("hawb");
  if (preset) { $("hawb").value = preset; $("reason").focus(); } else { $("hawb").focus(); }
} else {
  $("holds-note").textContent = "your role may see holds, not place or lift them";
}
await loadHolds();
live((o) => {
  if (o.holds !== count) { count = o.holds; loadHolds(); } else { renderHolds(); }
});
// holds placed and lifted elsewhere between two updates leave the count unchanged
setInterval(() => { if (!document.hidden) loadHolds(); }, 15000);
