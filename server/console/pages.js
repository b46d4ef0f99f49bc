// The overview, the findings list and the device search. Every list is paged by the server
// (cursor and limit): the console never loads the whole fleet.

import { api, h, when, panel, show, hashQuery, go } from "./app.js";
import { bars, legend } from "./plot.js";

const PAGE = 50;

const CHECKS = [
  "cert_expiring", "ca_expiring", "never_seen", "silent", "duplicate_client_id",
  "shared_certificate", "auth_failures", "revoked_connected", "stale_broker",
];
const SEVERITIES = ["critical", "warning", "info"];

function count(name, label, value) {
  return h("div", { class: "count", "data-count": name },
    h("span", { class: "value" }, value), h("span", { class: "label" }, label));
}

export function overview() {
  show(
    h("h1", {}, "Overview"),
    panel("Fleet", "counts", async (body) => {
      const s = await api("/v1/fleet/summary");
      const open = s.findings.reduce((n, f) => n + f.open, 0);
      body.replaceChildren(
        h("div", { class: "counts" },
          count("total", "devices", s.total),
          count("active", "active", s.active),
          count("suspended", "suspended", s.suspended),
          count("revoked", "revoked", s.revoked),
          count("connected_now", "connected now", s.connected_now),
          count("never_seen", "never seen", s.never_seen),
          count("open_findings", "open findings", open),
          count("brokers", "brokers live", `${s.brokers_live} / ${s.brokers_known}`)),
        h("p", { class: "muted" }, `As of ${when(s.at)}. `,
          h("a", { href: "#/findings" }, "See the findings"))
      );
    }),
    panel("Activity", "activity", async (body) => {
      const a = await api("/v1/fleet/activity");
      const hours = a.hours.map((x) => new Date(x.hour).getHours().toString().padStart(2, "0"));
      const traffic = [
        { name: "connections", cls: "s1", values: a.hours.map((x) => x.connects) },
        { name: "failed authentications", cls: "s2", values: a.hours.map((x) => x.auth_failures) },
      ];
      const regs = [{ name: "registrations", cls: "s1", values: a.registrations.map((x) => x.count) }];
      const exp = [{ name: "certificates expiring", cls: "s3", values: a.expiries.map((x) => x.count) }];
      body.replaceChildren(
        h("figure", {}, h("figcaption", {}, "Connections and failed authentications, last 24 hours"),
          bars("Connections and failed authentications per hour", hours, traffic, { tick: 3 }),
          legend(traffic)),
        h("figure", {}, h("figcaption", {}, "Registrations per day, last 30 days"),
          bars("Registrations per day", a.registrations.map((x) => x.period.slice(5)), regs, { tick: 5 })),
        h("figure", {}, h("figcaption", {}, "Certificate expiry by month, next 12 months"),
          bars("Valid certificates by month of expiry", a.expiries.map((x) => x.period), exp, { tick: 2 }))
      );
    })
  );
}

function select(id, label, options, value) {
  return h("label", { for: id }, label,
    h("select", { id, name: id },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: o === value }, o.replaceAll("_", " ")))));
}

/// Prev/next over server cursors. The cursors seen so far ride in the hash (`back`), so the
/// browser's back button and a reload keep the place.
function pager(path, params, nextCursor) {
  const back = params.back ? params.back.split(",") : [];
  const prev = back.length > 0
    ? h("button", { type: "button", id: "prev-page", onclick: () => {
      const b = back.slice(0, -1);
      go(path, { ...params, cursor: back[back.length - 1] === "-" ? "" : back[back.length - 1], back: b.join(",") });
    } }, "Previous page")
    : null;
  const next = nextCursor
    ? h("button", { type: "button", id: "next-page", onclick: () => {
      go(path, { ...params, cursor: nextCursor, back: [...back, params.cursor || "-"].join(",") });
    } }, "Next page")
    : null;
  return h("div", { class: "pager" }, prev, next);
}

