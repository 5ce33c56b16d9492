// The concurrency stress tests (native/stress) built with ThreadSanitizer (test/tsan/Makefile)
// and run outside Node: any data race report fails the test, as do the tests' own checks.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..', '..');
const BINARY = path.join(ROOT, 'build', 'tsan', 'stress');

describe('ThreadSanitizer', function () {
  this.timeout(600_000);

  it('sees no data race between lookups, process_burst and the control thread churning flows', () => {
    const make = spawnSync('nice', ['-n', '10', 'make', '-s', '-C', path.join(ROOT, 'test', 'tsan')], { encoding: 'utf8' });
    assert.equal(make.status, 0, `building the ThreadSanitizer stress tests failed:\n${make.stdout}${make.stderr}`);
    // halt_on_error: the first report ends the run with exit code 66.
    const run = spawnSync('nice', ['-n', '10', BINARY], {
      encoding: 'utf8',
      env: { ...process.env, TSAN_OPTIONS: 'halt_on_error=1 exitcode=66 second_deadlock_stack=1' },
    });
    assert.doesNotMatch(run.stderr, /ThreadSanitizer/, run.stderr);
    assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
    assert.match(run.stdout, /^churn: bursts [1-9]/m);
  });
});
