import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '../../lib/errors';
import { checkConfigText, compileConfig, type CompiledConfig, type Config, type Machine } from '../../lib/config';
import { connectedRoutes, offloadDevices, resolveUnderlay, staticRoutes, type TunnelSettings } from '../../lib/config/compile';

const repo = path.resolve(__dirname, '../../..');
const fourCpus: Machine = { cpus: [0, 1, 2, 3] };

function validConfig(file: string): Config {
  const { config, issues } = checkConfigText(readFileSync(path.join(repo, file), 'utf8'), file, { machine: fourCpus });
  assert.deepEqual(issues, []);
  assert.ok(config);
  return config;
}

const v4 = (...octets: number[]): Buffer => Buffer.from(octets);
const v6 = (hex: string): Buffer => Buffer.from(hex, 'hex');

describe('config compilation', () => {
  it('compiles the seed config into the fully-resolved model', () => {
    const expected: CompiledConfig = {
      ports: [
        {
          name: 'eth0',
          device: '0000:03:00.0',
          deviceKind: 'pci',
          mac: { text: '00:00:22:33:11:55', bytes: Buffer.from([0x00, 0x00, 0x22, 0x33, 0x11, 0x55]) },
          mtu: 1500,
          addresses: [{ text: '192.168.0.2/24', family: 4, bytes: v4(192, 168, 0, 2), length: 24 }],
          punt: { rate: 100000, burst: 1000 },
        },
        {
          name: 'eth1',
          device: '0000:03:00.1',
          deviceKind: 'pci',
          mac: { text: '00:11:22:33:11:55', bytes: Buffer.from([0x00, 0x11, 0x22, 0x33, 0x11, 0x55]) },
          mtu: 1500,
          addresses: [{ text: '2001:db8:2::1/64', family: 6, bytes: v6('20010db8000200000000000000000001'), length: 64 }],
          punt: { rate: 100000, burst: 1000 },
        },
      ],
      vlans: [],
      tunnels: [
        {
          name: 'tun0',
          mode: 'ip4ip6',
          local: { text: '2001:db8:2::1', family: 6, bytes: v6('20010db8000200000000000000000001') },
          remote: { text: '2001:db8:2::2', family: 6, bytes: v6('20010db8000200000000000000000002') },
          underlay: 'eth1',
          encaplimit: 4,
          hoplimit: 64,
          tclass: 0,
          flowlabel: 0,
          // 1500 - 40 (IPv6 header) - 8 (destination options header with the encap limit)
          mtu: 1452,
          addresses: [{ text: '192.168.100.1/24', family: 4, bytes: v4(192, 168, 100, 1), length: 24 }],
        },
      ],
      routes: [
        {
          to: { text: '192.168.0.0/24', family: 4, bytes: v4(192, 168, 0, 0), length: 24 },
          via: null,
          dev: 'eth0',
          metric: 0,
          origin: 'connected',
        },
        {
          to: { text: '2001:db8:2::/64', family: 6, bytes: v6('20010db8000200000000000000000000'), length: 64 },
          via: null,
          dev: 'eth1',
          metric: 256,
          origin: 'connected',
        },
        {
          to: { text: '192.168.100.0/24', family: 4, bytes: v4(192, 168, 100, 0), length: 24 },
          via: null,
          dev: 'tun0',
          metric: 0,
          origin: 'connected',
        },
        {
          to: { text: 'default', family: 4, bytes: v4(0, 0, 0, 0), length: 0 },
          via: { text: '192.168.100.2', family: 4, bytes: v4(192, 168, 100, 2) },
          dev: 'tun0',
          metric: 0,
          origin: 'static',
        },
      ],
      flowtable: { devices: ['eth0', 'eth1'], l4proto: ['tcp', 'udp'], size: 1048576, timeout: { tcp: 30, udp: 30 }, counter: true },
      workers: { cpus: [1], idle: 'busy' },
      eal: { args: [], hugepages: 'auto' },
      nftables: null,
      metrics: null,
      control: { socket: '/run/flowgate/flowgate.sock' },
      log: { level: 'info' },
    };
    assert.deepEqual(compileConfig(validConfig('config/seed.yaml')), expected);
  });

  it('compiles the minimal config with a default route via the uplink', () => {
    const model = compileConfig(validConfig('config/minimal.yaml'));
    assert.deepEqual(
      model.ports.map((port) => [port.name, port.mtu, port.mac]),
      [
        ['eth0', 1500, null],
        ['eth1', 1500, null],
      ],
    );
    assert.deepEqual(model.routes.at(-1), {
      to: { text: 'default', family: 4, bytes: v4(0, 0, 0, 0), length: 0 },
      via: { text: '203.0.113.1', family: 4, bytes: v4(203, 0, 113, 1) },
      dev: 'eth1',
      metric: 0,
      origin: 'static',
    });
    assert.deepEqual(model.tunnels, []);
  });

  describe('with vdev ports, a routed underlay and every optional section', () => {
    const model = compileConfig(validConfig('test/fixtures/config/valid/vdev-ports-and-every-section.yaml'));

    it('tells vdev ports from PCI ports and keeps the device MAC when none is set', () => {
      assert.deepEqual(
        model.ports.map((port) => [port.name, port.deviceKind, port.mac?.text ?? null]),
        [
          ['lan0', 'vdev', null],
          ['wan0', 'vdev', '02:00:00:00:00:02'],
        ],
      );
    });

    it('finds the underlay port of a tunnel through the static route towards its remote', () => {
      assert.equal(model.tunnels[0]?.underlay, 'wan0');
      assert.equal(model.tunnels[0]?.mtu, 1400, 'an explicit tunnel MTU is kept');
    });

    it('keeps the keyword settings of a tunnel', () => {
      const tunnel = model.tunnels[0];
      assert.ok(tunnel?.mode === 'ip4ip6');
      assert.deepEqual([tunnel.encaplimit, tunnel.hoplimit, tunnel.tclass, tunnel.flowlabel], ['none', 'inherit', 'inherit', 'hash']);
    });

    it('gives static routes the metric iproute2 would, unless one is set', () => {
      assert.deepEqual(
        model.routes.filter((route) => route.origin === 'static').map((route) => [route.to.text, route.dev, route.metric]),
        [
          ['2001:db8:7::/48', 'wan0', 1024],
          ['0.0.0.0/0', 'tun-peer', 10],
          ['::/0', 'wan0', 1024],
          ['198.51.100.0/24', 'lan0', 0],
        ],
      );
    });

    it('derives one connected route per address, as the kernel does', () => {
      assert.deepEqual(
        model.routes.filter((route) => route.origin === 'connected').map((route) => [route.to.text, route.dev, route.metric]),
        [
          ['10.1.0.0/16', 'lan0', 0],
          ['2001:db8:1::/64', 'lan0', 256],
          ['2001:db8:ffff::/64', 'wan0', 256],
          ['100.64.0.0/30', 'tun-peer', 0],
        ],
      );
    });

    it('applies per-port punt policer overrides over the slowpath defaults', () => {
      assert.deepEqual(
        model.ports.map((port) => [port.name, port.punt]),
        [
          ['lan0', { rate: 20000, burst: 200 }],
          ['wan0', { rate: 5000, burst: 200 }],
        ],
      );
    });

    it('splits the metrics listen address into host and port', () => {
      assert.deepEqual(model.metrics, { listen: '[::1]:9464', host: '::1', port: 9464 });
    });

    it('fills the timeouts left out with their defaults', () => {
      assert.deepEqual(model.flowtable.timeout, { tcp: 300, udp: 30 });
    });
  });

  describe('with VLAN sub-interfaces', () => {
    const model = compileConfig(validConfig('test/fixtures/config/valid/vlans.yaml'));

    it('keeps only the ports with a device as ports', () => {
      assert.deepEqual(
        model.ports.map((port) => [port.name, port.mtu]),
        [
          ['eth0', 9000],
          ['eth1', 1500],
        ],
      );
    });

    it("compiles each VLAN after its parent, with the parent's MTU and MAC unless it has its own, protocol 802.1Q and PCP 0 by default, and a punt policer of its own", () => {
      const mac = (text: string) => ({ text, bytes: Buffer.from(text.split(':').map((octet) => parseInt(octet, 16))) });
      assert.deepEqual(model.vlans, [
        { name: 'eth0.100', parent: 'eth0', port: 'eth0', id: 100, protocol: '802.1Q', mtu: 1500, mac: null, pcp: 5, addresses: [{ text: '192.0.2.1/24', family: 4, bytes: v4(192, 0, 2, 1), length: 24 }], punt: { rate: 500, burst: 1000 } },
        { name: 'eth0.200', parent: 'eth0', port: 'eth0', id: 200, protocol: '802.1Q', mtu: 9000, mac: mac('02:00:00:00:02:00'), pcp: 0, addresses: [{ text: '198.51.100.1/24', family: 4, bytes: v4(198, 51, 100, 1), length: 24 }], punt: { rate: 100000, burst: 1000 } },
        { name: 'eth1.1000', parent: 'eth1', port: 'eth1', id: 1000, protocol: '802.1ad', mtu: 1500, mac: mac('02:00:00:00:00:11'), pcp: 0, addresses: [], punt: { rate: 100000, burst: 1000 } },
        {
          name: 'eth1.1000.20',
          parent: 'eth1.1000',
          port: 'eth1',
          id: 20,
          protocol: '802.1Q',
          mtu: 1400,
          mac: mac('02:00:00:00:00:11'),
          pcp: 0,
          addresses: [{ text: '2001:db8:20::1/64', family: 6, bytes: v6('20010db8002000000000000000000001'), length: 64 }],
          punt: { rate: 100000, burst: 1000 },
        },
      ]);
    });

    it('derives connected routes on the VLANs and takes static routes through them', () => {
      assert.deepEqual(
        model.routes.map((route) => [route.to.text, route.dev, route.origin]),
        [
          ['192.168.0.0/24', 'eth0', 'connected'],
          ['192.0.2.0/24', 'eth0.100', 'connected'],
          ['198.51.100.0/24', 'eth0.200', 'connected'],
          ['203.0.113.0/24', 'eth1', 'connected'],
          ['2001:db8:20::/64', 'eth1.1000.20', 'connected'],
          ['100.64.0.0/30', 'tun0', 'connected'],
          ['10.0.0.0/8', 'eth0.100', 'static'],
          ['default', 'tun0', 'static'],
        ],
      );
    });

    it("runs a tunnel over a QinQ VLAN with an 'auto' MTU of the VLAN's MTU minus the encapsulation", () => {
      assert.equal(model.tunnels[0]?.underlay, 'eth1.1000.20');
      assert.equal(model.tunnels[0]?.mtu, 1400 - 48);
    });

    it("offloads the VLANs over a listed port, and a VLAN listed without its port, but not the port's other VLANs", () => {
      assert.deepEqual([...offloadDevices(model)].sort(), ['eth0', 'eth0.100', 'eth0.200', 'eth1.1000.20']);
    });
  });

  it("resolves an 'auto' tunnel MTU without an encaplimit to the underlay MTU minus 40", () => {
    const config = validConfig('config/seed.yaml');
    const tunnel = config.tunnels.tun0;
    assert.ok(tunnel);
    tunnel.encaplimit = 'none';
    assert.equal(compileConfig(config).tunnels[0]?.mtu, 1460);
  });

  describe('with a tunnel of every mode over one underlay port', () => {
    const model = compileConfig(validConfig('test/fixtures/config/valid/every-tunnel-mode.yaml'));
    const byName = new Map(model.tunnels.map((t) => [t.name, t]));

    it('runs all four over the same port, with outer addresses of its two families', () => {
      assert.deepEqual(
        model.tunnels.map((t) => [t.name, t.mode, t.underlay, t.local.family, t.remote.text]),
        [
          ['t4in6', 'ip4ip6', 'wan0', 6, '2001:db8:2::2'],
          ['t6in6', 'ip6ip6', 'wan0', 6, '2001:db8:2::3'],
          ['t4in4', 'ipip', 'wan0', 4, '198.51.100.2'],
          ['t6in4', 'sit', 'wan0', 4, '198.51.100.3'],
        ],
      );
    });

    it("fills in ip6tnl's defaults over IPv6 and ip tunnel's over IPv4, keeping what is set", () => {
      const settings = (name: string): TunnelSettings => {
        const { name: _name, local: _local, remote: _remote, underlay: _underlay, mtu: _mtu, addresses: _addresses, ...outer } = byName.get(name)!;
        return outer;
      };
      const [t4in6, t6in6, t4in4, t6in4] = ['t4in6', 't6in6', 't4in4', 't6in4'].map(settings);
      assert.deepEqual(t4in6, { mode: 'ip4ip6', encaplimit: 4, hoplimit: 64, tclass: 0, flowlabel: 0 });
      assert.deepEqual(t6in6, { mode: 'ip6ip6', encaplimit: 'none', hoplimit: 64, tclass: 0, flowlabel: 0 });
      // `ip tunnel add` without ttl, tos or nopmtudisc: ttl inherit (0), tos 0, pmtudisc.
      assert.deepEqual(t4in4, { mode: 'ipip', ttl: 'inherit', tos: 0, pmtudisc: false });
      assert.deepEqual(t6in4, { mode: 'sit', ttl: 64, tos: 'inherit', pmtudisc: true });
    });

    it("resolves 'auto' MTUs per mode: 48 or 40 bytes under the underlay's over IPv6, 20 over IPv4", () => {
      assert.deepEqual(
        model.tunnels.map((t) => [t.name, t.mtu]),
        [
          ['t4in6', 1452],
          ['t6in6', 1460],
          ['t4in4', 1480],
          ['t6in4', 1480],
        ],
      );
    });

    it('routes each inner family into the tunnels that carry it', () => {
      assert.deepEqual(
        model.routes.filter((r) => r.dev.startsWith('t')).map((r) => [r.to.text, r.dev, r.metric, r.origin]),
        [
          ['192.168.100.0/30', 't4in6', 0, 'connected'],
          ['2001:db8:100::/64', 't6in6', 256, 'connected'],
          ['192.168.101.0/30', 't4in4', 0, 'connected'],
          ['2001:db8:101::/64', 't6in4', 256, 'connected'],
          ['10.4.0.0/16', 't4in4', 0, 'static'],
          ['2001:db8:6::/48', 't6in4', 1024, 'static'],
        ],
      );
    });
  });

  it('finds no underlay when the best route to the remote leads into a tunnel', () => {
    // An ip6ip6 tunnel whose remote is routed into itself: the resolution refuses to nest a
    // tunnel in a tunnel.
    const config = validConfig('config/seed.yaml');
    config.tunnels.tun1 = { ...config.tunnels.tun0!, mode: 'ip6ip6', remote: '2001:db8:9::2', addresses: ['2001:db8:100::1/64'] };
    config.routes.push({ to: '2001:db8:9::/48', dev: 'tun1' });
    const routes = [...connectedRoutes(config), ...staticRoutes(config)];
    const resolution = resolveUnderlay(config, routes, config.tunnels.tun1);
    assert.equal(resolution.ok, false);
    assert.equal(!resolution.ok && resolution.reason, 'through-tunnel');
  });

  it('refuses to compile a config whose tunnel has no underlay, naming the tunnel', () => {
    const config = validConfig('config/seed.yaml');
    config.tunnels.tun0!.remote = '2001:db8:9::2';
    assert.throws(
      () => compileConfig(config),
      (err: unknown) =>
        err instanceof InvalidArgumentError &&
        err.message === 'compileConfig() needs a config that passed checkConfigText(): tunnel tun0 has no underlay port towards 2001:db8:9::2',
    );
  });
});
