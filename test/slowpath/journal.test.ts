// The kernel journal: what a KernelMirror changed survives the process that changed it
// (kill -9), so that the next instance, or `flowgate cleanup`, puts the kernel back exactly.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { fileNameOf, namespaceId } from '../../lib/runtime';
import { KernelMirror } from '../../lib/slowpath/kernel';
import type { JournalEntry } from '../../lib/slowpath/journal';
import { createLab, deleteLab, globalAddresses, modelV1, modelV2, snapshot, type Lab } from '../helpers/kernel-lab';
import { crashAfterApply, killHard, spawnChild, startChild } from '../helpers/mirror-process';
import { sh } from '../helpers/netns';

/** Where the mirrors of `netns` keep their journal in `runtimeDir`. */
async function journalFile(runtimeDir: string, netns: string): Promise<string> {
  return path.join(runtimeDir, `kernel-${fileNameOf(await namespaceId(netns))}.json`);
}

describe('kernel journal', () => {
  let lab: Lab | undefined;
  let mirror: KernelMirror | undefined;
  let runtimeDir: string;

  beforeEach(() => {
    runtimeDir = mkdtempSync(path.join(tmpdir(), 'fg-journal-'));
  });

  afterEach(async () => {
    await mirror?.teardown().catch(() => undefined);
    await deleteLab(lab);
    lab = undefined;
    mirror = undefined;
    rmSync(runtimeDir, { recursive: true, force: true });
  });

  it('after kill -9, the next mirror that applies the same model gives back on teardown the kernel of before the first start', async () => {
    lab = await createLab();
    // ip_forward rewrites conf/all/accept_redirects: an unusual original must survive the crash too.
    await sh(['sysctl', '-q', '-w', 'net.ipv4.conf.all.accept_redirects=0'], { netns: lab.gw });
    const before = await snapshot(lab.gw);
    await crashAfterApply(lab.gw, 'v1', runtimeDir);
    assert.notDeepEqual(await snapshot(lab.gw), before);

    mirror = new KernelMirror({ netns: lab.gw, runtimeDir });
    await mirror.apply(modelV1());
    await mirror.teardown();
    assert.deepEqual(await snapshot(lab.gw), before);
  });

  it('after kill -9, a mirror applying another model removes what only the dead instance wanted and keeps what both want', async () => {
    lab = await createLab();
    const before = await snapshot(lab.gw);
    await crashAfterApply(lab.gw, 'v1', runtimeDir);

    mirror = new KernelMirror({ netns: lab.gw, runtimeDir });
    await mirror.apply(modelV2());
    assert.deepEqual(await globalAddresses(lab.gw), ['eth0 192.168.0.2/24', 'eth0 192.168.60.2/24', 'eth1 2001:db8:2::1/64', 'tun0 192.168.100.1/24']);
    assert.equal(await sh(['nft', 'list', 'tables'], { netns: lab.gw }), 'table inet flowgate_conntrack\ntable inet flowgate\n');
    // What v1 and v2 both want was adopted, not made anew: its originals are those of before v1.
    assert.deepEqual(mirror.record.sysctls.find((s) => s.key === 'net/ipv4/ip_forward'), { key: 'net/ipv4/ip_forward', original: '0' });
    await mirror.teardown();
    assert.deepEqual(await snapshot(lab.gw), before);
    assert.deepEqual(readdirSync(runtimeDir), [], 'the journal is removed once everything is undone');
  });

  it('refuses the journal of a mirror whose process still runs, naming its pid, and changes nothing', async () => {
    lab = await createLab();
    const child = await startChild(['apply', lab.gw, 'v1', runtimeDir], 'applied');
    try {
      const applied = await snapshot(lab.gw);
      mirror = new KernelMirror({ netns: lab.gw, runtimeDir });
      await assert.rejects(mirror.apply(modelV1()), {
        code: 'ERR_FLOWGATE_INSTANCE_LOCKED',
        message: `the kernel state of network namespace ${await namespaceId(lab.gw)} (${lab.gw}) is held by flowgate pid ${child.pid} (${await journalFile(runtimeDir, lab.gw)})`,
      });
      await assert.rejects(mirror.teardown(), { code: 'ERR_FLOWGATE_INSTANCE_LOCKED' });
      assert.deepEqual(await snapshot(lab.gw), applied);
    } finally {
      await killHard(child);
    }
    await mirror.teardown();
  });

  it('adopts the journal of a pid that runs but is another process than the one that wrote it (a reused pid)', async () => {
    lab = await createLab();
    const before = await snapshot(lab.gw);
    await crashAfterApply(lab.gw, 'v1', runtimeDir);
    const file = await journalFile(runtimeDir, lab.gw);
    const entry = JSON.parse(readFileSync(file, 'utf8')) as JournalEntry;
    // pid 1 runs, but it did not start at tick 1.
    writeFileSync(file, JSON.stringify({ ...entry, writer: { pid: 1, start: 1 } }));

    mirror = new KernelMirror({ netns: lab.gw, runtimeDir });
    assert.equal((await mirror.recover())?.writer.pid, 1);
    await mirror.teardown();
    assert.deepEqual(await snapshot(lab.gw), before);
  });

  it('never corrupts the journal in place: a write interrupted half-way leaves only a temp file, which recovery ignores and removes', async () => {
    lab = await createLab();
    const before = await snapshot(lab.gw);
    const pid = await crashAfterApply(lab.gw, 'v1', runtimeDir);
    const file = await journalFile(runtimeDir, lab.gw);
    const whole = readFileSync(file, 'utf8');
    // What a writer killed in the middle of its next write leaves: the journal as it was, and
    // the first half of the new text in its temp file.
    writeFileSync(`${file}.${pid}.tmp`, whole.slice(0, whole.length / 2));

    mirror = new KernelMirror({ netns: lab.gw, runtimeDir });
    assert.deepEqual((await mirror.recover())?.record, (JSON.parse(whole) as JournalEntry).record);
    assert.deepEqual(readdirSync(runtimeDir), [path.basename(file)]);
    await mirror.teardown();
    assert.deepEqual(await snapshot(lab.gw), before);
  });

  it('gives back the kernel of before from the journal of a mirror killed at any moment of its apply', async () => {
    let killedMidway = 0;
    for (const delayMs of [0, 5, 20, 50, 100, 200, 400]) {
      lab = await createLab();
      const before = await snapshot(lab.gw);
      const file = await journalFile(runtimeDir, lab.gw);
      const child = spawnChild(['apply', lab.gw, 'v1', runtimeDir]);
      // From its first journalled change on.
      while (!existsSync(file)) await sleep(1);
      await sleep(delayMs);
      await killHard(child.process);
      if (!child.lines.includes('applied')) killedMidway++;
      JSON.parse(readFileSync(file, 'utf8'));

      mirror = new KernelMirror({ netns: lab.gw, runtimeDir });
      await mirror.teardown();
      assert.deepEqual(await snapshot(lab.gw), before, `killed ${delayMs} ms after its first change`);
      await deleteLab(lab);
      lab = undefined;
    }
    assert.ok(killedMidway >= 3, `only ${killedMidway} kills came before the apply ended`);
  });
});
