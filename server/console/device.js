// One device: status, certificates, health, timeline, policy, and the lifecycle actions
// (revoke, suspend, resume) behind a confirmation dialog that names the device.

import { api, h, when, daysUntil, panel, show, mayChangeDevices, ApiFailure } from "./app.js";

const REASONS = [
  "keyCompromise", "cessationOfOperation", "affiliationChanged", "superseded",
  "privilegeWithdrawn", "unspecified",
];

function facts(rows) {
  return h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export async function devicePage(clientId) {
  const path = `/v1/devices/${encodeURIComponent(clientId)}`;
  let d;
  try {
    d = await api(path);
  } catch (e) {
    show(h("h1", {}, clientId), h("p", { class: "error" },
      e instanceof ApiFailure && e.status === 404 ? "No such device." : e.message),
    h("p", {}, h("a", { href: "#/devices" }, "Back to the devices")));
    return;
  }
  const actions = h("div", { class: "actions", id: "device-actions" });
  if (mayChangeDevices()) {
    if (d.status === "active") actions.append(actionButton(d, "suspend"));
    if (d.status === "suspended") actions.append(actionButton(d, "resume"));
    if (d.status !== "revoked") actions.append(actionButton(d, "revoke"));
  }
  show(
    h("p", { class: "crumbs" }, h("a", { href: "#/devices" }, "Devices")),
    h("h1", { class: "client-id" }, d.client_id),
    h("p", {}, h("span", { id: "device-status", class: `status ${d.status}` }, d.status)),
    actions,
    h("section", { class: "panel", id: "summary" }, h("h2", {}, "Device"), facts([
      ["Hardware serial", d.hardware_serial],
      ["Model", d.model || "—"],
      ["Kind", d.kind],
      ["Registered", when(d.created_at)],
      ["Last seen", when(d.last_seen)],
      ["Last address", d.last_address || "—"],
      ["Revoked", d.revoked_at ? `${when(d.revoked_at)} (${d.revocation_reason})` : "—"],
    ])),
    h("section", { class: "panel", id: "certificates" }, h("h2", {}, "Certificates"),
      d.certificates.length === 0 ? h("p", {}, "None.") : h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Serial", "Profile", "Status", "Not after", "Expires"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, d.certificates.map((c) => {
          const days = daysUntil(c.not_after);
          return h("tr", {},
            h("td", { class: "mono" }, c.serial),
            h("td", {}, c.profile),
            h("td", {}, h("span", { class: `status ${c.status}` }, c.status)),
            h("td", {}, when(c.not_after)),
            h("td", { class: days < 30 ? "warn" : "" }, days < 0 ? "expired" : `in ${days} days`));
        }))))),
    panel("Health", "health", async (body) => {
      const x = await api(`${path}/health`);
      body.replaceChildren(facts([
        ["Connected on", x.connected_on.length ? x.connected_on.join(", ") : "not connected"],
        ["First seen", when(x.first_seen)],
        ["Last seen", when(x.last_seen)],
        ["Last connect", x.last_connect ? `${when(x.last_connect.at)} ${x.last_connect.address || ""} ${x.last_connect.auth || ""}` : "—"],
        ["Last disconnect", x.last_disconnect ? when(x.last_disconnect.at) : "—"],
        ["Software", x.sw_version || "—"],
        ["Published / refused", `${x.published} / ${x.refused}`],
        ["Failed authentications", x.auth_failures.length ? x.auth_failures.map((r) => `${r.reason}: ${r.count}`).join(", ") : "none"],
        ["Open findings", x.findings.length ? x.findings.map((f) => `${f.severity} ${f.check}: ${f.detail}`).join("; ") : "none"],
      ]));
    }),
    panel("Timeline", "timeline", (body) => timeline(body, `${path}/timeline`)),
    panel("Policy", "policy", async (body) => {
      const s = await api(`${path}/status`);
      const p = s.policy || {};
      body.replaceChildren(facts([
        ["Publish", (p.publish || []).join(", ") || "defaults"],
        ["Subscribe", (p.subscribe || []).join(", ") || "defaults"],
        ["Allowed networks", s.allowed_cidrs.length ? s.allowed_cidrs.join(", ") : "anywhere"],
        ["Message authentication", s.message_auth],
        ["Connects with", s.connect_with],
      ]));
    })
  );
}

