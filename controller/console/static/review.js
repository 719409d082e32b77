// CargoGate console: the officer review station.
//
// Parcels whose evidence is ambiguous wait here while they travel to their divert point. The
// officer looks at the scanner's image and the risk feed and answers Clear or Inspect before
// the deadline; without an answer the parcel goes to inspection by itself.
//
// Data: GET /api/v1/reviews once, then the live stream (each message's `reviews`). Every
// review carries `time_left_s` (wall seconds when the list was taken) out of `window_s` (wall
// seconds from the scan to the deadline); the countdowns run here, from that value and the
// moment the update arrived, every 100 ms, and their colour and bar show the share of the
// window left. The X-ray scores come with the policy's thresholds per class (`thresholds`):
// below `clear` clean, from `alarm` on an alarm, in between ambiguous (why it is here).
// Verdicts: POST /api/v1/lines/{line}/parcels/{tracking_id}/verdict (409 when it went on).
// Images: GET /api/v1/images/{hawb}?tracking_id=&energy=high|low, fetched once per parcel (`energies` says
// whether there are two); every adjustment (zoom, pan, window/level, colour, edges) is
// computed here on a canvas.

import { api, can, escapeHtml, header, live, toast } from "/static/common.js";

// --- small helpers ----------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const clamp = (x, lo, hi) => (x < lo ? lo : x > hi ? hi : x);
const now = () => performance.now();
const keyOf = (r) => `${r.line}/${r.tracking_id}`;

const GUARD_MS = 450; // a verdict key this soon after the parcel on screen changed by itself is ignored
const LINGER_MS = 2500; // a parcel that went on stays greyed in the queue this long
const RECENT_MAX = 12;

function fmtLeft(seconds) {
  if (seconds <= 0) return "0.0";
  if (seconds < 60) return seconds.toFixed(1);
  const m = Math.floor(seconds / 60);
  return `${m}:${String(Math.floor(seconds % 60)).padStart(2, "0")}`;
}

/** green, amber or red by the share of the review window left (time_left_s / window_s), and
 * red in the last 1.5 s, amber in the last 3 s whatever the window. */
function levelOf(left, span) {
  if (left <= 0) return "gone";
  const frac = span > 0 ? left / span : 0;
  if (left <= 1.5 || frac <= 0.25) return "red";
  if (left <= 3 || frac <= 0.5) return "amber";
  return "green";
}

