import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../lib/errors';
import { detectMachine, formatCpuList, parseCpuList } from '../../lib/machine';

describe('machine CPUs', () => {
  const lists: [string, number[]][] = [
    ['0', [0]],
    ['0-3', [0, 1, 2, 3]],
    ['0-1,4,6-7\n', [0, 1, 4, 6, 7]],
    ['', []],
  ];
  for (const [text, cpus] of lists) {
    it(`reads the kernel cpulist ${JSON.stringify(text)}`, () => {
      assert.deepEqual(parseCpuList(text), cpus);
      if (cpus.length > 0) assert.equal(formatCpuList(cpus), text.trim());
    });
  }

  it('rejects a malformed or reversed cpulist', () => {
    assert.throws(() => parseCpuList('0-'), InvalidArgumentError);
    assert.throws(() => parseCpuList('3-1'), /range 3-1 is reversed/);
  });

  it('detects at least one CPU on this machine, in ascending order', () => {
    const { cpus } = detectMachine();
    assert.ok(cpus.length >= 1);
    assert.deepEqual([...cpus].sort((a, b) => a - b), cpus);
  });
});
