// Swarm services, the pure part (unit-tested in ui/tests/): the service spec a form builds, the progress of a
// rolling update read from the service and its tasks, and the lines of a service's merged log stream.

// A mistake in the form, named by the input it is about (feedback.showError puts the message under it).
export class SpecError extends Error {
  constructor(message, field) { super(message); this.field = field; }
}
const DURATION_UNITS = {ns: 1, us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9};
// "10s", "1m30s", "500ms" (Go's time.ParseDuration) or a plain number of seconds, in nanoseconds; '' is undefined.
export function parseDuration(text, field) {
  const t = String(text ?? '').trim(); if (!t) return undefined;
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(+t * 1e9);
  const parts = [...t.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)];
  if (!parts.length || parts.map(p => p[0]).join('') !== t) throw new SpecError(`"${t}" is not a duration (e.g. 10s, 1m30s, 500ms)`, field);
  return Math.round(parts.reduce((sum, [, n, unit]) => sum + +n * DURATION_UNITS[unit], 0));
}
// "128M", "1.5G", "512k" or a number of bytes; '' is undefined.
export function parseBytes(text, field) {
  const t = String(text ?? '').trim(); if (!t) return undefined;
  const m = t.match(/^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i);
  if (!m) throw new SpecError(`"${t}" is not a size (e.g. 128M, 1G)`, field);
  return Math.round(+m[1] * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase()));
}
function parseCount(text, field, what, min = 0) {
  const t = String(text ?? '').trim(); if (!t) return undefined;
  if (!/^\d+$/.test(t) || +t < min) throw new SpecError(`${what} must be a whole number${min ? ` of at least ${min}` : ''}`, field);
  return +t;
}
function parseCpus(text, field) {
  const t = String(text ?? '').trim(); if (!t) return undefined;
  if (!/^\d+(\.\d+)?$/.test(t)) throw new SpecError(`"${t}" is not a number of CPUs (e.g. 0.5)`, field);
  return Math.round(+t * 1e9);
}
// A command line split as a shell would split words: quotes keep spaces.
export function splitCommand(text) {
  const t = String(text ?? '').trim(); if (!t) return undefined;
  return t.match(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g).map(w => w.replace(/"([^"]*)"|'([^']*)'/g, '$1$2'));
}
const lines = text => String(text ?? '').split('\n').map(l => l.trim()).filter(Boolean);
const dropEmpty = obj => { const out = {}; for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v; return out; };
// An update or rollback policy: {parallelism, delay, failureAction, monitor, order, maxFailureRatio}.
function updatePolicy(p = {}, prefix) {
  const ratio = String(p.maxFailureRatio ?? '').trim();
  if (ratio && !(/^\d+(\.\d+)?$/.test(ratio) && +ratio <= 1)) throw new SpecError('The failure ratio is a number from 0 to 1', `${prefix}MaxFailureRatio`);
  const policy = dropEmpty({Parallelism: parseCount(p.parallelism, `${prefix}Parallelism`, 'Parallelism'),
    Delay: parseDuration(p.delay, `${prefix}Delay`), FailureAction: p.failureAction || undefined,
    Monitor: parseDuration(p.monitor, `${prefix}Monitor`), MaxFailureRatio: ratio ? +ratio : undefined, Order: p.order || undefined});
  return Object.keys(policy).length ? policy : undefined;
}
// A config's or secret's reference: by name from the lists the engine gave, mounted at `target` (a file name).
function fileReferences(rows, known, kind) {
  const idKey = kind === 'secret' ? 'SecretID' : 'ConfigID', nameKey = kind === 'secret' ? 'SecretName' : 'ConfigName';
  return rows.map(([name, target]) => {
    const item = known.find(k => k.Spec.Name === name || k.ID === name);
    if (!item) throw new SpecError(`No ${kind} named "${name}"`, `${kind}Name`);
    return {[idKey]: item.ID, [nameKey]: item.Spec.Name, File: {Name: target || item.Spec.Name, UID: '0', GID: '0', Mode: 0o444}};
  });
}
const MOUNT_TYPES = ['volume', 'bind', 'tmpfs'];
// The spec POST /services/create takes, from the form's values (see pageServiceCreate for their names):
// {name, image, mode, replicas, args, env: [[k, v]], ports: [[published, target, protocol, mode]],
//  mounts: [[type, source, target, access]], networks: [id], constraints, preferences (one per line),
//  limitCpus, limitMemory, reserveCpus, reserveMemory, restart: {condition, delay, maxAttempts, window},
//  update: {...}, rollback: {...}, labels: [[k, v]], configs: [[name, target]], secrets: [[name, target]]}.
// `known` holds the engine's {configs, secrets} lists, to name each by its ID.
export function serviceSpec(form, known = {configs: [], secrets: []}) {
  const image = String(form.image ?? '').trim();
  if (!image) throw new SpecError('An image is required', 'image');
  const name = String(form.name ?? '').trim();
  if (name && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) throw new SpecError('A service name holds letters, digits, "_", "." and "-"', 'name');
  const global = form.mode === 'global';
  const replicas = global ? undefined : parseCount(form.replicas === '' || form.replicas === undefined ? '1' : form.replicas, 'replicas', 'Replicas');
  const ports = (form.ports || []).map(([published, target, protocol, mode]) => {
    if (!/^\d+$/.test(target || '') || +target < 1 || +target > 65535) throw new SpecError(`Target port "${target}" must be a port number`, 'targetPort');
    if (published && (!/^\d+$/.test(published) || +published > 65535)) throw new SpecError(`Published port "${published}" must be a port number`, 'publishedPort');
    return dropEmpty({Protocol: protocol || 'tcp', TargetPort: +target, PublishedPort: published ? +published : undefined, PublishMode: mode || 'ingress'});
  });
  const mounts = (form.mounts || []).map(([type, source, target, access]) => {
    if (!MOUNT_TYPES.includes(type)) throw new SpecError(`Mount type "${type}" is one of ${MOUNT_TYPES.join(', ')}`, 'mountSource');
    if (!String(target || '').startsWith('/')) throw new SpecError(`Mount target "${target || ''}" must be an absolute path in the container`, 'mountTarget');
    if (type !== 'tmpfs' && !source) throw new SpecError(`A ${type} mount needs a source`, 'mountSource');
    return dropEmpty({Type: type, Source: type === 'tmpfs' ? undefined : source, Target: target, ReadOnly: access === 'read-only' ? true : undefined});
  });
  const preferences = lines(form.preferences).map(line => {
    const m = line.match(/^spread\s*=\s*(\S+)$/);
    if (!m) throw new SpecError(`Placement preference "${line}" is written spread=node.labels.NAME`, 'preferences');
    return {Spread: {SpreadDescriptor: m[1]}};
  });
  const constraints = lines(form.constraints);
  for (const c of constraints) if (!/^\S.*(==|!=).*\S$/.test(c)) throw new SpecError(`Constraint "${c}" is written like node.role==manager`, 'constraints');
  const limits = dropEmpty({NanoCPUs: parseCpus(form.limitCpus, 'limitCpus'), MemoryBytes: parseBytes(form.limitMemory, 'limitMemory')});
  const reservations = dropEmpty({NanoCPUs: parseCpus(form.reserveCpus, 'reserveCpus'), MemoryBytes: parseBytes(form.reserveMemory, 'reserveMemory')});
  const r = form.restart || {};
  const restart = dropEmpty({Condition: r.condition || undefined, Delay: parseDuration(r.delay, 'restartDelay'),
    MaxAttempts: parseCount(r.maxAttempts, 'restartMaxAttempts', 'Maximum attempts'), Window: parseDuration(r.window, 'restartWindow')});
  const env = (form.env || []).map(([k, v]) => { if (!k) throw new SpecError('An environment variable needs a name', 'envName'); return `${k}=${v ?? ''}`; });
  const containerSpec = dropEmpty({Image: image, Args: splitCommand(form.args), Env: env.length ? env : undefined,
    Mounts: mounts.length ? mounts : undefined,
    Configs: (form.configs || []).length ? fileReferences(form.configs, known.configs || [], 'config') : undefined,
    Secrets: (form.secrets || []).length ? fileReferences(form.secrets, known.secrets || [], 'secret') : undefined});
  const placement = dropEmpty({Constraints: constraints.length ? constraints : undefined, Preferences: preferences.length ? preferences : undefined});
  const resources = dropEmpty({Limits: Object.keys(limits).length ? limits : undefined, Reservations: Object.keys(reservations).length ? reservations : undefined});
  const taskTemplate = dropEmpty({ContainerSpec: containerSpec, Resources: Object.keys(resources).length ? resources : undefined,
    RestartPolicy: Object.keys(restart).length ? restart : undefined, Placement: Object.keys(placement).length ? placement : undefined,
    Networks: (form.networks || []).length ? form.networks.map(Target => ({Target})) : undefined});
  return dropEmpty({Name: name || undefined, Labels: Object.fromEntries(form.labels || []), TaskTemplate: taskTemplate,
    Mode: global ? {Global: {}} : {Replicated: {Replicas: replicas}},
    UpdateConfig: updatePolicy(form.update, 'update'), RollbackConfig: updatePolicy(form.rollback, 'rollback'),
    EndpointSpec: ports.length ? {Ports: ports} : undefined});
}