function className(name) {
  const s = String(name).replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function channelClass(channel) {
  const c = String(channel || "").toUpperCase();
  if (c === "RED") return "st-bad";
  if (c === "YELLOW") return "st-warn";
  if (c === "GREEN") return "st-ok";
  return "";
}

// --- the image viewer -------------------------------------------------------------------------

// Material pseudo-colour from dual energy. The PNGs are transmission T (bright = the beam got
// through), 0..255. Per pixel, attenuation a = -ln T at each energy, averaged over 3×3 to tame
// photon noise (but for pixels on an object's edge, where the mean would mix materials); the ratio R = a_low / a_high grows with the effective atomic number Z_eff
// (photo-electric absorption falls off steeply with energy for heavy elements):
//   a_high < 0.10 (T_high > 90 %)    too thin to tell (belt, air, wrapping): no colour
//   a_high > 3.0  (T_high <  5 %)    impenetrable: blue (dark) - metal or very dense
//   R < 1.45                         organic (Z_eff ≲ 10: paper, plastic, food, powders,
//                                    water, drugs; R ≈ 1.25–1.3): orange
//   1.45 ≤ R < 2.3                   inorganic / mixed (glass, aluminium, circuit boards,
//                                    R ≈ 1.6–1.9; organic over metal): green
//   R ≥ 2.3                          metal (steel, copper, zinc R ≈ 4–5; Li-ion cells ≈ 2.9): blue
// Colour saturation grows with a_high (thin objects stay pale); brightness is the high-energy
// image after window/level, brightness/contrast and inverse, as on the grey image.
const MAT_THIN = 0.1;
const MAT_OPAQUE = 3.0;
const MAT_ORGANIC_MAX = 1.45;
const MAT_INORGANIC_MAX = 2.3;
const MAT_SAT_SPAN = 0.5; // a_high above MAT_THIN at which the colour is full
const PALETTE = [
  [1, 1, 1], // 0 no colour
  [1.0, 0.6, 0.16], // 1 organic: orange
  [0.32, 0.86, 0.3], // 2 inorganic / mixed: green
  [0.28, 0.5, 1.0], // 3 metal / very dense: blue
];

// Penetration presets: window [lo, hi] of transmission stretched over the display range, on
// top of the energy switch. High penetration takes the high energy and stretches the dark
// end (dense areas); low penetration takes the low energy and stretches the bright end (thin
// material: organics, wrapping, liquids in thin containers).
const PRESETS = {
  normal: { lo: 0, hi: 1 },
  hp: { lo: 0, hi: 0.45, energy: "high" },
  lp: { lo: 0.55, hi: 1, energy: "low" },
};

const DEFAULTS = Object.freeze({
  energy: "high",
  preset: "normal",
  material: true, // shown whenever the image has two energies
  invert: false,
  edge: false,
  brightness: 0,
  contrast: 0,
});

class Viewer {
  constructor(canvas, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onChange = onChange;
    this.off = document.createElement("canvas");
    this.offCtx = this.off.getContext("2d");
    this.img = null;
    this.p = { ...DEFAULTS };
    this.zoom = 1; // relative to "fit"
    this.panX = 0; // canvas pixels from the centre
    this.panY = 0;
    this.dirty = false;
    this.frame = 0;
    this.renders = 0;
    this.attach();
  }

  attach() {
    const c = this.canvas;
    new ResizeObserver(() => this.resize()).observe(c.parentElement);
    c.addEventListener("wheel", (e) => {
      if (!this.img) return;
      e.preventDefault();
      const r = c.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      const mx = (e.clientX - r.left) * dpr - c.width / 2;
      const my = (e.clientY - r.top) * dpr - c.height / 2;
      this.zoomBy(Math.exp(-e.deltaY * 0.0015), mx, my);
    }, { passive: false });
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      if (!this.img || e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, px: this.panX, py: this.panY };
      c.setPointerCapture(e.pointerId);
      c.classList.add("rv-dragging");
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dpr = window.devicePixelRatio || 1;
      this.panX = drag.px + (e.clientX - drag.x) * dpr;
      this.panY = drag.py + (e.clientY - drag.y) * dpr;
      this.request(false);
    });
    const end = () => { drag = null; c.classList.remove("rv-dragging"); };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("dblclick", () => this.resetView());
  }

  resize() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.parentElement.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.parentElement.clientHeight * dpr));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
      this.draw();
    }
  }

  /** Show `img` ({w, h, high, low, dual}); null clears the canvas. Tools stay as they are. */
  show(img) {
    this.img = img;
    this.resetView(false);
    if (img) {
      this.off.width = img.w;
      this.off.height = img.h;
      this.out = this.offCtx.createImageData(img.w, img.h);
    }
    this.request(true);
  }

  set(changes) {
    Object.assign(this.p, changes);
    this.request(true);
  }

  toggle(name) {
    this.set({ [name]: !this.p[name] });
  }

  preset(name) {
    const p = PRESETS[name];
    if (this.p.preset === name && name !== "normal") {
      this.set({ preset: "normal" });
    } else {
      this.set({ preset: name, ...(p.energy ? { energy: p.energy } : {}) });
    }
  }

  reset() {
    this.p = { ...DEFAULTS };
    this.resetView(false);
    this.request(true);
  }

  resetView(draw = true) {
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    if (draw) this.request(false);
  }

  zoomBy(factor, mx = 0, my = 0) {
    const z = clamp(this.zoom * factor, 0.5, 16);
    const k = z / this.zoom;
    this.panX = mx - (mx - this.panX) * k;
    this.panY = my - (my - this.panY) * k;
    this.zoom = z;
    this.request(false);
  }

  /** Re-render on the next frame; `process` when the pixels change, not only the view. */
  request(process) {
    this.dirty = this.dirty || process;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (this.dirty) this.process();
      this.dirty = false;
      this.draw();
      this.onChange(this);
    });
  }

  /** Whether material colour applies to the image shown (it needs two different energies). */
  get materialOn() {
    return !!(this.p.material && this.img && this.img.dual);
  }

  lut() {
    const { lo, hi } = PRESETS[this.p.preset];
    const c = Math.pow(2, this.p.contrast / 50);
    const b = this.p.brightness / 200;
    const out = new Uint8Array(256);
    for (let x = 0; x < 256; x++) {
      let t = (x / 255 - lo) / (hi - lo);
      t = clamp(t, 0, 1);
      t = (t - 0.5) * c + 0.5 + b;
      t = clamp(t, 0, 1);
      if (this.p.invert) t = 1 - t;
      out[x] = Math.round(t * 255);
    }
    return out;
  }

  process() {
    const img = this.img;
    if (!img) return;
    const mat = this.materialOn;
    const energy = mat ? "high" : img.dual ? this.p.energy : "high";
    const src = this.p.edge ? sharpened(img, energy) : img[energy];
    const lut = this.lut();
    const n = img.w * img.h;
    const out32 = new Uint32Array(this.out.data.buffer);
    if (!mat) {
      const grey = new Uint32Array(256);
      for (let x = 0; x < 256; x++) grey[x] = (0xff000000 | (lut[x] << 16) | (lut[x] << 8) | lut[x]) >>> 0;
      for (let i = 0; i < n; i++) out32[i] = grey[src[i]];
    } else {
      const { cls, sat } = materials(img);
      const d = this.out.data;
      // a little lift of the mid-tones: coloured areas are darker than grey ones
      const lift = new Float32Array(256);
      for (let x = 0; x < 256; x++) lift[x] = 255 * Math.pow(lut[x] / 255, 0.8);
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        const v = lift[src[i]];
        const col = PALETTE[cls[i]];
        const s = sat[i] / 255;
        const w = 1 - s;
        d[j] = v * (w + s * col[0]);
        d[j + 1] = v * (w + s * col[1]);
        d[j + 2] = v * (w + s * col[2]);
        d[j + 3] = 255;
      }
    }
    this.offCtx.putImageData(this.out, 0, 0);
  }

  fitScale() {
    if (!this.img) return 1;
    return Math.min(this.canvas.width / this.img.w, this.canvas.height / this.img.h) * 0.98;
  }

  draw() {
    const { ctx, canvas } = this;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#050608";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!this.img) return;
    const s = this.fitScale() * this.zoom;
    ctx.imageSmoothingEnabled = s < 2;
    ctx.imageSmoothingQuality = "high";
    ctx.setTransform(s, 0, 0, s, canvas.width / 2 + this.panX, canvas.height / 2 + this.panY);
    ctx.drawImage(this.off, -this.img.w / 2, -this.img.h / 2);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.renders += 1;
    canvas.dataset.renders = String(this.renders);
  }
}

