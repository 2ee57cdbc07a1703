// The gate's operator page: lists pending recoveries (without codes),
// approves the one whose code the operator types from the host's console
// (number matching), and denies by request id. The token stays in this tab
// (sessionStorage) and travels only in the Authorization header, so no
// cookie exists for another site to ride on. Every value from the gate is
// inserted as text, never as HTML: host labels come from the hosts.
"use strict";

const api = (path, body) => fetch(path, {
  method: body ? "POST" : "GET",
  headers: Object.assign(
    { "Authorization": "Bearer " + sessionStorage.getItem("sealgate-token") },
    body ? { "Content-Type": "application/json" } : {}),
  body: body ? JSON.stringify(body) : undefined,
  cache: "no-store",
  credentials: "omit",
});

const $ = (id) => document.getElementById(id);
const say = (msg) => { $("status").textContent = msg; };

function signedIn(yes) {
  $("login").hidden = yes;
  $("main").hidden = !yes;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? s + "s" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
}

// tick updates the ages and expiry countdowns between loads.
function tick() {
  for (const td of document.querySelectorAll("td[data-since]")) {
    td.textContent = duration(Date.now() - Date.parse(td.dataset.since));
  }
  for (const td of document.querySelectorAll("td[data-until]")) {
    td.textContent = duration(Date.parse(td.dataset.until) - Date.now());
  }
}

function button(td, cls, text, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = text;
  b.addEventListener("click", onclick);
  td.appendChild(b);
}

// decide posts {"code"} or {"id"} and reports the gate's answer; the
// answer names the request by id, and a code only as the operator typed it.
async function decide(verb, body) {
  let resp;
  try { resp = await api("/gate/" + verb, body); } catch (e) { say("gate unreachable"); return false; }
  const d = await resp.json().catch(() => ({}));
  if (resp.status === 401) { unauthorized(); return false; }
  const what = body.code ? "code " + body.code : "request " + body.id;
  if (resp.ok && d.status === "pending") {
    say(what + ": approval " + d.approvals + " of " + d.needed + " by " + d.operator);
  } else if (resp.ok) {
    say(what + " " + d.status + " by " + d.operator);
  } else {
    say(verb + " " + what + ": " + (d.error || "HTTP " + resp.status));
  }
  await load();
  return resp.ok;
}

function unauthorized() {
  sessionStorage.removeItem("sealgate-token");
  signedIn(false);
  say("unauthorized: check the token");
}

function codeText(r, requireCode) {
  if (r.verified && r.complete) return "on the host";
  if (r.verified) return "not yet (the host has not finished)";
  return requireCode ? "no code: the host cannot show one (cannot be approved here)" : "no code: the host cannot show one";
}

async function load() {
  if (!sessionStorage.getItem("sealgate-token")) { signedIn(false); return; }
  let resp, dresp;
  try {
    [resp, dresp] = await Promise.all([api("/gate/pending"), api("/gate/decisions")]);
  } catch (e) { say("gate unreachable"); return; }
  if (resp.status === 401 || dresp.status === 401) return unauthorized();
  if (!resp.ok) { say("listing pending requests: HTTP " + resp.status); return; }
  const answer = await resp.json();
  const list = answer.requests || [];
  signedIn(true);
  const rows = [];
  for (const r of list) {
    const row = document.createElement("tr");
    row.dataset.id = r.id;
    cell(row, r.id, "id");
    cell(row, r.host || "-");
    cell(row, r.source);
    cell(row, r.complete ? String(r.keys) : r.arrived + "/" + r.keys + " (incomplete)");
    cell(row, codeText(r, answer.require_code), r.verified ? "" : "nocode");
    cell(row, "").dataset.since = r.created;
    cell(row, "").dataset.until = r.expires;
    const td = cell(row, "");
    if (!r.verified && r.complete && !answer.require_code) {
      button(td, "approve-id", "Approve without code", () => {
        if (confirm("The host of " + r.id + " shows no code: approve it on its source address alone?")) {
          decide("approve", { id: r.id });
        }
      });
    }
    button(td, "deny", "Deny", () => decide("deny", { id: r.id }));
    rows.push(row);
  }
  $("requests").replaceChildren(...rows);
  $("empty").hidden = list.length > 0;
  if (dresp.ok) {
    const drows = [];
    for (const e of ((await dresp.json()).decisions || [])) {
      const row = document.createElement("tr");
      cell(row, new Date(Date.parse(e.time)).toLocaleTimeString());
      cell(row, e.event);
      cell(row, e.outcome || "");
      cell(row, e.operator || "");
      cell(row, e.host || "");
      cell(row, e.id || "");
      drows.push(row);
    }
    $("decisions").replaceChildren(...drows);
  }
  tick();
  document.body.dataset.loaded = String(Date.now());
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("sealgate-token", $("token").value.trim());
  $("token").value = "";
  say("");
  load();
});
$("approve").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const code = $("code").value.trim().toUpperCase();
  if (await decide("approve", { code: code })) $("code").value = "";
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem("sealgate-token");
  signedIn(false);
});
setInterval(load, 5000);
setInterval(tick, 1000);
load();
