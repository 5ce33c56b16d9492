// kill -9 in the middle of a TCP stream, then a restart, as systemd's Restart=on-failure
// does: the new instance takes over what the dead one left in the kernel (its journal
// under the runtime directory), forwarding resumes, the connection carries on byte for byte
// and is offloaded again; after a clean stop the kernel is as it was before the first start.
//
//   lan 192.168.0.10 ── [site A: killed and restarted] ══ ip4ip6 ══ [site B] ── remote 10.0.0.10

import assert from 'node:assert/strict';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { flowOf, HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, until } from './support';

const PORT = 5301;
/** What the kernel mirror changes namespace-wide; their values before the first start must come back. */
const SYSCTLS = ['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding', 'net.ipv4.conf.all.accept_redirects'];

describe('kill -9 and restart (crash-safe kernel state, connections kept)', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;
  let sysctlsBefore: string;

  const sysctls = async () => (await topology.run('a', ['sysctl', '-n', ...SYSCTLS])).trim();

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.create({ farEnd: 'flowgate', prefix: 'fgrst', privateSockets: true });
    sysctlsBefore = await sysctls();
    await topology.start();
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('carries a TCP stream on across kill -9 and a restart of site A, byte for byte, and offloads it again', async () => {
    const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: PORT });
    await sink.ready;
    const source = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: PORT, seconds: 25 }, { timeoutMs: 90_000 });
    try {
      await source.ready;
      const before = await until('the stream offloaded at site A', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: PORT }));
      const killedAt = performance.now();
      await topology.restartSite('a', undefined, { crash: true });
      const readyS = (performance.now() - killedAt) / 1000;
      const after = await until('the stream offloaded again at site A', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: PORT }));
      const offloadedS = (performance.now() - killedAt) / 1000;
      console.log(`      kill -9 to the restarted instance ready: ${readyS.toFixed(2)} s; to the connection offloaded again: ${offloadedS.toFixed(2)} s`);
      assert.equal(after.sport, before.sport, 'the same connection');
      const [sent, received] = await Promise.all([source.result, sink.result]);
      assert.ok(sent.bytes > 0);
      assert.deepEqual({ bytes: received.bytes, sha256: received.sha256 }, { bytes: sent.bytes, sha256: sent.sha256 }, 'every byte arrived, in order, on the one connection');
    } finally {
      source.kill();
      sink.kill();
    }
  });

  it('gives back the sysctls of before the first start once the restarted instance stops', async () => {
    await topology.stopSite('a');
    assert.equal(await sysctls(), sysctlsBefore);
  });
});