/** Edge enhancement: the image plus k times its 3×3 Laplacian (the image less the mean of its
 * 8 neighbours), i.e. the 3×3 kernel [−k/8 … 1+k … −k/8]. With the 8-neighbour mean, the
 * detector's photon noise grows far less than with the 4-neighbour [0 −1 0; −1 5 −1; 0 −1 0].
 * Cached per energy. */
const EDGE_K = 1.5;

function sharpened(img, energy) {
  img.sharp = img.sharp || {};
  if (img.sharp[energy]) return img.sharp[energy];
  const { w, h } = img;
  const src = img[energy];
  const out = new Uint8Array(src.length);
  out.set(src);
  const c = 1 + EDGE_K;
  const e = EDGE_K / 8;
  for (let y = 1; y < h - 1; y++) {
    let i = y * w + 1;
    for (let x = 1; x < w - 1; x++, i++) {
      const around = src[i - w - 1] + src[i - w] + src[i - w + 1] + src[i - 1] + src[i + 1]
        + src[i + w - 1] + src[i + w] + src[i + w + 1];
      const v = c * src[i] - e * around;
      out[i] = v < 0 ? 0 : v > 255 ? 255 : v + 0.5;
    }
  }
  img.sharp[energy] = out;
  return out;
}

/** Per-pixel material class and colour saturation from the two energies (see the thresholds). */
function materials(img) {
  if (img.mat) return img.mat;
  const { w, h, low, high } = img;
  const n = w * h;
  const att = new Float32Array(256);
  for (let v = 0; v < 256; v++) att[v] = -Math.log(Math.max(v, 0.5) / 255);
  // 3×3 box means of attenuation, separable (rows, then columns)
  const box = (src) => {
    const rows = new Float32Array(n);
    for (let y = 0; y < h; y++) {
      const o = y * w;
      for (let x = 0; x < w; x++) {
        const a = att[src[o + x]];
        const l = x > 0 ? att[src[o + x - 1]] : a;
        const r = x < w - 1 ? att[src[o + x + 1]] : a;
        rows[o + x] = (l + a + r) / 3;
      }
    }
    const out = new Float32Array(n);
    for (let y = 0; y < h; y++) {
      const o = y * w;
      const up = y > 0 ? o - w : o;
      const dn = y < h - 1 ? o + w : o;
      for (let x = 0; x < w; x++) out[o + x] = (rows[up + x] + rows[o + x] + rows[dn + x]) / 3;
    }
    return out;
  };
  const aH = box(high);
  const aL = box(low);
  const cls = new Uint8Array(n);
  const sat = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let ah = aH[i];
    let al = aL[i];
    // on an object's edge the 3×3 mean mixes two materials (a metal rim over an organic
    // would come out green): there, the pixel's own values
    const own = att[high[i]];
    if (Math.abs(own - ah) > 0.2 * ah + 0.05) {
      ah = own;
      al = att[low[i]];
    }
    if (ah < MAT_THIN) continue; // too thin to tell: no colour
    sat[i] = Math.round(clamp((ah - MAT_THIN) / MAT_SAT_SPAN, 0, 1) * 255);
    if (ah > MAT_OPAQUE) { cls[i] = 3; continue; }
    const ratio = al / ah;
    cls[i] = ratio < MAT_ORGANIC_MAX ? 1 : ratio < MAT_INORGANIC_MAX ? 2 : 3;
  }
  img.mat = { cls, sat };
  return img.mat;
}

// --- images: fetched once per parcel, both energies --------------------------------------------

const images = new Map(); // hawb -> Promise<img>
const IMAGE_CACHE = 12; // each parcel's image takes a few MB here (energies, edges, materials)

