// Unit tests of the deploy progress lines (ui/deploy-progress.js).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {progressKey, progressLine} from '../deploy-progress.js';

test('each stage of a deploy reads as one line naming its service', () => {
  assert.equal(progressLine({stage: 'build', service: 'web', line: 'Step 1/3 : FROM busybox'}), 'web: Step 1/3 : FROM busybox');
  assert.equal(progressLine({stage: 'create', service: 'web', container: 'shop_web_1'}), 'web: created shop_web_1');
  assert.equal(progressLine({stage: 'start', service: 'web', container: 'shop_web_1'}), 'web: started shop_web_1');
  assert.equal(progressLine({stage: 'wait', service: 'web', dependency: 'db', condition: 'service_healthy'}), 'web: waiting for db (healthy)');
  assert.equal(progressLine({stage: 'error', message: "service 'db' failed: boom"}), "failed: service 'db' failed: boom");
  assert.equal(progressLine({stage: 'done'}), 'deployed');
});
test('a pulled layer keeps one line that its later messages replace', () => {
  const first = {stage: 'pull', service: 'web', image: 'nginx', layer: 'a1', status: 'Downloading', progress: '[=>  ] 1MB/9MB'};
  assert.equal(progressLine(first), 'web: pull nginx a1 Downloading [=>  ] 1MB/9MB');
  assert.equal(progressKey(first), progressKey({...first, status: 'Pull complete', progress: ''}));
  assert.equal(progressKey({stage: 'pull', service: 'web', image: 'nginx', layer: '', status: 'Pulling from library/nginx'}), null);
  assert.equal(progressKey({stage: 'build', service: 'web', line: 'x'}), null);
});
