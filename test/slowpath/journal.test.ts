// The kernel journal: what a KernelMirror changed survives the process that changed it
// (kill -9), so that the next instance, or `flowgate cleanup`, puts the kernel back exactly.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { KernelMirror } from '../../lib/slowpath/kernel';
import { createLab, deleteLab, modelV1, snapshot, type Lab } from '../helpers/kernel-lab';
import { crashAfterApply } from '../helpers/mirror-process';
import { sh } from '../helpers/netns';

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
});
