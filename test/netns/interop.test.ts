// Interop with the real Linux ip6tnl: site A is flowgate, the far end of its tunnel a stock
// Debian kernel under qemu (test/helpers/vm.ts), whose TAP is a port of the underlay bridge.
// The host behind the far end is a namespace in the guest, so that the guest forwards
// between it and its ip6tnl as a gateway does.
//
//   lan 192.168.0.10 ── [site A: flowgate] ══ br0 ══ u-vm ─ qemu: eth0 2001:db8:2::2
//                                                            tun0 ip6tnl 192.168.100.2
//                                                            netns remote 10.0.0.10
//
// Once with the Tunnel Encapsulation Limit option (encaplimit 4, both ends), once without
// (encaplimit none): one boot each.

import assert from 'node:assert/strict';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { LinuxVm } from '../helpers/vm';
import { Capture, delta, flowOf, HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, until } from './support';

const VM_TAP = 'u-vm';
const VM_MAC = '52:54:00:f9:00:22';
const SITE_A_UNDERLAY_MAC = '00:11:22:33:11:55';
const VM_NETNS = 'remote';
const ECHO_PORT = 7;
const ETHER_LENGTH = 14;
/** Inner IPv4 packets of 64 bytes: an echo with 36 bytes of data, a UDP datagram of 36. */
const PAYLOAD = 36;
const INNER_LENGTH = 20 + 8 + PAYLOAD;

/** The outer headers of an encapsulated frame (IPv6, and the destination options when present), flow label cleared, addresses apart. */
function outerTemplate(frame: Buffer): { header: string; src: string; dst: string } {
  const ip6 = Buffer.from(frame.subarray(ETHER_LENGTH, ETHER_LENGTH + 40));
  const options = ip6[6] === 60 ? frame.subarray(ETHER_LENGTH + 40, ETHER_LENGTH + 48).toString('hex') : '';
  const src = ip6.subarray(8, 24).toString('hex');
  const dst = ip6.subarray(24, 40).toString('hex');
  ip6[1] = (ip6[1] ?? 0) & 0xf0;
  ip6[2] = 0;
  ip6[3] = 0;
  return { header: ip6.subarray(0, 8).toString('hex') + options, src, dst };
}

