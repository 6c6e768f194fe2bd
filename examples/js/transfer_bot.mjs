// A complete calling bot on Microsoft's Graph JavaScript client (@microsoft/microsoft-graph-client),
// run against Switchboard: the JavaScript twin of examples/python/transfer_bot.py. It validates every
// notification's JWT (RS256 against the server's published keys, issuer, audience, lifetime), answers
// each incoming call, and transfers it: blind to Heidi, consultative (it calls Heidi first, then hands
// the caller over in that call's place), or to a PSTN number.
//
//   switchboard serve --tls --listen 127.0.0.1:8443
//   NODE_EXTRA_CA_CERTS=switchboard-data/tls/cert.pem node examples/js/transfer_bot.mjs --demo
//
// Env: BASE (default https://127.0.0.1:8443), LISTEN (default 127.0.0.1:3978, the Demo Bot's webhook),
// TRANSFER (blind | consultative | pstn, for calls it did not place itself). `--demo` has the sim place
// one call per kind of transfer and exits once all have ended (0 if each was transferred). Node reads
// NODE_EXTRA_CA_CERTS (the server's certificate, `<data-dir>/tls/cert.pem`) only at startup.
import http from "node:http";
import crypto from "node:crypto";
import { Client } from "@microsoft/microsoft-graph-client";

const BASE = (process.env.BASE || "https://127.0.0.1:8443").replace(/\/+$/, "");
const LISTEN = process.env.LISTEN || "127.0.0.1:3978";
const DEFAULT_KIND = process.env.TRANSFER || "blind";
const TENANT = "aaaaaaaa-0000-4000-8000-000000000001";
const APP_ID = "cccccccc-0000-4000-8000-000000000003";
const SECRET = "switchboard-demo-secret";
const RECEPTION = "dddddddd-0000-4000-8000-000000000004"; // the app's instance: PSTN transfers need a call of one
const HEIDI = "550fae72-d251-43ec-868c-373732c2704f";
const ALEX = "751f6800-3180-414d-bd94-333364659951";
const ISSUER = "https://api.botframework.com";
const CALLBACK = `http://${LISTEN}/api/calls`;
const MEDIA = { "@odata.type": "#microsoft.graph.serviceHostedMediaConfig" };

