/**
 * `npm run soak -- --minutes N`: the reference topology (lib/demo/topology.ts, two flowgate
 * sites) under constant churn for N minutes, watching for what only time shows: leaks and
 * growth. Churn: new TCP connections and UDP flows from the LAN host every second, a route
 * change covering the remote network and a neighbour change at site A every few seconds, a
 * SIGHUP reload of site A every minute (its config alternating between two route sets), and
 * one kill -9 and restart of site A halfway.
 *
 * Every --sample seconds it prints, per site: mbufs in use, flowtable entries, the learner's
 * connections and directions, RSS, the JavaScript heap and the event-loop delay. At the end
 * the churn stops, the flows drain (their idle timeouts), and each site's mbufs, flowtable
 * entries and learner connections must come back to their idle baseline (site A's taken
 * again after its restart), and its memory must not have outgrown what it took in the first
 * samples of churn (V8 keeps the heap it grew to: memory is compared with its warm-up, not
 * with an idle process): otherwise it exits 1, naming what grew.
 */
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

import type { GatewayStats } from '../gateway/types';
import { DEMO_ADDRESSES, DemoTopology, type Site } from './topology';
import { onExit } from './shell';

const USAGE = `usage: npm run soak -- [--minutes N] [--sample SECONDS] [--rate N]

  --minutes N       how long the churn runs                      (default 30)
  --sample SECONDS  how often the figures are printed              (default 10)
  --rate N          new TCP connections and new UDP flows per second, each (default 1000)
`;

const TCP_PORT = 5401;
const UDP_BASE_PORT = 20000;
const ROUTE_CHANGE_EVERY_S = 5;
const RELOAD_EVERY_S = 60;
/** The flowtable timeouts the soak runs with: short, so that the drain at the end is short. */
const IDLE_TIMEOUT_S = { tcp: 10, udp: 5 };
const DRAIN_S = 30;
/** What may stay above the idle baseline after the drain: mbufs in the lcore caches, flows of stray packets. */
const SLACK = { mbufs: 1024, entries: 16, connections: 8 };
/** Samples of churn whose peak memory is the warm-up level the end is held to, with this much growth allowed. */
const WARMUP_SAMPLES = 3;
const MEMORY_GROWTH = { ratio: 1.25, bytes: 32 * 2 ** 20 };

interface Sample {
  at: number;
  mbufs: number;
  entries: number;
  connections: number;
  directions: number;
  rssBytes: number;
  heapBytes: number;
  loopMaxMs: number;
}

function sampleOf(s: GatewayStats, at: number): Sample {
  return {
    at,
    mbufs: s.mbufs.in_use,
    entries: s.flows.entries,
    connections: s.learner.connections,
    directions: s.learner.directions,
    rssBytes: s.process.rss_bytes,
    heapBytes: s.learner.heap_bytes,
    loopMaxMs: s.process.event_loop_delay_ms.max,
  };
}

/** A node one-liner in a namespace, killed when the soak ends. */
function nodeIn(netns: string, script: string): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', script], { stdio: 'ignore' });
  onExit(() => child.kill('SIGKILL'));
  return child;
}

function churn(topology: DemoTopology, rate: number): ChildProcess[] {
  const perTick = Math.max(1, Math.round(rate / 100));
  return [
    nodeIn(topology.ns.remote, `require('net').createServer((s) => { s.on('error', () => {}); s.resume(); s.on('end', () => s.end()); }).listen(${TCP_PORT});
      const u = require('dgram').createSocket('udp4'); u.on('message', () => {}); u.bind(${UDP_BASE_PORT});`),
    // Every 10 ms: perTick TCP connections (1 KB, then closed) and perTick UDP flows (new source ports).
    nodeIn(
      topology.ns.lan,
      `const net = require('net'), dgram = require('dgram'); const data = Buffer.alloc(1024, 7);
       const sockets = Array.from({ length: 64 }, () => { const s = dgram.createSocket('udp4'); s.bind(0); return s; }); let i = 0;
       setInterval(() => {
         for (let k = 0; k < ${perTick}; k++) {
           const c = net.connect(${TCP_PORT}, '${DEMO_ADDRESSES.remoteHost}', () => c.end(data)); c.on('error', () => {}); c.resume();
           sockets[i++ % sockets.length].send('x', ${UDP_BASE_PORT}, '${DEMO_ADDRESSES.remoteHost}');
         }
       }, 10);`,
    ),
  ];
}