// The same spec with another replica count, image or a forced redeploy (what scale, update and force update send).
export function scaledSpec(spec, replicas) {
  if (!spec.Mode || !spec.Mode.Replicated) throw new SpecError('A global service runs one task per node: it cannot be scaled', 'replicas');
  if (!/^\d+$/.test(String(replicas).trim())) throw new SpecError('Replicas must be a whole number', 'replicas');
  return {...spec, Mode: {Replicated: {Replicas: +replicas}}};
}
export function withImage(spec, image) {
  const t = String(image ?? '').trim(); if (!t) throw new SpecError('An image is required', 'image');
  return {...spec, TaskTemplate: {...spec.TaskTemplate, ContainerSpec: {...spec.TaskTemplate.ContainerSpec, Image: t}}};
}
export const forcedSpec = spec => ({...spec, TaskTemplate: {...spec.TaskTemplate, ForceUpdate: (spec.TaskTemplate.ForceUpdate || 0) + 1}});

// Is a task of this spec (image and forced-update counter), or of the one before the update?
const taskIsCurrent = (task, template) => ((task.Spec || {}).ContainerSpec || {}).Image === (template.ContainerSpec || {}).Image
  && ((task.Spec || {}).ForceUpdate || 0) === (template.ForceUpdate || 0);
