// Numbers crossing into the addon: every export checks that a number is finite, an integer
// and in range before converting it (casting NaN, an infinity or a huge double to an
// integer type is undefined behaviour in C++), and answers hostile values with a typed error.
import assert from 'node:assert/strict';

import { native } from '../../lib/native';

const addon = native();
const HOSTILE: unknown[] = [NaN, Infinity, -Infinity, -1, -0.5, 1.5, 2 ** 32, 2 ** 53, 2 ** 64, 1e308, '1', null];

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof Error, 'an Error');
    return (e as Error & { code?: string }).code ?? 'no code';
  }
  return 'accepted';
}

describe('number conversions at the addon boundary', () => {
  it('refuses a flow handle that is not an integer 0..2^53-1', () => {
    for (const h of HOSTILE.filter((v) => v !== 2 ** 32)) assert.equal(code(() => addon.removeFlow(h as number)), 'ERR_FLOWGATE_INVALID_ARGUMENT', String(h));
    for (const h of [2 ** 53, 2 ** 53 + 2]) assert.equal(code(() => addon.getFlow(h)), 'ERR_FLOWGATE_INVALID_ARGUMENT', String(h));
    // In range it gets as far as the dataplane, which is not running here.
    assert.equal(code(() => addon.removeFlow(2 ** 53 - 1)), 'ERR_FLOWGATE_NOT_INITIALIZED');
  });

  it('refuses a port id that is not an integer in range', () => {
    const frame = Buffer.alloc(60);
    for (const p of HOSTILE.filter((v) => v !== null)) assert.equal(code(() => addon.testing.parse(frame, p as number)), 'ERR_FLOWGATE_INVALID_ARGUMENT', String(p));
    assert.equal(code(() => addon.setPortMtu(NaN, 1500)), 'ERR_FLOWGATE_INVALID_ARGUMENT');
    assert.equal(code(() => addon.testing.parse(frame, 0)), 'accepted');
  });

  it('refuses option numbers that are not integers in their range', () => {
    for (const v of HOSTILE.filter((x) => x !== null)) {
      assert.equal(code(() => addon.setPortMtu(0, v as number)), 'ERR_FLOWGATE_INVALID_ARGUMENT', String(v));
      assert.equal(code(() => addon.testing.flowtableExercise({ capacity: v as number, count: 1 })), 'ERR_FLOWGATE_INVALID_ARGUMENT', String(v));
      assert.equal(code(() => addon.listFlows({ from: v as number, max: 1 })), 'ERR_FLOWGATE_INVALID_ARGUMENT', String(v));
    }
    assert.equal(code(() => addon.testing.flowtableExercise({ capacity: 16, count: 1 })), 'accepted');
  });

  it('refuses packet segment lengths that are not integers', () => {
    const frame = Buffer.alloc(60);
    for (const v of [NaN, Infinity, -1, 1.5, 2 ** 53, 'x'])
      assert.equal(code(() => addon.testing.parse(frame, 0, { segments: [v as number, 60] })), 'ERR_FLOWGATE_INVALID_ARGUMENT', String(v));
  });
});
