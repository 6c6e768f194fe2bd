// Drives the console (/console) in Debian's chromium, headless: logs in, places a call, sees it appear
// and change live as a bot answers and transfers it, reads the ladder's arrows in order, uses every
// action, and looks at it on a phone-sized screen. This script is the bot: it acknowledges every
// notification on WEBHOOK_PORT and acts through the Graph API.
//
// Env: BASE (the server), WEBHOOK_PORT (its Demo Bot's webhook port), OUT (results JSON), SHOTS (where
// the screenshots go), CHROMIUM (default /usr/bin/chromium).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE;
const KEY = 'switchboard-demo-admin';
const TENANT = 'aaaaaaaa-0000-4000-8000-000000000001';
const DEMO_BOT = 'cccccccc-0000-4000-8000-000000000003';
const ALEX = '751f6800-3180-414d-bd94-333364659951';
const HEIDI = '550fae72-d251-43ec-868c-373732c2704f';
const SHOTS = process.env.SHOTS || '.';

const checks = [];
function check(name, ok, detail = '') {
  checks.push({ name, ok: Boolean(ok), detail: ok ? '' : String(detail) });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : ': ' + detail}`);
}

// The bot's webhook: every notification acknowledged.
const hook = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.writeHead(202); res.end(); });
});
await new Promise((ok) => hook.listen(Number(process.env.WEBHOOK_PORT), '127.0.0.1', ok));

async function token() {
  const body = new URLSearchParams({ grant_type: 'client_credentials', client_id: DEMO_BOT, client_secret: 'switchboard-demo-secret', scope: 'https://graph.microsoft.com/.default' });
  const r = await fetch(`${BASE}/${TENANT}/oauth2/v2.0/token`, { method: 'POST', body });
  return (await r.json()).access_token;
}

async function graph(tok, action, body) {
  const r = await fetch(`${BASE}/v1.0/communications/calls/${action}`, {
    method: 'POST', headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  return r.status;
}

// The first index at or after `from` whose arrow matches.
function findFrom(arrows, from, pred) {
  for (let i = from; i < arrows.length; i++) if (pred(arrows[i])) return i;
  return -1;
}

let browser;
try {
  for (const p of ['/console/assets/app.js', '/console/events']) {
    const r = await fetch(BASE + p);
    check(`${p} needs a session`, r.status === 401, r.status);
  }
  const r = await fetch(`${BASE}/sim/v1/world`, { headers: { 'X-Console-CSRF': 'guess' } });
  check('the sim API needs the key or a session', r.status === 401, r.status);

  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Refusals the test provokes on purpose show as failed loads; anything else is a defect.
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });

  // Log in: a wrong key first.
  await page.goto(`${BASE}/console`);
  check('the console asks for the key', await page.isVisible('#key'));
  await page.fill('#key', 'not-the-key');
  await page.click('button[type=submit]');
  check('a wrong key is refused, saying so', (await page.textContent('.problem'))?.includes('not the admin key'));
  await page.fill('#key', KEY);
  await Promise.all([page.waitForSelector('#calls'), page.click('button[type=submit]')]);
  const cookie = (await context.cookies()).find((c) => c.name === 'switchboard_console');
  check('the session is an HttpOnly, SameSite=Strict cookie', cookie?.httpOnly && cookie?.sameSite === 'Strict', JSON.stringify(cookie));
  check('the key itself is not in the page', !(await page.content()).includes(KEY));
  const withoutToken = await page.evaluate(() => fetch('/sim/v1/world').then((x) => x.status));
  check('a request without the CSRF token is refused (403)', withoutToken === 403, withoutToken);
  await page.waitForSelector('#live.on');
  check('live updates are on (server-sent events)', true);

  // Place a call from the form: Alex calls the Demo Bot.
  await page.waitForSelector(`#place [name=from] option[value="${ALEX}"]`, { state: 'attached' });
  await page.selectOption('#place [name=from]', ALEX);
  await page.selectOption('#place [name=to]', DEMO_BOT);
  await page.click('#place button');
  const row = await page.waitForSelector('#calls tr[data-state=incoming]');
  const callId = await row.getAttribute('data-call-id');
  check('the call appears, ringing the bot', Boolean(callId));

  // The bot answers and transfers through Graph, outside the page: the row follows by itself.
  const tok = await token();
  const answer = await graph(tok, `${callId}/answer`, {
    callbackUri: `http://127.0.0.1:${process.env.WEBHOOK_PORT}/api/calls`, acceptedModalities: ['audio'],
    mediaConfig: { '@odata.type': '#microsoft.graph.serviceHostedMediaConfig' },
  });
  check('the bot answers (202)', answer === 202, answer);
  await page.waitForSelector(`#calls tr[data-call-id="${callId}"][data-state=established]`, { timeout: 10000 });
  check('the row turns established live', true);
  const transfer = await graph(tok, `${callId}/transfer`, { transferTarget: { endpointType: 'default', identity: { user: { id: HEIDI, displayName: 'Heidi Steen' } } } });
  check('the bot transfers the call to Heidi (202)', transfer === 202, transfer);
  await page.waitForSelector(`#calls tr[data-call-id="${callId}"][data-state=terminated]`, { timeout: 10000 });
  check('the row turns terminated live once the transfer completes', true);

  // The ladder: columns and arrows, in order.
  await page.click(`#calls tr[data-call-id="${callId}"]`);
  await page.waitForFunction(() => [...document.querySelectorAll('#ladder g[data-kind=state]')].some((g) => g.dataset.label.includes('→ terminated')));
  const columns = await page.$$eval('#ladder text.column', (ts) => ts.map((t) => t.textContent));
  check('the ladder has a column for the bot, Switchboard, the caller and the target', JSON.stringify(columns) === JSON.stringify(['Bot', 'Switchboard', 'Alex Wilber', 'Heidi Steen']), JSON.stringify(columns));
  const arrows = await page.$$eval('#ladder g[data-kind]', (gs) => gs.map((g) => ({ kind: g.dataset.kind, label: g.dataset.label, from: g.dataset.from, to: g.dataset.to })));
  const expected = [
    ['the offer, notified to the bot', (a) => a.kind === 'notification' && a.label.includes('created') && a.label.includes('incoming') && a.from === '1' && a.to === '0'],
    ['its delivery, acknowledged', (a) => a.kind === 'delivery' && a.label.includes('→ 202')],
    ['the bot\'s answer request', (a) => a.kind === 'request' && a.label.startsWith('POST …/answer → 202') && a.from === '0' && a.to === '1'],
    ['the caller connected', (a) => a.kind === 'network' && a.label === 'Connected' && a.from === '2' && a.to === '1'],
    ['the call established', (a) => a.kind === 'state' && a.label.includes('→ established')],
    ['the bot\'s transfer request', (a) => a.kind === 'request' && a.label.startsWith('POST …/transfer → 202')],
    ['the target rung', (a) => a.kind === 'command' && a.label === 'Transfer' && a.from === '1' && a.to === '3'],
    ['the target accepted', (a) => a.kind === 'network' && a.label === 'TransferAccepted' && a.from === '3' && a.to === '1'],
    ['the call terminated', (a) => a.kind === 'state' && a.label.includes('→ terminated')],
  ];
  let at = 0;
  for (const [name, pred] of expected) {
    const i = findFrom(arrows, at, pred);
    check(`ladder, in order: ${name}`, i >= 0, JSON.stringify(arrows.slice(at).map((a) => `${a.kind}:${a.label}`)));
    if (i >= 0) at = i + 1;
  }
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, 'console.png'), fullPage: true });

  // The actions: change a behaviour, hang up a leg, advance the clock, reset.
  await page.selectOption('#behaviour [name=party]', HEIDI);
  await page.selectOption('#behaviour [name=kind]', 'busy');
  await page.click('#behaviour button');
  await page.waitForSelector(`#parties tr[data-party="${HEIDI}"] .source:text("set")`);
  check('a behaviour changes from the page', (await page.textContent(`#parties tr[data-party="${HEIDI}"] .behaviour`)) === 'busy');
  await page.waitForSelector('#legs tr[data-leg-id] button');
  const legs = await page.$$eval('#legs tr[data-leg-id]', (rs) => rs.length);
  check('the transferred caller and Heidi are two connected legs', legs === 2, legs);
  await page.click('#legs tr[data-leg-id] button');
  await page.waitForFunction(() => document.querySelectorAll('#legs tr[data-leg-id]').length === 0);
  check('hanging up one leg ends both', true);
  await page.click('#advance button');
  await page.waitForSelector('#status.error');
  check('advancing a real clock is refused, saying why', (await page.textContent('#status')).includes('virtual'), await page.textContent('#status'));
  await page.click('#reset');
  await page.waitForFunction(() => document.querySelectorAll('#calls tr[data-call-id]').length === 0);
  await page.waitForSelector(`#parties tr[data-party="${HEIDI}"] .source:text("configured")`);
  check('reset clears the calls and restores the behaviours', true);

  // A phone-sized screen: nothing wider than the screen but the ladder, which scrolls in its box.
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${BASE}/console`);
  await phone.waitForSelector('#live.on');
  const placed = await phone.evaluate(async (body) => {
    const csrf = document.querySelector('meta[name=csrf]').content;
    const r = await fetch('/sim/v1/calls', { method: 'POST', headers: { 'X-Console-CSRF': csrf, 'content-type': 'application/json' }, body });
    return r.status;
  }, JSON.stringify({ from: ALEX, to: DEMO_BOT }));
  check('a call placed from the phone-sized page', placed === 201, placed);
  await phone.waitForSelector('#calls tr[data-call-id]');
  const wide = await phone.evaluate(() => document.documentElement.scrollWidth);
  check('the page fits a 390 px screen', wide <= 390, wide);
  await phone.screenshot({ path: path.join(SHOTS, 'console-phone.png'), fullPage: false });

  // Log out: the session is gone.
  await page.click('#logout');
  await page.waitForSelector('#key');
  const after = await page.evaluate(() => fetch('/console/assets/app.js').then((x) => x.status));
  check('after logging out the console is closed', after === 401, after);
  check('no script errors in the page', errors.length === 0, errors.join('; '));
} catch (e) {
  check('the run completes', false, e.stack || e);
} finally {
  if (browser) await browser.close();
  hook.close();
}

const failed = checks.filter((c) => !c.ok).length;
if (process.env.OUT) fs.writeFileSync(process.env.OUT, JSON.stringify({ ok: failed === 0, checks }, null, 2) + '\n');
console.log(`console: ${checks.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
