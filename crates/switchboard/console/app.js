// The console's page: reads the sim API with the session (its CSRF token in X-Console-CSRF), draws
// what it finds, and fetches again whenever the server says something changed (server-sent events).
import { ladder } from './ladder.js';

const csrf = document.querySelector('meta[name=csrf]').content;
const $ = (sel) => document.querySelector(sel);
let directory = null;
let selected = null;

function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('data-')) n.setAttribute(k, v);
    else if (k === 'onclick') n.addEventListener('click', v);
    else n[k] = v;
  }
  n.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c ?? '')))));
  return n;
}

async function api(method, path, body) {
  const init = { method, headers: { 'X-Console-CSRF': csrf }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(`/sim/v1${path}`, init);
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (resp.status === 401) location.reload(); // the session ended: back to the login page
  if (!resp.ok) throw new Error(json?.error?.message || `${method} ${path}: ${resp.status}`);
  return json;
}

function say(message, error = false) {
  const s = $('#status');
  s.textContent = message;
  s.className = error ? 'error' : '';
}

// Every action reports what happened, and the page is drawn again.
async function act(what, fn) {
  try {
    const result = await fn();
    say(`${what}: done${result ? ' ' + JSON.stringify(result) : ''}`);
  } catch (e) {
    say(`${what}: ${e.message}`, true);
  }
  refresh();
}

const partyName = (p) => p?.displayName || p?.number || p?.id || '';
const appName = (id) => directory?.apps.find((a) => a.id === id)?.name || id;
const age = (ms) => (ms < 60000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60000)} min`);

function drawCalls(calls, now) {
  const body = $('#calls tbody');
  body.replaceChildren(...calls.map((c) => el('tr', {
    'data-call-id': c.id, 'data-state': c.state,
    className: `${c.endedAt ? 'ended' : ''}${c.id === selected ? ' selected' : ''}`,
    onclick: () => { selected = c.id; refresh(); },
  }, el('td', { title: c.id }, c.id.slice(0, 8)), el('td', {}, appName(c.appId)), el('td', { className: 'state' }, c.state),
  el('td', {}, c.remote), el('td', {}, age((c.endedAt || now) - c.createdAt)))));
}

function peerText(peer) {
  switch (peer.kind) {
    case 'bot': return `bot call ${peer.callId.slice(0, 8)} (${appName(peer.appId)})`;
    case 'leg': return `leg ${peer.legId}`;
    case 'transfer': return `transfer of ${peer.callId.slice(0, 8)}`;
    case 'group': return `group ${peer.callId.slice(0, 8)}`;
    case 'external': return `${peer.network} ${peer.id.slice(0, 8)}`;
    default: return peer.kind;
  }
}

function drawLegs(legs) {
  $('#legs tbody').replaceChildren(...legs.map((l) => el('tr', { 'data-leg-id': l.id },
    el('td', {}, l.id), el('td', {}, partyName(l.party)), el('td', {}, l.state), el('td', {}, peerText(l.peer)),
    el('td', {}, el('button', { type: 'button', onclick: () => act(`hang up ${l.id}`, () => api('DELETE', `/legs/${l.id}`)) }, 'Hang up')))));
}

function behaviourText(b) {
  const parts = Object.entries(b).filter(([k]) => k !== 'kind').map(([k, v]) => `${k} ${v}`);
  return `${b.kind}${parts.length ? ' (' + parts.join(', ') + ')' : ''}`;
}

function drawDirectory() {
  const parties = [...directory.users.map((u) => ({ key: u.id, name: u.displayName, ...u })),
    ...directory.numbers.map((n) => ({ key: n.number, name: n.number, ...n }))];
  $('#parties tbody').replaceChildren(...parties.map((p) => el('tr', { 'data-party': p.key },
    el('td', { title: p.key }, p.name), el('td', { className: 'behaviour' }, behaviourText(p.behaviour)), el('td', { className: 'source' }, p.source))));
  const keep = (sel, options) => {
    const s = $(sel);
    const value = s.value;
    s.replaceChildren(...options.map(([v, t]) => el('option', { value: v }, t)));
    if (value) s.value = value;
  };
  keep('#place [name=from]', parties.map((p) => [p.key, p.name]));
  keep('#behaviour [name=party]', parties.map((p) => [p.key, p.name]));
  const bots = directory.apps.flatMap((a) => [[a.id, a.name], ...a.instances.map((i) => [i.id, `${i.displayName} (${a.name})`])]);
  keep('#place [name=to]', bots);
}

function drawOutbox(pending, failed) {
  $('#outbox-summary').textContent = `${pending.length} pending, ${failed.length} failed`;
  $('#outbox tbody').replaceChildren(...[...failed, ...pending].map((r) => el('tr', {},
    el('td', {}, r.seq), el('td', { title: r.callId }, r.callId.slice(0, 8)), el('td', {}, r.attempts), el('td', {}, r.lastError || ''))));
}

let busy = false;
let again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    if (!directory) directory = await api('GET', '/directory');
    const [clock, world, calls, pending, failed] = await Promise.all([
      api('GET', '/clock'), api('GET', '/world'), api('GET', '/calls'),
      api('GET', '/outbox?status=pending'), api('GET', '/outbox?status=failed')]);
    $('#clock').textContent = `${clock.virtual ? 'virtual ' : ''}${clock.now}`;
    drawDirectory();
    drawCalls(calls.value, clock.nowMs);
    drawLegs(world.legs);
    drawOutbox(pending.value, failed.value);
    if (selected) {
      try {
        const story = await api('GET', `/calls/${selected}/history`);
        $('#ladder-call').textContent = `${story.callId} (${story.state})`;
        $('#ladder').replaceChildren(ladder(story));
      } catch (e) {
        $('#ladder-call').textContent = `${selected}: ${e.message}`;
      }
    }
  } catch (e) {
    say(e.message, true);
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}

$('#place').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  act('place a call', async () => {
    const r = await api('POST', '/calls', { from: f.get('from'), to: f.get('to') });
    selected = r.callId;
    return r;
  });
});

$('#behaviour').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const b = { kind: f.get('kind') };
  if (b.kind === 'answer') {
    for (const k of ['after_ms', 'hang_up_after_ms']) if (f.get(k) !== '') b[k] = Number(f.get(k));
  }
  act(`behaviour of ${f.get('party')}`, async () => {
    const r = await api('PUT', `/parties/${encodeURIComponent(f.get('party'))}/behaviour`, b);
    directory = null;
    return r.behaviour;
  });
});

$('#advance').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const ms = Number(new FormData(ev.target).get('ms'));
  act('advance the clock', () => api('POST', '/clock', { advance_ms: ms }));
});

$('#reset').addEventListener('click', () => act('reset', async () => {
  const r = await api('POST', '/reset');
  selected = null;
  directory = null;
  $('#ladder').replaceChildren();
  $('#ladder-call').textContent = '(choose a call)';
  return r;
}));

$('#retry').addEventListener('click', () => act('retry failed notifications', () => api('POST', '/outbox/retry')));

$('#logout').addEventListener('click', async () => {
  await fetch('/console/logout', { method: 'POST', headers: { 'X-Console-CSRF': csrf }, credentials: 'same-origin' });
  location.href = '/console';
});

// Live: the server says when something changed; EventSource reconnects by itself.
const events = new EventSource('/console/events');
events.addEventListener('change', () => refresh());
events.addEventListener('open', () => $('#live').classList.add('on'));
events.addEventListener('error', () => $('#live').classList.remove('on'));
refresh();
