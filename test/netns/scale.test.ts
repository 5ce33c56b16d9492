// The control plane at scale, in the reference topology: 100k offloaded connections at site A
// while a routing daemon's worth of route updates (10,000 a second for 10 s, none covering
// a flow's destination) goes through its kernel. The flows must all stay offloaded; the
// event-loop delay of site A's gateway is printed (a figure, not an assertion). Then a full
// Internet table (a million IPv4 routes) in site A's namespace: flowgate starts and reloads
// with it, and counts it (start and reload times printed).

import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { HOOK_TIMEOUT_MS, until } from './support';

const FLOWS = 100_000;
const SEND_RATE = 5_000;
const ROUTE_UPDATES_PER_SECOND = 10_000;
const ROUTE_SECONDS = 10;
/** flows.added unchanged this long: the learner has caught up. */
const SETTLED_MS = 2000;
const FULL_TABLE = 1_000_000;

describe('100k offloaded flows through 10,000 route updates a second', function () {
  this.timeout(300_000);
  let topology: DemoTopology;
  let dir: string;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    dir = mkdtempSync(path.join(tmpdir(), 'fg-scale-'));
    topology = await DemoTopology.build({
      farEnd: 'flowgate',
      prefix: 'fgscale',
      privateSockets: true,
      // Long idle timeouts: every flow must still be there when the route updates end.
      configure: { a: (c) => void (c.flowtable.timeout = { tcp: 600, udp: 600 }) },
    });
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every flow offloaded while the routes of other prefixes change', async () => {
    const site = topology.site('a');
    const sent = await startTraffic(topology.ns.lan, { kind: 'udp-flows', host: DEMO_ADDRESSES.remoteHost, basePort: 1024, flows: FLOWS, sockets: 2, pps: SEND_RATE }, { timeoutMs: 120_000 }).result;
    let last = -1;
    let stableSince = Date.now();
    const learned = await until(
      'site A to finish learning',
      async () => {
        const s = await site.stats();
        if (s.flows.added !== last) {
          last = s.flows.added;
          stableSince = Date.now();
          return undefined;
        }
        return Date.now() - stableSince >= SETTLED_MS ? s : undefined;
      },
      120_000,
    );
    console.log(`      ${sent.sent} flows sent in ${sent.seconds.toFixed(1)} s; site A offloaded ${learned.flows.active}`);
    assert.ok(learned.flows.active >= FLOWS * 0.9, `at least 90 % of the flows offloaded (${learned.flows.active})`);

    // /32 routes in 172.16.0.0/12: other prefixes than any flow's destination (10.0.0.10).
    const batches: string[] = [];
    for (let second = 0; second < ROUTE_SECONDS; second++) {
      const lines: string[] = [];
      for (let i = 0; i < ROUTE_UPDATES_PER_SECOND; i++) {
        const n = second * ROUTE_UPDATES_PER_SECOND + i;
        lines.push(`route replace 172.${16 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}/32 via ${DEMO_ADDRESSES.tunnelB} dev tun0`);
      }
      const file = path.join(dir, `routes-${second}.batch`);
      writeFileSync(file, `${lines.join('\n')}\n`);
      batches.push(file);
    }
    const before = await site.stats();
    const delays: number[] = [];
    const started = performance.now();
    for (const [second, file] of batches.entries()) {
      await topology.run('a', ['ip', '-batch', file]);
      delays.push((await site.stats()).process.event_loop_delay_ms.max);
      const wait = started + (second + 1) * 1000 - performance.now();
      if (wait > 0) await sleep(wait);
    }
    const churnS = (performance.now() - started) / 1000;
    // Until the kernel's routes are all counted and the gateway's event count stands still:
    // it has handled the last of them (or resynchronised, which the assertions below catch).
    let lastEvents = -1;
    const after = await until('the route events handled', async () => {
      const s = await site.stats();
      const counted = s.kernel.routes.ipv4 >= before.kernel.routes.ipv4 + ROUTE_UPDATES_PER_SECOND * ROUTE_SECONDS;
      const settled = s.kernel.events === lastEvents;
      lastEvents = s.kernel.events;
      return counted && settled ? s : undefined;
    });
    for (let i = 0; i < 11; i++) {
      await sleep(1000);
      delays.push((await site.stats()).process.event_loop_delay_ms.max);
    }
    const events = after.kernel.events - before.kernel.events;
    const batchesHandled = after.kernel.batches - before.kernel.batches;
    console.log(
      `      ${ROUTE_UPDATES_PER_SECOND * ROUTE_SECONDS} route updates in ${churnS.toFixed(1)} s: ${events} kernel events in ${batchesHandled} batches, ` +
        `${after.kernel.resyncs - before.kernel.resyncs} resyncs, ${after.kernel.routes.ipv4} IPv4 routes counted; ` +
        `worst event-loop delay of site A's 10 s windows: ${Math.max(...delays).toFixed(1)} ms`,
    );
    assert.equal(after.flows.removed_by.invalidated ?? 0, before.flows.removed_by.invalidated ?? 0, 'no flow invalidated');
    assert.equal(after.flows.active, before.flows.active, 'every flow still offloaded');
    assert.equal(after.kernel.errors, before.kernel.errors);
    assert.equal(after.kernel.resyncs, before.kernel.resyncs, 'no kernel event lost');
  });

  it('starts and reloads with a million routes in its namespace, and counts them', async () => {
    // Blackhole routes in 100.64.0.0/10 (1M /32s fit in its 4M addresses): another table's
    // worth of prefixes than any flow's. Written in chunks: a million lines is 60 MB.
    const file = path.join(dir, 'full-table.batch');
    writeFileSync(file, '');
    const CHUNK = 100_000;
    for (let from = 0; from < FULL_TABLE; from += CHUNK) {
      const lines: string[] = [];
      for (let n = from; n < from + CHUNK; n++) lines.push(`route add blackhole 100.${64 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}/32`);
      appendFileSync(file, `${lines.join('\n')}\n`);
    }
    let started = performance.now();
    await topology.run('a', ['ip', '-batch', file], { timeoutMs: 300_000 });
    const loadS = (performance.now() - started) / 1000;
    started = performance.now();
    await topology.restartSite('a');
    const startS = (performance.now() - started) / 1000;
    const site = topology.site('a');
    const s = await site.stats();
    assert.ok(s.kernel.routes.ipv4 >= FULL_TABLE, `the routes counted: ${s.kernel.routes.ipv4}`);
    const reloaded = new Promise<number>((resolve) => {
      const at = performance.now();
      const stop = site.onLogLine((line) => {
        if (!/msg="config reloaded"|msg="reload failed/.test(line)) return;
        stop();
        assert.match(line, /msg="config reloaded"/);
        resolve((performance.now() - at) / 1000);
      });
    });
    site.reload();
    const reloadS = await reloaded;
    console.log(
      `      ${FULL_TABLE} routes loaded with ip -batch in ${loadS.toFixed(1)} s; flowgate stop and start with them ${startS.toFixed(2)} s, ` +
        `a reload ${reloadS.toFixed(2)} s; ${s.kernel.routes.ipv4} IPv4 routes counted, RSS ${(s.process.rss_bytes / 2 ** 20).toFixed(0)} MiB`,
    );
  });
});