async function grey(r, energy) {
  const response = await fetch(`/api/v1/images/${encodeURIComponent(r.hawb)}?tracking_id=${r.tracking_id}&energy=${energy}`, {
    credentials: "same-origin",
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  const bitmap = await createImageBitmap(await response.blob(), {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  const c = document.createElement("canvas");
  c.width = bitmap.width;
  c.height = bitmap.height;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = g.getImageData(0, 0, c.width, c.height).data;
  const out = new Uint8Array(c.width * c.height);
  for (let i = 0, j = 0; i < out.length; i++, j += 4) out[i] = rgba[j];
  return { w: c.width, h: c.height, pixels: out };
}

/** How many energies a review's image has: 2 (dual-energy scanner), 1, or 0 (none). */
function energiesOf(r) {
  if (!r || !r.image) return 0;
  return Number(r.energies) >= 2 ? 2 : 1;
}

/** The review's image, fetched once: both energies when the scanner sends two, else the one. */
function loadImage(r) {
  const energies = energiesOf(r);
  const key = `${r.line}/${r.tracking_id}/${r.hawb}/${energies}`; // one parcel, not a HAWB
  let p = images.get(key);
  if (p) {
    images.delete(key); // most recently used last
    images.set(key, p);
    return p;
  }
  const wanted = energies === 2 ? [grey(r, "high"), grey(r, "low")] : [grey(r, "high")];
  p = Promise.all(wanted).then(([high, low]) => {
    // the two energies share the scanner's full scale (transmission 0..255 on both), so the
    // material colour can compare their attenuation; a single-energy image has none to compare
    const dual = !!low && low.w === high.w && low.h === high.h;
    return {
      hawb: r.hawb,
      w: high.w,
      h: high.h,
      high: high.pixels,
      low: dual ? low.pixels : high.pixels,
      energies,
      dual,
    };
  });
  p.catch(() => images.delete(key));
  images.set(key, p);
  while (images.size > IMAGE_CACHE) images.delete(images.keys().next().value);
  return p;
}

// --- the queue --------------------------------------------------------------------------------

const items = new Map(); // key -> item
const settled = new Map(); // key -> when it went on: a late update must not bring it back
const SETTLED_MS = 30_000; // (tracking ids are the PLC's and come round again, much later)
let selectedKey = null;
let selectedAt = 0;
let selectedAuto = false;
let canReview = false;
let me = ""; // the logged-in user
let viewer = null;
let shown = { key: null, hawb: null }; // the parcel (and image) on the canvas or being loaded

function waiting() {
  return [...items.values()]
    .filter((it) => it.status === "waiting" || it.status === "sending")
    .sort((a, b) => a.expiresAt - b.expiresAt);
}

function ordered() {
  // waiting first by time left, then the ones that just went on (greyed), newest last
  const gone = [...items.values()].filter((it) => !(it.status === "waiting" || it.status === "sending"));
  return [...waiting(), ...gone.sort((a, b) => a.doneAt - b.doneAt)];
}

function update(reviews) {
  const t = now();
  const seen = new Set();
  for (const r of reviews) {
    const key = keyOf(r);
    seen.add(key);
    if (settled.has(key) && t - settled.get(key) < SETTLED_MS) continue;
    settled.delete(key);
    const estimate = t + r.time_left_s * 1000;
    let it = items.get(key);
    if (!it) {
      it = { key, review: r, expiresAt: estimate, window: windowOf(r), status: "waiting", li: null };
      items.set(key, it);
      if (r.image) loadImage(r).catch(() => {});
    } else {
      const hadImage = it.review.image;
      it.review = r;
      it.window = windowOf(r);
      // the stream's own jitter is not worth a jumping clock
      if (Math.abs(estimate - it.expiresAt) > 250) it.expiresAt = estimate;
      if (!hadImage && r.image) {
        loadImage(r).catch(() => {});
        if (key === selectedKey) showImage(it);
      }
    }
  }
  for (const it of items.values()) {
    if (it.status === "waiting" && !seen.has(it.key)) goneOn(it, "left");
  }
  if (!selectedKey || !isOpen(items.get(selectedKey))) selectNext(true);
  renderQueue();
}

/** Wall seconds from the scan to the deadline (what the countdown's colour and bar measure
 * against); the time left itself if the window is unknown. */
function windowOf(r) {
  const w = Number(r.window_s);
  return Math.max(w > 0 ? w : Number(r.time_left_s) || 0, 0.1);
}

function isOpen(it) {
  return !!it && (it.status === "waiting" || it.status === "sending");
}

/** The parcel went on without a verdict from this station: to inspection (the trace may say
 * otherwise, e.g. another station answered; the recent list is corrected from it). */
function goneOn(it, why) {
  const early = why !== "timeout" && it.expiresAt - now() > 1000;
  finish(it, "gone", "Gone to inspection", early ? "left the queue before its deadline" : "no verdict in time");
  setTimeout(() => resolveFromTrace(it), 1500);
}

function finish(it, status, text, detail) {
  const wasSelected = it.key === selectedKey;
  it.status = status;
  it.doneAt = now();
  settled.set(it.key, it.doneAt);
  for (const [key, when] of settled) if (it.doneAt - when > SETTLED_MS) settled.delete(key);
  addRecent(it, status, text, detail);
  setTimeout(() => {
    items.delete(it.key);
    if (it.li) it.li.remove();
    renderQueue();
  }, status === "gone" ? LINGER_MS : 600);
  if (wasSelected) {
    if (status === "gone") flash(`${it.review.hawb} gone to inspection`, "gone");
    selectNext(true);
  }
  renderQueue();
}

async function resolveFromTrace(it) {
  const r = it.review;
  let records;
  try {
    records = await api(`/api/v1/parcels/${encodeURIComponent(r.hawb)}`);
  } catch (e) {
    return; // the recent list keeps "gone to inspection"
  }
  const mine = records.filter((x) => x.line === r.line && x.tracking_id === r.tracking_id);
  const verdict = mine.filter((x) => x.kind === "command" && x.data && x.data.command === "verdict" && x.data.accepted).pop();
  const decision = mine.filter((x) => x.kind === "decision").pop();
  const row = document.querySelector(`#recent li[data-key="${CSS.escape(it.key)}"]`);
  if (!row) return;
  if (verdict) {
    const outcome = verdict.data.outcome === "clear" ? "Cleared" : "Sent to inspection";
    const elsewhere = verdict.user === me ? "by you" : `by ${verdict.user}, at another station`;
    setRecent(row, verdict.data.outcome === "clear" ? "ok" : "inspect", outcome, elsewhere);
  } else if (decision) {
    const reasons = decision.reasons.map((x) => x.name.toLowerCase().replace(/_/g, " ")).join(", ");
    if (decision.destination && decision.destination !== "inspection") {
      setRecent(row, "info", `Went to ${decision.destination}`, reasons);
    } else {
      setRecent(row, "gone", "Gone to inspection", reasons || "no verdict in time");
    }
  }
}

function selectNext(auto) {
  const open = waiting();
  select(open.length ? open[0].key : null, auto);
}

function move(step) {
  const open = waiting();
  if (!open.length) return;
  const at = open.findIndex((it) => it.key === selectedKey);
  const next = at < 0 ? 0 : clamp(at + step, 0, open.length - 1);
  select(open[next].key, false);
}

function select(key, auto) {
  if (key === selectedKey) {
    if (!auto) selectedAuto = false; // the officer picked it: no guard on the verdict keys
    return;
  }
  selectedKey = key;
  selectedAt = now();
  selectedAuto = auto;
  renderDetail();
  renderQueue();
  const li = key && items.get(key) && items.get(key).li;
  if (li) li.scrollIntoView({ block: "nearest" });
}

function renderQueue() {
  const list = $("queue");
  const all = ordered();
  all.forEach((it, at) => {
    if (!it.li) {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.dataset.key = it.key;
      li.dataset.hawb = it.review.hawb;
      li.innerHTML = `
        <div class="q-row"><span class="q-hawb mono"></span><span class="q-time num"></span></div>
        <div class="q-row q-sub"><span class="q-info"></span><span class="q-state"></span></div>
        <div class="q-bar"><div class="q-fill"></div></div>`;
      li.addEventListener("click", () => { if (isOpen(it)) select(it.key, false); });
      it.li = li;
    }
    const li = it.li;
    const r = it.review;
    li.querySelector(".q-hawb").textContent = r.hawb;
    const bits = [r.line];
    if (r.risk) bits.push(r.risk.channel);
    if (r.risk && r.risk.declared_goods) bits.push(r.risk.declared_goods);
    if (!r.image) bits.push("no image");
    li.querySelector(".q-info").textContent = bits.join(" · ");
    li.dataset.state = it.status;
    li.setAttribute("aria-selected", String(it.key === selectedKey));
    li.querySelector(".q-state").textContent = {
      waiting: "",
      sending: "sending…",
      gone: "gone to inspection",
      clear: "cleared",
      inspect: "to inspection",
      refused: "refused",
    }[it.status];
    if (list.children[at] !== li) list.insertBefore(li, list.children[at] || null); // into order
  });
  const open = waiting().length;
  $("queue-count").textContent = String(open);
  $("queue-empty").hidden = all.length > 0;
  tick();
}

// --- the selected parcel ------------------------------------------------------------------------

function renderDetail() {
  const it = selectedKey ? items.get(selectedKey) : null;
  const r = it ? it.review : null;
  $("d-hawb").textContent = r ? r.hawb : "—";
  $("d-line").textContent = r ? `Line ${r.line}` : "—";
  $("d-tid").textContent = r ? String(r.tracking_id) : "—";
  const ch = $("d-channel");
  if (r && r.risk) {
    ch.textContent = r.risk.channel;
    ch.className = `badge ${channelClass(r.risk.channel)}`;
    $("d-score").textContent = r.risk.score.toFixed(3);
    $("d-goods").textContent = r.risk.declared_goods || "—";
    $("d-flight").textContent = r.risk.flight || "—";
  } else {
    ch.textContent = r ? "no risk result" : "—";
    ch.className = "badge";
    $("d-score").textContent = "—";
    $("d-goods").textContent = "—";
    $("d-flight").textContent = "—";
  }
  renderScores(r);
  renderVerdictButtons(it);
  showImage(it);
  tick();
}

/** Where a score sits against its class's thresholds: below `clear` clean, from `alarm` on an
 * alarm, in between ambiguous (what an officer reviews); "none" without thresholds. */
function zoneOf(score, t) {
  if (!t) return "none";
  if (score >= t.alarm) return "alarm";
  if (score >= t.clear) return "ambiguous";
  return "clean";
}

const ZONE_WORD = { clean: "clean", ambiguous: "ambiguous", alarm: "alarm", none: "no thresholds" };
const pct = (x) => `${(clamp(x, 0, 1) * 100).toFixed(1)}%`;
/** A threshold with two to three decimals: 0.05, 0.30, 0.022. */
function fmtT(x) {
  const s = Number(x).toFixed(3);
  return s.endsWith("0") ? s.slice(0, -1) : s;
}

function scoreRow(name, v, t, top) {
  const zone = zoneOf(v, t);
  const label = className(name);
  const title = t
    ? `${label} ${v.toFixed(3)}: ${ZONE_WORD[zone]} (clean below ${fmtT(t.clear)}, alarm from ${fmtT(t.alarm)}, ambiguous in between)`
    : `${label} ${v.toFixed(3)}: the policy has no thresholds for this class`;
  // the band between the two thresholds is tinted on the track; a tick marks each threshold
  const track = t
    ? ` style="--clear:${pct(t.clear)};--alarm:${pct(t.alarm)}"`
    : "";
  const ticks = t
    ? `<span class="s-tick s-tick-clear" style="left:${pct(t.clear)}" data-at="${fmtT(t.clear)}"></span>`
      + `<span class="s-tick s-tick-alarm" style="left:${pct(t.alarm)}" data-at="${fmtT(t.alarm)}"></span>`
    : "";
  return `
      <li class="${top ? "rv-top" : ""}" data-class="${escapeHtml(name)}" data-zone="${zone}" title="${escapeHtml(title)}">
        <span class="s-name">${escapeHtml(label)}</span>
        <span class="s-band num">${t ? `${escapeHtml(fmtT(t.clear))}–${escapeHtml(fmtT(t.alarm))}` : "no thresholds"}</span>
        <span class="s-val num">${v.toFixed(3)}</span>
        <span class="s-bar${t ? " s-has-band" : ""}"${track}><span class="s-fill" style="width:${pct(v)}"></span>${ticks}</span>
      </li>`;
}

/** In words: which classes are ambiguous (the reason for review), which at alarm. */
function scoresInWords(r, entries) {
  const t = r.xray.thresholds || {};
  const names = (zone) => entries.filter(([n, v]) => zoneOf(v, t[n]) === zone).map(([n]) => className(n));
  const ambiguous = names("ambiguous");
  const alarm = names("alarm");
  const parts = [];
  if (ambiguous.length) {
    parts.push(`<b class="w-ambiguous">Ambiguous: ${escapeHtml(ambiguous.join(", "))}</b> <span class="dim">· the reason for review</span>`);
  } else if (entries.some(([n]) => t[n])) {
    const yellow = r.risk && String(r.risk.channel).toUpperCase() === "YELLOW";
    parts.push(`No class ambiguous${yellow ? " <span class=\"dim\">(here for the YELLOW risk channel)</span>" : ""}`);
  }
  if (alarm.length) parts.push(`<b class="w-alarm">At alarm: ${escapeHtml(alarm.join(", "))}</b>`);
  return parts.join("<br>");
}

function renderScores(r) {
  const list = $("d-scores");
  const status = $("d-xray-status");
  const detail = $("d-xray-detail");
  const why = $("d-xray-why");
  if (!r) {
    list.innerHTML = "";
    status.textContent = "";
    status.className = "right";
    detail.hidden = true;
    why.hidden = true;
    why.innerHTML = "";
    $("d-model").textContent = "—";
    return;
  }
  const x = r.xray;
  const thresholds = x.thresholds || {};
  const entries = Object.entries(x.scores || {});
  const top = entries.reduce((m, [, v]) => Math.max(m, v), 0);
  list.innerHTML = entries.length
    ? entries.map(([name, v]) => scoreRow(name, v, thresholds[name], v === top && v > 0)).join("")
    : `<li class="s-none">no scores${x.status === "ok" ? "" : ` (${escapeHtml(x.status)})`}</li>`;
  why.innerHTML = entries.length ? scoresInWords(r, entries) : "";
  why.hidden = !why.innerHTML;
  status.textContent = String(x.status).replace(/_/g, " ");
  const tone = { ok: "st-ok", missing: "st-warn", late: "st-warn" }[x.status] || "st-bad";
  status.className = `right badge ${tone}`;
  const fault = x.status !== "ok";
  detail.hidden = !(fault && x.detail);
  detail.dataset.tone = tone;
  detail.textContent = fault && x.detail ? x.detail : "";
  $("d-model").textContent = `model ${x.model_version || "unknown"} · scores only, no heat map`;
}

function renderVerdictButtons(it) {
  if (!canReview) return;
  const open = isOpen(it) && it.status === "waiting";
  $("v-clear").disabled = !open;
  $("v-inspect").disabled = !open;
}

let flashTimer = null;

function flash(text, kind) {
  const el = $("flash") || (() => {
    const d = document.createElement("div");
    d.id = "flash";
    d.className = "rv-flash";
    d.setAttribute("role", "status");
    $("stage").appendChild(d);
    return d;
  })();
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { el.hidden = true; }, 1800);
}

function stageMessage(text, kind = "info") {
  const el = $("stage-msg");
  el.hidden = !text;
  el.textContent = text || "";
  el.dataset.kind = kind;
}

function showImage(it) {
  const r = it ? it.review : null;
  const key = it ? it.key : null;
  const hawb = r && r.image ? r.hawb : null;
  if (key === shown.key && hawb === shown.hawb) return;
  shown = { key, hawb };
  viewer.show(null);
  if (!r) {
    stageMessage(waiting().length ? "Select a parcel" : "No parcel waiting for review", "info");
    return;
  }
  if (!hawb) {
    stageMessage("No image from the scanner", "noimage");
    return;
  }
  stageMessage("Loading image…", "info");
  loadImage(r).then(
    (img) => {
      if (shown.hawb !== hawb || shown.key !== key) return;
      stageMessage("");
      viewer.show(img);
    },
    (err) => {
      if (shown.hawb !== hawb || shown.key !== key) return;
      stageMessage(`Image not available: ${err.message}`, "noimage");
    },
  );
}

// --- the countdowns ---------------------------------------------------------------------------

function tick() {
  const t = now();
  for (const it of [...items.values()]) {
    if (it.status === "waiting" && it.expiresAt <= t) goneOn(it, "timeout");
  }
  for (const it of items.values()) {
    if (!it.li) continue;
    const left = Math.max(0, (it.expiresAt - t) / 1000);
    const open = isOpen(it);
    it.li.querySelector(".q-time").textContent = open ? fmtLeft(left) : "";
    it.li.dataset.level = open ? levelOf(left, it.window) : "gone";
    it.li.querySelector(".q-fill").style.width = `${open ? clamp((left / it.window) * 100, 0, 100) : 0}%`;
  }
  const it = selectedKey ? items.get(selectedKey) : null;
  const clock = $("clock");
  if (!it) {
    clock.dataset.level = "none";
    $("clock-value").textContent = "—";
    $("clock-label").textContent = waiting().length ? "Select a parcel" : "Queue empty";
    $("clock-fill").style.width = "0%";
    return;
  }
  const left = Math.max(0, (it.expiresAt - t) / 1000);
  clock.dataset.level = isOpen(it) ? levelOf(left, it.window) : "gone";
  $("clock-label").textContent = "Time left before it goes to inspection";
  $("clock-value").textContent = `${fmtLeft(left)} s`;
  $("clock-fill").style.width = `${clamp((left / it.window) * 100, 0, 100)}%`;
}

// --- verdicts ---------------------------------------------------------------------------------

function result(text, kind) {
  const el = $("verdict-result");
  el.textContent = text;
  el.dataset.kind = kind;
}

async function verdict(outcome) {
  if (!canReview) return;
  const it = selectedKey ? items.get(selectedKey) : null;
  if (it && it.status === "sending") {
    result(`Waiting for the controller's answer for ${it.review.hawb}…`, "info");
    return;
  }
  if (!it || it.status !== "waiting") {
    result("No parcel to answer for.", "error");
    return;
  }
  const r = it.review;
  if (selectedAuto && now() - selectedAt < GUARD_MS) {
    result(`The parcel on screen just changed to ${r.hawb}: press again to answer for it.`, "error");
    return;
  }
  const word = outcome === "clear" ? "Clear" : "Inspect";
  it.status = "sending";
  renderVerdictButtons(it);
  renderQueue();
  result(`${word} ${r.hawb}: sending…`, "info");
  const noteEl = $("v-note");
  const note = noteEl ? noteEl.value.trim() : "";
  try {
    const answer = await api(
      `/api/v1/lines/${encodeURIComponent(r.line)}/parcels/${encodeURIComponent(r.tracking_id)}/verdict`,
      { method: "POST", body: { outcome, note, hawb: r.hawb } }, // refused if the id now names another parcel
    );
    if (noteEl) noteEl.value = "";
    result(`${word} accepted for ${r.hawb}: ${answer.message}`, "ok");
    finish(it, outcome, outcome === "clear" ? "Cleared" : "Sent to inspection", "by you");
  } catch (err) {
    if (err.status === 409) {
      // it went on before the verdict arrived: the controller says where
      result(`${word} refused for ${r.hawb}: ${err.message}`, "error");
      finish(it, "refused", "Refused", err.message);
      setTimeout(() => resolveFromTrace(it), 1500);
    } else {
      result(`${word} not sent for ${r.hawb}: ${err.message}`, "error");
      toast(`Verdict not sent: ${err.message}`, "error");
      if (it.status === "sending") it.status = "waiting";
      renderVerdictButtons(it);
      renderQueue();
    }
  }
}

// --- recent answers ---------------------------------------------------------------------------

function addRecent(it, kind, text, detail) {
  const r = it.review;
  const li = document.createElement("li");
  li.dataset.key = it.key;
  li.dataset.hawb = r.hawb;
  li.innerHTML = `<span class="r-hawb mono">${escapeHtml(r.hawb)}</span> <span class="r-line dim">${escapeHtml(r.line)}</span>
    <div class="r-text"></div>`;
  setRecent(li, kind, text, detail);
  const list = $("recent");
  list.prepend(li);
  while (list.children.length > RECENT_MAX) list.lastElementChild.remove();
}

function setRecent(li, kind, text, detail) {
  li.dataset.kind = kind;
  li.querySelector(".r-text").innerHTML = `<b>${escapeHtml(text)}</b>${detail ? ` <span class="dim">· ${escapeHtml(detail)}</span>` : ""}`;
}

// --- tools and keys ---------------------------------------------------------------------------

function syncTools(v) {
  const p = v.p;
  const img = v.img;
  const dual = !!(img && img.dual);
  const pressed = (id, on) => $(id).setAttribute("aria-pressed", String(!!on));
  pressed("t-energy", p.energy === "low");
  $("t-energy-label").textContent = p.energy === "low" ? "Low energy" : "High energy";
  pressed("t-hp", p.preset === "hp");
  pressed("t-lp", p.preset === "lp");
  pressed("t-material", v.materialOn);
  pressed("t-invert", p.invert);
  pressed("t-edge", p.edge);
  const single = !!img && !dual;
  $("t-material").disabled = single;
  $("t-energy").disabled = single;
  $("t-material").title = single
    ? "Material colour needs two energies: this scanner sends one"
    : "Material colour from dual energy: orange organic, green inorganic, blue metal (M)";
  $("t-energy").title = single
    ? "One energy only: this scanner sends a single image"
    : "Switch between the high- and low-energy image (E)";
  $("t-brightness").value = String(p.brightness);
  $("t-contrast").value = String(p.contrast);
  $("zoom-readout").textContent = v.zoom === 1 ? "fit" : `×${v.zoom.toFixed(v.zoom < 2 ? 2 : 1)}`;
  $("legend").hidden = !v.materialOn;
  const note = $("image-note");
  const notes = [];
  if (single) notes.push("single-energy scanner: no material colour (it needs two energies)");
  if (v.materialOn && p.energy === "low") notes.push("material colour: brightness from the high energy");
  note.hidden = notes.length === 0;
  note.textContent = notes.join(" · ");
  document.querySelector(".rv-tools").dataset.image = img ? "yes" : "no";
  const c = $("xray");
  c.dataset.material = String(v.materialOn);
  c.dataset.invert = String(p.invert);
}

function bindTools() {
  const on = (id, fn) => $(id).addEventListener("click", fn);
  on("t-energy", () => viewer.set({ energy: viewer.p.energy === "high" ? "low" : "high" }));
  on("t-hp", () => viewer.preset("hp"));
  on("t-lp", () => viewer.preset("lp"));
  on("t-material", () => viewer.toggle("material"));
  on("t-invert", () => viewer.toggle("invert"));
  on("t-edge", () => viewer.toggle("edge"));
  on("t-zoom-in", () => viewer.zoomBy(1.25));
  on("t-zoom-out", () => viewer.zoomBy(0.8));
  on("t-reset", () => viewer.reset());
  $("t-brightness").addEventListener("input", (e) => viewer.set({ brightness: Number(e.target.value) }));
  $("t-contrast").addEventListener("input", (e) => viewer.set({ contrast: Number(e.target.value) }));
  if (canReview) {
    // the button loses the focus at once: Enter or Space must not answer for the next parcel
    on("v-clear", (e) => { e.currentTarget.blur(); verdict("clear"); });
    on("v-inspect", (e) => { e.currentTarget.blur(); verdict("inspect"); });
  }
}

function step(name, delta) {
  viewer.set({ [name]: clamp(viewer.p[name] + delta, -100, 100) });
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const target = e.target;
  if (target && target.id === "v-note") {
    if (e.key === "Escape") { target.blur(); e.preventDefault(); }
    return;
  }
  if (target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type !== "range"))) return;
  if (target && target.tagName === "INPUT" && target.type === "range" && e.key.startsWith("Arrow")) return;
  const k = e.key;
  const actions = {
    c: () => { if (!e.repeat) verdict("clear"); },
    i: () => { if (!e.repeat) verdict("inspect"); },
    j: () => move(1),
    ArrowDown: () => move(1),
    k: () => move(-1),
    ArrowUp: () => move(-1),
    e: () => viewer.set({ energy: viewer.p.energy === "high" ? "low" : "high" }),
    h: () => viewer.preset("hp"),
    l: () => viewer.preset("lp"),
    m: () => viewer.toggle("material"),
    n: () => viewer.toggle("invert"),
    s: () => viewer.toggle("edge"),
    "[": () => step("brightness", -10),
    "]": () => step("brightness", 10),
    "{": () => step("contrast", -10),
    "}": () => step("contrast", 10),
    "+": () => viewer.zoomBy(1.25),
    "=": () => viewer.zoomBy(1.25),
    "-": () => viewer.zoomBy(0.8),
    _: () => viewer.zoomBy(0.8),
    r: () => viewer.reset(),
    0: () => viewer.resetView(),
    t: () => { const n = $("v-note"); if (n) n.focus(); },
  };
  const action = actions[k.length === 1 ? k.toLowerCase() : k] || (k.length === 1 ? actions[k] : null);
  if (!action) return;
  if ((k === "c" || k === "i" || k === "C" || k === "I") && !canReview) return;
  e.preventDefault();
  action();
}

// --- start ------------------------------------------------------------------------------------

async function main() {
  const s = await header("review");
  canReview = can("review");
  me = s.user;
  if (canReview) {
    $("verdict-buttons").hidden = false;
  } else {
    // a viewer watches: no verdict buttons, no verdict keys
    $("verdict-buttons").remove();
    $("keys-verdict").remove();
    const none = $("verdict-none");
    none.hidden = false;
    none.textContent = `Your role (${s.role}) may not give verdicts: watching only.`;
  }
  viewer = new Viewer($("xray"), syncTools);
  bindTools();
  document.addEventListener("keydown", onKey);
  setInterval(tick, 100);
  try {
    update(await api("/api/v1/reviews"));
  } catch (err) {
    toast(`Review queue: ${err.message}`, "error");
  }
  let lastUpdate = now();
  live((overview) => {
    lastUpdate = now();
    update(overview.reviews || []);
  });
  // while the live stream is down (reconnecting, or refused: too many browsers), ask for the
  // queue every 2 s so that new parcels still appear
  setInterval(async () => {
    if (now() - lastUpdate < 3000) return;
    try {
      const reviews = await api("/api/v1/reviews");
      if (now() - lastUpdate >= 3000) update(reviews);
    } catch (err) {
      /* the header's indicator already says the controller does not answer */
    }
  }, 2000);
  $("main").setAttribute("aria-busy", "false");
  syncTools(viewer);
}

main().catch((err) => {
  if (err && err.status === 401) return; // on the way to the login page
  console.error(err);
  toast(`Review station failed to start: ${err.message}`, "error");
});