// ---- the Graph client: the token comes from Switchboard's token endpoint (client credentials).
let token;
async function accessToken() {
  if (token && token.expires > Date.now() + 60_000) return token.value;
  const r = await fetch(`${BASE}/${TENANT}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: APP_ID, client_secret: SECRET, scope: "https://graph.microsoft.com/.default" }),
  });
  if (!r.ok) throw new Error(`token endpoint answered ${r.status}: ${await r.text()}`);
  const t = await r.json();
  token = { value: t.access_token, expires: Date.now() + t.expires_in * 1000 };
  return token.value;
}
const graph = Client.initWithMiddleware({
  authProvider: { getAccessToken: accessToken },
  baseUrl: `${BASE}/`,
  defaultVersion: "v1.0",
  // The client attaches the token only to Graph's own hosts, or to these (host names, no port).
  customHosts: new Set([new URL(BASE).hostname]),
});

// ---- notification tokens: RS256, signed by a key the server publishes.
let keys = new Map();
async function refreshKeys() {
  const config = await (await fetch(`${BASE}/notifications/v1/.well-known/openid-configuration`)).json();
  const jwks = await (await fetch(config.jwks_uri)).json();
  keys = new Map(jwks.keys.map((k) => [k.kid, crypto.createPublicKey({ key: k, format: "jwk" })]));
}
const b64 = (s) => Buffer.from(s, "base64url");
async function verify(authorization) {
  const [head, body, sig] = (authorization || "").replace(/^Bearer /, "").split(".");
  if (!sig) throw new Error("no bearer token");
  const header = JSON.parse(b64(head));
  if (header.alg !== "RS256") throw new Error(`alg ${header.alg}`);
  if (!keys.has(header.kid)) await refreshKeys();
  const key = keys.get(header.kid);
  if (!key) throw new Error(`unknown signing key ${header.kid}`);
  if (!crypto.verify("RSA-SHA256", Buffer.from(`${head}.${body}`), key, b64(sig))) throw new Error("bad signature");
  const claims = JSON.parse(b64(body));
  const now = Date.now() / 1000;
  if (claims.iss !== ISSUER) throw new Error(`issuer ${claims.iss}`);
  if (claims.aud !== APP_ID) throw new Error(`audience ${claims.aud}`);
  if (!(claims.exp > now - 60) || (claims.nbf && claims.nbf > now + 60)) throw new Error("expired or not yet valid");
  return claims;
}

// ---- the bot.
const kind = new Map(); // call id → the transfer it gets
const consulting = new Map(); // consultation call id → the call to transfer in its place
const started = new Set();
const ended = new Map(); // call id → how it ended
let changed = () => {};

const user = (id) => ({ endpointType: "default", identity: { user: { id } } });
async function transfer(callId, how) {
  if (how === "consultative") {
    const consult = await graph.api("/communications/calls").post({
      callbackUri: CALLBACK, tenantId: TENANT, requestedModalities: ["audio"], mediaConfig: MEDIA, targets: [user(HEIDI)],
    });
    consulting.set(consult.id, callId); // the transfer follows when Heidi answers
    return;
  }
  const target = how === "pstn" ? { endpointType: "default", identity: { phone: { id: "+12345678901" } } } : user(HEIDI);
  await graph.api(`/communications/calls/${callId}/transfer`).post({ transferTarget: target });
}

async function onNotification(n) {
  const url = n.resourceUrl || "";
  if (!url.includes("/calls/") || url.includes("/operations/") || url.includes("/participants")) return;
  const callId = url.split("/").pop();
  const data = n.resourceData || {};
  if (n.changeType === "created" && data.state === "incoming") {
    await graph.api(`/communications/calls/${callId}/answer`).post({ callbackUri: CALLBACK, acceptedModalities: ["audio"], mediaConfig: MEDIA });
  } else if (data.state === "established" && consulting.has(callId)) {
    const original = consulting.get(callId);
    consulting.delete(callId);
    await graph.api(`/communications/calls/${original}/transfer`).post({ transferTarget: { ...user(HEIDI), replacesCallId: callId } });
  } else if (data.state === "established" && !started.has(callId) && !ended.has(callId)) {
    started.add(callId);
    await transfer(callId, kind.get(callId) || DEFAULT_KIND);
  } else if (n.changeType === "deleted") {
    const info = data.resultInfo || {};
    ended.set(callId, data.terminationReason || `${info.code}/${info.subcode}`);
    console.log(`call ${callId} (${kind.get(callId) || "consultation"}) ended: ${ended.get(callId)}`);
    changed();
  }
}

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    // Graph's rule: acknowledge quickly, act afterwards; refuse what the server did not sign.
    try {
      await verify(req.headers.authorization);
    } catch (e) {
      console.error(`refused a notification: ${e.message}`);
      res.writeHead(401).end();
      return;
    }
    res.writeHead(202).end();
    let items = [];
    try { items = JSON.parse(body).value || []; } catch { return; }
    for (const n of items) {
      onNotification(n).catch((e) => console.error(e.statusCode === 404 ? `${n.resourceUrl} has ended meanwhile` : `acting on ${n.resourceUrl}: ${e.statusCode || ""} ${e.message}`));
    }
  });
});
const [host, port] = [LISTEN.slice(0, LISTEN.lastIndexOf(":")), Number(LISTEN.slice(LISTEN.lastIndexOf(":") + 1))];
await new Promise((ok) => server.listen(port, host, ok));
console.log(`bot listening on ${CALLBACK}`);

if (process.argv.includes("--demo")) {
  // First, a forgery: right claims and a published key id, but signed with another key. Refused.
  await refreshKeys();
  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${enc({ alg: "RS256", typ: "JWT", kid: [...keys.keys()][0] })}.${enc({ iss: ISSUER, aud: APP_ID, nbf: now, exp: now + 3600 })}`;
  const forged = `${unsigned}.${crypto.sign("RSA-SHA256", Buffer.from(unsigned), privateKey).toString("base64url")}`;
  const refused = await fetch(CALLBACK, { method: "POST", headers: { authorization: `Bearer ${forged}`, "content-type": "application/json" }, body: '{"value":[]}' });
  if (refused.status !== 401) throw new Error(`a forged notification was accepted (${refused.status})`);
  // The sim places one call per kind, with ids of ours so that the bot knows which transfer each gets.
  for (const [how, to] of [["blind", APP_ID], ["consultative", APP_ID], ["pstn", RECEPTION]]) {
    const callId = `example-js-${how}-${crypto.randomUUID().slice(0, 8)}`;
    kind.set(callId, how);
    const r = await fetch(`${BASE}/sim/v1/calls`, {
      method: "POST", headers: { "X-Sim-Admin-Key": "switchboard-demo-admin", "content-type": "application/json" },
      body: JSON.stringify({ from: ALEX, to, callId }),
    });
    if (r.status !== 201) throw new Error(`the sim refused the call: ${r.status} ${await r.text()}`);
  }
  const want = { blind: "0/7015", consultative: "AppTransferred", pstn: "0/7015" };
  const done = () => [...kind.keys()].every((id) => ended.has(id));
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 30_000);
    changed = () => { if (done()) { clearTimeout(timer); resolve(); } };
  });
  server.close();
  const ok = [...kind].every(([id, how]) => ended.get(id) === want[how]);
  console.log(ok ? "transfer_bot.mjs: every transfer completed" : `transfer_bot.mjs: ${JSON.stringify(Object.fromEntries(ended))}`);
  process.exit(ok ? 0 : 1);
}
