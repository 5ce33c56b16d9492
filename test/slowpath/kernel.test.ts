import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { KernelMirror } from '../../lib/slowpath/kernel';
import type { KernelEvent } from '../../lib/slowpath/monitor';
import { declaredTables, refusedStatements } from '../../lib/slowpath/nftables';
import { createLab, deleteLab, globalAddresses, json, modelV1, modelV2, RULESET_V2, seedModel, snapshot, type Lab } from '../helpers/kernel-lab';
import { atExit, macAddress, sh } from '../helpers/netns';
import { until as untilValue } from '../helpers/wait';

/** The main table as short text, without the kernel's own fe80::/64 link-local routes. */
async function mainRoutes(netns: string, family: 4 | 6): Promise<string[]> {
  type Dump = { dst: string; gateway?: string; dev: string; protocol?: string; metric?: number }[];
  const routes = await json<Dump>(netns, `-${family}`, 'route', 'show', 'table', 'main');
  return routes
    .filter((r) => r.dst !== 'fe80::/64')
    .map((r) => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.dev} proto ${r.protocol ?? 'boot'} metric ${r.metric ?? 0}`)
    .sort();
}

async function links(netns: string): Promise<Record<string, string>> {
  const dump = await json<{ ifname: string; mtu: number; flags: string[] }[]>(netns, 'link', 'show');
  return Object.fromEntries(dump.map((l) => [l.ifname, `mtu ${l.mtu} ${l.flags.includes('UP') ? 'up' : 'down'}`]));
}

async function sysctls(netns: string, keys: string[]): Promise<Record<string, string>> {
  const values = (await sh(['sysctl', '-n', ...keys], { netns })).trim().split('\n');
  return Object.fromEntries(keys.map((key, index) => [key, values[index] ?? '']));
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * The link, address and route events of `change`, recorded by an `ip monitor` of the test's
 * own. Marker addresses on lo, seen in the transcript, bound the change on both sides.
 */
async function transcriptOf(netns: string, change: () => Promise<void>): Promise<string[]> {
  const monitor = spawn('ip', ['-n', netns, '-o', 'monitor', 'label', 'link', 'address', 'route']);
  const unregister = atExit(() => monitor.kill('SIGKILL'));
  const lines: string[] = [];
  createInterface({ input: monitor.stdout }).on('line', (line) => lines.push(line));
  const mark = async (address: string): Promise<number> => {
    const seen = (): number => lines.findIndex((line) => line.includes(`inet ${address}`));
    // Until the monitor has subscribed, a marker can go unseen: add it again.
    for (let attempt = 0; seen() < 0 && attempt < 50; attempt++) {
      await sh(['ip', '-n', netns, 'addr', 'replace', `${address}/32`, 'dev', 'lo']);
      await sleep(100);
    }
    await until(`marker ${address}`, () => seen() >= 0);
    return seen();
  };
  try {
    const start = await mark('127.0.0.201');
    await change();
    const end = await mark('127.0.0.202');
    return lines.slice(start + 1, end).filter((line) => !line.includes('127.0.0.20'));
  } finally {
    monitor.kill();
    unregister();
  }
}

// ---- tests ------------------------------------------------------------------------------

describe('kernel mirror', () => {
  let lab: Lab | undefined;
  let mirror: KernelMirror | undefined;

  afterEach(async () => {
    await mirror?.teardown().catch(() => undefined);
    await deleteLab(lab);
    lab = undefined;
    mirror = undefined;
  });

  it("applies the seed config: addresses, static routes, MTUs, up, and a router's sysctls", async () => {
    lab = await createLab();
    mirror = new KernelMirror({ netns: lab.gw });
    const tunDad = await sysctls(lab.gw, ['net.ipv6.conf.tun0.accept_dad']);
    await mirror.apply(seedModel());

    assert.deepEqual(await globalAddresses(lab.gw), ['eth0 192.168.0.2/24', 'eth1 2001:db8:2::1/64', 'tun0 192.168.100.1/24']);
    assert.deepEqual(await mainRoutes(lab.gw, 4), [
      '192.168.0.0/24 dev eth0 proto kernel metric 0',
      '192.168.100.0/24 dev tun0 proto kernel metric 0',
      'default via 192.168.100.2 dev tun0 proto static metric 0',
    ]);
    assert.deepEqual(await mainRoutes(lab.gw, 6), ['2001:db8:2::/64 dev eth1 proto kernel metric 256']);
    const state = await links(lab.gw);
    assert.deepEqual([state.eth0, state.eth1, state.tun0], ['mtu 1500 up', 'mtu 1500 up', 'mtu 1452 up']);
    assert.deepEqual(
      await sysctls(lab.gw, [
        'net.ipv4.ip_forward',
        'net.ipv6.conf.all.forwarding',
        ...['eth0', 'eth1', 'tun0'].flatMap((dev) => [`net.ipv4.conf.${dev}.rp_filter`, `net.ipv6.conf.${dev}.accept_ra`, `net.ipv6.conf.${dev}.keep_addr_on_down`]),
        'net.ipv6.conf.eth0.accept_dad',
        'net.ipv6.conf.eth1.accept_dad',
        'net.ipv6.conf.tun0.accept_dad',
      ]),
      {
        'net.ipv4.ip_forward': '1',
        'net.ipv6.conf.all.forwarding': '1',
        'net.ipv4.conf.eth0.rp_filter': '2',
        'net.ipv6.conf.eth0.accept_ra': '0',
        'net.ipv6.conf.eth0.keep_addr_on_down': '1',
        'net.ipv4.conf.eth1.rp_filter': '2',
        'net.ipv6.conf.eth1.accept_ra': '0',
        'net.ipv6.conf.eth1.keep_addr_on_down': '1',
        'net.ipv4.conf.tun0.rp_filter': '2',
        'net.ipv6.conf.tun0.accept_ra': '0',
        'net.ipv6.conf.tun0.keep_addr_on_down': '1',
        'net.ipv6.conf.eth0.accept_dad': '0',
        'net.ipv6.conf.eth1.accept_dad': '0',
        // A TUN is NOARP: the kernel runs no DAD on it, so its setting is left as it was.
        ...tunDad,
      },
    );
    // The seed has no ruleset: only flowgate's own table, which makes conntrack track the
    // forwarded traffic.
    assert.equal(await sh(['nft', 'list', 'tables'], { netns: lab.gw }), 'table inet flowgate_conntrack\n');
  });

  it('applies the nftables ruleset, whose tables nft then lists', async () => {
    lab = await createLab();
    mirror = new KernelMirror({ netns: lab.gw });
    await mirror.apply(modelV1());
    assert.equal(await sh(['nft', 'list', 'tables'], { netns: lab.gw }), 'table inet flowgate_conntrack\ntable inet flowgate\ntable ip flowgate_nat\n');
    assert.match(await sh(['nft', 'list', 'table', 'ip', 'flowgate_nat'], { netns: lab.gw }), /oifname "tun0" masquerade/);
    assert.deepEqual(mirror.record.nftables?.tables, ['inet flowgate_conntrack', 'inet flowgate', 'ip flowgate_nat']);
  });

  it("keeps its namespace's kernel off the interface of an af_packet port, and gives it back on teardown", async () => {
    lab = await createLab();
    await sh('ip link add phys0 type veth peer name phys0p && ip link set phys0 up', { netns: lab.gw });
    mirror = new KernelMirror({ netns: lab.gw });
    await mirror.apply(seedModel((config) => (config.ports.eth0!.device = 'net_af_packet0,iface=phys0,framecnt=8192')));
    const table = await sh(['nft', 'list', 'table', 'netdev', 'flowgate_afpacket'], { netns: lab.gw });
    assert.match(table, /type filter hook ingress device "phys0" priority -500; policy drop;/);
    assert.deepEqual(await sysctls(lab.gw, ['net.ipv6.conf.phys0.disable_ipv6']), { 'net.ipv6.conf.phys0.disable_ipv6': '1' });
    await mirror.teardown();
    assert.equal(await sh(['nft', 'list', 'tables'], { netns: lab.gw }), '');
    assert.deepEqual(await sysctls(lab.gw, ['net.ipv6.conf.phys0.disable_ipv6']), { 'net.ipv6.conf.phys0.disable_ipv6': '0' });
  });

  it('changes on reload only the addresses, routes, MTU and ruleset that changed', async () => {
    lab = await createLab();
    const gw = lab.gw;
    mirror = new KernelMirror({ netns: gw });
    await sh(['nft', 'add table ip other; add chain ip other input { type filter hook input priority 0; }'], { netns: gw });
    await mirror.apply(modelV1());
    const otherTable = (): Promise<string> => sh(['nft', '-a', 'list', 'table', 'ip', 'other'], { netns: gw });
    const otherBefore = await otherTable();

    const transcript = await transcriptOf(gw, () => mirror!.apply(modelV2()));

    const expected = [
      /^\[ADDR\]Deleted \d+: eth0\s+inet 192\.168\.50\.2\/24 /,
      /^\[ADDR\]\d+: eth0\s+inet 192\.168\.60\.2\/24 /,
      /^\[ROUTE\]10\.10\.0\.0\/16 via 192\.168\.0\.254 dev eth0 proto static /,
      /^\[LINK\]\d+: eth0@\S+ <[^>]*> mtu 1400 /,
    ];
    for (const pattern of expected) assert.ok(transcript.some((line) => pattern.test(line)), `${pattern} in:\n${transcript.join('\n')}`);
    // Everything else in the transcript is the kernel's consequence of those changes: the
    // connected, local and broadcast routes of the two addresses.
    const consequence = /^\[ROUTE\](Deleted )?(local |broadcast )?192\.168\.(50|60)\.\S+ dev eth0 (table local )?proto kernel /;
    const unexplained = transcript.filter((line) => !expected.some((pattern) => pattern.test(line)) && !consequence.test(line));
    assert.deepEqual(unexplained, []);

    assert.deepEqual(await globalAddresses(gw), ['eth0 192.168.0.2/24', 'eth0 192.168.60.2/24', 'eth1 2001:db8:2::1/64', 'tun0 192.168.100.1/24']);
    assert.deepEqual(await mainRoutes(gw, 4), [
      '10.10.0.0/16 via 192.168.0.254 dev eth0 proto static metric 0',
      '192.168.0.0/24 dev eth0 proto kernel metric 0',
      '192.168.100.0/24 dev tun0 proto kernel metric 0',
      '192.168.60.0/24 dev eth0 proto kernel metric 0',
      'default via 192.168.100.2 dev tun0 proto static metric 0',
    ]);
    assert.deepEqual(await mainRoutes(gw, 6), [
      '2001:db8:2::/64 dev eth1 proto kernel metric 256',
      '2001:db8:9::/48 via 2001:db8:2::2 dev eth1 proto static metric 1024',
    ]);
    assert.equal((await links(gw)).eth0, 'mtu 1400 up');
    // The ruleset's tables were replaced and the one it no longer declares removed; a table
    // that is not flowgate's kept its handles, so it was not touched.
    assert.equal(await sh(['nft', 'list', 'tables'], { netns: gw }), 'table ip other\ntable inet flowgate_conntrack\ntable inet flowgate\n');
    assert.match(await sh(['nft', 'list', 'table', 'inet', 'flowgate'], { netns: gw }), /iifname "eth0" accept/);
    assert.equal(await otherTable(), otherBefore);
  });

  it('gives back on teardown exactly what it changed, even across a reload, and again when called twice', async () => {
    lab = await createLab();
    const gw = lab.gw;
    // ip_forward rewrites conf/all/accept_redirects: an unusual original must survive that.
    await sh(['sysctl', '-q', '-w', 'net.ipv4.conf.all.accept_redirects=0', 'net.ipv4.conf.all.rp_filter=1'], { netns: gw });
    await sh(['nft', 'add table ip other'], { netns: gw });
    const before = await snapshot(gw);
    mirror = new KernelMirror({ netns: gw });
    await mirror.apply(modelV1());
    await mirror.apply(modelV2());
    assert.notDeepEqual(await snapshot(gw), before);

    await mirror.teardown();
    assert.deepEqual(await snapshot(gw), before);
    assert.deepEqual(mirror.record, { links: [], addresses: [], routes: [], sysctls: [], nftables: null });
    await mirror.teardown();
    assert.deepEqual(await snapshot(gw), before);
  });

  it("mirrors a VLAN like a port: its TAP's addresses, routes, MTU and sysctls, removed when the VLAN goes, and teardown gives all back", async () => {
    lab = await createLab();
    const gw = lab.gw;
    // What the gateway's DPDK creates for eth0.100: a TAP named like the sub-interface.
    await sh(['ip', '-n', gw, 'tuntap', 'add', 'eth0.100', 'mode', 'tap']);
    const before = await snapshot(gw);
    const withVlan = seedModel((config) => {
      config.ports['eth0.100'] = { parent: 'eth0', vlan: 100, mtu: 1400, addresses: ['192.0.2.1/24'] };
      config.routes.push({ to: '10.0.0.0/8', via: '192.0.2.254', dev: 'eth0.100' });
    });
    assert.deepEqual(withVlan.vlans.map((v) => v.name), ['eth0.100']);
    mirror = new KernelMirror({ netns: gw });
    await mirror.apply(withVlan);

    assert.ok((await globalAddresses(gw)).includes('eth0.100 192.0.2.1/24'));
    assert.ok((await mainRoutes(gw, 4)).includes('10.0.0.0/8 via 192.0.2.254 dev eth0.100 proto static metric 0'));
    assert.equal((await links(gw))['eth0.100'], 'mtu 1400 up');
    // sysctl(8) takes '/' between the parts of a name whose interface has a dot.
    const keys = ['rp_filter', 'accept_ra', 'keep_addr_on_down', 'accept_dad'].map((key) => `net/ipv${key === 'rp_filter' ? 4 : 6}/conf/eth0.100/${key}`);
    assert.deepEqual(Object.values(await sysctls(gw, keys)), ['2', '0', '1', '0']);

    // The VLAN leaves the config (its TAP stays until DPDK closes it): what was written on it goes.
    await mirror.apply(seedModel());
    assert.ok(!(await globalAddresses(gw)).some((address) => address.startsWith('eth0.100 ')));
    assert.ok(!(await mainRoutes(gw, 4)).some((route) => route.includes('eth0.100')));

    await mirror.apply(withVlan);
    await mirror.teardown();
    assert.deepEqual(await snapshot(gw), before);
  });

  it("holds a tunnel's TUN at an overridden MTU across reloads until the override is lifted, and teardown restores the original", async () => {
    lab = await createLab();
    const gw = lab.gw;
    const before = await snapshot(gw);
    mirror = new KernelMirror({ netns: gw });
    await mirror.apply(seedModel());
    // The tunnel's effective MTU after its underlay path shrank to 1280: 1280 - 48.
    await mirror.overrideMtu('tun0', 1232);
    assert.equal((await links(gw)).tun0, 'mtu 1232 up');
    await mirror.apply(modelV1());
    assert.equal((await links(gw)).tun0, 'mtu 1232 up', 'a reload keeps the learnt MTU');
    await mirror.overrideMtu('tun0', null);
    await mirror.apply(modelV1());
    assert.equal((await links(gw)).tun0, 'mtu 1452 up', "the config's MTU again once lifted");
    await mirror.overrideMtu('tun0', 1300);
    await mirror.teardown();
    assert.deepEqual(await snapshot(gw), before);
  });

  it('refuses a route it did not create, naming the command and the kernel answer, and teardown keeps what was there', async () => {
    lab = await createLab();
    const gw = lab.gw;
    // Someone else's: the seed's eth0 address, and a default route where the seed wants its own.
    await sh(['ip', '-n', gw, 'link', 'set', 'eth0', 'up']);
    await sh(['ip', '-n', gw, 'addr', 'add', '192.168.0.2/24', 'dev', 'eth0']);
    await sh(['ip', '-n', gw, 'route', 'add', 'default', 'via', '192.168.0.1', 'dev', 'eth0']);
    // The link-local address (and its local route) comes once the link has carrier and DAD
    // is done: part of what was there, not of what the mirror changed.
    await untilValue('the link-local address of eth0', async () => {
      const out = await sh(['ip', '-n', gw, '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'link']);
      return out.includes('fe80') && !out.includes('tentative') ? true : undefined;
    });
    const before = await snapshot(gw);
    mirror = new KernelMirror({ netns: gw });

    await assert.rejects(mirror.apply(seedModel()), {
      code: 'ERR_FLOWGATE_KERNEL_COMMAND',
      message: `ip -n ${gw} -4 route add 0.0.0.0/0 via 192.168.100.2 dev tun0 metric 0 proto static: RTNETLINK answers: File exists`,
    });
    assert.ok(!mirror.record.addresses.some((spec) => spec.address === '192.168.0.2/24'));

    await mirror.teardown();
    assert.deepEqual(await snapshot(gw), before);
  });

  it('changes nothing when an interface of the config does not exist yet', async () => {
    lab = await createLab({ tunnel: false });
    const before = await snapshot(lab.gw);
    mirror = new KernelMirror({ netns: lab.gw });
    await assert.rejects(mirror.apply(seedModel()), {
      code: 'ERR_FLOWGATE_KERNEL_MIRROR',
      message: 'interface tun0 does not exist: the TUN of tunnel tun0 is created by DPDK before the kernel mirror configures it',
    });
    assert.deepEqual(await snapshot(lab.gw), before);
  });

  it('refuses a ruleset that flushes the whole ruleset, before changing anything', async () => {
    lab = await createLab();
    const before = await snapshot(lab.gw);
    mirror = new KernelMirror({ netns: lab.gw });
    const model = seedModel((config) => {
      config.nftables = `flush ruleset\n${RULESET_V2}`;
    });
    await assert.rejects(mirror.apply(model), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT', message: /found 'flush ruleset'/ });
    assert.deepEqual(await snapshot(lab.gw), before);
  });

  it("mirrors a sit tunnel's TUN with IPv6 on (whatever the namespace's default), its IPv6 address and route, and an IPv4 underlay it resolves by ARP", async () => {
    lab = await createLab();
    // A namespace whose new interfaces come without IPv6: the TUN DPDK created has it off.
    await sh(['sysctl', '-q', '-w', 'net.ipv6.conf.tun0.disable_ipv6=1'], { netns: lab.gw });
    await sh(['ip', '-n', lab.peer, 'addr', 'add', '198.51.100.2/24', 'dev', 'wan0']);
    const before = await snapshot(lab.gw);
    mirror = new KernelMirror({ netns: lab.gw });
    const model = seedModel((config) => {
      config.ports.eth1!.addresses.push('198.51.100.1/24');
      config.tunnels.tun0 = { mode: 'sit', local: '198.51.100.1', remote: '198.51.100.2', mtu: 'auto', addresses: ['2001:db8:100::1/64'] };
      config.routes = [{ to: '2001:db8:7::/48', via: '2001:db8:100::2', dev: 'tun0' }];
    });
    await mirror.apply(model);

    assert.equal(model.tunnels[0]?.mtu, 1480, 'the underlay MTU less the 20 bytes of the outer IPv4 header');
    assert.deepEqual(await globalAddresses(lab.gw), ['eth0 192.168.0.2/24', 'eth1 198.51.100.1/24', 'eth1 2001:db8:2::1/64', 'tun0 2001:db8:100::1/64']);
    assert.deepEqual(await mainRoutes(lab.gw, 6), [
      '2001:db8:100::/64 dev tun0 proto kernel metric 256',
      '2001:db8:2::/64 dev eth1 proto kernel metric 256',
      '2001:db8:7::/48 via 2001:db8:100::2 dev tun0 proto static metric 1024',
    ]);
    assert.equal((await links(lab.gw)).tun0, 'mtu 1480 up');
    assert.deepEqual(await sysctls(lab.gw, ['net.ipv6.conf.tun0.disable_ipv6', 'net.ipv6.conf.all.forwarding']), {
      'net.ipv6.conf.tun0.disable_ipv6': '0',
      'net.ipv6.conf.all.forwarding': '1',
    });
    // The tunnel's remote, resolved as the gateway does: the route over the IPv4 underlay, then ARP.
    const route = await mirror.routeTo('198.51.100.2');
    assert.deepEqual([route?.dev, route?.gateway, route?.source], ['eth1', null, '198.51.100.1']);
    assert.equal(await mirror.resolveNeighbor('eth1', '198.51.100.2', 5000), await macAddress('wan0', lab.peer));

    await mirror.teardown();
    mirror = undefined;
    // IPv6 off again on the TUN, as it was; the neighbour entry is the kernel's own and ages away.
    const after = await snapshot(lab.gw);
    assert.deepEqual(after.sysctls, before.sysctls);
    assert.deepEqual(after.routes6, before.routes6);
    assert.deepEqual(await globalAddresses(lab.gw), []);
  });

  it('resolves the MAC of a real neighbour over IPv4 and IPv6, and times out cleanly for an absent one', async () => {
    lab = await createLab();
    mirror = new KernelMirror({ netns: lab.gw });
    await mirror.apply(seedModel());

    assert.equal(await mirror.resolveNeighbor('eth1', '2001:db8:2::2', 5000), await macAddress('wan0', lab.peer));
    assert.equal(await mirror.resolveNeighbor('eth0', '192.168.0.1', 5000), await macAddress('lan0', lab.peer));
    const started = Date.now();
    assert.equal(await mirror.resolveNeighbor('eth0', '192.168.0.99', 300), null);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 300 && elapsed < 2000, `returned after ${elapsed} ms`);
  });

  it("reports the kernel's route decision: device, gateway or on-link, and source", async () => {
    lab = await createLab();
    mirror = new KernelMirror({ netns: lab.gw });
    await mirror.apply(seedModel());

    // The tunnel's remote is on-link on the underlay; everything else goes into the tunnel.
    assert.deepEqual(await mirror.routeTo('2001:db8:2::2'), { type: 'unicast', dev: 'eth1', gateway: null, source: '2001:db8:2::1' });
    assert.deepEqual(await mirror.routeTo('198.51.100.7'), { type: 'unicast', dev: 'tun0', gateway: '192.168.100.2', source: '192.168.100.1' });
    assert.deepEqual(await mirror.routeTo('192.168.0.2'), { type: 'local', dev: 'lo', gateway: null, source: '192.168.0.2' });
    assert.equal(await mirror.routeTo('2001:db8:99::1'), null);
  });

  it('watches the kernel through rtnetlink: reports an MTU change and a resolved neighbour, and nothing once stopped', async () => {
    lab = await createLab();
    const gw = lab.gw;
    mirror = new KernelMirror({ netns: gw });
    await mirror.apply(seedModel());
    const events: KernelEvent[] = [];
    const watch = mirror.watch((event) => events.push(event));
    await watch.ready;

    await sh(['ip', '-n', gw, 'link', 'set', 'eth0', 'mtu', '1400']);
    await until('the MTU change', () => events.some((e) => e.kind === 'link' && e.dev === 'eth0' && e.mtu === 1400 && e.up));
    const lan0 = await macAddress('lan0', lab.peer);
    await mirror.resolveNeighbor('eth0', '192.168.0.1', 5000);
    await until('the resolved neighbour', () =>
      events.some((e) => e.kind === 'neigh' && !e.deleted && e.dev === 'eth0' && e.address === '192.168.0.1' && e.mac === lan0 && e.state === 'REACHABLE'),
    );

    await watch.stop();
    const heard = events.length;
    await sh(['ip', '-n', gw, 'link', 'set', 'eth0', 'mtu', '1300']);
    // A second watch proves the change was reported: the first one no longer hears it.
    const later: KernelEvent[] = [];
    const second = mirror.watch((event) => later.push(event));
    await second.ready;
    await sh(['ip', '-n', gw, 'link', 'set', 'eth0', 'mtu', '1280']);
    await until('the second watch', () => later.some((e) => e.kind === 'link' && e.dev === 'eth0' && e.mtu === 1280));
    assert.equal(events.length, heard);
    await second.stop();
  });

  it('rejects ready when the namespace does not exist, and watches nothing', async () => {
    const events: KernelEvent[] = [];
    const missing = new KernelMirror({ netns: 'fgk-no-such-netns' });
    const watch = missing.watch((event) => events.push(event));
    await assert.rejects(watch.ready, { code: 'ERR_FLOWGATE_INVALID_ARGUMENT', message: /^rtnl: netns \/run\/netns\/fgk-no-such-netns: No such file or directory/ });
    await watch.stop();
    await assert.rejects(missing.routeTo('192.0.2.1'), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT' });
    assert.deepEqual(events, []);
  });
});

describe('nftables ruleset ownership', () => {
  it('finds the tables a ruleset declares, in blocks and commands, ignoring nested blocks and comments', () => {
    const ruleset = [
      '# table ip commented',
      'table inet flowgate { chain c { comment "table ip quoted {" } }',
      'table filter {',
      '  chain input { type filter hook input priority 0; }',
      '}',
      'add table ip6 six; create table netdev ingress',
      'add chain inet flowgate extra',
    ].join('\n');
    assert.deepEqual(declaredTables(ruleset), ['inet flowgate', 'ip filter', 'ip6 six', 'netdev ingress']);
  });

  it('refuses flush ruleset and include, which reach beyond the declared tables', () => {
    assert.throws(() => declaredTables('flush ruleset\ntable inet x {}'), /found 'flush ruleset'/);
    assert.throws(() => declaredTables('include "/etc/nftables.d/x.nft"'), /found 'include "\/etc\/nftables.d\/x.nft"'/);
  });

  it('names the line and column of each refused statement, counting continued lines, with includes found in blocks too', () => {
    const ruleset = [
      'table inet x {',
      '  chain c { type filter hook input \\',
      '    priority 0; }',
      '  include "chains.nft"',
      '}',
      '# flush ruleset',
      'flush ruleset; include "a.nft"',
    ].join('\n');
    assert.deepEqual(
      refusedStatements(ruleset).map(({ line, col, message }) => [line, col, message.replace(/^expected .*, found '(.*?)'.*$/, '$1')]),
      [
        [4, 3, 'include "chains.nft"'],
        [7, 1, 'flush ruleset'],
        [7, 16, 'include "a.nft"'],
      ],
    );
  });
});
