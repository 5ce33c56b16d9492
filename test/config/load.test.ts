import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { FlowgateError } from '../../lib/errors';
import { ConfigError, checkConfigText, compileConfig, formatIssue, loadConfig, type Machine } from '../../lib/config';

const repo = path.resolve(__dirname, '../../..');
const fixtures = path.join(repo, 'test/fixtures/config');
/** A two-CPU machine, like the one the seed config was written for. */
const twoCpus: Machine = { cpus: [0, 1] };

function check(relative: string, machine: Machine = twoCpus) {
  return checkConfigText(readFileSync(path.join(fixtures, relative), 'utf8'), relative, { machine });
}

describe('config loading', () => {
  describe('valid configs', () => {
    it('accepts config/seed.yaml exactly as written', () => {
      const text = readFileSync(path.join(repo, 'config/seed.yaml'), 'utf8');
      const result = checkConfigText(text, 'config/seed.yaml', { machine: twoCpus });
      assert.deepEqual(result.issues, []);
      assert.ok(result.config);
    });

    it('accepts config/minimal.yaml and fills in every default', () => {
      const text = readFileSync(path.join(repo, 'config/minimal.yaml'), 'utf8');
      const { config, issues } = checkConfigText(text, 'config/minimal.yaml', { machine: twoCpus });
      assert.deepEqual(issues, []);
      assert.ok(config);
      assert.deepEqual(config.flowtable, {
        devices: ['eth0', 'eth1'],
        l4proto: ['tcp', 'udp'],
        size: 1048576,
        timeout: { tcp: 30, udp: 30 },
        counter: true,
      });
      assert.deepEqual(config.workers, { cpus: [1], idle: 'busy' });
      assert.deepEqual(config.eal, { args: [], hugepages: 'auto' });
      assert.deepEqual(config.control, { socket: '/run/flowgate/flowgate.sock' });
      assert.deepEqual(config.log, { level: 'info' });
      assert.deepEqual(config.tunnels, {});
      assert.equal(config.metrics, undefined);
      // A port's MTU default is resolved by compilation, where a VLAN's becomes its parent's.
      assert.equal(config.ports.eth0?.mtu, undefined);
      assert.equal(compileConfig(config).ports[0]?.mtu, 1500);
    });

    it('accepts vdev ports, a tunnel underlay reached by a static route and every optional section', () => {
      const { config, issues } = check('valid/vdev-ports-and-every-section.yaml', { cpus: [0, 1, 2, 3] });
      assert.deepEqual(issues.map(formatIssue), []);
      assert.ok(config);
      assert.equal(config.tunnels['tun-peer']?.encaplimit, 'none');
      assert.equal(config.flowtable.timeout.udp, 30, 'a timeout left out keeps its default');
      assert.match(config.nftables ?? '', /^table inet filter \{\n/);
    });

    it('accepts 802.1Q VLANs, an 802.1ad VLAN with a QinQ VLAN inside, and a tunnel over a VLAN', () => {
      const { config, issues } = check('valid/vlans.yaml');
      assert.deepEqual(issues.map(formatIssue), []);
      assert.ok(config);
      assert.deepEqual(config.ports['eth1.1000.20'], { parent: 'eth1.1000', vlan: 20, mtu: 1400, addresses: ['2001:db8:20::1/64'] });
    });
  });

  describe('invalid configs report every problem at FILE:LINE:COL', () => {
    const cases: { behaviour: string; fixture: string; machine?: Machine; issues: string[] }[] = [
      {
        behaviour: 'reports unknown keys at the key, suggesting the closest known key when there is one',
        fixture: 'invalid/unknown-keys.yaml',
        issues: [
          "invalid/unknown-keys.yaml:4:5: ports.eth0.adresses: unknown key 'adresses' (did you mean 'addresses'?)",
          "invalid/unknown-keys.yaml:5:5: ports.eth0.colour: unknown key 'colour'",
          "invalid/unknown-keys.yaml:6:1: tunnel: unknown key 'tunnel' (did you mean 'tunnels'?)",
          "invalid/unknown-keys.yaml:9:14: flowtable.timeout.tpc: unknown key 'tpc' (did you mean 'tcp'?)",
          "invalid/unknown-keys.yaml:12:31: routes[0].gw: unknown key 'gw'",
        ],
      },
      {
        behaviour: 'reports values of the wrong type with what was expected and what was found',
        fixture: 'invalid/wrong-types.yaml',
        issues: [
          'invalid/wrong-types.yaml:3:13: ports.eth0.device: expected a PCI address (DDDD:BB:DD.F) or a DPDK vdev string (net_...), found 3',
          "invalid/wrong-types.yaml:4:10: ports.eth0.mtu: expected an integer 68..9702, found '1500'",
          "invalid/wrong-types.yaml:5:16: ports.eth0.addresses: expected a list of addresses with prefix lengths, found '192.168.0.2/24'",
          'invalid/wrong-types.yaml:6:9: ports.eth1: expected a mapping of port settings, found an empty list',
          "invalid/wrong-types.yaml:8:12: flowtable.devices: expected a non-empty list of port names, found 'eth0'",
          "invalid/wrong-types.yaml:9:12: flowtable.counter: expected true or false, found 'yes'",
          'invalid/wrong-types.yaml:10:18: workers.cpus: expected a non-empty list of CPU numbers, found 1',
          "invalid/wrong-types.yaml:10:27: workers.idle: expected 'busy' or 'adaptive', found true",
          "invalid/wrong-types.yaml:11:6: log: expected a mapping, found 'info'",
        ],
      },
      {
        behaviour: 'reports out-of-range numbers with the range',
        fixture: 'invalid/out-of-range.yaml',
        issues: [
          'invalid/out-of-range.yaml:4:10: ports.eth0.mtu: expected an integer 68..9702, found 9800',
          'invalid/out-of-range.yaml:8:10: ports.eth1.mtu: expected an integer 68..9702, found 67',
          "invalid/out-of-range.yaml:15:17: tunnels.tun0.encaplimit: expected an integer 0..255 or 'none', found 256",
          "invalid/out-of-range.yaml:16:15: tunnels.tun0.hoplimit: expected an integer 1..255 or 'inherit', found 0",
          "invalid/out-of-range.yaml:17:13: tunnels.tun0.tclass: expected an integer 0..255 or 'inherit', found -1",
          "invalid/out-of-range.yaml:18:16: tunnels.tun0.flowlabel: expected an integer 0..1048575 or 'hash', found 1048576",
          "invalid/out-of-range.yaml:19:10: tunnels.tun0.mtu: expected 'auto' or an integer 68..9702, found 1.5",
          'invalid/out-of-range.yaml:22:9: flowtable.size: expected an integer 1024..134217728, found 512',
          'invalid/out-of-range.yaml:23:19: flowtable.timeout.tcp: expected an integer 1..86400, found 0',
          'invalid/out-of-range.yaml:23:27: flowtable.timeout.udp: expected an integer 1..86400, found 86401',
          'invalid/out-of-range.yaml:24:19: workers.cpus[0]: expected a CPU number (an integer >= 0), found -1',
        ],
      },
      {
        behaviour: 'reports missing required keys at the key of the mapping that lacks them',
        fixture: 'invalid/missing-keys.yaml',
        issues: [
          "invalid/missing-keys.yaml:1:1: workers: missing required key 'workers': expected a mapping",
          "invalid/missing-keys.yaml:2:3: ports.eth0.device: missing required key 'device': expected a PCI address (DDDD:BB:DD.F) or a DPDK vdev string (net_...)",
          "invalid/missing-keys.yaml:5:3: tunnels.tun0.remote: missing required key 'remote': expected an IPv4 or IPv6 address",
          "invalid/missing-keys.yaml:9:5: routes[0].dev: missing required key 'dev': expected a port or tunnel name",
          "invalid/missing-keys.yaml:10:1: flowtable.devices: missing required key 'devices': expected a non-empty list of port names",
        ],
      },
      {
        behaviour: 'reports malformed addresses with the reason, and suggests the network of a route prefix with host bits',
        fixture: 'invalid/bad-addresses.yaml',
        issues: [
          "invalid/bad-addresses.yaml:4:10: ports.eth0.mac: expected a MAC address such as 02:00:00:00:00:01, found '00:00:22:33:11' (5 octets instead of 6)",
          "invalid/bad-addresses.yaml:5:17: ports.eth0.addresses[0]: expected an address with a prefix length such as 192.0.2.1/24 or 2001:db8::1/64, found '192.168.0.256/24' (octet '256' is above 255)",
          "invalid/bad-addresses.yaml:5:37: ports.eth0.addresses[1]: expected an address with a prefix length such as 192.0.2.1/24 or 2001:db8::1/64, found '10.0.0.1' (no '/length')",
          "invalid/bad-addresses.yaml:5:49: ports.eth0.addresses[2]: expected an address with a prefix length such as 192.0.2.1/24 or 2001:db8::1/64, found '2001:db8::1::2/64' ('::' appears more than once)",
          "invalid/bad-addresses.yaml:8:10: ports.eth1.mac: expected a unicast MAC address, found '01:00:5e:00:00:01' (the multicast bit of the first octet is set)",
          "invalid/bad-addresses.yaml:13:12: tunnels.tun0.local: expected an IPv6 address such as 2001:db8::1, found '2001:db8:2::g' (group 'g' is not 1-4 hex digits)",
          "invalid/bad-addresses.yaml:16:11: routes[0].to: expected a destination prefix without host bits, found '10.1.2.3/8' (did you mean '10.0.0.0/8'?)",
          "invalid/bad-addresses.yaml:16:28: routes[0].via: expected an IPv4 address such as 192.0.2.1, found 'gateway' (1 dot-separated parts instead of 4)",
          "invalid/bad-addresses.yaml:20:20: metrics.listen: expected host:port such as 127.0.0.1:9464 or [::1]:9464, found 'localhost'",
        ],
      },
      {
        behaviour: "reports a tunnel local address that no port has, listing the ports' addresses",
        fixture: 'invalid/tunnel-local-not-on-port.yaml',
        issues: [
          "invalid/tunnel-local-not-on-port.yaml:11:12: tunnels.tun0.local: expected an address of a port (2001:db8:2::1 on eth1), found '2001:db8:2::99'",
        ],
      },
      {
        behaviour: 'reports a tunnel remote that no port reaches, not counting routes through tunnels',
        fixture: 'invalid/remote-unreachable.yaml',
        issues: [
          "invalid/remote-unreachable.yaml:12:13: tunnels.tun0.remote: expected an address reachable through a port's connected prefix or a route via a port, found '2001:db8:9::2' (no connected prefix or route of a port covers it)",
          "invalid/remote-unreachable.yaml:17:13: tunnels.tun1.remote: expected an address reachable through a port's connected prefix or a route via a port, found '2001:db8:8::2' (no connected prefix or route of a port covers it)",
          "invalid/remote-unreachable.yaml:19:11: routes[0].to: expected an IPv4 destination (ip4ip6 tunnel tun0 carries only IPv4), found IPv6 '2001:db8:8::/48'",
        ],
      },
      {
        behaviour: 'reports routes, flowtable devices and policer overrides that name missing devices, with a suggestion',
        fixture: 'invalid/route-missing-device.yaml',
        issues: [
          "invalid/route-missing-device.yaml:15:45: routes[0].dev: expected the name of a port or tunnel (eth0, eth1 or tun0), found 'tun1' (did you mean 'tun0'?)",
          "invalid/route-missing-device.yaml:16:30: routes[1].dev: expected the name of a port or tunnel (eth0, eth1 or tun0), found 'wan0'",
          "invalid/route-missing-device.yaml:18:19: flowtable.devices[1]: expected a port name (eth0 or eth1), found 'eht1' (did you mean 'eth1'?)",
          "invalid/route-missing-device.yaml:21:12: slowpath.ports.eth2: expected a port name (eth0 or eth1), found 'eth2' (did you mean 'eth0'?)",
        ],
      },
      {
        behaviour: 'reports addresses and next hops of a family the device does not carry, and next hops off its prefixes',
        fixture: 'invalid/family-mismatch.yaml',
        issues: [
          "invalid/family-mismatch.yaml:11:12: tunnels.tun0.local: expected an IPv6 address (ip4ip6 tunnels run over IPv6), found IPv4 '192.168.0.2'",
          "invalid/family-mismatch.yaml:13:17: tunnels.tun0.addresses[0]: expected an IPv4 address (ip4ip6 tunnels carry IPv4), found IPv6 '2001:db8:100::1/64'",
          "invalid/family-mismatch.yaml:15:30: routes[0].via: expected an IPv6 next hop (eth1 has only IPv6 addresses), found IPv4 '192.168.0.1'",
          "invalid/family-mismatch.yaml:16:11: routes[1].to: expected an IPv4 destination (eth0 has only IPv4 addresses), found IPv6 '2001:db8:5::/48'",
          "invalid/family-mismatch.yaml:17:31: routes[2].via: expected an IPv4 next hop for an IPv4 destination, found IPv6 '2001:db8:2::fe'",
          "invalid/family-mismatch.yaml:18:31: routes[3].via: expected a next hop on a connected prefix of eth0 (192.168.0.0/24), found '192.168.1.1'",
        ],
      },
      {
        behaviour: 'reports names shared by a port and a tunnel, devices used twice and flowtable devices listed twice',
        fixture: 'invalid/duplicate-names.yaml',
        issues: [
          "invalid/duplicate-names.yaml:6:13: ports.eth1.device: expected a device not used by another port, found '0000:03:00.0' (also at ports.eth0.device)",
          "invalid/duplicate-names.yaml:9:3: tunnels.eth0: expected a name not used by another port or tunnel, found 'eth0' (also at ports.eth0)",
          "invalid/duplicate-names.yaml:14:25: flowtable.devices[2]: expected each device once, found 'eth1' (also at flowtable.devices[1])",
        ],
      },
      {
        behaviour: 'reports interface names longer than 15 bytes or with characters the kernel refuses',
        fixture: 'invalid/name-too-long.yaml',
        issues: [
          "invalid/name-too-long.yaml:2:3: ports.lan-port-number-0: expected an interface name of at most 15 bytes, found 'lan-port-number-0' (17 bytes)",
          `invalid/name-too-long.yaml:5:3: ports["wan:0"]: expected an interface name without '/', ':', '%' or whitespace, other than '.' and '..', found 'wan:0'`,
        ],
      },
      {
        behaviour: 'reports worker CPUs that the machine does not have, and CPUs listed twice',
        fixture: 'invalid/cpus.yaml',
        issues: [
          'invalid/cpus.yaml:7:22: workers.cpus[1]: expected a CPU of this machine (0-1), found 7',
          'invalid/cpus.yaml:7:25: workers.cpus[2]: expected each CPU once, found 1 (also at workers.cpus[0])',
        ],
      },
      {
        behaviour: 'reports workers that would take every CPU of the machine',
        fixture: 'invalid/all-cpus-taken.yaml',
        issues: [
          'invalid/all-cpus-taken.yaml:7:18: workers.cpus: expected at least one CPU of this machine (0-1) left free of workers for the control thread and the kernel, found all of them taken',
        ],
      },
      {
        behaviour: 'accepts on a larger machine the CPUs it rejects on a smaller one',
        fixture: 'invalid/all-cpus-taken.yaml',
        machine: { cpus: [0, 1, 2] },
        issues: [],
      },
      {
        behaviour: 'reports tunnel MTUs above the underlay MTU less the encapsulation overhead',
        fixture: 'invalid/tunnel-mtu.yaml',
        issues: [
          "invalid/tunnel-mtu.yaml:14:10: tunnels.tun0.mtu: expected 'auto' or an integer 68..1232 (mtu 1280 of underlay port eth1 - 48), found 1500",
          "invalid/tunnel-mtu.yaml:20:10: tunnels.tun1.mtu: expected 'auto' or an integer 68..1240 (mtu 1280 of underlay port eth1 - 40), found 1241",
        ],
      },
      {
        behaviour: "reports a port's keys that do not fit its kind: device with parent, VLAN keys on a device, a VLAN without its id or parent, and VLAN values out of range",
        fixture: 'invalid/vlan-keys.yaml',
        issues: [
          `invalid/vlan-keys.yaml:3:45: ports["eth0.1"].parent: expected either 'device' (a port) or 'parent' (a VLAN sub-interface), found both`,
          `invalid/vlan-keys.yaml:4:43: ports["eth0.2"].vlan: expected 'vlan' only on a VLAN sub-interface (one with 'parent'), found it on a port with a device`,
          `invalid/vlan-keys.yaml:4:56: ports["eth0.2"].protocol: expected 'protocol' only on a VLAN sub-interface (one with 'parent'), found it on a port with a device`,
          `invalid/vlan-keys.yaml:4:70: ports["eth0.2"].pcp: expected 'pcp' only on a VLAN sub-interface (one with 'parent'), found it on a port with a device`,
          `invalid/vlan-keys.yaml:5:3: ports["eth0.3"].vlan: missing required key 'vlan': expected an integer 1..4094`,
          `invalid/vlan-keys.yaml:6:3: ports["eth0.4"].parent: missing required key 'parent': expected a port name`,
          `invalid/vlan-keys.yaml:7:33: ports["eth0.5"].vlan: expected an integer 1..4094, found 0`,
          `invalid/vlan-keys.yaml:8:33: ports["eth0.6"].vlan: expected an integer 1..4094, found 4095`,
          `invalid/vlan-keys.yaml:9:46: ports["eth0.7"].protocol: expected '802.1Q' or '802.1ad', found '802.1q'`,
          `invalid/vlan-keys.yaml:10:41: ports["eth0.8"].pcp: expected an integer 0..7, found 8`,
          `invalid/vlan-keys.yaml:11:21: ports["eth0.9"].parent: expected a port name, found 9`,
          `invalid/vlan-keys.yaml:11:30: ports["eth0.9"].vlan: expected an integer 1..4094, found '9'`,
        ],
      },
      {
        behaviour: 'reports VLANs whose parent is missing or loops, tags stacked other than QinQ, ids used twice on a parent, MTUs above the parent and long names',
        fixture: 'invalid/vlan-structure.yaml',
        issues: [
          `invalid/vlan-structure.yaml:9:23: ports["eth0.100"].parent: expected a port or an 802.1ad VLAN (eth0, eth1 or eth0.20), found 'eht0' (did you mean 'eth0'?)`,
          `invalid/vlan-structure.yaml:10:19: ports["vl.a"].parent: expected a parent that leads to a port with a device, found 'vl.b' (a loop: vl.a -> vl.b -> vl.a)`,
          `invalid/vlan-structure.yaml:11:19: ports["vl.b"].parent: expected a parent that leads to a port with a device, found 'vl.a' (a loop: vl.b -> vl.a -> vl.b)`,
          `invalid/vlan-structure.yaml:13:24: ports["eth0.10.5"].parent: expected a port or an 802.1ad VLAN (QinQ carries an 802.1Q C-tag inside an 802.1ad S-tag), found 802.1Q VLAN 'eth0.10'`,
          `invalid/vlan-structure.yaml:15:52: ports["eth0.20.5"].protocol: expected '802.1Q' on a VLAN over VLAN eth0.20 (an 802.1ad S-tag goes directly on a port), found '802.1ad'`,
          `invalid/vlan-structure.yaml:16:35: ports["eth0.10b"].vlan: expected a VLAN id not used by another sub-interface of eth0, found 10 (also at ports["eth0.10"].vlan)`,
          `invalid/vlan-structure.yaml:17:43: ports["eth0.30"].mtu: expected an integer 68..1500 (the mtu of parent eth0), found 1504`,
          `invalid/vlan-structure.yaml:18:49: ports["eth1.40"].addresses: expected at least 1280 on a port with IPv6 addresses, found 1200 (the mtu of its parent eth1)`,
          `invalid/vlan-structure.yaml:20:3: ports["enp3s0f0np0.1000"]: expected an interface name of at most 15 bytes, found 'enp3s0f0np0.1000' (16 bytes)`,
          `invalid/vlan-structure.yaml:21:39: flowtable.devices[2]: expected a port name (eth0, eth1, eth0.100, vl.a, vl.b, eth0.10, eth0.10.5, eth0.20, eth0.20.5, eth0.10b, eth0.30, eth1.40, enp3s0f0np0.100 or enp3s0f0np0.1000), found 'eth0.11' (did you mean 'eth0.10'?)`,
        ],
      },
      {
        behaviour: "reports a tunnel's keys of the other underlay family, naming the keys its mode takes, and a fixed TTL without pmtudisc",
        fixture: 'invalid/tunnel-mode-keys.yaml',
        issues: [
          "invalid/tunnel-mode-keys.yaml:13:17: tunnels.v4in4.encaplimit: expected no 'encaplimit' in an ipip tunnel (ipip tunnels run over IPv4 and take ttl, tos and pmtudisc), found 4",
          "invalid/tunnel-mode-keys.yaml:14:15: tunnels.v4in4.hoplimit: expected no 'hoplimit' in an ipip tunnel (ipip tunnels run over IPv4 and take ttl, tos and pmtudisc; did you mean 'ttl'?), found 64",
          "invalid/tunnel-mode-keys.yaml:15:13: tunnels.v4in4.tclass: expected no 'tclass' in an ipip tunnel (ipip tunnels run over IPv4 and take ttl, tos and pmtudisc; did you mean 'tos'?), found 'inherit'",
          "invalid/tunnel-mode-keys.yaml:16:16: tunnels.v4in4.flowlabel: expected no 'flowlabel' in an ipip tunnel (ipip tunnels run over IPv4 and take ttl, tos and pmtudisc), found 'hash'",
          "invalid/tunnel-mode-keys.yaml:17:10: tunnels.v4in4.ttl: expected an integer 1..255 or 'inherit', found 0",
          "invalid/tunnel-mode-keys.yaml:18:10: tunnels.v4in4.mtu: expected 'auto' or an integer 68..9702, found 1.5",
          "invalid/tunnel-mode-keys.yaml:23:10: tunnels.v6in6.ttl: expected no 'ttl' in an ip6ip6 tunnel (ip6ip6 tunnels run over IPv6 and take encaplimit, hoplimit, tclass and flowlabel; did you mean 'hoplimit'?), found 64",
          "invalid/tunnel-mode-keys.yaml:24:10: tunnels.v6in6.tos: expected no 'tos' in an ip6ip6 tunnel (ip6ip6 tunnels run over IPv6 and take encaplimit, hoplimit, tclass and flowlabel; did you mean 'tclass'?), found 0",
          "invalid/tunnel-mode-keys.yaml:25:15: tunnels.v6in6.pmtudisc: expected no 'pmtudisc' in an ip6ip6 tunnel (ip6ip6 tunnels run over IPv6 and take encaplimit, hoplimit, tclass and flowlabel), found false",
          "invalid/tunnel-mode-keys.yaml:30:10: tunnels.v6in4.ttl: expected 'inherit' with pmtudisc: false (a fixed TTL needs path MTU discovery, as in ip tunnel), found 64",
          "invalid/tunnel-mode-keys.yaml:31:10: tunnels.v6in4.tos: expected an integer 0..255 or 'inherit', found 256",
          "invalid/tunnel-mode-keys.yaml:37:15: tunnels.v4in6.pmtudisc: expected true or false, found 'yes'",
          "invalid/tunnel-mode-keys.yaml:37:15: tunnels.v4in6.pmtudisc: expected no 'pmtudisc' in an ip4ip6 tunnel (ip4ip6 tunnels run over IPv6 and take encaplimit, hoplimit, tclass and flowlabel), found 'yes'",
          "invalid/tunnel-mode-keys.yaml:39:11: tunnels.bogus.mode: expected one of 'ip4ip6', 'ip6ip6', 'ipip', 'sit', found 'gre'",
          // Hostile shapes: a tunnel that is no mapping, and one without a mode, whose keys no mode can judge.
          'invalid/tunnel-mode-keys.yaml:43:11: tunnels.scalar: expected a mapping of tunnel settings, found 7',
          "invalid/tunnel-mode-keys.yaml:44:3: tunnels.nomode.mode: expected one of 'ip4ip6', 'ip6ip6', 'ipip', 'sit', found nothing",
          "invalid/tunnel-mode-keys.yaml:45:73: tunnels.oddtos.tos: expected an even TOS (Linux's ipip and sit take an odd one as 'inherit'; write 'inherit' for that), found 41",
        ],
      },
      {
        behaviour: "reports each mode's underlay and inner families, unreachable IPv4 remotes, and IPv6-carrying tunnels below 1280",
        fixture: 'invalid/tunnel-modes-cross-field.yaml',
        issues: [
          "invalid/tunnel-modes-cross-field.yaml:12:12: tunnels.sit0.local: expected an IPv4 address (sit tunnels run over IPv4), found IPv6 '2001:db8:2::1'",
          "invalid/tunnel-modes-cross-field.yaml:14:17: tunnels.sit0.addresses[0]: expected an IPv6 address (sit tunnels carry IPv6), found IPv4 '192.168.200.1/24'",
          "invalid/tunnel-modes-cross-field.yaml:17:12: tunnels.sit1.local: expected an address of a port (192.168.0.2 on eth0 or 198.51.100.1 on eth1), found '198.51.100.9'",
          "invalid/tunnel-modes-cross-field.yaml:22:13: tunnels.ipip0.remote: expected an address reachable through a port's connected prefix or a route via a port, found '203.0.113.1' (no connected prefix or route of a port covers it)",
          "invalid/tunnel-modes-cross-field.yaml:23:17: tunnels.ipip0.addresses[0]: expected an IPv4 address (ipip tunnels carry IPv4), found IPv6 '2001:db8:300::1/64'",
          "invalid/tunnel-modes-cross-field.yaml:24:3: tunnels.v6in6.mtu: expected at least 1280 for an ip6ip6 tunnel (it carries IPv6; mtu 1300 of underlay port eth1 - 48 = 1252), found 'auto' = 1252",
          "invalid/tunnel-modes-cross-field.yaml:32:10: tunnels.sit2.mtu: expected at least 1280 for a sit tunnel (it carries IPv6; mtu 1300 of underlay port eth1 - 20 = 1280), found 1279",
          "invalid/tunnel-modes-cross-field.yaml:36:13: tunnels.sit3.remote: expected a local/remote pair not used by another tunnel, found '198.51.100.4' (also at tunnels.sit2.remote)",
        ],
      },
      {
        behaviour: 'reports YAML syntax errors, including duplicate keys, at their position and stops there',
        fixture: 'invalid/yaml-syntax.yaml',
        issues: [
          'invalid/yaml-syntax.yaml:4:1: All mapping items must start at the same column',
          "invalid/yaml-syntax.yaml:5:3: expected each key once in a mapping, found 'eth0' again",
          'invalid/yaml-syntax.yaml:9:1: Flow sequence in block collection must be sufficiently indented and end with a ]',
        ],
      },
      {
        behaviour: 'reports every cross-field problem of a file together, in file order',
        fixture: 'invalid/several-cross-field-errors.yaml',
        issues: [
          'invalid/several-cross-field-errors.yaml:7:10: ports.eth1.mtu: expected at least 1280 on a port with IPv6 addresses, found 1000',
          "invalid/several-cross-field-errors.yaml:9:3: ports.averyveryverylongname: expected an interface name of at most 15 bytes, found 'averyveryverylongname' (21 bytes)",
          "invalid/several-cross-field-errors.yaml:12:3: tunnels.eth0: expected a name not used by another port or tunnel, found 'eth0' (also at ports.eth0)",
          "invalid/several-cross-field-errors.yaml:14:12: tunnels.eth0.local: expected an address of a port (2001:db8:2::1 on eth1), found '2001:db8:2::9'",
          "invalid/several-cross-field-errors.yaml:15:13: tunnels.eth0.remote: expected an address reachable through a port's connected prefix or a route via a port, found '2001:db8:3::2' (no connected prefix or route of a port covers it)",
          "invalid/several-cross-field-errors.yaml:18:12: tunnels.tun0.local: expected an IPv6 address (ip4ip6 tunnels run over IPv6), found IPv4 '192.168.0.2'",
          "invalid/several-cross-field-errors.yaml:20:17: tunnels.tun0.addresses[0]: expected an IPv4 address (ip4ip6 tunnels carry IPv4), found IPv6 '2001:db8:9::1/64'",
          'invalid/several-cross-field-errors.yaml:25:10: tunnels.tun1.mtu: expected \'auto\' or an integer 68..952 (mtu 1000 of underlay port eth1 - 48), found 1460',
          "invalid/several-cross-field-errors.yaml:30:13: tunnels.tun2.remote: expected a local/remote pair not used by another tunnel, found '2001:db8:2::2' (also at tunnels.tun1.remote)",
          "invalid/several-cross-field-errors.yaml:32:45: routes[0].dev: expected the name of a port or tunnel (eth0, eth1, averyveryverylongname, tun0, tun1 or tun2), found 'tun9' (did you mean 'tun0'?)",
          "invalid/several-cross-field-errors.yaml:33:25: routes[1].via: expected an IPv4 next hop (ip4ip6 tunnel tun1 carries only IPv4), found IPv6 '2001:db8:2::fe'",
          "invalid/several-cross-field-errors.yaml:34:30: routes[2].via: expected an IPv6 next hop (eth1 has only IPv6 addresses), found IPv4 '192.168.0.1'",
          "invalid/several-cross-field-errors.yaml:35:30: routes[3].via: expected an IPv4 next hop for an IPv4 destination, found IPv6 '2001:db8:2::fe'",
          "invalid/several-cross-field-errors.yaml:36:25: routes[4].via: expected a next hop on a connected prefix of eth0 (192.168.0.0/24), found '10.9.9.9'",
          "invalid/several-cross-field-errors.yaml:37:11: routes[5].to: expected '0.0.0.0/0' or '::/0' to say which family, or a 'via', found 'default' (averyveryverylongname has no addresses)",
          "invalid/several-cross-field-errors.yaml:38:11: routes[6].to: expected a destination not already routed with the same metric, found '192.168.0.0/24' (also at ports.eth0.addresses[0])",
          "invalid/several-cross-field-errors.yaml:40:11: routes[8].to: expected a destination not already routed with the same metric, found '2001:db8:5::/48' (also at routes[7].to)",
          "invalid/several-cross-field-errors.yaml:42:19: flowtable.devices[1]: expected a port name (a tunnel is offloaded through its underlay port), found tunnel 'tun0'",
          "invalid/several-cross-field-errors.yaml:42:25: flowtable.devices[2]: expected a port name (eth0, eth1 or averyveryverylongname), found 'eht1' (did you mean 'eth1'?)",
          "invalid/several-cross-field-errors.yaml:42:31: flowtable.devices[3]: expected each device once, found 'eth0' (also at flowtable.devices[0])",
          'invalid/several-cross-field-errors.yaml:43:18: workers.cpus: expected at least one CPU of this machine (0-1) left free of workers for the control thread and the kernel, found all of them taken',
          'invalid/several-cross-field-errors.yaml:43:25: workers.cpus[2]: expected a CPU of this machine (0-1), found 7',
          'invalid/several-cross-field-errors.yaml:43:28: workers.cpus[3]: expected each CPU once, found 1 (also at workers.cpus[1])',
          "invalid/several-cross-field-errors.yaml:45:12: slowpath.ports.eth3: expected a port name (eth0, eth1 or averyveryverylongname), found 'eth3' (did you mean 'eth0'?)",
        ],
      },
    ];
    for (const { behaviour, fixture, machine, issues } of cases) {
      it(behaviour, () => {
        const result = check(fixture, machine);
        assert.deepEqual(result.issues.map(formatIssue), issues);
        assert.equal(result.config === undefined, issues.length > 0, 'a config is returned exactly when there is no issue');
      });
    }
  });

  describe('edge cases of the file itself', () => {
    const cases: [string, string, string[]][] = [
      ['reports an empty file as such', '', ['empty.yaml:1:1: expected a mapping of config sections (ports, flowtable, workers...), found an empty file']],
      ['reports a comment-only file as empty', '# nothing yet\n', ['empty.yaml:1:1: expected a mapping of config sections (ports, flowtable, workers...), found an empty file']],
      ['reports a top-level list', '- eth0\n', ['empty.yaml:1:1: expected a mapping of config sections (ports, flowtable, workers...), found a list']],
      ['reports a second YAML document', 'log: { level: info }\n---\nlog: {}\n', ["empty.yaml:2:1: expected a single YAML document, found a second one ('---')"]],
      ['reports an alias without an anchor', 'ports: *lan\n', ["empty.yaml:1:8: expected an alias of an earlier anchor, found '*lan'"]],
      ['reports an empty ports mapping', 'ports: {}\nflowtable: { devices: [eth0] }\nworkers: { cpus: [1] }\n', ['empty.yaml:1:8: ports: expected at least one port, found an empty mapping']],
    ];
    for (const [behaviour, text, issues] of cases) {
      it(behaviour, () => {
        assert.deepEqual(checkConfigText(text, 'empty.yaml', { machine: twoCpus }).issues.map(formatIssue), issues);
      });
    }

    it('accepts two ports on one subnet, whose connected routes the kernel keeps side by side', () => {
      const text = [
        'ports:',
        '  eth0: { device: "0000:03:00.0", addresses: ["192.168.0.2/24"] }',
        '  eth1: { device: "0000:03:00.1", addresses: ["192.168.0.3/24"] }',
        'flowtable: { devices: [eth0, eth1] }',
        'workers: { cpus: [1] }',
        '',
      ].join('\n');
      assert.deepEqual(checkConfigText(text, 'a.yaml', { machine: twoCpus }).issues, []);
    });

    it('follows anchors and aliases when validating and when pointing at a problem', () => {
      const text = [
        'ports:',
        '  eth0: &port',
        '    device: "0000:03:00.0"',
        '    mtu: 20',
        '  eth1: *port',
        'flowtable: { devices: [eth0] }',
        'workers: { cpus: [1] }',
        '',
      ].join('\n');
      assert.deepEqual(checkConfigText(text, 'a.yaml', { machine: twoCpus }).issues.map(formatIssue), [
        'a.yaml:4:10: ports.eth0.mtu: expected an integer 68..9702, found 20',
        'a.yaml:4:10: ports.eth1.mtu: expected an integer 68..9702, found 20',
      ]);
    });
  });

  describe('VLAN edge cases', () => {
    const text = (...ports: string[]) =>
      ['ports:', '  eth0: { device: "0000:03:00.0", addresses: ["192.168.0.2/24"] }', ...ports.map((port) => `  ${port}`), 'flowtable: { devices: [eth0] }', 'workers: { cpus: [1] }', ''].join('\n');
    const issues = (...ports: string[]) => checkConfigText(text(...ports), 'v.yaml', { machine: twoCpus }).issues.map(formatIssue);

    it('reports a VLAN that is its own parent as a loop', () => {
      assert.deepEqual(issues('eth0.5: { parent: eth0.5, vlan: 5 }'), [
        `v.yaml:3:21: ports["eth0.5"].parent: expected a parent that leads to a port with a device, found 'eth0.5' (a loop: eth0.5 -> eth0.5)`,
      ]);
    });

    it('reports a missing parent once, where it is named, not again for the VLANs over that VLAN', () => {
      assert.deepEqual(issues('s: { parent: eth9, vlan: 1, protocol: 802.1ad }', 'c: { parent: s, vlan: 2 }'), [
        `v.yaml:3:16: ports.s.parent: expected a port or an 802.1ad VLAN (eth0), found 'eth9' (did you mean 'eth0'?)`,
      ]);
    });

    it('reports a third tag: a VLAN on the 802.1Q VLAN inside an 802.1ad one', () => {
      assert.deepEqual(issues('s: { parent: eth0, vlan: 1, protocol: 802.1ad }', 'c: { parent: s, vlan: 2 }', 'x: { parent: c, vlan: 3 }'), [
        `v.yaml:5:16: ports.x.parent: expected a port or an 802.1ad VLAN (QinQ carries an 802.1Q C-tag inside an 802.1ad S-tag), found 802.1Q VLAN 'c'`,
      ]);
    });

    it('reports an 802.1ad VLAN on an af_packet port, whose outer tags DPDK receives as 802.1Q', () => {
      assert.deepEqual(issues('eth1: { device: "net_af_packet0,iface=veth1" }', 'eth1.1000: { parent: eth1, vlan: 1000, protocol: 802.1ad }', 'eth1.100: { parent: eth1, vlan: 100 }'), [
        `v.yaml:4:52: ports["eth1.1000"].protocol: expected '802.1Q' on a VLAN of af_packet port eth1 (DPDK's af_packet PMD receives every outer tag as 802.1Q), found '802.1ad'`,
      ]);
    });

    it('reports a tunnel named as a VLAN parent as no port', () => {
      const config = [text('eth0.7: { parent: tun0, vlan: 7 }').trimEnd(), 'tunnels:', '  tun0: { mode: ip4ip6, local: "2001:db8::1", remote: "2001:db8::2" }', ''].join('\n');
      const found = checkConfigText(config, 'v.yaml', { machine: twoCpus }).issues.map(formatIssue);
      assert.ok(found.includes(`v.yaml:3:21: ports["eth0.7"].parent: expected a port or an 802.1ad VLAN (eth0), found 'tun0'`), found.join('\n'));
    });

    it('accepts a port with a device whose name looks like a VLAN, and the same id on two parents', () => {
      assert.deepEqual(issues('eth1.100: { device: "0000:03:00.1" }', 'eth0.100: { parent: eth0, vlan: 100 }', 'eth1.100.100: { parent: eth1.100, vlan: 100 }'), []);
    });
  });

  describe('loadConfig', () => {
    it('reads and validates a file', async () => {
      const config = await loadConfig(path.join(repo, 'config/seed.yaml'), { machine: twoCpus });
      assert.equal(config.tunnels.tun0?.remote, '2001:db8:2::2');
    });

    it('throws a ConfigError holding every issue and listing them in its message', async () => {
      const file = path.join(fixtures, 'invalid/cpus.yaml');
      await assert.rejects(loadConfig(file, { machine: twoCpus }), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.ok(err instanceof FlowgateError);
        assert.equal(err.code, 'ERR_FLOWGATE_CONFIG');
        assert.equal(err.issues.length, 2);
        assert.deepEqual(err.issues[0], {
          file,
          line: 7,
          col: 22,
          path: 'workers.cpus[1]',
          message: 'expected a CPU of this machine (0-1), found 7',
        });
        assert.equal(
          err.message,
          [
            'invalid config (2 problems):',
            `${file}:7:22: workers.cpus[1]: expected a CPU of this machine (0-1), found 7`,
            `${file}:7:25: workers.cpus[2]: expected each CPU once, found 1 (also at workers.cpus[0])`,
          ].join('\n'),
        );
        return true;
      });
    });

    it('throws a ConfigError naming a file it cannot read', async () => {
      const file = path.join(fixtures, 'does-not-exist.yaml');
      await assert.rejects(loadConfig(file, { machine: twoCpus }), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.issues.length, 1);
        assert.match(err.message, /does-not-exist\.yaml:1:1: expected a readable config file, found: ENOENT/);
        return true;
      });
    });
  });
});