export function findings() {
  const q = hashQuery();
  const params = Object.fromEntries(["check", "severity", "model", "state", "cursor", "back"]
    .map((k) => [k, q.get(k) || ""]));
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    go("/findings", { check: f.get("check"), severity: f.get("severity"), state: f.get("state"), model: f.get("model").trim() });
  } },
  select("check", "Check", CHECKS, params.check),
  select("severity", "Severity", SEVERITIES, params.severity),
  h("label", { for: "state" }, "State",
    h("select", { id: "state", name: "state" },
      ["open", "closed", "all"].map((s) => h("option", { value: s, selected: s === (params.state || "open") }, s)))),
  h("label", { for: "model" }, "Model", h("input", { id: "model", name: "model", value: params.model })),
  h("button", { type: "submit" }, "Filter"));
  show(
    h("h1", {}, "Findings"),
    form,
    panel("Results", "findings", async (body) => {
      const s = new URLSearchParams({ limit: PAGE });
      for (const k of ["check", "severity", "model", "state", "cursor"]) if (params[k]) s.set(k, params[k]);
      const page = await api(`/v1/fleet/findings?${s}`);
      body.replaceChildren(
        page.items.length === 0 ? h("p", {}, "No findings.") : h("div", { class: "scroll" }, h("table", {},
          h("thead", {}, h("tr", {}, ["Severity", "Check", "Subject", "Detail", "Opened", "Closed"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, page.items.map((f) => h("tr", {},
            h("td", {}, h("span", { class: `sev ${f.severity}` }, f.severity)),
            h("td", {}, f.check.replaceAll("_", " ")),
            h("td", {}, f.client_id ? h("a", { href: `#/device/${encodeURIComponent(f.client_id)}` }, f.subject) : f.subject),
            h("td", {}, f.detail),
            h("td", {}, when(f.opened_at)),
            h("td", {}, when(f.closed_at))))))),
        pager("/findings", params, page.next_cursor)
      );
    })
  );
}

export function devices() {
  const q = hashQuery();
  const params = { q: q.get("q") || "", status: q.get("status") || "", cursor: q.get("cursor") || "", back: q.get("back") || "" };
  const input = h("input", { id: "search", name: "q", type: "search", value: params.q, autocomplete: "off",
    spellcheck: "false", maxlength: 64, "aria-describedby": "search-help" });
  const form = h("form", { class: "filters", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    go("/devices", { q: f.get("q").trim(), status: f.get("status") });
  } },
  h("label", { for: "search" }, "ClientID or hardware serial", input),
  select("status", "Status", ["active", "suspended", "revoked"], params.status),
  h("button", { type: "submit", id: "search-go" }, "Search"),
  h("p", { id: "search-help", class: "muted" }, "Finds devices whose ClientID or serial starts with this text (case-sensitive)."));
  show(
    h("h1", {}, "Devices"),
    form,
    panel("Results", "devices", async (body) => {
      const s = new URLSearchParams({ limit: PAGE });
      for (const k of ["q", "status", "cursor"]) if (params[k]) s.set(k, params[k]);
      const page = await api(`/v1/devices?${s}`);
      body.replaceChildren(
        page.items.length === 0 ? h("p", { id: "no-devices" }, "No devices match.") : h("div", { class: "scroll" }, h("table", { id: "device-table" },
          h("thead", {}, h("tr", {}, ["ClientID", "Hardware serial", "Model", "Kind", "Status", "Last seen"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, page.items.map((d) => h("tr", { class: "device-row" },
            h("td", {}, h("a", { href: `#/device/${encodeURIComponent(d.client_id)}`, class: "device-link" }, d.client_id)),
            h("td", { class: "serial" }, d.hardware_serial),
            h("td", {}, d.model || "—"),
            h("td", {}, d.kind),
            h("td", {}, h("span", { class: `status ${d.status}` }, d.status)),
            h("td", {}, when(d.last_seen))))))),
        pager("/devices", params, page.next_cursor)
      );
    })
  );
  if (!params.q) input.focus();
}