function macOfFrame(frame: Buffer, offset: number): string {
  return [...frame.subarray(offset, offset + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

for (const encaplimit of [4, 'none'] as const) {
  describe(`interop: Linux's ip6tnl in a VM as the far end of site A's tunnel, encaplimit ${encaplimit} at both ends`, function () {
    this.timeout(TEST_TIMEOUT_MS);
    let topology: DemoTopology | undefined;
    let vm: LinuxVm | undefined;

    before(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      topology = await DemoTopology.create({
        farEnd: 'external',
        prefix: 'fgtvm',
        privateSockets: true,
        configure: {
          a: (config) => {
            const tunnel = config.tunnels?.tun0;
            assert.ok(tunnel !== undefined);
            tunnel.encaplimit = encaplimit;
          },
        },
      });
      vm = await LinuxVm.boot({
        netns: topology.ns.underlay,
        tap: VM_TAP,
        mac: VM_MAC,
        bootTimeoutMs: 90_000,
        scenario: {
          underlay: [`${DEMO_ADDRESSES.underlayB}/${DEMO_ADDRESSES.underlayPrefix}`],
          tunnel: {
            local: DEMO_ADDRESSES.underlayB,
            remote: DEMO_ADDRESSES.underlayA,
            encaplimit,
            hoplimit: 64,
            tclass: 0,
            address: `${DEMO_ADDRESSES.tunnelB}/${DEMO_ADDRESSES.tunnelPrefix}`,
          },
          behind: { kind: 'netns', name: VM_NETNS, address: `${DEMO_ADDRESSES.remoteHost}/${DEMO_ADDRESSES.remotePrefix}`, gateway: `${DEMO_ADDRESSES.siteBLan}/${DEMO_ADDRESSES.remotePrefix}` },
          routes: [{ to: `192.168.0.0/${DEMO_ADDRESSES.lanPrefix}` }],
        },
      });
      await topology.attachToUnderlay(VM_TAP);
      await topology.start();
    });

    after(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      try {
        await vm?.shutdown();
      } finally {
        await topology?.destroy();
      }
    });

    const site = () => (topology as DemoTopology).site('a');

    it('answers ping both ways between the LAN host and the host behind the VM', async () => {
      const t = topology as DemoTopology;
      assert.match(await t.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', DEMO_ADDRESSES.remoteHost]), / 0% packet loss/);
      assert.match(await (vm as LinuxVm).exec(`ip netns exec ${VM_NETNS} ping -c 3 -W 5 ${DEMO_ADDRESSES.lanHost}`), / 0% packet loss/);
    });

    it('carries a TCP stream to the host behind the VM and its echo back byte for byte, offloaded at site A both ways', async () => {
      const t = topology as DemoTopology;
      await (vm as LinuxVm).startTcpService({ kind: 'echo' }, ECHO_PORT, VM_NETNS);
      const bytes = 512 * 1024;
      // The close only once the echo is back: after the FIN the flow leaves the fast path.
      const source = startTraffic(t.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: ECHO_PORT, bytes, gate: true, expectBytes: bytes }, { timeoutMs: 90_000 });
      await source.ready;
      const flow = await until('site A to offload the connection', async () => flowOf(await site().flows(), 'tcp', { dport: ECHO_PORT }));
      assert.deepEqual([flow.in, flow.out, flow.reply?.in, flow.reply?.out], ['eth0', 'tun0', 'tun0', 'eth0']);
      const before = await site().stats();
      source.next();
      const sent = await source.result;
      const d = delta(before, await site().stats());

      assert.equal(sent.receivedBytes, bytes, 'the whole echo came back');
      assert.equal(sent.receivedSha256, sent.sha256, 'byte for byte');
      // Encapsulation (LAN to VM) and decapsulation (the echo) both on the fast path.
      assert.ok(d.fast / (d.fast + d.slow) >= 0.9, `fast-path share < 90 %: ${JSON.stringify(d)}`);
    });

    it("encapsulates, in the slow path and the fast path, with the outer headers Linux's ip6tnl builds (flow label aside)", async () => {
      const t = topology as DemoTopology;
      // On the VM's bridge port: the bridge device itself sees only what is addressed to it.
      const capture = await Capture.start(t, 'underlay', VM_TAP, 'ip6 and (ip6 proto 4 or ip6 proto 60)');
      const before = await site().stats();
      let frames: Buffer[];
      try {
        // Echo requests (not offloaded: flowgate's slow-path encapsulation) and replies (Linux's), ...
        await t.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', '-s', String(PAYLOAD), DEMO_ADDRESSES.remoteHost]);
        // ... and a UDP stream, offloaded after its first datagram (the fast path's), all with 64-byte inner packets.
        await startTraffic(t.ns.lan, { kind: 'udp-peer', bind: 7002, peer: { host: DEMO_ADDRESSES.remoteHost, port: 7001 }, pps: 200, count: 20, size: PAYLOAD }).result;
      } finally {
        frames = await capture.stop();
      }
      const d = delta(before, await site().stats());
      assert.ok(d.fast >= 15, `the UDP stream went through the fast path: ${JSON.stringify(d)}`);

      const fromFlowgate = frames.filter((f) => macOfFrame(f, 6) === SITE_A_UNDERLAY_MAC);
      const fromLinux = frames.filter((f) => macOfFrame(f, 6) === VM_MAC && f.length === ETHER_LENGTH + 40 + (encaplimit === 'none' ? 0 : 8) + INNER_LENGTH);
      assert.ok(fromFlowgate.length >= 3 + 20, `flowgate's frames captured: ${fromFlowgate.length}`);
      assert.ok(fromLinux.length >= 3, `Linux's echo replies captured: ${fromLinux.length}`);

      const linux = outerTemplate(fromLinux[0] as Buffer);
      const option = encaplimit === 'none' ? '' : '0400040104010100';
      assert.equal(linux.header, `60000000${(INNER_LENGTH + option.length / 2).toString(16).padStart(4, '0')}${encaplimit === 'none' ? '04' : '3c'}40${option}`, "Linux's own outer headers, as documented in test/interop/README.md");
      for (const frame of fromFlowgate) {
        const ours = outerTemplate(frame);
        assert.equal(ours.header, linux.header, `outer headers of flowgate's ${frame.length}-byte frame`);
        assert.deepEqual([ours.src, ours.dst], [linux.dst, linux.src], 'the same tunnel, the other way');
      }
    });
  });
}
