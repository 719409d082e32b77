// CargoGate console: shared helpers for every page (plain ES module, no build step).
//
// API (stable; other pages import it):
//   api(path, {method, body})   fetch JSON with the session cookie; X-CSRF-Token on non-GET;
//                               401 -> /login?next=<here>; other non-2xx -> Error(.status, .field)
//   session()                   GET /api/v1/session, cached; 401 -> login (and never settles)
//   can(permission)             after session() resolved
//   header(active)              renders the top bar into <header id="top"> (site name from the session)
//   live(onOverview)            EventSource on /api/v1/live; sets the header's indicator
//   toast(message, kind)        kinds info / ok / error; aria-live, non-blocking
//   since(iso, at)              wall seconds from an ISO wall time to `at` (ISO; default now,
//                               on the controller's wall clock as the live stream shows it)
//   fmtDuration, fmtShare, fmtTime, escapeHtml

let _session = null;
let _sessionPromise = null;

/** Replace ``el``'s content with ``html`` (escaped by the caller) when it changed, keeping
 * the keyboard focus on the element with the same ``data-key``: live updates must not
 * steal an operator's focus. */
export function render(el, html) {
  if (el._html === html) return;
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.dataset.key : null;
  el.innerHTML = html;
  el._html = html;
  if (key) {
    const again = el.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

export function escapeHtml(s) {
  if (s === null || s === undefined) return "";
  return String(s)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function toLogin() {
  const here = location.pathname + location.search;
  if (location.pathname === "/login") return;
  location.assign("/login?next=" + encodeURIComponent(here));
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") {
    if (_session === null && !(method === "POST" && path === "/api/v1/session")) {
      try { await session(); } catch (e) { /* login redirect is under way */ }
    }
    if (_session) headers["X-CSRF-Token"] = _session.csrf;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    const err = new Error("the controller does not answer (network): " + e.message);
    err.status = 0;
    err.field = null;
    throw err;
  }
  if (response.status === 401 && path !== "/api/v1/session") {
    _session = null;
    _sessionPromise = null;
    toLogin();
    const err = new Error("log in first");
    err.status = 401;
    err.field = null;
    throw err;
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    const err = new Error(message);
    err.status = response.status;
    err.field = (data && data.field) || null;
    throw err;
  }
  return data;
}

export async function session() {
  if (_session) return _session;
  if (!_sessionPromise) {
    _sessionPromise = (async () => {
      const response = await fetch("/api/v1/session", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401) {
        // the page is leaving for the login page: never settle, so nothing renders meanwhile
        toLogin();
        return new Promise(() => {});
      }
      if (!response.ok) {
        const err = new Error(`session: ${response.status}`);
        err.status = response.status;
        throw err;
      }
      _session = await response.json();
      return _session;
    })();
    _sessionPromise.catch(() => { _sessionPromise = null; });
  }
  return _sessionPromise;
}

export function can(permission) {
  return !!(_session && _session.permissions.includes(permission));
}

const PAGES = [
  { name: "overview", label: "Overview", needs: "view" },
  { name: "alarms", label: "Alarms", needs: "view" },
  { name: "holds", label: "Holds", needs: "view" },
  { name: "trace", label: "Trace", needs: "view" },
  { name: "review", label: "Review", needs: "view" },
  { name: "inspection", label: "Inspection", needs: "inspect" },
  { name: "audit", label: "Audit", needs: "audit" },
];

let _liveState = "off";
let _skewMs = 0; // the controller's wall clock minus this browser's, from the live stream

function setIndicator(state) {
  _liveState = state;
  const el = document.getElementById("live-indicator");
  if (!el) return;
  el.dataset.state = state;
  const label = { live: "LIVE", reconnecting: "RECONNECTING", off: "" }[state] || state;
  el.hidden = state === "off";
  el.querySelector(".label").textContent = label;
  el.title = {
    live: "receiving the live stream",
    reconnecting: "live stream lost: reconnecting",
    off: "this page does not follow the live stream",
  }[state] || "";
}

export async function header(active) {
  const s = await session();
  const top = document.getElementById("top");
  if (!top) return s;
  const site = s.site || "";
  const links = PAGES.map((p) => {
    const allowed = s.permissions.includes(p.needs);
    const current = p.name === active ? ' aria-current="page"' : "";
    if (!allowed) {
      return `<span class="nav-link disabled" title="your role (${escapeHtml(s.role)}) may not ${escapeHtml(p.needs)}">${escapeHtml(p.label)}</span>`;
    }
    return `<a class="nav-link" href="/${p.name}"${current}>${escapeHtml(p.label)}</a>`;
  }).join("");
  top.className = "topbar";
  top.innerHTML = `
    <a class="skip" href="#main">Skip to content</a>
    <div class="brand"><span class="logo" aria-hidden="true">CG</span><span class="brand-name">CargoGate</span>
      <span id="site-name" class="site">${escapeHtml(site)}</span></div>
    <nav aria-label="Pages">${links}</nav>
    <div class="top-right">
      <span id="live-indicator" class="live-ind" data-state="off" role="status"><span class="dot" aria-hidden="true"></span><span class="label"></span></span>
      <span class="who"><span class="user">${escapeHtml(s.user)}</span> <span class="role role-${escapeHtml(s.role)}">${escapeHtml(s.role)}</span></span>
      <button type="button" id="logout" class="btn btn-small">Log out</button>
    </div>`;
  setIndicator(_liveState);
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/api/v1/session", { method: "DELETE" }); } catch (e) { /* logged out anyway */ }
    _session = null;
    _sessionPromise = null;
    location.assign("/login");
  });
  return s;
}

