// A stack deploy's live progress events as lines of text (pure; unit-tested in ui/tests/). The stack editor
// (pages/stacks.js) opens the stream and shows them.
export const DEPLOY_ID_HEADER = 'X-Portainer-Deploy-Id';

// One event as a line of text.
export function progressLine(e) {
  const who = e.service ? `${e.service}: ` : '';
  switch (e.stage) {
    case 'pull': return `${who}pull ${e.image}${e.layer ? ' ' + e.layer : ''} ${e.status || ''}${e.progress ? ' ' + e.progress : ''}`.trimEnd();
    case 'build': return `${who}${e.line}`;
    case 'create': return `${who}created ${e.container}`;
    case 'start': return `${who}started ${e.container}`;
    case 'wait': return `${who}waiting for ${e.dependency} (${(e.condition || '').replace('service_', '')})`;
    case 'done': return 'deployed';
    case 'error': return `failed: ${e.message}`;
    default: return `${who}${e.stage}`;
  }
}
// The key under which an event's line replaces an earlier one (a pulled layer's percentage), or null: a new line.
export function progressKey(e) { return e.stage === 'pull' && e.layer ? `${e.service}|${e.image}|${e.layer}` : null; }
