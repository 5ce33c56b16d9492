// rtnetlink through lib/slowpath/rtnl.ts against the real kernel: each test in its own
// network namespace (the Rtnl opens its sockets there with the netns option), compared with
// what iproute2 (`ip -j`) says of the same namespace.
import assert from 'node:assert/strict';
import { closeSync, openSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { formatIp, formatPrefix, parseIp, parsePrefix } from '../../lib/net/addr';
import type { KernelChange, ResyncEvent, RouteEvent } from '../../lib/slowpath/monitor';
import { Rtnl, type RtnlOptions } from '../../lib/slowpath/rtnl';
import { sh, withNetns } from '../helpers/netns';
import { until } from '../helpers/wait';

interface Opened {
  rt: Rtnl;
  netns: string;
  events: KernelChange[];
  resyncs: ResyncEvent[];
}

async function withRtnl<T>(fn: (o: Opened) => Promise<T>, options: Omit<RtnlOptions, 'netns' | 'onEvents' | 'onResync'> = {}, setup?: (netns: string) => Promise<void>): Promise<T> {
  return withNetns(async (netns) => {
    if (setup !== undefined) await setup(netns);
    const events: KernelChange[] = [];
    const resyncs: ResyncEvent[] = [];
    const rt = Rtnl.open({ ...options, netns, onEvents: (e) => events.push(...e), onResync: (r) => resyncs.push(r) });
    try {
      return await fn({ rt, netns, events, resyncs });
    } finally {
      rt.close();
    }
  }, 'fgrt');
}

async function ipJson<T>(netns: string, ...args: string[]): Promise<T> {
  return JSON.parse(await sh(['ip', '-n', netns, '-j', ...args])) as T;
}

/** A destination as iproute2 prints it ("default", "10.0.0.0/8", a host "10.0.0.1") as a canonical prefix. */
function canonical(text: string, family: 4 | 6): string {
  if (text === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  if (!text.includes('/')) return `${formatIp(parseIp(text))}/${family === 4 ? 32 : 128}`;
  return formatPrefix(parsePrefix(text));
}

const sorted = <T>(items: T[]): T[] => [...items].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

/**
 * Two veths (v0 with addresses, its peer v1 in the same namespace), a permanent and a stale
 * neighbour, routes in the main table and table 100 (one through a nexthop object, one
 * through a group, a multipath, a blackhole, an unreachable), and rules.
 */
async function lab(netns: string): Promise<void> {
  const ip = (...args: string[]) => sh(['ip', '-n', netns, ...args]);
  await ip('link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
  await ip('link', 'set', 'v0', 'up');
  await ip('link', 'set', 'v1', 'up');
  await ip('tuntap', 'add', 'tun7', 'mode', 'tun');
  await ip('addr', 'add', '10.9.0.1/24', 'dev', 'v0');
  await ip('-6', 'addr', 'add', '2001:db8::1/64', 'dev', 'v0', 'nodad');
  await ip('addr', 'add', '10.3.0.1', 'peer', '10.3.0.2/32', 'dev', 'v1');
  await ip('neigh', 'add', '10.9.0.7', 'lladdr', '02:00:00:00:00:07', 'dev', 'v0', 'nud', 'permanent');
  await ip('neigh', 'add', '10.9.0.8', 'lladdr', '02:00:00:00:00:08', 'dev', 'v0', 'nud', 'stale');
  await ip('-6', 'neigh', 'add', '2001:db8::8', 'lladdr', '02:00:00:00:00:88', 'dev', 'v0', 'nud', 'stale');
  await ip('nexthop', 'add', 'id', '10', 'via', '10.9.0.2', 'dev', 'v0');
  await ip('nexthop', 'add', 'id', '11', 'via', '10.9.0.3', 'dev', 'v0');
  await ip('nexthop', 'add', 'id', '20', 'group', '10/11');
  await ip('nexthop', 'add', 'id', '30', 'blackhole');
  await ip('route', 'add', '10.50.0.0/16', 'nhid', '10');
  await ip('route', 'add', '10.60.0.0/16', 'nhid', '20');
  await ip('route', 'add', '10.70.0.0/16', 'nexthop', 'via', '10.9.0.2', 'dev', 'v0', 'nexthop', 'via', '10.9.0.3', 'dev', 'v0');
  await ip('route', 'add', '10.40.0.0/16', 'via', '10.9.0.2', 'proto', 'static', 'metric', '20');
  await ip('route', 'add', 'blackhole', '10.81.0.0/16');
  await ip('route', 'add', 'unreachable', '10.82.0.0/16');
  await ip('route', 'add', '10.51.0.0/16', 'via', '10.9.0.2', 'table', '100', 'proto', 'static');
  await ip('route', 'add', 'blackhole', '10.80.0.0/16', 'table', '100', 'proto', 'static', 'metric', '5');
  await ip('-6', 'route', 'add', '2001:db8:50::/48', 'via', '2001:db8::2', 'proto', 'static');
  await ip('-6', 'route', 'add', 'blackhole', '2001:db8:81::/48');
  await ip('-6', 'route', 'add', 'unreachable', '2001:db8:82::/48');
  await ip('-6', 'route', 'add', '2001:db8:51::/48', 'via', '2001:db8::2', 'table', '100');
  await ip('rule', 'add', 'from', '10.1.0.0/16', 'table', '100', 'pref', '1000');
  await ip('rule', 'add', 'fwmark', '0x5/0xff', 'iif', 'v0', 'lookup', '200', 'pref', '1001');
  await ip('-6', 'rule', 'add', 'to', '2001:db8:99::/48', 'prohibit', 'pref', '1002');
}

type IpRoute = { type?: string; dst: string; gateway?: string; dev?: string; table?: string; metric?: number; protocol?: string; nhid?: number; nexthops?: unknown[] };

/** What ip -j says of a route, in the terms of a RouteEvent. */
function fromIp(r: IpRoute, family: 4 | 6) {
  return {
    type: r.type ?? 'unicast',
    to: canonical(r.dst, family),
    via: r.gateway === undefined ? null : formatIp(parseIp(r.gateway)),
    dev: r.dev ?? null,
    table: r.table ?? 'main',
    metric: r.metric ?? 0,
    protocol: r.protocol ?? 'boot',
    nhid: r.nhid ?? null,
    multipath: r.nexthops !== undefined,
  };
}

function fromRtnl(r: RouteEvent) {
  return { type: r.type, to: r.to, via: r.via, dev: r.dev, table: r.table, metric: r.metric, protocol: r.protocol, nhid: r.nhid, multipath: r.multipath };
}

/** Every route of the namespace as ip -j lists them (cached clones not included). */
async function kernelRouteCount(netns: string, family: 4 | 6): Promise<number> {
  return (await ipJson<unknown[]>(netns, `-${family}`, 'route', 'show', 'table', 'all')).length;
}

describe('rtnl (rtnetlink, real kernel, network namespaces)', function () {
  this.timeout(600_000);

  it('dumps links, addresses and neighbours as ip -j lists them', () =>
    withRtnl(
      async ({ rt, netns }) => {
        type IpLink = { ifindex: number; ifname: string; mtu: number; flags: string[]; address?: string; link_type: string; linkinfo?: { info_kind?: string } };
        const ipLinks = await ipJson<IpLink[]>(netns, '-d', 'link', 'show');
        assert.deepEqual(
          sorted((await rt.links()).map((l) => ({ index: l.index, dev: l.dev, mtu: l.mtu, up: l.up, carrier: l.carrier, mac: l.mac, linkKind: l.linkKind }))),
          sorted(
            ipLinks.map((l) => ({
              index: l.ifindex,
              dev: l.ifname,
              mtu: l.mtu,
              up: l.flags.includes('UP'),
              carrier: l.flags.includes('LOWER_UP'),
              mac: l.link_type === 'none' ? null : (l.address ?? null),
              linkKind: l.linkinfo?.info_kind ?? null,
            })),
          ),
        );
        assert.equal((await rt.links()).find((l) => l.dev === 'tun7')?.mac, null);

        type IpAddr = { ifname: string; addr_info: { family: string; local: string; prefixlen: number }[] };
        const ipAddrs = (await ipJson<IpAddr[]>(netns, 'addr', 'show')).flatMap((l) =>
          l.addr_info.map((a) => ({ dev: l.ifname, family: a.family === 'inet6' ? 6 : 4, address: formatPrefix(parsePrefix(`${a.local}/${a.prefixlen}`)) })),
        );
        const addrs = await rt.addresses();
        assert.deepEqual(sorted(addrs.map((a) => ({ dev: a.dev, family: a.family, address: a.address }))), sorted(ipAddrs));
        assert.ok(addrs.some((a) => a.dev === 'v1' && a.address === '10.3.0.1/32'), 'a point-to-point address is the local one');

        type IpNeigh = { dst: string; dev: string; lladdr?: string; state?: string[] };
        const ipNeighs = await ipJson<IpNeigh[]>(netns, 'neigh', 'show', 'nud', 'all');
        const neighs = await rt.neighbors();
        assert.deepEqual(
          sorted(neighs.map((n) => ({ dev: n.dev, address: n.address, mac: n.mac, state: n.state }))),
          sorted(ipNeighs.map((n) => ({ dev: n.dev, address: formatIp(parseIp(n.dst)), mac: n.lladdr ?? null, state: n.state?.[0] ?? 'NONE' }))),
        );
        assert.deepEqual(
          neighs.filter((n) => n.address === '10.9.0.7' || n.address === '10.9.0.8' || n.address === '2001:db8::8').map((n) => `${n.address} ${n.mac} ${n.state}`).sort(),
          ['10.9.0.7 02:00:00:00:00:07 PERMANENT', '10.9.0.8 02:00:00:00:00:08 STALE', '2001:db8::8 02:00:00:00:00:88 STALE'],
        );
        // One entry looked up, not the table.
        assert.deepEqual(await rt.neighbor('v0', '10.9.0.8'), neighs.find((n) => n.address === '10.9.0.8'));
        assert.deepEqual(await rt.neighbor('v0', '2001:db8::8'), neighs.find((n) => n.address === '2001:db8::8'));
        assert.equal(await rt.neighbor('v1', '10.9.0.8'), null);
        assert.equal(await rt.neighbor('v0', '10.9.0.99'), null);
        assert.equal(await rt.neighbor('nosuchdev', '10.9.0.8'), null);
      },
      {},
      lab,
    ));

  it('dumps the routes of every table, or those the kernel selects by table and protocol, as ip -j lists them', () =>
    withRtnl(
      async ({ rt, netns }) => {
        for (const family of [4, 6] as const) {
          const all = (await ipJson<IpRoute[]>(netns, `-${family}`, 'route', 'show', 'table', 'all')).map((r) => fromIp(r, family));
          assert.deepEqual(sorted((await rt.routes({ family })).map(fromRtnl)), sorted(all));
          // ip leaves out what the filter fixes: the table, the protocol.
          const table100 = (await ipJson<IpRoute[]>(netns, `-${family}`, 'route', 'show', 'table', '100', 'proto', 'static')).map((r) => fromIp({ table: '100', protocol: 'static', ...r }, family));
          assert.ok(table100.length > 0 || family === 6);
          assert.deepEqual(sorted((await rt.routes({ family, table: 100, protocol: 'static' })).map(fromRtnl)), sorted(table100));
          const mainStatic = (await ipJson<IpRoute[]>(netns, `-${family}`, 'route', 'show', 'table', 'main', 'proto', 'static')).map((r) => fromIp({ protocol: 'static', ...r }, family));
          assert.deepEqual(sorted((await rt.routes({ family, table: 'main', protocol: 4 })).map(fromRtnl)), sorted(mainStatic));
        }
        assert.deepEqual(await rt.routes({ family: 6, table: 4242 }), [], 'a table that does not exist holds no routes');
        const main4 = await rt.routes({ family: 4, table: 'main' });
        const byDst = (to: string) => main4.find((r) => r.to === to);
        assert.deepEqual([byDst('10.50.0.0/16')?.nhid, byDst('10.50.0.0/16')?.via, byDst('10.50.0.0/16')?.dev], [10, '10.9.0.2', 'v0']);
        assert.deepEqual([byDst('10.60.0.0/16')?.nhid, byDst('10.60.0.0/16')?.multipath, byDst('10.60.0.0/16')?.dev], [20, true, null]);
        assert.deepEqual([byDst('10.70.0.0/16')?.multipath, byDst('10.70.0.0/16')?.via], [true, null]);
        assert.equal(byDst('10.9.0.0/24')?.source, '10.9.0.1');
        assert.equal(byDst('10.81.0.0/16')?.type, 'blackhole');
      },
      {},
      lab,
    ));

  it('dumps rules and nexthop objects as ip -j lists them', () =>
    withRtnl(
      async ({ rt, netns }) => {
        type IpRule = { priority: number; src: string; srclen?: number; dst?: string; dstlen?: number; table?: string; action?: string; iif?: string; oif?: string; fwmark?: string; fwmask?: string };
        const ipRules: object[] = [];
        for (const family of [4, 6] as const) {
          const prefix = (text: string | undefined, len: number | undefined) =>
            text === undefined || text === 'all' ? null : formatPrefix(parsePrefix(`${text}/${len ?? (family === 4 ? 32 : 128)}`));
          for (const r of await ipJson<IpRule[]>(netns, `-${family}`, 'rule', 'show'))
            ipRules.push({
              family,
              priority: r.priority,
              action: r.action ?? 'lookup',
              table: r.table ?? null,
              src: prefix(r.src, r.srclen),
              dst: prefix(r.dst, r.dstlen),
              iif: r.iif ?? null,
              oif: r.oif ?? null,
              fwmark: r.fwmark === undefined ? null : Number(r.fwmark),
              fwmask: r.fwmark === undefined ? null : Number(r.fwmask ?? '0xffffffff'),
            });
        }
        const rules = (await rt.rules()).map(({ kind, deleted, ...rule }) => {
          assert.deepEqual([kind, deleted], ['rule', false]);
          return rule;
        });
        assert.deepEqual(sorted(rules), sorted(ipRules));
        assert.ok(rules.some((r) => r.fwmark === 5 && r.fwmask === 0xff && r.iif === 'v0' && r.table === '200'));

        type IpNexthop = { id: number; gateway?: string; dev?: string; group?: { id: number }[]; blackhole?: null };
        const ipNexthops = (await ipJson<IpNexthop[]>(netns, 'nexthop', 'show')).map((n) => ({
          id: n.id,
          via: n.gateway ?? null,
          dev: n.dev ?? null,
          group: (n.group ?? []).map((m) => m.id),
          blackhole: 'blackhole' in n,
        }));
        const nexthops = await rt.nexthops();
        assert.deepEqual(sorted(nexthops.map((n) => ({ id: n.id, via: n.via, dev: n.dev, group: n.group, blackhole: n.blackhole }))), sorted(ipNexthops));
        assert.deepEqual(nexthops.find((n) => n.id === 20)?.group, [10, 11]);
      },
      {},
      lab,
    ));

  it('answers route lookups as ip route get does: routed, on-link, local, and null for unreachable, blackhole and no route', () =>
    withRtnl(
      async ({ rt, netns }) => {
        const destinations = ['10.40.1.1', '10.9.0.5', '10.9.0.1', '10.82.0.1', '10.81.0.1', '198.51.100.1', '2001:db8:50::1', '2001:db8::5', '2001:db8::1', '2001:db8:82::1', '2001:db8:81::1', '2001:db8:99::1'];
        const answers: Record<string, unknown> = {};
        for (const address of destinations) {
          type IpGet = { type?: string; dev: string; gateway?: string; prefsrc?: string };
          let expected: unknown = null;
          try {
            const [r] = await ipJson<IpGet[]>(netns, 'route', 'get', address);
            if (r !== undefined) expected = { type: r.type ?? 'unicast', dev: r.dev, via: r.gateway ?? null, source: r.prefsrc ?? null };
          } catch {
            // ip says RTNETLINK answers: Network is unreachable, No route to host, Invalid argument...
          }
          const got = await rt.routeGet(address);
          assert.deepEqual(got === null ? null : { type: got.type, dev: got.dev, via: got.via, source: got.source }, expected, address);
          answers[address] = got === null ? null : `${got.type} ${got.dev} ${got.via ?? 'on-link'}`;
        }
        assert.deepEqual(answers, {
          '10.40.1.1': 'unicast v0 10.9.0.2',
          '10.9.0.5': 'unicast v0 on-link',
          '10.9.0.1': 'local lo on-link',
          '10.82.0.1': null,
          '10.81.0.1': null,
          '198.51.100.1': null,
          '2001:db8:50::1': 'unicast v0 2001:db8::2',
          '2001:db8::5': 'unicast v0 on-link',
          '2001:db8::1': 'local lo on-link',
          '2001:db8:82::1': null,
          '2001:db8:81::1': null,
          '2001:db8:99::1': null,
        });
      },
      {},
      lab,
    ));

  it('reports link, address, route, neighbour, rule and nexthop events on add, replace and delete, and counts a replaced route once', () =>
    withRtnl(
      async ({ rt, netns, events }) => {
        const ip = (...args: string[]) => sh(['ip', '-n', netns, ...args]);
        const seen = <K extends KernelChange['kind']>(what: string, kind: K, match: (e: Extract<KernelChange, { kind: K }>) => boolean) =>
          until(what, () => (events.find((e): e is Extract<KernelChange, { kind: K }> => e.kind === kind && match(e as Extract<KernelChange, { kind: K }>)) ?? undefined));
        const base = await rt.countRoutes();
        // A count and `ip route show` are two reads, and the kernel changes IPv6 routes on its
        // own between them (addrconf, linkwatch: CI once saw 11 against 12): they must come to
        // agree, not agree at once.
        const countsAgree = (what: string) =>
          until(what, async () => {
            const now = await rt.countRoutes();
            return now.ipv4 === (await kernelRouteCount(netns, 4)) && now.ipv6 === (await kernelRouteCount(netns, 6)) ? now : undefined;
          });

        await ip('link', 'add', 'e0', 'type', 'veth', 'peer', 'name', 'e1');
        const e0 = await seen('e0 added', 'link', (e) => !e.deleted && e.dev === 'e0');
        assert.equal(e0.linkKind, 'veth');
        await ip('link', 'set', 'e0', 'mtu', '1400', 'address', '02:00:00:00:00:e0');
        await seen('e0 changed', 'link', (e) => !e.deleted && e.dev === 'e0' && e.mtu === 1400 && e.mac === '02:00:00:00:00:e0' && !e.up);
        await ip('link', 'set', 'e0', 'up');
        await ip('link', 'set', 'e1', 'up');
        await seen('e0 up with carrier', 'link', (e) => e.dev === 'e0' && e.up && e.carrier);

        await ip('addr', 'add', '10.20.0.1/24', 'dev', 'e0');
        await seen('an address added', 'addr', (e) => !e.deleted && e.dev === 'e0' && e.family === 4 && e.address === '10.20.0.1/24');
        await ip('-6', 'addr', 'add', '2001:db8:20::1/64', 'dev', 'e0', 'nodad');
        await seen('an IPv6 address added', 'addr', (e) => !e.deleted && e.family === 6 && e.address === '2001:db8:20::1/64');

        await ip('route', 'add', '10.30.0.0/16', 'via', '10.20.0.2', 'metric', '7', 'proto', 'static');
        const added = await seen('a route added', 'route', (e) => !e.deleted && e.to === '10.30.0.0/16');
        assert.deepEqual(fromRtnl(added), { type: 'unicast', to: '10.30.0.0/16', via: '10.20.0.2', dev: 'e0', table: 'main', metric: 7, protocol: 'static', nhid: null, multipath: false });
        await ip('route', 'replace', '10.30.0.0/16', 'via', '10.20.0.3', 'metric', '7', 'proto', 'static');
        await seen('a route replaced', 'route', (e) => !e.deleted && e.to === '10.30.0.0/16' && e.via === '10.20.0.3');
        await ip('route', 'add', 'blackhole', '10.31.0.0/16', 'table', '300');
        await seen('a blackhole route in table 300', 'route', (e) => !e.deleted && e.to === '10.31.0.0/16' && e.type === 'blackhole' && e.table === '300' && e.dev === null);
        const counted = await countsAgree('the counts after the routes were added');
        assert.equal(counted.ipv4, base.ipv4 + 2 + 3, 'two routes added, plus the address: its subnet, local and broadcast routes');
        assert.deepEqual(counted.tables['300'], { ipv4: 1, ipv6: 0 });
        await ip('route', 'del', '10.30.0.0/16', 'metric', '7');
        await seen('a route deleted', 'route', (e) => e.deleted && e.to === '10.30.0.0/16' && e.via === '10.20.0.3' && e.metric === 7);
        assert.equal((await rt.countRoutes()).ipv4, counted.ipv4 - 1);

        await ip('neigh', 'add', '10.20.0.9', 'lladdr', '02:00:00:00:00:09', 'dev', 'e0', 'nud', 'permanent');
        await seen('a neighbour added', 'neigh', (e) => !e.deleted && e.address === '10.20.0.9' && e.mac === '02:00:00:00:00:09' && e.state === 'PERMANENT' && e.dev === 'e0');
        await ip('neigh', 'replace', '10.20.0.9', 'lladdr', '02:00:00:00:00:99', 'dev', 'e0', 'nud', 'stale');
        await seen('a neighbour replaced', 'neigh', (e) => !e.deleted && e.address === '10.20.0.9' && e.mac === '02:00:00:00:00:99' && e.state === 'STALE');
        await ip('neigh', 'del', '10.20.0.9', 'dev', 'e0');
        await seen('a neighbour deleted', 'neigh', (e) => e.deleted && e.address === '10.20.0.9');

        await ip('rule', 'add', 'to', '10.30.0.0/16', 'table', '300', 'pref', '500');
        await seen('a rule added', 'rule', (e) => !e.deleted && e.family === 4 && e.priority === 500 && e.dst === '10.30.0.0/16' && e.table === '300' && e.action === 'lookup');
        await ip('-6', 'rule', 'add', 'from', '2001:db8:20::/48', 'unreachable', 'pref', '501');
        await seen('an IPv6 rule added', 'rule', (e) => !e.deleted && e.family === 6 && e.src === '2001:db8:20::/48' && e.action === 'unreachable');
        await ip('rule', 'del', 'pref', '500');
        await seen('a rule deleted', 'rule', (e) => e.deleted && e.priority === 500);

        await ip('nexthop', 'add', 'id', '40', 'via', '10.20.0.2', 'dev', 'e0');
        await seen('a nexthop added', 'nexthop', (e) => !e.deleted && e.id === 40 && e.via === '10.20.0.2' && e.dev === 'e0' && e.family === 4);
        await ip('nexthop', 'replace', 'id', '40', 'via', '10.20.0.3', 'dev', 'e0');
        await seen('a nexthop replaced', 'nexthop', (e) => !e.deleted && e.id === 40 && e.via === '10.20.0.3');
        await ip('nexthop', 'add', 'id', '41', 'group', '40');
        await seen('a nexthop group added', 'nexthop', (e) => !e.deleted && e.id === 41 && e.family === null && e.group.length === 1 && e.group[0] === 40);
        await ip('route', 'add', '10.32.0.0/16', 'nhid', '40');
        await seen('a route through a nexthop object', 'route', (e) => !e.deleted && e.to === '10.32.0.0/16' && e.nhid === 40 && e.via === '10.20.0.3');
        await ip('nexthop', 'del', 'id', '41');
        await seen('a nexthop group deleted', 'nexthop', (e) => e.deleted && e.id === 41);

        await ip('link', 'del', 'e0');
        await seen('e0 deleted', 'link', (e) => e.deleted && e.dev === 'e0');
        await seen('its address deleted', 'addr', (e) => e.deleted && e.address === '10.20.0.1/24' && e.dev === 'e0');
        const after = await countsAgree('the counts after e0 was deleted');
        // A link set down loses its routes without a route event: they are recounted. Its
        // veth peer loses carrier a moment later (linkwatch), which changes IPv6 routes
        // again: the counts must come to equal the kernel's.
        await ip('link', 'set', 'v0', 'down');
        const down = await rt.countRoutes();
        assert.ok(down.ipv4 < after.ipv4 && down.ipv6 < after.ipv6, `${JSON.stringify(after)} -> ${JSON.stringify(down)}`);
        await countsAgree('the counts after v0 went down');
        // Without a count asked for, stats() follows once the kernel has flushed.
        await ip('link', 'set', 'v1', 'down');
        await until('the recount after v1 went down', async () => {
          const { ipv4, ipv6 } = rt.stats().routes;
          return ipv4 < down.ipv4 && ipv4 === (await kernelRouteCount(netns, 4)) && ipv6 === (await kernelRouteCount(netns, 6)) ? true : undefined;
        });
        assert.equal(rt.stats().enobufs, 0);
        assert.ok(rt.stats().events >= events.length);
      },
      {},
      lab,
    ));

  it('resynchronises after the event socket overruns, and then counts exactly the routes the kernel holds', () =>
    withRtnl(
      async ({ rt, netns, resyncs }) => {
        await sh(['ip', '-n', netns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']);
        await sh(['ip', '-n', netns, 'link', 'set', 'v0', 'up']);
        const lines: string[] = [];
        for (let i = 0; i < 5000; i++) lines.push(`route add blackhole 10.${100 + (i >> 8)}.${i & 255}.0/24 table ${100 + (i % 3)}`);
        for (let i = 0; i < 1000; i++) lines.push(`route add blackhole 2001:db8:${i.toString(16)}::/48`);
        const file = path.join(tmpdir(), `fgrt-${process.pid}-burst.batch`);
        writeFileSync(file, `${lines.join('\n')}\n`);
        try {
          await sh(['ip', '-n', netns, '-batch', file]);
        } finally {
          unlinkSync(file);
        }
        await until('a resync', () => (resyncs.length >= 1 ? true : undefined));
        const s = rt.stats();
        assert.ok(s.enobufs >= 1, `enobufs ${s.enobufs}`);
        assert.ok(s.resyncs >= 1);
        const last = resyncs[resyncs.length - 1]!;
        assert.ok(last.enobufs >= 1);
        assert.ok(last.links.some((l) => l.dev === 'v0' && l.up));
        assert.ok(last.links.every((l) => l.kind === 'link' && !l.deleted));
        const counts = await rt.countRoutes();
        assert.equal(counts.ipv4, await kernelRouteCount(netns, 4));
        assert.equal(counts.ipv6, await kernelRouteCount(netns, 6));
        assert.deepEqual([counts.tables['100']?.ipv4, counts.tables['101']?.ipv4, counts.tables['102']?.ipv4], [1667, 1667, 1666]);
        assert.deepEqual(rt.stats().routes, counts);
      },
      { rcvbuf: 4096 },
    ));

  it('lets a process exit that never closed its Rtnl, with requests answered first', () =>
    withNetns(async (netns) => {
      const script = `const { Rtnl } = require(${JSON.stringify(require.resolve('../../lib/slowpath/rtnl'))});
const rt = Rtnl.open({ netns: ${JSON.stringify(netns)}, onEvents() {} });
rt.links().then((links) => console.log('links', links.map((l) => l.dev).join(',')));`;
      const out = await sh(['node', '-e', script], { timeoutMs: 20_000 });
      assert.equal(out.trim(), 'links lo');
    }, 'fgrt'));

  it('rejects invalid options, filters and addresses with messages naming the parameter', () =>
    withRtnl(async ({ rt }) => {
      assert.throws(() => Rtnl.open({ rcvbuf: 0 }), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT', message: 'rtnl options.rcvbuf: expected an integer 1..1073741824, found 0' });
      assert.throws(() => Rtnl.open({ netns: '/nonexistent/ns' }), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT', message: /^rtnl: netns \/nonexistent\/ns: No such file or directory/ });
      assert.throws(() => rt.routes({ family: 5 as 4 }), { message: 'rtnl routes: filter.family: expected 4 or 6, found 5' });
      assert.throws(() => rt.routes({ family: 4, table: 'mian' }), { message: /^rtnl routes: filter\.table: expected one of main, local, default or an integer 0\.\.4294967295, found mian$/ });
      assert.throws(() => rt.routes({ family: 4, protocol: 256 }), { message: 'rtnl routes: filter.protocol: expected an integer 0..255, found 256' });
      assert.throws(() => rt.routeGet('10.0.0.300'), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT', message: /^rtnl routeGet: address: / });
      rt.close();
      await assert.rejects(rt.links(), { code: 'ERR_FLOWGATE_RTNL_CLOSED' });
    }));

  it('counts a million IPv4 routes loaded with ip -batch (prints the load time, the start-up dump time and the RSS)', () =>
    withNetns(async (netns) => {
      const MILLION = 1_000_000;
      const file = path.join(tmpdir(), `fgrt-${process.pid}-million.batch`);
      // Written in chunks, so that the RSS printed below is not the batch file's strings.
      const fd = openSync(file, 'w');
      for (let start = 0; start < MILLION; start += 10_000) {
        let chunk = '';
        for (let i = start; i < start + 10_000; i++) chunk += `route add blackhole 10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32\n`;
        writeSync(fd, chunk);
      }
      closeSync(fd);
      const baseline = await kernelRouteCount(netns, 4);
      const loadStart = performance.now();
      try {
        await sh(['ip', '-n', netns, '-batch', file], { timeoutMs: 300_000 });
      } finally {
        unlinkSync(file);
      }
      const loadMs = performance.now() - loadStart;
      const rssBefore = process.memoryUsage().rss;
      const dumpStart = performance.now();
      const rt = Rtnl.open({ netns });
      try {
        const counts = await rt.countRoutes();
        const dumpMs = performance.now() - dumpStart;
        const rssAfter = process.memoryUsage().rss;
        console.log(
          `      ip -batch of ${MILLION} routes: ${(loadMs / 1000).toFixed(1)} s; Rtnl start-up dump: ${(dumpMs / 1000).toFixed(2)} s; ` +
            `RSS ${(rssAfter / 2 ** 20).toFixed(0)} MiB (+${((rssAfter - rssBefore) / 2 ** 20).toFixed(0)} MiB for the Rtnl)`,
        );
        assert.equal(counts.ipv4, MILLION + baseline);
        assert.equal(counts.tables.main?.ipv4, MILLION);
        assert.equal(rt.stats().routes.ipv4, MILLION + baseline);
        const stat = await rt.routes({ family: 4, table: 'main', protocol: 'static' });
        assert.deepEqual(stat, [], 'the filtered dump holds none of the million (proto boot)');
      } finally {
        rt.close();
      }
    }, 'fgrt'));
});
