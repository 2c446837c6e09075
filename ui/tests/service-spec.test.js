// Unit tests of ui/service-spec.js (node --test ui/tests/).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {forcedSpec, parseBytes, parseDuration, parseServiceLogLine, rolloutProgress, scaledSpec, serviceSpec,
  SpecError, splitCommand, tagColour, taskName, withImage} from '../service-spec.js';

test('durations are read as Go reads them, in nanoseconds; a plain number is seconds', () => {
  assert.equal(parseDuration('10s'), 10e9);
  assert.equal(parseDuration('1m30s'), 90e9);
  assert.equal(parseDuration('500ms'), 500e6);
  assert.equal(parseDuration('1.5h'), 5400e9);
  assert.equal(parseDuration('5'), 5e9);
  assert.equal(parseDuration(''), undefined);
  assert.throws(() => parseDuration('10 sec', 'updateDelay'), e => e instanceof SpecError && e.field === 'updateDelay');
  assert.throws(() => parseDuration('s10'), SpecError);
});

test('sizes take k, M, G, T suffixes in powers of 1024', () => {
  assert.equal(parseBytes('128M'), 128 * 1024 ** 2);
  assert.equal(parseBytes('1.5g'), 1.5 * 1024 ** 3);
  assert.equal(parseBytes('512k'), 512 * 1024);
  assert.equal(parseBytes('64MiB'), 64 * 1024 ** 2);
  assert.equal(parseBytes('1000'), 1000);
  assert.equal(parseBytes(' '), undefined);
  assert.throws(() => parseBytes('lots', 'limitMemory'), e => e.field === 'limitMemory');
});

test('a command keeps quoted words together', () => {
  assert.deepEqual(splitCommand(`sh -c "echo hello; sleep 1" 'a b'`), ['sh', '-c', 'echo hello; sleep 1', 'a b']);
  assert.equal(splitCommand('  '), undefined);
});

test('the smallest form is an image: one replica, nothing else sent', () => {
  assert.deepEqual(serviceSpec({image: 'busybox:local'}), {
    Labels: {}, TaskTemplate: {ContainerSpec: {Image: 'busybox:local'}}, Mode: {Replicated: {Replicas: 1}}});
});

test('every part of the form lands in its place in the spec', () => {
  const known = {configs: [{ID: 'c1', Spec: {Name: 'app-conf'}}], secrets: [{ID: 's1', Spec: {Name: 'db-pass'}}]};
  const spec = serviceSpec({
    name: 'web', image: 'nginx:1', mode: 'replicated', replicas: '3', args: 'nginx -g "daemon off;"',
    env: [['A', '1'], ['B', 'x=y']], ports: [['8080', '80', 'tcp', 'ingress'], ['', '53', 'udp', 'host']],
    mounts: [['volume', 'data', '/data', 'read-write'], ['tmpfs', '', '/tmp', 'read-write'], ['bind', '/srv', '/srv', 'read-only']],
    networks: ['net1'], constraints: 'node.role==manager\n\nnode.labels.zone!=b', preferences: 'spread=node.labels.zone',
    limitCpus: '0.5', limitMemory: '128M', reserveCpus: '', reserveMemory: '64M',
    restart: {condition: 'on-failure', delay: '5s', maxAttempts: '3', window: '1m'},
    update: {parallelism: '1', delay: '2s', failureAction: 'rollback', order: 'start-first', monitor: '5s', maxFailureRatio: '0.2'},
    rollback: {parallelism: '2', failureAction: 'pause'},
    labels: [['team', 'blue']], configs: [['app-conf', '/etc/app.conf']], secrets: [['db-pass', '']],
  }, known);
  assert.deepEqual(spec, {
    Name: 'web', Labels: {team: 'blue'}, Mode: {Replicated: {Replicas: 3}},
    TaskTemplate: {
      ContainerSpec: {Image: 'nginx:1', Args: ['nginx', '-g', 'daemon off;'], Env: ['A=1', 'B=x=y'],
        Mounts: [{Type: 'volume', Source: 'data', Target: '/data'}, {Type: 'tmpfs', Target: '/tmp'}, {Type: 'bind', Source: '/srv', Target: '/srv', ReadOnly: true}],
        Configs: [{ConfigID: 'c1', ConfigName: 'app-conf', File: {Name: '/etc/app.conf', UID: '0', GID: '0', Mode: 0o444}}],
        Secrets: [{SecretID: 's1', SecretName: 'db-pass', File: {Name: 'db-pass', UID: '0', GID: '0', Mode: 0o444}}]},
      Resources: {Limits: {NanoCPUs: 5e8, MemoryBytes: 128 * 1024 ** 2}, Reservations: {MemoryBytes: 64 * 1024 ** 2}},
      RestartPolicy: {Condition: 'on-failure', Delay: 5e9, MaxAttempts: 3, Window: 60e9},
      Placement: {Constraints: ['node.role==manager', 'node.labels.zone!=b'], Preferences: [{Spread: {SpreadDescriptor: 'node.labels.zone'}}]},
      Networks: [{Target: 'net1'}]},
    UpdateConfig: {Parallelism: 1, Delay: 2e9, FailureAction: 'rollback', Monitor: 5e9, MaxFailureRatio: 0.2, Order: 'start-first'},
    RollbackConfig: {Parallelism: 2, FailureAction: 'pause'},
    EndpointSpec: {Ports: [{Protocol: 'tcp', TargetPort: 80, PublishedPort: 8080, PublishMode: 'ingress'}, {Protocol: 'udp', TargetPort: 53, PublishMode: 'host'}]},
  });
});