/// The newest events first, a page at a time ("Older events" asks for the next page).
async function timeline(body, url, cursor) {
  const page = await api(`${url}?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  let list = body.querySelector("ol");
  if (!cursor) {
    list = h("ol", { class: "timeline" });
    body.replaceChildren(list);
  }
  if (!cursor && page.items.length === 0) list.append(h("li", {}, "No events."));
  for (const e of page.items) {
    const detail = Object.entries(e.data || {})
      .filter(([, v]) => v !== null && typeof v !== "object")
      .map(([k, v]) => `${k}: ${v}`)
      .join(", ");
    list.append(h("li", {}, h("time", { datetime: e.at }, when(e.at)), " ",
      h("strong", {}, e.kind.replaceAll("_", " ")), detail ? ` — ${detail}` : ""));
  }
  body.querySelector(".more")?.remove();
  if (page.next_cursor) {
    body.append(h("button", { type: "button", class: "more", onclick: () => timeline(body, url, page.next_cursor) }, "Older events"));
  }
}

const VERBS = {
  revoke: {
    label: "Revoke",
    text: "Revocation is final: its certificates go on the CRL and brokers drop it at once. It cannot be undone.",
  },
  suspend: {
    label: "Suspend",
    text: "Its certificates are put on hold and brokers refuse it until it is resumed.",
  },
  resume: { label: "Resume", text: "Its held certificates become valid again and it may connect." },
};

function actionButton(d, verb) {
  const b = h("button", { type: "button", id: verb, class: verb === "revoke" ? "danger" : "" }, `${VERBS[verb].label}…`);
  b.addEventListener("click", () => confirmAction(d, verb, b));
  return b;
}

/// The confirmation dialog: names the device; a revocation is confirmed by typing its
/// ClientID. Escape or Cancel closes it without a change, and focus goes back to `opener`.
function confirmAction(d, verb, opener) {
  const dialog = document.getElementById("confirm");
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  const error = document.getElementById("confirm-error");
  const fields = document.getElementById("confirm-fields");
  document.getElementById("confirm-title").textContent = `${VERBS[verb].label} device ${d.client_id}?`;
  document.getElementById("confirm-text").textContent =
    `${d.client_id} (hardware serial ${d.hardware_serial}). ${VERBS[verb].text}`;
  error.textContent = "";
  ok.textContent = VERBS[verb].label;
  ok.disabled = false;
  fields.replaceChildren();
  let reason = null;
  let typed = null;
  if (verb === "revoke") {
    reason = h("select", { id: "confirm-reason" }, REASONS.map((r) => h("option", { value: r }, r)));
    typed = h("input", { id: "confirm-input", autocomplete: "off", spellcheck: "false" });
    fields.append(
      h("label", { for: "confirm-reason" }, "Reason", reason),
      h("label", { for: "confirm-input" }, `Type the ClientID ${d.client_id} to confirm`, typed)
    );
    ok.disabled = true;
    typed.addEventListener("input", () => { ok.disabled = typed.value.trim() !== d.client_id; });
  }
  const controller = new AbortController();
  const close = () => {
    controller.abort();
    if (dialog.open) dialog.close();
    opener.focus();
  };
  cancel.addEventListener("click", close, { signal: controller.signal });
  dialog.addEventListener("close", () => { controller.abort(); opener.focus(); }, { signal: controller.signal });
  ok.addEventListener("click", async () => {
    ok.disabled = true;
    const body = verb === "revoke" ? { reason: reason.value } : verb === "suspend" ? {} : undefined;
    try {
      await api(`/v1/devices/${encodeURIComponent(d.client_id)}/${verb}`, { method: "POST", body });
    } catch (e) {
      error.textContent = e.message;
      ok.disabled = false;
      return;
    }
    controller.abort();
    dialog.close();
    devicePage(d.client_id);
  }, { signal: controller.signal });
  dialog.showModal();
  (typed || cancel).focus();
}
