// Blind and consultative transfer through the official Microsoft Graph JavaScript client
// (@microsoft/microsoft-graph-client), against a running Switchboard.
//
// Env: BASE (https://127.0.0.1:PORT, required), WEBHOOK_PORT (port of the server's Demo Bot webhook,
// http://127.0.0.1:PORT/api/calls; default 3978, the demo's), OUT (result JSON path).
// The webhook must reach this script: Switchboard delivers a call's notifications in order, so the
// ones after answering wait behind an `incoming` notification that cannot be delivered.
// Trust for a self-signed certificate comes from NODE_EXTRA_CA_CERTS (read by Node at startup).
//
// Every notification is received by a small HTTP server here: the Demo Bot webhook gets the
// `incoming` notification, and every answer / outgoing call names a callbackUri on the same server.
import http from "node:http";
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { Client, GraphError, ResponseType } from "@microsoft/microsoft-graph-client";

const BASE = (process.env.BASE || "").replace(/\/+$/, "");
const OUT = process.env.OUT || "js.json";
const TENANT = "aaaaaaaa-0000-4000-8000-000000000001";
const BOT = "cccccccc-0000-4000-8000-000000000003";
const SECRET = "switchboard-demo-secret";
const ADMIN = { "X-Sim-Admin-Key": "switchboard-demo-admin", "content-type": "application/json" };
const ALEX = "751f6800-3180-414d-bd94-333364659951";
const HEIDI = "550fae72-d251-43ec-868c-373732c2704f";
const MEDIA = { "@odata.type": "#microsoft.graph.serviceHostedMediaConfig" };

const checks = [];
function check(name, ok, detail) {
  checks.push({ name, ok: !!ok, ...(detail === undefined ? {} : { detail }) });
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${ok || detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
  return !!ok;
}

// ---- notification receiver: every commsNotification, grouped by call id, in arrival order.
const byCall = new Map();
const waiters = [];
const receiver = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    res.writeHead(202).end();
    let parsed;
    try { parsed = JSON.parse(body); } catch { return; }
    for (const n of parsed.value || []) {
      const url = n.resourceUrl || n.resource || "";
      const id = url.split("/").pop();
      const list = byCall.get(id) || [];
      list.push({ changeType: n.changeType, data: n.resourceData || {}, signed: /^Bearer \S+\.\S+\.\S+$/.test(req.headers.authorization || ""), path: req.url });
      byCall.set(id, list);
    }
    for (const w of [...waiters]) w();
  });
});
const notes = (id) => byCall.get(id) || [];
// Resolves when pred(notifications of the call) holds; rejects after ms.
function waitFor(id, pred, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const test = () => {
      if (pred(notes(id))) { waiters.splice(waiters.indexOf(test), 1); clearTimeout(t); resolve(notes(id)); }
    };
    const t = setTimeout(() => { waiters.splice(waiters.indexOf(test), 1); reject(new Error(`timed out waiting for ${what} on ${id}; got ${JSON.stringify(notes(id).map(summary))}`)); }, ms);
    waiters.push(test);
    test();
  });
}
const hasState = (s) => (ns) => ns.some((n) => n.data.state === s);
const ended = (ns) => ns.some((n) => n.changeType === "deleted");
// One line per notification: "updated transferAccepted audio=inactive".
const summary = (n) => [n.changeType, n.data.state, n.data.mediaState?.audio && `audio=${n.data.mediaState.audio}`].filter(Boolean).join(" ");

