// The gate's operator page: lists pending recoveries and approves or
// denies them through the operator API. The token stays in this tab
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

function age(created) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(created)) / 1000));
  return s < 120 ? s + "s" : Math.round(s / 60) + "m";
}

async function decide(verb, code) {
  const resp = await api("/gate/" + verb, { code: code });
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401) return unauthorized();
  if (resp.ok && body.status === "pending") {
    say(body.code + ": approval " + body.approvals + " of " + body.needed + " by " + body.operator);
  } else if (resp.ok) say(body.code + " " + body.status + " by " + body.operator);
  else say(verb + " " + code + ": " + (body.error || resp.status));
  await load();
}

function unauthorized() {
  sessionStorage.removeItem("sealgate-token");
  signedIn(false);
  say("unauthorized: check the token");
}

async function load() {
  if (!sessionStorage.getItem("sealgate-token")) { signedIn(false); return; }
  let resp;
  try { resp = await api("/gate/pending"); } catch (e) { say("gate unreachable"); return; }
  if (resp.status === 401) return unauthorized();
  if (!resp.ok) { say("listing pending requests: HTTP " + resp.status); return; }
  const list = (await resp.json()).requests || [];
  signedIn(true);
  const rows = [];
  for (const r of list) {
    const row = document.createElement("tr");
    row.dataset.code = r.code;
    cell(row, r.code, "code");
    cell(row, r.host || "-");
    cell(row, r.source);
    cell(row, r.complete ? String(r.keys) : r.arrived + "/" + r.keys + " (incomplete)");
    cell(row, age(r.created));
    const td = cell(row, "");
    for (const verb of ["approve", "deny"]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = verb;
      b.textContent = verb === "approve" ? "Approve" : "Deny";
      b.disabled = verb === "approve" && !r.complete;
      b.addEventListener("click", () => decide(verb, r.code));
      td.appendChild(b);
    }
    rows.push(row);
  }
  $("requests").replaceChildren(...rows);
  $("empty").hidden = list.length > 0;
  document.body.dataset.loaded = String(Date.now());
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("sealgate-token", $("token").value.trim());
  $("token").value = "";
  say("");
  load();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem("sealgate-token");
  signedIn(false);
});
setInterval(load, 5000);
load();
