// A call's story (GET /sim/v1/calls/{id}/history) as a ladder diagram: a column for the bot, one for
// Switchboard, one for the call's remote party and one for a transfer target; an arrow per request,
// notification, delivery attempt, network command and event, in order; state changes as notes.

const SVG = 'http://www.w3.org/2000/svg';
const COLUMN = 210;
const ROW = 30;
const TOP = 50;

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

// `/v1.0/communications/calls/<id>/transfer` → `…/transfer`; the call's own URL → `…/calls/{id}`.
function shortPath(path, callId) {
  const at = path.indexOf(callId);
  if (at < 0) return path;
  const rest = path.slice(at + callId.length);
  return rest ? `…${rest}` : '…/calls/{id}';
}

// The first word of a command or event (`Transfer { … }` → `Transfer`).
const word = (s) => (s.match(/^[A-Za-z]+/) || [s])[0];

// Where each entry goes: [from column, to column, label, failed?], or a note on one column.
function place(e, callId, target) {
  switch (e.kind) {
    case 'request': {
      const failed = e.status >= 400;
      return { from: 0, to: 1, label: `${e.method} ${shortPath(e.path, callId)} → ${e.status} (${e.latencyMs} ms)`, failed };
    }
    case 'notification':
      return { from: 1, to: 0, label: `#${e.seq} ${e.changeType}${e.summary ? ': ' + e.summary : ''}` };
    case 'delivery': {
      const ok = e.status >= 200 && e.status < 300;
      const answer = e.status ? `${e.status}` : (e.error ? 'no answer' : '—');
      const faults = e.faults.length ? ` [${e.faults.join(', ')}]` : '';
      return { from: 1, to: 0, label: `POST #${e.seqs.join(',')} try ${e.attempt} → ${answer} (${e.latencyMs} ms)${faults}`, failed: !ok };
    }
    case 'command':
      return { from: 1, to: e.to && target !== null ? target : 2, label: word(e.command) };
    case 'network': {
      if (e.event.startsWith('timer')) return { note: 1, label: e.event };
      const fromTarget = /^Transfer(Accepted|Completed|Failed)/.test(e.event) && target !== null;
      return { from: fromTarget ? target : 2, to: 1, label: word(e.event), failed: /Failed|Failure/.test(e.event) };
    }
    case 'state':
      return { note: 1, label: `${e.from || '·'} → ${e.to}${e.result ? ' (' + e.result + ')' : ''}` };
    case 'moved':
      return { note: 1, label: 'handed to another node' };
    default:
      return { note: 1, label: e.kind };
  }
}

export function ladder(story) {
  const columns = ['Bot', 'Switchboard', story.remote || 'Remote party'];
  const transfer = story.entries.find((e) => e.kind === 'command' && e.to);
  let target = null;
  if (transfer) {
    target = columns.length;
    columns.push(transfer.to);
  }
  const width = COLUMN * columns.length;
  const height = TOP + ROW * (story.entries.length + 1);
  const svg = node('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `ladder of call ${story.callId}` });
  const x = (c) => COLUMN * c + COLUMN / 2;
  const defs = node('defs');
  const marker = node('marker', { id: 'head', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
  marker.append(node('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: 'context-stroke' }));
  defs.append(marker);
  svg.append(defs);
  columns.forEach((name, c) => {
    svg.append(node('text', { x: x(c), y: 20, 'text-anchor': 'middle', class: 'head column', 'data-column': c }, name));
    svg.append(node('line', { x1: x(c), y1: 28, x2: x(c), y2: height - 10, class: 'lifeline' }));
  });
  const start = story.entries.length ? story.entries[0].at : 0;
  story.entries.forEach((e, i) => {
    const y = TOP + ROW * i;
    const p = place(e, story.callId, target);
    const g = node('g', { class: `${p.note !== undefined ? 'note' : 'arrow'} kind-${e.kind}${p.failed ? ' failed' : ''}`, 'data-kind': e.kind, 'data-label': p.label });
    g.append(node('text', { x: 4, y: y + 4, class: 'time' }, `+${((e.at - start) / 1000).toFixed(3)}s`));
    if (p.note !== undefined) {
      g.dataset.column = p.note;
      const w = Math.min(COLUMN * 1.6, 16 + p.label.length * 6.5);
      g.append(node('rect', { x: x(p.note) - w / 2, y: y - 11, width: w, height: 20, rx: 4 }));
      g.append(node('text', { x: x(p.note), y: y + 4, 'text-anchor': 'middle' }, p.label));
    } else {
      g.dataset.from = p.from;
      g.dataset.to = p.to;
      g.append(node('line', { x1: x(p.from), y1: y + 6, x2: x(p.to), y2: y + 6, 'marker-end': 'url(#head)' }));
      g.append(node('text', { x: (x(p.from) + x(p.to)) / 2, y: y + 1, 'text-anchor': 'middle' }, p.label));
    }
    svg.append(g);
  });
  return svg;
}