export function live(onOverview) {
  let source = null;
  let retry = null;
  let closed = false;
  let delay = 1000;
  const open = () => {
    if (closed) return;
    source = new EventSource("/api/v1/live", { withCredentials: true });
    source.onopen = () => { delay = 1000; };
    source.onmessage = (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      setIndicator("live");
      const taken = new Date(data.taken_at).getTime();
      if (!Number.isNaN(taken)) _skewMs = taken - Date.now();
      try { onOverview(data); } catch (e) { console.error("live handler failed", e); }
    };
    source.onerror = () => {
      setIndicator("reconnecting");
      source.close();
      if (closed) return;
      clearTimeout(retry);
      retry = setTimeout(async () => {
        // a 401 behind the stream means the session ended: api() sends us to the login page
        try { await api("/api/v1/session"); } catch (e) { if (e.status === 401) return; }
        open();
      }, delay);
      delay = Math.min(delay * 2, 15000);
    };
  };
  setIndicator("reconnecting");
  open();
  return { close() { closed = true; clearTimeout(retry); if (source) source.close(); setIndicator("off"); } };
}

function toastBox() {
  let box = document.getElementById("toasts");
  if (!box) {
    box = document.createElement("div");
    box.id = "toasts";
    box.className = "toasts";
    box.setAttribute("aria-live", "polite");
    box.setAttribute("role", "status");
    document.body.appendChild(box);
  }
  return box;
}

export function toast(message, kind = "info") {
  const box = toastBox();
  const el = document.createElement("div");
  el.className = `toast toast-${kind}`;
  el.textContent = String(message);
  if (kind === "error") el.setAttribute("role", "alert");
  box.appendChild(el);
  const ttl = kind === "error" ? 8000 : 4000;
  setTimeout(() => el.remove(), ttl);
  el.addEventListener("click", () => el.remove());
  while (box.children.length > 5) box.firstElementChild.remove();
  return el;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "—";
  let s = Number(seconds);
  const neg = s < 0;
  s = Math.abs(s);
  let out;
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 10) out = s.toFixed(1) + " s";
  else if (s < 60) out = Math.floor(s) + " s";
  else if (s < 3600) out = `${Math.floor(s / 60)}m ${pad(Math.floor(s % 60))}s`;
  else if (s < 86400) out = `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  else out = `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  return neg ? "−" + out : out;
}

export function since(iso, at) {
  if (iso === null || iso === undefined || iso === "") return null;
  const t = new Date(iso).getTime();
  const now = at ? new Date(at).getTime() : Date.now() + _skewMs;
  return Number.isNaN(t) || Number.isNaN(now) ? null : Math.max(0, (now - t) / 1000);
}

export function fmtShare(x) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return "—";
  return (Number(x) * 100).toFixed(1) + " %";
}

export function fmtTime(isoOrDate) {
  if (isoOrDate === null || isoOrDate === undefined || isoOrDate === "") return "—";
  const d = isoOrDate instanceof Date ? isoOrDate : new Date(isoOrDate);
  if (Number.isNaN(d.getTime())) return String(isoOrDate);
  const pad = (n) => String(n).padStart(2, "0");
  const today = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}