test('a global service has no replica count', () => {
  assert.deepEqual(serviceSpec({image: 'x', mode: 'global', replicas: '4'}).Mode, {Global: {}});
});

test('a mistake names the input it is about', () => {
  const fieldOf = form => { try { serviceSpec(form); } catch (e) { assert.ok(e instanceof SpecError); return e.field; } return null; };
  assert.equal(fieldOf({image: ''}), 'image');
  assert.equal(fieldOf({image: 'x', name: 'bad name'}), 'name');
  assert.equal(fieldOf({image: 'x', replicas: 'two'}), 'replicas');
  assert.equal(fieldOf({image: 'x', ports: [['80', 'http', 'tcp', 'ingress']]}), 'targetPort');
  assert.equal(fieldOf({image: 'x', ports: [['99999', '80', 'tcp', 'ingress']]}), 'publishedPort');
  assert.equal(fieldOf({image: 'x', mounts: [['volume', 'data', 'relative', 'read-write']]}), 'mountTarget');
  assert.equal(fieldOf({image: 'x', mounts: [['bind', '', '/x', 'read-write']]}), 'mountSource');
  assert.equal(fieldOf({image: 'x', constraints: 'node.role manager'}), 'constraints');
  assert.equal(fieldOf({image: 'x', preferences: 'node.labels.zone'}), 'preferences');
  assert.equal(fieldOf({image: 'x', limitMemory: 'a lot'}), 'limitMemory');
  assert.equal(fieldOf({image: 'x', update: {maxFailureRatio: '2'}}), 'updateMaxFailureRatio');
  assert.equal(fieldOf({image: 'x', rollback: {delay: 'soon'}}), 'rollbackDelay');
  assert.equal(fieldOf({image: 'x', configs: [['missing', '/x']]}), 'configName');
  assert.equal(fieldOf({image: 'x', env: [['', 'value']]}), 'envName');
});

test('scale, new image and force update change only their part of the spec', () => {
  const spec = serviceSpec({image: 'a:1', replicas: '1', labels: [['k', 'v']]});
  assert.deepEqual(scaledSpec(spec, '3').Mode, {Replicated: {Replicas: 3}});
  assert.equal(scaledSpec(spec, 3).Labels.k, 'v');
  assert.throws(() => scaledSpec(spec, '-1'), SpecError);
  assert.throws(() => scaledSpec({...spec, Mode: {Global: {}}}, 2), SpecError);
  assert.equal(withImage(spec, ' a:2 ').TaskTemplate.ContainerSpec.Image, 'a:2');
  assert.equal(spec.TaskTemplate.ContainerSpec.Image, 'a:1');
  assert.throws(() => withImage(spec, ''), SpecError);
  assert.equal(forcedSpec(forcedSpec(spec)).TaskTemplate.ForceUpdate, 2);
});

const task = (id, slot, image, state, desired, at, extra = {}) => ({ID: id, ServiceID: 'svc', Slot: slot, NodeID: 'node1',
  Spec: {ContainerSpec: {Image: image}}, Status: {State: state, Err: extra.err}, DesiredState: desired, UpdatedAt: at, CreatedAt: at});
const service = (image, replicas, update) => ({ID: 'svc', Spec: {Mode: {Replicated: {Replicas: replicas}}, TaskTemplate: {ContainerSpec: {Image: image}}}, UpdateStatus: update});

