// bench/ovs-dpdk.sh needs OVS, DPDK and minutes; what it reads from the machine does not.
// Its functions (bench/ovs-dpdk-lib.sh) are sourced here, under the script's own shell
// options, and fed made-up /proc task directories.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const repo = path.resolve(__dirname, '../../..');
const SCRIPT = path.join(repo, 'bench/ovs-dpdk.sh');
const LIB = path.join(repo, 'bench/ovs-dpdk-lib.sh');

/** The script's shell options, read from it, so that the functions run as they do there. */
function scriptOptions(): string {
  const line = /^set -[a-zA-Z]+ pipefail$/m.exec(readFileSync(SCRIPT, 'utf8'))?.[0];
  assert.ok(line !== undefined, 'bench/ovs-dpdk.sh sets its shell options on one line');
  return line;
}

/** The script's ERR trap, as written in it. */
function scriptErrTrap(): string {
  const line = /^trap .* ERR$/m.exec(readFileSync(SCRIPT, 'utf8'))?.[0];
  assert.ok(line !== undefined, 'bench/ovs-dpdk.sh has an ERR trap');
  return line;
}

function bash(script: string) {
  const r = spawnSync('bash', ['-c', `${scriptOptions()}\nsource '${LIB}'\n${script}`], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Thread {
  tid: number;
  comm: string;
  cpus: string;
}

/** A /proc/PID/task look-alike: a directory per thread with its comm and status. */
function taskDir(root: string, threads: Thread[]): string {
  const dir = path.join(root, 'task');
  for (const t of threads) {
    mkdirSync(path.join(dir, String(t.tid)), { recursive: true });
    writeFileSync(path.join(dir, String(t.tid), 'comm'), `${t.comm}\n`);
    writeFileSync(path.join(dir, String(t.tid), 'status'), `Name:\t${t.comm}\nState:\tR (running)\nCpus_allowed:\tff\nCpus_allowed_list:\t${t.cpus}\nMems_allowed_list:\t0\n`);
  }
  return dir;
}

describe('bench/ovs-dpdk.sh', () => {
  let root: string;

  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'fg-ovs-'));
  });

  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('finds the PMD thread on its CPU when the last thread it reads is not a PMD thread', () => {
    const dir = taskDir(root, [
      { tid: 100, comm: 'ovs-vswitchd', cpus: '0' },
      { tid: 101, comm: 'pmd-c01/id:8', cpus: '1' },
      { tid: 102, comm: 'urcu3', cpus: '0' },
    ]);
    const r = bash(`cpus=$(pmd_thread_cpus '${dir}'); echo "cpus=[$cpus]"`);
    assert.deepEqual(r, { status: 0, stdout: 'cpus=[1]\n', stderr: '' });
  });

  it('lists the CPUs of several PMD threads once each, in order', () => {
    const dir = taskDir(root, [
      { tid: 200, comm: 'pmd-c03/id:9', cpus: '3' },
      { tid: 201, comm: 'handler12', cpus: '0' },
      { tid: 202, comm: 'pmd-c01/id:8', cpus: '1' },
      { tid: 203, comm: 'pmd-c03/id:10', cpus: '3' },
    ]);
    const r = bash(`cpus=$(pmd_thread_cpus '${dir}'); echo "cpus=[$cpus]"`);
    assert.deepEqual(r, { status: 0, stdout: 'cpus=[1 3]\n', stderr: '' });
  });

  it('finds nothing, and succeeds, where no thread is a PMD thread: this process, an empty or missing directory', () => {
    mkdirSync(path.join(root, 'empty'));
    for (const dir of ['/proc/self/task', path.join(root, 'empty'), path.join(root, 'missing')]) {
      const r = bash(`cpus=$(pmd_thread_cpus '${dir}'); echo "cpus=[$cpus]"`);
      assert.deepEqual(r, { status: 0, stdout: 'cpus=[]\n', stderr: '' }, dir);
    }
  });

  it("skips a thread that ended while it was read (no status file) and still succeeds", () => {
    const dir = taskDir(root, [
      { tid: 300, comm: 'pmd-c01/id:8', cpus: '1' },
      { tid: 301, comm: 'pmd-c02/id:9', cpus: '2' },
    ]);
    rmSync(path.join(dir, '301', 'status'));
    const r = bash(`cpus=$(pmd_thread_cpus '${dir}'); echo "cpus=[$cpus]"`);
    assert.deepEqual(r, { status: 0, stdout: 'cpus=[1]\n', stderr: '' });
  });

  it('says which command failed, on which line, with its status, when a failure stops the script', () => {
    // As vsctl and appctl: a command failing inside a function.
    const inFunction = bash(`${scriptErrTrap()}\nfails() { sh -c 'exit 3'; }\nfails\necho not reached`);
    assert.equal(inFunction.status, 3);
    assert.equal(inFunction.stdout, '');
    assert.equal(inFunction.stderr, "ovs-dpdk.sh: line 4: `sh -c 'exit 3'` failed with exit status 3\n");

    const inSubstitution = bash(`${scriptErrTrap()}\nvalue=$(grep -q no-such-thing /dev/null)\necho not reached`);
    assert.equal(inSubstitution.status, 1);
    assert.equal(inSubstitution.stdout, '');
    assert.match(inSubstitution.stderr, /^ovs-dpdk\.sh: line 4: `value=\$\(grep -q no-such-thing \/dev\/null\)` failed with exit status 1\n$/m);
  });
});
