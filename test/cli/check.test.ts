import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { checkConfigText, formatIssue } from '../../lib/config';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');

function flowgate(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { cwd: repo, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('flowgate check', () => {
  it('says config/seed.yaml is valid, with what it describes, and exits 0', () => {
    const r = flowgate('check', '-c', 'config/seed.yaml');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'config/seed.yaml: valid (2 ports, 1 tunnel, 4 routes, 1 worker)\n');
    assert.equal(r.stderr, '');
  });

  it('prints every problem of an invalid file as FILE:LINE:COL: PATH: message, then the count, and exits 1', () => {
    const file = 'test/fixtures/config/invalid/several-cross-field-errors.yaml';
    // The same checks on this machine, so that the CPU checks agree with the child's.
    const expected = checkConfigText(readFileSync(path.join(repo, file), 'utf8'), file).issues.map(formatIssue);
    assert.ok(expected.length > 10, 'the fixture has many problems');
    const r = flowgate('check', '-c', file);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `${expected.join('\n')}\n${file}: invalid, ${expected.length} problems\n`);
  });

  it('reports a YAML syntax error at its position', () => {
    const file = 'test/fixtures/config/invalid/yaml-syntax.yaml';
    const r = flowgate('check', '-c', file);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`^${file.replace(/[.]/g, '\\.')}:[0-9]+:[0-9]+: `));
  });

  it('reports a file that cannot be read as a problem of the config, and exits 1', () => {
    const r = flowgate('check', '-c', 'no/such/file.yaml');
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      "no/such/file.yaml:1:1: expected a readable config file, found: ENOENT: no such file or directory, open 'no/such/file.yaml'\nno/such/file.yaml: invalid, 1 problem\n",
    );
  });

  it('exits 2 with the usage when -c is missing or an option is unknown', () => {
    const missing = flowgate('check');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /^flowgate check: -c FILE is required\n\nusage: flowgate check -c FILE\n/);
    const unknown = flowgate('check', '--bogus');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /^flowgate check: Unknown option '--bogus'/);
  });

  it('prints its usage on --help and exits 0', () => {
    const r = flowgate('check', '--help');
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^usage: flowgate check -c FILE\n/);
  });
});
