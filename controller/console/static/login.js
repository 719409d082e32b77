import { api } from "/static/common.js";

const form = document.getElementById("login");
const user = document.getElementById("user");
const password = document.getElementById("password");
const error = document.getElementById("error");
const submit = document.getElementById("submit");

function nextPage() {
  const next = new URLSearchParams(location.search).get("next") || "/overview";
  // only a page of this site, as the browser itself parses the URL (a tab or a backslash
  // must not turn "/\tevil.example" into another origin): never an open redirect
  let url;
  try { url = new URL(next, location.origin); } catch (e) { return "/overview"; }
  if (url.origin !== location.origin || url.pathname.startsWith("/login")) return "/overview";
  return url.pathname + url.search + url.hash;
}

function showError(message, field) {
  error.textContent = message;
  user.removeAttribute("aria-invalid");
  password.removeAttribute("aria-invalid");
  if (field === "user") user.setAttribute("aria-invalid", "true");
  if (field === "password") password.setAttribute("aria-invalid", "true");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!user.value.trim()) { showError("enter your user name", "user"); user.focus(); return; }
  if (!password.value) { showError("enter your password", "password"); password.focus(); return; }
  submit.disabled = true;
  showError("");
  try {
    await api("/api/v1/session", { method: "POST", body: { user: user.value.trim(), password: password.value } });
    location.assign(nextPage());
  } catch (e) {
    showError(e.message, e.field);
    password.value = "";
    password.focus();
    submit.disabled = false;
  }
});

if (!user.value) user.focus();
