// The devid console: sign-in, the API client, the hash router and the helpers every page uses.
// Pages build the DOM with `h` (text only, never HTML strings), so nothing a device reports
// can become markup.

import { overview, findings, devices } from "./pages.js";
import { devicePage } from "./device.js";

const TOKEN_KEY = "devid.token";

/// The signed-in token as `GET /v1/whoami` describes it: {token_id, role, models?}.
export const session = { who: null };

/// Whether the signed-in token may change devices (revoke, suspend, resume).
export function mayChangeDevices() {
  return session.who !== null && session.who.role === "admin";
}

/// An API error: the status and the problem document's detail.
export class ApiFailure extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/// Calls the API with the session's token; resolves to the JSON body, rejects with ApiFailure.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiFailure(0, `the server did not answer (${e.message})`);
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!resp.ok) {
    const detail = (json && (json.detail || json.title)) || `HTTP ${resp.status}`;
    if (resp.status === 401 && path !== "/v1/whoami") signOut("Your token is no longer accepted.");
    throw new ApiFailure(resp.status, detail);
  }
  return json;
}

/// Builds an element: `h("a", {href: "#/"}, "text", child)`. Attributes starting with `on`
/// are event listeners; `null`/`false` children and attributes are left out.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/// A time as the operator's locale writes it, or a dash.
export function when(rfc3339) {
  if (!rfc3339) return "—";
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? rfc3339 : d.toLocaleString();
}

/// Days from now to `rfc3339` (negative: past), rounded down.
export function daysUntil(rfc3339) {
  return Math.floor((new Date(rfc3339).getTime() - Date.now()) / 86400000);
}

/// A titled section whose body `load(body)` fills. A missing route (404 from a server without
/// that part of the API) or a token that may not read it shows "not available" in this panel
/// only; the rest of the page goes on.
export function panel(title, id, load) {
  const body = h("div", { class: "panel-body" }, h("p", { class: "muted" }, "Loading…"));
  const section = h("section", { class: "panel", id, "aria-busy": "true" }, h("h2", {}, title), body);
  Promise.resolve()
    .then(() => load(body))
    .catch((e) => {
      body.replaceChildren(
        h(
          "p",
          { class: "muted unavailable" },
          e instanceof ApiFailure && (e.status === 404 || e.status === 403)
            ? "not available"
            : `Could not load: ${e.message}`
        )
      );
    })
    .finally(() => section.setAttribute("aria-busy", "false"));
  return section;
}

/// The query of the current hash (`#/devices?q=SN` -> URLSearchParams).
export function hashQuery() {
  const hash = location.hash.slice(1);
  const i = hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : hash.slice(i + 1));
}

/// Moves to `path` with `params` (empty values left out).
export function go(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  location.hash = `#${path}${s ? `?${s}` : ""}`;
}

function signInPage(message) {
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
  });
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "signin", onsubmit: (ev) => { ev.preventDefault(); signIn(input.value.trim(), error); } },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { id: "token-help", class: "muted" },
      "Paste a devid token (devid_…). It stays in this tab only and is sent to this server alone."),
    error,
    h("button", { id: "signin", type: "submit" }, "Sign in")
  );
  show(form);
  input.focus();
}

async function signIn(token, error) {
  if (!token) {
    error.textContent = "Paste a token first.";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await whoami();
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    error.textContent = e.status === 401 ? "This token is not accepted." : e.message;
    return;
  }
  if (location.hash === "" || location.hash === "#/") route();
  else location.hash = "#/";
}

async function whoami() {
  session.who = await api("/v1/whoami");
  document.getElementById("who").textContent = `${session.who.role} token ${session.who.token_id}`;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.who = null;
  document.getElementById("who").textContent = "";
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  signInPage(message);
}

/// Replaces the page's content and moves focus to it, so keyboard and screen reader users
/// start at the new page.
export function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

async function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return signInPage();
  if (session.who === null) {
    try {
      await whoami();
    } catch (e) {
      return signOut(e.status === 401 ? "Your token is no longer accepted." : e.message);
    }
  }
  const hash = location.hash.slice(1) || "/";
  const path = hash.split("?")[0];
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").slice(1);
    const current = target === "/" ? path === "/" : path.startsWith(target) ||
      (target === "/devices" && path.startsWith("/device/"));
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (path === "/") return overview();
  if (path === "/findings") return findings();
  if (path === "/devices") return devices();
  if (path.startsWith("/device/")) return devicePage(decodeURIComponent(path.slice(8)));
  show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", () => signOut());
  route();
});