// ---- the Graph client, authenticated with a token from Switchboard's own token endpoint.
async function token() {
  const r = await fetch(`${BASE}/${TENANT}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: BOT, client_secret: SECRET, scope: "https://graph.microsoft.com/.default" }),
  });
  if (!r.ok) throw new Error(`token endpoint answered ${r.status}: ${await r.text()}`);
  return (await r.json()).access_token;
}
let cached;
const client = Client.initWithMiddleware({
  authProvider: { getAccessToken: async () => (cached ??= await token()) },
  baseUrl: `${BASE}/`,
  defaultVersion: "v1.0",
  // The client attaches the token only to https Graph hosts, or to these (hostnames, no port).
  customHosts: new Set([new URL(BASE).hostname]),
});

async function sim(method, path, body) {
  const r = await fetch(`${BASE}/sim/v1${path}`, { method, headers: ADMIN, body: body && JSON.stringify(body) });
  const text = await r.text();
  if (!r.ok) throw new Error(`sim ${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

let cb = 0;
const callbackUri = () => `http://127.0.0.1:${receiver.address().port}/api/calls/${++cb}`;

// Alex calls the bot; the bot answers through the client. Returns the call id.
async function incomingAnswered(label) {
  const { callId } = await sim("POST", "/calls", { from: ALEX, to: BOT });
  await waitFor(callId, hasState("incoming"), "incoming");
  check(`${label}: incoming notification on the Demo Bot webhook, signed`, notes(callId)[0].path === "/api/calls" && notes(callId)[0].signed);
  // RAW: the fetch Response, to see the status Graph documents (202 Accepted).
  const answered = await client.api(`/communications/calls/${callId}/answer`).responseType(ResponseType.RAW)
    .post({ callbackUri: callbackUri(), acceptedModalities: ["audio"], mediaConfig: MEDIA });
  check(`${label}: answer through the client: 202`, answered.status === 202, { status: answered.status });
  await waitFor(callId, hasState("established"), "established");
  return callId;
}

// After the call ended, GET must fail with the Graph error the client parses.
async function expectGone(label, id) {
  try {
    const call = await client.api(`/communications/calls/${id}`).get();
    check(`${label}: GET after the end is a 404 GraphError`, false, { got: call });
  } catch (e) {
    check(`${label}: GET after the end is a 404 GraphError`, e instanceof GraphError && e.statusCode === 404 && typeof e.code === "string" && e.code.length > 0 && !!e.requestId,
      { name: e?.constructor?.name, statusCode: e.statusCode, code: e.code, requestId: e.requestId, message: e.message });
  }
}

// The transferred call's notifications from `transferring` on, as README's table lists them.
function transferSequence(label, id, terminated) {
  const seq = notes(id);
  const from = seq.findIndex((n) => n.data.state === "transferring");
  const tail = from < 0 ? [] : seq.slice(from);
  const s = tail.map(summary);
  check(`${label}: sequence transferring, transferAccepted, transferAccepted audio=inactive, deleted terminated`,
    s.length === 4 && s[0] === "updated transferring" && s[1] === "updated transferAccepted" && s[2] === "updated transferAccepted audio=inactive" && s[3] === "deleted terminated",
    { all: seq.map(summary) });
  const last = tail.at(-1)?.data || {};
  check(`${label}: terminated with ${JSON.stringify(terminated)}`, contains(last, terminated), last);
  check(`${label}: every notification is signed (Bearer JWT)`, seq.every((n) => n.signed));
}

// Whether `actual` has every property of `expected` (recursively); extra properties (@odata.type) are fine.
function contains(actual, expected) {
  if (expected === null || typeof expected !== "object") return actual === expected;
  return actual !== null && typeof actual === "object" && Object.entries(expected).every(([k, v]) => contains(actual[k], v));
}

// After a transfer the transferee's leg is connected to the target's, both ways (GET /sim/v1/world).
async function connected(label, from, to) {
  const { legs } = await sim("GET", "/world");
  const live = legs.filter((l) => l.state === "connected");
  const a = live.find((l) => l.party?.id === from);
  const b = live.find((l) => l.party?.id === to && a && l.peer?.legId === a.id);
  check(`${label}: in the sim, the transferee's leg is connected to the target's`, !!(a && b && a.peer?.legId === b.id), legs);
  // Hang up (the peer leg ends with it) so the next scenario starts from an empty world.
  if (a) await sim("DELETE", `/legs/${a.id}`);
}

async function blind() {
  const L = "blind";
  const a = await incomingAnswered(L);
  const before = await client.api(`/communications/calls/${a}`).get();
  check(`${L}: GET before the transfer: established, id matches`, before?.id === a && before?.state === "established", { id: before?.id, state: before?.state });
  const r = await client.api(`/communications/calls/${a}/transfer`).responseType(ResponseType.RAW).post({
    transferTarget: { endpointType: "default", identity: { user: { id: HEIDI, displayName: "Heidi Steen" } } },
  });
  check(`${L}: transfer through the client: 202`, r.status === 202, { status: r.status });
  await waitFor(a, ended, "deleted");
  transferSequence(L, a, { state: "terminated", resultInfo: { code: 0, subcode: 7015, message: "GracefulTransferCompleted" } });
  await expectGone(L, a);
  await connected(L, ALEX, HEIDI);
}

async function consultative() {
  const L = "consultative";
  const a = await incomingAnswered(L);
  const b = await client.api("/communications/calls").post({
    "@odata.type": "#microsoft.graph.call",
    callbackUri: callbackUri(),
    targets: [{ "@odata.type": "#microsoft.graph.invitationParticipantInfo", identity: { user: { id: HEIDI, displayName: "Heidi Steen" } } }],
    requestedModalities: ["audio"],
    mediaConfig: MEDIA,
    tenantId: TENANT,
  });
  check(`${L}: POST /communications/calls returns the new call with an id`, typeof b?.id === "string" && b.id.length > 0 && b["@odata.type"] === "#microsoft.graph.call",
    { id: b?.id, type: b?.["@odata.type"], state: b?.state });
  await waitFor(b.id, hasState("established"), "established (call B)");
  const beforeB = await client.api(`/communications/calls/${b.id}`).get();
  check(`${L}: GET call B before the transfer: established`, beforeB?.state === "established", { state: beforeB?.state });
  const beforeA = await client.api(`/communications/calls/${a}`).get();
  check(`${L}: GET call A before the transfer: established`, beforeA?.state === "established", { state: beforeA?.state });
  const r = await client.api(`/communications/calls/${a}/transfer`).responseType(ResponseType.RAW).post({
    transferTarget: { endpointType: "default", identity: { user: { id: HEIDI, displayName: "Heidi Steen" } }, replacesCallId: b.id },
  });
  check(`${L}: transfer with replacesCallId through the client: 202`, r.status === 202, { status: r.status });
  await waitFor(a, ended, "deleted (call A)");
  await waitFor(b.id, ended, "deleted (call B)");
  transferSequence(L, a, { state: "terminated", terminationReason: "AppTransferred" });
  const lastB = notes(b.id).at(-1);
  check(`${L}: call B ends deleted, AppTransferred, 200/7015`,
    lastB.changeType === "deleted" && lastB.data.state === "terminated" && lastB.data.terminationReason === "AppTransferred" && lastB.data.resultInfo?.code === 200 && lastB.data.resultInfo?.subcode === 7015,
    lastB.data);
  await expectGone(`${L} (A)`, a);
  await expectGone(`${L} (B)`, b.id);
  await connected(L, ALEX, HEIDI);
}

async function main() {
  if (!BASE) throw new Error("BASE is required (e.g. https://127.0.0.1:8443)");
  await new Promise((r) => receiver.listen(Number(process.env.WEBHOOK_PORT || 3978), "127.0.0.1", r));
  for (const scenario of [blind, consultative]) {
    try { await scenario(); } catch (e) { check(`${scenario.name}: ran to the end`, false, { error: String(e?.stack || e), statusCode: e?.statusCode, body: e?.body }); }
  }
}

let crashed = null;
try { await main(); } catch (e) { crashed = String(e?.stack || e); check("setup", false, crashed); }
receiver.close();
const ok = checks.length > 0 && checks.every((c) => c.ok);
mkdirSync(dirname(OUT), { recursive: true });
writeFileSync(OUT, JSON.stringify({ ok, checks }, null, 2) + "\n");
const failed = checks.filter((c) => !c.ok).length;
console.log(`js: ${checks.length - failed} passed, ${failed} failed`);
process.exit(ok ? 0 : 1);