test('a rollout halfway: each slot shows its newest task and whether it runs the new image', () => {
  const tasks = [
    task('t1', 1, 'app:1', 'shutdown', 'shutdown', '2024-01-01T00:00:01Z'), task('t1b', 1, 'app:2', 'running', 'running', '2024-01-01T00:00:05Z'),
    task('t2', 2, 'app:1', 'running', 'running', '2024-01-01T00:00:01Z'),
    task('t3', 3, 'app:1', 'running', 'shutdown', '2024-01-01T00:00:01Z'), task('t3b', 3, 'app:2', 'preparing', 'running', '2024-01-01T00:00:06Z'),
    {...task('other', 1, 'x', 'running', 'running', '2024-01-01T00:00:09Z'), ServiceID: 'another'},
  ];
  const p = rolloutProgress(service('app:2', 3, {State: 'updating', Message: 'update in progress'}), tasks);
  assert.equal(p.state, 'updating');
  assert.equal(p.message, 'update in progress');
  assert.deepEqual(p.slots.map(s => [s.key, s.task.ID, s.current, s.state]),
    [['slot 1', 't1b', true, 'running'], ['slot 2', 't2', false, 'running'], ['slot 3', 't3b', true, 'preparing']]);
  assert.equal(p.updated, 1);
  assert.equal(p.total, 3);
  assert.equal(p.done, false);
});

test('a finished rollout, and a rollback, are done when every slot runs the current spec', () => {
  const done = rolloutProgress(service('app:2', 2, {State: 'completed'}), [
    task('a', 1, 'app:2', 'running', 'running', '2024-01-01T00:00:05Z'), task('b', 2, 'app:2', 'running', 'running', '2024-01-01T00:00:05Z')]);
  assert.equal(done.done, true);
  assert.equal(done.state, 'completed');
  const back = rolloutProgress(service('app:1', 1, {State: 'rollback_completed'}), [task('c', 1, 'app:1', 'running', 'running', '2024-01-01T00:00:07Z')]);
  assert.equal(back.state, 'rolled back');
  assert.equal(back.done, true);
  const never = rolloutProgress(service('app:1', 1, undefined), [task('d', 1, 'app:1', 'failed', 'running', '2024-01-01T00:00:07Z', {err: 'no such image'})]);
  assert.equal(never.state, 'no update yet');
  assert.equal(never.done, false);
  assert.equal(never.slots[0].error, 'no such image');
});

test('a forced update makes the tasks of the old counter old', () => {
  const svc = service('app:1', 1, {State: 'updating'}); svc.Spec.TaskTemplate.ForceUpdate = 1;
  const p = rolloutProgress(svc, [task('a', 1, 'app:1', 'running', 'running', '2024-01-01T00:00:05Z')]);
  assert.equal(p.slots[0].current, false);
});

test('a service log line gives its time, task, node and text', () => {
  const line = '2024-05-01T10:00:00.123456789Z com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello world';
  assert.deepEqual(parseServiceLogLine(line), {ts: '2024-05-01T10:00:00.123456789Z', task: 't1', node: 'n1', text: 'hello world'});
  assert.deepEqual(parseServiceLogLine('2024-05-01T10:00:00Z com.docker.swarm.task.id=t2,extra=a%20b \r'), {ts: '2024-05-01T10:00:00Z', task: 't2', node: '', text: ''});
  assert.deepEqual(parseServiceLogLine('a=b not swarm details'), {ts: '', task: '', node: '', text: 'a=b not swarm details'});
});

test('task names and colours are stable', () => {
  assert.equal(taskName('web', {Slot: 2}), 'web.2');
  assert.equal(taskName('agent', {Slot: 0, NodeID: 'abcdefghijklmnop'}), 'agent.abcdefghijkl');
  assert.equal(tagColour('t1'), tagColour('t1'));
  assert.ok(tagColour('t1') >= 0 && tagColour('t1') < 8 && Number.isInteger(tagColour('t1')));
  assert.notEqual(new Set(['t1', 't2', 't3', 't4', 't5'].map(t => tagColour(t))).size, 1);
});

test('config and secret data travel as base64 of their bytes; binary data is not shown as text', async () => {
  const {base64Of, textOfBase64} = await import('../service-spec.js');
  assert.equal(base64Of(new TextEncoder().encode('setting=1\nnäme=ü')), Buffer.from('setting=1\nnäme=ü').toString('base64'));
  const big = new Uint8Array(100000).map((_, i) => i % 251);
  assert.equal(base64Of(big), Buffer.from(big).toString('base64'));
  assert.equal(textOfBase64(Buffer.from('a=1\n').toString('base64')), 'a=1\n');
  assert.equal(textOfBase64(Buffer.from([0xff, 0xfe, 0x00]).toString('base64')), null);
});
