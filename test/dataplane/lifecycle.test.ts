// The dataplane's lifecycle through the real addon. EAL initialises once per process, so
// every case runs in a child process of its own.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

import { PcapBench } from '../helpers/dataplane';
import { ethernetFrame, ip4Packet } from '../../lib/packets';

const DATAPLANE = path.join(__dirname, '..', '..', 'lib', 'dataplane.js');

/** Run a script in a fresh Node process with `Dataplane` in scope; its last stdout line is JSON. */
function child(body: string, timeoutMs = 60_000): { status: number | null; result: any; stderr: string } {
  const script = `const { Dataplane } = require(${JSON.stringify(DATAPLANE)});\n(async () => {\n${body}\n})().catch((e) => { console.error(e.code, e.stack); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: timeoutMs });
  const lines = r.stdout.trim().split('\n');
  let result: unknown;
  try {
    result = JSON.parse(lines[lines.length - 1] ?? 'null');
  } catch {
    result = undefined;
  }
  return { status: r.status, result, stderr: r.stderr };
}

describe('dataplane lifecycle', function () {
  this.timeout(120_000);

  it('starts with its ports up, reports them, stops, and lets the process exit', () => {
    const r = child(`
      const dp = new Dataplane();
      dp.start({ workers: { cpus: [1] }, flowCapacity: 1024, ports: [{ name: 'a', device: 'net_null0' }, { name: 'b', device: 'net_ring0' }] });
      const ports = dp.ports().map((p) => ({ name: p.name, driver: p.driver, linkUp: p.linkUp, polling: dp.polling }));
      dp.stop();
      console.log(JSON.stringify({ ports, running: dp.running }));`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.result, {
      ports: [
        { name: 'a', driver: 'net_null', linkUp: true, polling: true },
        { name: 'b', driver: 'net_ring', linkUp: true, polling: true },
      ],
      running: false,
    });
  });

  it('refuses a second initialisation in the same process with an error code, not a crash', () => {
    const r = child(`
      const codes = {};
      const dp = new Dataplane();
      dp.start({ workers: { cpus: [1] }, flowCapacity: 1024 });
      try { new Dataplane().start({ workers: { cpus: [1] }, flowCapacity: 1024 }); } catch (e) { codes.second = e.code; codes.secondIsError = e instanceof Error; }
      try { dp.start(); } catch (e) { codes.again = e.code; }
      dp.stop();
      try { dp.start(); } catch (e) { codes.restart = e.code; }
      try { new Dataplane().start({ workers: { cpus: [1] }, flowCapacity: 1024 }); } catch (e) { codes.afterCleanup = e.code; }
      console.log(JSON.stringify(codes));`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.result, {
      second: 'ERR_FLOWGATE_EAL_ALREADY_INITIALIZED',
      secondIsError: true,
      again: 'ERR_FLOWGATE_STATE',
      restart: 'ERR_FLOWGATE_STATE',
      afterCleanup: 'ERR_FLOWGATE_EAL_FINISHED',
    });
  });

  it('stops cleanly while the workers forward traffic at full rate', () => {
    const bench = new PcapBench();
    try {
      const frames = Array.from({ length: 64 }, (_, i) =>
        ethernetFrame('02:00:00:00:00:01', '02:00:00:00:00:02', ip4Packet({ src: `10.0.0.${i}`, dst: '10.1.0.1' }, { udp: { sport: 1000, dport: 2000 } })),
      );
      const device = bench.device('in', frames).replace(/,tx_pcap=.*$/, ',infinite_rx=1');
      const r = child(`
        const dp = new Dataplane();
        dp.start({ workers: { cpus: [1] }, flowCapacity: 1024, paused: true, ports: [
          { name: 'in', mac: '02:00:00:00:00:01', device: ${JSON.stringify(device)} }, { name: 'out', device: 'net_null0,no-rx=1' }] });
        for (let i = 0; i < 64; i++) dp.addFlow({ original: { in: 'in', proto: 'udp', src: '10.0.0.' + i, dst: '10.1.0.1', sport: 1000, dport: 2000, out: { port: 'out', mac: '02:00:00:00:00:03' } } });
        dp.resume();
        await new Promise((r) => setTimeout(r, 500));
        const before = dp.stats().fastpath.packets;
        dp.stop();
        console.log(JSON.stringify({ forwarding: before > 0, running: dp.running }));`);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.result, { forwarding: true, running: false });
    } finally {
      bench.dispose();
    }
  });

  it('leaves the JavaScript thread unpinned and pins each worker to its CPU', () => {
    const r = child(`
      const fs = require('fs');
      const allowed = () => fs.readFileSync('/proc/self/status', 'utf8').match(/Cpus_allowed_list:\\s*(\\S+)/)[1];
      const before = allowed();
      const dp = new Dataplane();
      dp.start({ workers: { cpus: [1] }, flowCapacity: 1024 });
      const threads = {};
      for (const tid of fs.readdirSync('/proc/self/task')) {
        const comm = fs.readFileSync('/proc/self/task/' + tid + '/comm', 'utf8').trim();
        threads[comm] = fs.readFileSync('/proc/self/task/' + tid + '/status', 'utf8').match(/Cpus_allowed_list:\\s*(\\S+)/)[1];
      }
      const after = allowed();
      dp.stop();
      console.log(JSON.stringify({ before, after, worker: threads['rte-worker-1'] }));`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.result.after, r.result.before, 'the main thread keeps its CPUs');
    assert.equal(r.result.worker, '1');
  });

  it('lists flows a page at a time, every connection once, also when flows go between pages', () => {
    const r = child(`
      const dp = new Dataplane();
      dp.start({ workers: { cpus: [1] }, flowCapacity: 1024, ports: [{ name: 'a', device: 'net_null0' }, { name: 'b', device: 'net_null1' }] });
      const ids = [];
      for (let i = 0; i < 10; i++)
        ids.push(dp.addFlow({
          original: { in: 'a', proto: 'udp', src: '10.0.0.' + i, dst: '10.1.0.1', sport: 1000, dport: 2000, out: { port: 'b', mac: '02:00:00:00:00:03' } },
          reply: { in: 'b', proto: 'udp', src: '10.1.0.1', dst: '10.0.0.' + i, sport: 2000, dport: 1000, out: { port: 'a', mac: '02:00:00:00:00:04' } },
        }));
      const pageSizes = [...dp.flowPages(4)].map((page) => page.length);
      const listed = [];
      let first = true;
      for (const page of dp.flowPages(4)) {
        listed.push(...page.map((f) => f.id));
        // The last three go while the listing is under way.
        if (first) for (const id of ids.slice(7)) dp.removeFlow(id);
        first = false;
      }
      const all = dp.flows();
      dp.stop();
      console.log(JSON.stringify({ pageSizes, listed, ids, all: all.map((f) => f.id), replies: all.every((f) => f.reply !== null && f.reply.in === 'b') }));`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.result.pageSizes, [4, 4, 2]);
    assert.deepEqual(r.result.listed, r.result.ids.slice(0, 7));
    assert.deepEqual(r.result.all, r.result.ids.slice(0, 7));
    assert.equal(r.result.replies, true);
  });

  it('runs without hugepages when told to, and says so', () => {
    const r = child(`
      const dp = new Dataplane();
      dp.start({ workers: { cpus: [1] }, flowCapacity: 1024, hugepages: 'off', ports: [{ name: 'a', device: 'net_null0' }] });
      const res = { hugepages: dp.hugepages, noHuge: dp.ealArgs.includes('--no-huge'), linkUp: dp.port('a').linkUp };
      dp.stop();
      console.log(JSON.stringify(res));`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.result, { hugepages: false, noHuge: true, linkUp: true });
  });

  it('refuses flows to multicast or broadcast destinations and from unspecified or multicast sources', () => {
    // Straight to the addon: its own check, whatever lib/dataplane.ts lets through.
    const r = child(`
      const { native } = require(${JSON.stringify(path.join(__dirname, '..', '..', 'lib', 'native.js'))});
      const dp = new Dataplane();
      dp.start({ workers: { cpus: [1] }, flowCapacity: 1024, ports: [{ name: 'a', device: 'net_null0' }, { name: 'b', device: 'net_null1' }] });
      const [a, b] = dp.ports().map((p) => p.id);
      const v4 = (s) => Buffer.from(s.split('.').map(Number));
      const v6 = (first, last) => { const x = Buffer.alloc(16); x[0] = first; x[15] = last; return x; };
      const flow = (l3, src, dst) => ({ inPort: a, l3, l4: 17, src, dst, sport: 1000, dport: 2000, action: l3 === 4 ? 'fwd4' : 'fwd6', outPort: b, dstMac: Buffer.from([2, 0, 0, 0, 0, 9]) });
      const cases = {
        dst224: flow(4, v4('10.0.0.1'), v4('224.0.0.5')),
        dst239: flow(4, v4('10.0.0.1'), v4('239.255.255.250')),
        dstBroadcast: flow(4, v4('10.0.0.1'), v4('255.255.255.255')),
        srcZero: flow(4, v4('0.0.0.0'), v4('10.1.0.1')),
        srcMulticast: flow(4, v4('224.0.0.1'), v4('10.1.0.1')),
        dst6Multicast: flow(6, v6(0x20, 1), v6(0xff, 1)),
        src6Unspecified: flow(6, v6(0, 0), v6(0x20, 2)),
        src6Multicast: flow(6, v6(0xff, 2), v6(0x20, 2)),
      };
      const codes = {};
      for (const [name, spec] of Object.entries(cases)) {
        try { native().addFlowPair(spec, null); codes[name] = 'accepted'; } catch (e) { codes[name] = e.code; }
      }
      const unicast = native().addFlowPair(flow(4, v4('10.0.0.1'), v4('223.255.255.255')), null) > 0;
      const unicast6 = native().addFlowPair(flow(6, v6(0x20, 1), v6(0xfe, 0x80)), null) >= 0;
      dp.stop();
      console.log(JSON.stringify({ codes, unicast, unicast6 }));`);
    assert.equal(r.status, 0, r.stderr);
    for (const [name, code] of Object.entries(r.result.codes)) assert.equal(code, 'ERR_FLOWGATE_INVALID_ARGUMENT', name);
    assert.equal(Object.keys(r.result.codes).length, 8);
    assert.deepEqual([r.result.unicast, r.result.unicast6], [true, true]);
  });

  it('reports a device that does not exist, and a device used twice, as errors with codes', () => {
    const r = child(`
      const codes = {};
      const dp = new Dataplane();
      dp.start({ workers: { cpus: [1] }, flowCapacity: 1024, ports: [{ name: 'a', device: 'net_null0' }] });
      try { dp.addPort({ name: 'x', device: 'net_nosuchpmd0' }); } catch (e) { codes.missing = e.code; codes.message = e.message; }
      try { dp.addPort({ name: 'b', device: 'net_null0' }); } catch (e) { codes.twice = e.code; }
      try { dp.addFlow({ original: { in: 'nope', proto: 'udp', src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2, out: { port: 'a', mac: '02:00:00:00:00:01' } } }); } catch (e) { codes.badFlow = e.code; }
      codes.stillRunning = dp.polling;
      dp.stop();
      console.log(JSON.stringify(codes));`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.result.missing, 'ERR_FLOWGATE_DEVICE');
    assert.match(r.result.message, /net_nosuchpmd0/);
    assert.equal(r.result.twice, 'ERR_FLOWGATE_PORT_IN_USE');
    assert.equal(r.result.badFlow, 'ERR_FLOWGATE_INVALID_ARGUMENT');
    assert.equal(r.result.stillRunning, true);
  });
});