const UPDATE_STATES = {updating: 'updating', paused: 'paused', completed: 'completed', rollback_started: 'rolling back',
  rollback_paused: 'rollback paused', rollback_completed: 'rolled back'};
// The rollout as the page shows it: one row per slot (replicated) or node (global) with the newest task there,
// whether it runs the current spec, and the counts: {state, message, updated, total, done, slots: [...]}.
export function rolloutProgress(service, tasks) {
  const template = service.Spec.TaskTemplate, replicated = !!service.Spec.Mode.Replicated;
  const newest = new Map();
  for (const t of tasks.filter(x => x.ServiceID === service.ID)) {
    const key = replicated ? `slot ${t.Slot}` : `node ${t.NodeID}`, seen = newest.get(key);
    const rank = x => (x.DesiredState === 'running' ? 1e15 : 0) + Date.parse(x.UpdatedAt || x.CreatedAt || 0);
    if (!seen || rank(t) > rank(seen)) newest.set(key, t);
  }
  const slots = [...newest.entries()].filter(([, t]) => t.DesiredState === 'running' || t.DesiredState === 'ready')
    .map(([key, t]) => ({key, task: t, image: ((t.Spec || {}).ContainerSpec || {}).Image || '', state: t.Status.State,
      desired: t.DesiredState, current: taskIsCurrent(t, template), error: t.Status.Err || ''}))
    .sort((a, b) => (a.task.Slot || 0) - (b.task.Slot || 0) || a.key.localeCompare(b.key));
  const total = replicated ? service.Spec.Mode.Replicated.Replicas : slots.length;
  const updated = slots.filter(s => s.current && s.state === 'running').length;
  const status = service.UpdateStatus || {};
  const state = UPDATE_STATES[status.State] || (status.State ? status.State : 'no update yet');
  return {state, message: status.Message || '', updated, total, slots,
    done: !/^(updating|rollback_started)$/.test(status.State || '') && updated === total};
}

// One line of GET /services/{id}/logs?timestamps=1&details=1: "<time> <k=v,k=v,...> <text>" where the details
// name the task (com.docker.swarm.task.id) and node; answers {ts, task, node, text}.
export function parseServiceLogLine(raw) {
  let rest = raw.replace(/\r$/, ''), ts = '', task = '', node = '';
  const time = rest.match(/^(\d{4}-\d\d-\d\dT\S+) /); if (time) { ts = time[1]; rest = rest.slice(time[0].length); }
  const details = rest.match(/^((?:[\w.-]+=[^\s,]*)(?:,[\w.-]+=[^\s,]*)*)(?: |$)/);
  if (details && /com\.docker\.swarm\./.test(details[1])) {
    const attrs = Object.fromEntries(details[1].split(',').map(kv => { const i = kv.indexOf('='); return [kv.slice(0, i), decodeURIComponent(kv.slice(i + 1).replace(/\+/g, ' '))]; }));
    task = attrs['com.docker.swarm.task.id'] || ''; node = attrs['com.docker.swarm.node.id'] || '';
    rest = rest.slice(details[0].length);
  }
  return {ts, task, node, text: rest};
}
// A task's name as `docker service ps` shows it: service.slot (replicated) or service.node (global).
export const taskName = (serviceName, task) => `${serviceName}.${task.Slot || String(task.NodeID || '').slice(0, 12)}`;
// A stable colour for a tag (a task): one of `count` classes (.svc-tag0 ...; the CSP allows no inline style).
export function tagColour(tag, count = 8) { let h = 0; for (const c of String(tag)) h = (h * 31 + c.charCodeAt(0)) >>> 0; return h % count; }
// Bytes (a file's, or text's UTF-8) as base64: the Data of a config or secret.
export function base64Of(bytes) {
  let out = ''; for (let i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(out);
}
// A config's Data as text when it is UTF-8 text, else null (binary).
export function textOfBase64(data) {
  const raw = atob(data || ''), bytes = Uint8Array.from(raw, c => c.charCodeAt(0));
  try { return new TextDecoder('utf-8', {fatal: true}).decode(bytes); } catch (e) { return null; }
}
