// The learner's memory under a SYN flood, measured where it can be: in a child process with
// an explicit full GC before and after, so that the figure is what the learner retains, not
// garbage V8 has yet to collect. (The whole gateway under a real flood: test/netns/conntrack.)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

interface FloodResult {
  retainedBytes: number;
  stats: { forwarded: number; directions: number; evicted: { pending: number; directions: number; queries: number }; ctQueries: number };
  limits: { pending: number; directions: number; queries: number };
}

describe('learner bounds', () => {
  it('retains under 64 MiB after 300,000 forwarded SYNs from spoofed sources, dropping the oldest state and counting it', () => {
    const child = path.join(__dirname, '..', 'helpers', 'learner-flood-child.js');
    const r = JSON.parse(execFileSync(process.execPath, ['--expose-gc', child, '300000'], { encoding: 'utf8', timeout: 60_000 })) as FloodResult;
    assert.equal(r.stats.forwarded, 300_000);
    assert.ok(r.retainedBytes < 64 * 2 ** 20, `retained ${(r.retainedBytes / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(r.stats.directions <= r.limits.directions);
    assert.equal(r.stats.evicted.directions, 300_000 - r.limits.directions);
    assert.equal(r.stats.ctQueries, 0, 'a SYN is no reason to ask conntrack');
  });

  it('retains under 8 MiB after 200,000 connections offloaded and destroyed (their timeout extensions included)', () => {
    const child = path.join(__dirname, '..', 'helpers', 'learner-churn-child.js');
    const r = JSON.parse(execFileSync(process.execPath, ['--expose-gc', child, '200000'], { encoding: 'utf8', timeout: 120_000 })) as {
      retainedBytes: number;
      stats: { installs: number; connections: number; removedBy: Record<string, number> };
    };
    assert.equal(r.stats.installs, 200_000, 'every connection was offloaded');
    assert.equal(r.stats.removedBy.destroyed, 200_000);
    assert.equal(r.stats.connections, 0);
    assert.ok(r.retainedBytes < 8 * 2 ** 20, `retained ${(r.retainedBytes / 2 ** 20).toFixed(1)} MiB`);
  });
});