/** Site A's config with one of two route sets: a reload that changes something every time. */
function alternateRoutes(file: string, generation: number): void {
  const config = parseYaml(readFileSync(file, 'utf8')) as { routes?: { to: string; via: string; dev: string }[] };
  const base = (config.routes ?? []).filter((r) => !r.to.startsWith('10.77.'));
  config.routes = [...base, { to: `10.77.${generation % 2}.0/24`, via: DEMO_ADDRESSES.lanHost, dev: 'eth0' }];
  writeFileSync(file, stringifyYaml(config));
}

function format(site: Site, s: Sample, startedAt: number): string {
  return (
    `${((s.at - startedAt) / 1000).toFixed(0).padStart(6)} s  site ${site.toUpperCase()}  mbufs ${String(s.mbufs).padStart(6)}  entries ${String(s.entries).padStart(7)}  ` +
    `connections ${String(s.connections).padStart(6)}  directions ${String(s.directions).padStart(6)}  rss ${(s.rssBytes / 2 ** 20).toFixed(1).padStart(7)} MiB  heap ${(s.heapBytes / 2 ** 20).toFixed(1).padStart(6)} MiB  loop max ${s.loopMaxMs.toFixed(1)} ms`
  );
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { minutes: { type: 'string' }, sample: { type: 'string' }, rate: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  const minutes = Number(values.minutes ?? 30);
  const sampleS = Number(values.sample ?? 10);
  const rate = Number(values.rate ?? 1000);
  if (!(minutes > 0) || !(sampleS > 0) || !(rate > 0)) {
    process.stderr.write(USAGE);
    return 2;
  }
  const topology = await DemoTopology.build({
    farEnd: 'flowgate',
    prefix: 'fgsoak',
    privateSockets: true,
    configure: { a: (c) => void (c.flowtable.timeout = IDLE_TIMEOUT_S), b: (c) => void (c.flowtable.timeout = IDLE_TIMEOUT_S) },
  });
  const sites: Site[] = ['a', 'b'];
  const stats = async (site: Site) => sampleOf(await topology.site(site).stats(), Date.now());
  const startedAt = Date.now();
  const baseline: Record<Site, Sample> = { a: await stats('a'), b: await stats('b') };
  const peak: Record<Site, Sample> = { ...baseline };
  /** Per site: samples since its (re)start, and the memory peak over the first WARMUP_SAMPLES of them. */
  const warmup: Record<Site, { samples: number; rssBytes: number; heapBytes: number }> = { a: { samples: 0, rssBytes: 0, heapBytes: 0 }, b: { samples: 0, rssBytes: 0, heapBytes: 0 } };
  const log = (line: string) => process.stdout.write(`${line}\n`);
  log(`soak: ${minutes} min, ${rate} TCP connections and ${rate} UDP flows per second, a route change every ${ROUTE_CHANGE_EVERY_S} s, a reload every ${RELOAD_EVERY_S} s, kill -9 of site A at ${(minutes / 2).toFixed(1)} min`);
  for (const site of sites) log(format(site, baseline[site], startedAt));
  let failed: string[] = [];
  const generators = churn(topology, rate);
  try {
    const endAt = startedAt + minutes * 60_000;
    let crashed = false;
    let reloads = 0;
    let nextSample = Date.now() + sampleS * 1000;
    let nextRoute = Date.now() + ROUTE_CHANGE_EVERY_S * 1000;
    let nextReload = Date.now() + RELOAD_EVERY_S * 1000;
    let routeFlip = 0;
    while (Date.now() < endAt) {
      await sleep(200);
      const now = Date.now();
      if (now >= nextRoute) {
        nextRoute += ROUTE_CHANGE_EVERY_S * 1000;
        // The remote network's route, replaced as it is (every flow to it re-checked), and a neighbour coming and going.
        const proto = routeFlip++ % 2 === 0 ? 'static' : 'boot';
        await topology.run('a', `ip route replace ${DEMO_ADDRESSES.remoteHost.replace(/\.\d+$/, '.0')}/${DEMO_ADDRESSES.remotePrefix} via ${DEMO_ADDRESSES.tunnelB} dev tun0 proto ${proto} ; ip neigh replace 192.168.0.200 lladdr 02:00:00:00:c8:0${routeFlip % 2} dev eth0 nud permanent`).catch((err: unknown) => log(`route change failed: ${String(err)}`));
      }
      if (now >= nextReload) {
        nextReload += RELOAD_EVERY_S * 1000;
        alternateRoutes(topology.configFile('a'), ++reloads);
        topology.site('a').reload();
      }
      if (!crashed && now >= startedAt + (minutes * 60_000) / 2) {
        crashed = true;
        log('kill -9 of site A, and a restart');
        const killedAt = Date.now();
        await topology.restartSite('a', undefined, { crash: true });
        log(`site A ready again ${((Date.now() - killedAt) / 1000).toFixed(2)} s after the kill`);
        // Its idle baseline is the new process's; taken with the churn running, it is an upper bound.
        baseline.a = await stats('a');
        warmup.a = { samples: 0, rssBytes: 0, heapBytes: 0 };
      }
      if (now >= nextSample) {
        nextSample += sampleS * 1000;
        for (const site of sites) {
          const s = await stats(site);
          log(format(site, s, startedAt));
          const w = warmup[site];
          if (w.samples++ < WARMUP_SAMPLES) warmup[site] = { samples: w.samples, rssBytes: Math.max(w.rssBytes, s.rssBytes), heapBytes: Math.max(w.heapBytes, s.heapBytes) };
          for (const key of ['mbufs', 'entries', 'connections', 'directions', 'rssBytes', 'heapBytes', 'loopMaxMs'] as const) peak[site] = { ...peak[site], [key]: Math.max(peak[site][key], s[key]) };
        }
      }
    }
    for (const g of generators) g.kill('SIGKILL');
    log(`churn stopped; draining for ${DRAIN_S} s (idle timeouts ${IDLE_TIMEOUT_S.tcp} s TCP, ${IDLE_TIMEOUT_S.udp} s UDP)`);
    await sleep(DRAIN_S * 1000);
    for (const site of sites) {
      const end = await stats(site);
      const b = baseline[site];
      log(`site ${site.toUpperCase()}: peak ${format(site, peak[site], startedAt).replace(/^\s*\d+ s\s+site \w\s+/, '')}`);
      log(format(site, end, startedAt).replace(/^(\s*\d+ s)/, '$1 end'));
      const grew = (what: string, now: number, base: number, slack: number) => {
        if (now > base + slack) failed.push(`site ${site.toUpperCase()}: ${what} ${now} after the drain, idle baseline ${base} (+${slack} allowed)`);
      };
      grew('mbufs in use', end.mbufs, b.mbufs, SLACK.mbufs);
      grew('flowtable entries', end.entries, b.entries, SLACK.entries);
      grew('learner connections', end.connections, b.connections, SLACK.connections);
      const w = warmup[site];
      const allowed = (bytes: number) => Math.round(bytes * (MEMORY_GROWTH.ratio - 1) + MEMORY_GROWTH.bytes);
      if (w.samples >= WARMUP_SAMPLES) {
        grew('RSS bytes (against the warm-up peak)', end.rssBytes, w.rssBytes, allowed(w.rssBytes));
        grew('heap bytes (against the warm-up peak)', end.heapBytes, w.heapBytes, allowed(w.heapBytes));
      }
    }
  } finally {
    for (const g of generators) g.kill('SIGKILL');
    await topology.destroy().catch((err: unknown) => (failed = [...failed, `teardown: ${String(err)}`]));
  }
  for (const f of failed) log(`FAIL ${f}`);
  if (failed.length === 0) log('soak passed: every figure came back to its baseline');
  return failed.length === 0 ? 0 : 1;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`soak failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
