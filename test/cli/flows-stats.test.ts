// `flowgate flows` and `flowgate stats` against a control socket served in this process from a
// view with fixed figures: what is under test is the commands' output, not the gateway.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { detectMachine } from '../../lib/config';
import { ControlServer } from '../../lib/control';
import { formatFlow } from '../../lib/cli/flows';
import { formatDuration } from '../../lib/cli/stats';
import type { GatewayFlow } from '../../lib/gateway/types';
import { FixedView, fixedFlows, fixedStats } from '../control/fixed-view';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');

interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI without blocking this process, which serves the socket it talks to. */
function flowgate(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [main, ...args], { cwd: repo, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      const status = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ status, stdout, stderr });
    });
  });
}

function jsonLines(text: string): GatewayFlow[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as GatewayFlow);
}

describe('flowgate flows and stats', () => {
  let dir: string;
  let socketPath: string;
  let server: ControlServer;
  let view: FixedView;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-'));
    socketPath = path.join(dir, 'flowgate.sock');
    view = new FixedView();
    server = await ControlServer.listen({ socketPath, view });
  });

  afterEach(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('flows', () => {
    it('lists each flow like conntrack -L: protocol, idle, state, original tuple, reply tuple, tunnel and its mode', async () => {
      const r = await flowgate('flows', '--socket', socketPath);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(
        r.stdout,
        'tcp      6 idle=3 offloaded src=192.168.0.10 dst=10.0.0.1 sport=43210 dport=443 in=eth0 out=tun0 packets=10 bytes=1500 ' +
          'src=10.0.0.1 dst=192.168.0.10 sport=443 dport=43210 in=tun0 out=eth0 packets=8 bytes=9000 tunnel=tun0 tunnel_mode=ip4ip6 id=17\n' +
          'udp      17 idle=0 teardown src=2001:db8:1::10 dst=2001:db8:2::20 sport=5353 dport=53 in=eth0 out=eth1 packets=1 bytes=80 ' +
          '[UNREPLIED] src=2001:db8:2::20 dst=2001:db8:2::1 sport=53 dport=61000 id=18\n',
      );
      assert.equal(r.stderr, 'flowgate v0.1.0: 2 flow entries have been shown.\n');
    });

    it('prints the flows as JSON lines, an object each with proto, src, dst, sport, dport, in, out, packets and bytes', async () => {
      const r = await flowgate('flows', '--json', '--socket', socketPath);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      const flows = jsonLines(r.stdout);
      assert.deepEqual(flows, fixedFlows());
      for (const flow of flows) {
        for (const key of ['proto', 'src', 'dst', 'sport', 'dport', 'in', 'out', 'packets', 'bytes']) assert.ok(key in flow, key);
      }
    });

    it('prints nothing on stdout when no flow is offloaded', async () => {
      view.flowsValue = [];
      const r = await flowgate('flows', '--socket', socketPath);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, 'flowgate v0.1.0: 0 flow entries have been shown.\n');
      const json = await flowgate('flows', '--json', '--socket', socketPath);
      assert.equal(json.stdout, '');
    });

    it('lists only the flows that match every filter given', async () => {
      const ids = async (...filters: string[]) => {
        const r = await flowgate('flows', '--json', '--socket', socketPath, ...filters);
        assert.equal(r.status, 0, r.stderr);
        return jsonLines(r.stdout).map((f) => f.id);
      };
      assert.deepEqual(await ids('--proto', 'tcp'), [17]);
      assert.deepEqual(await ids('--src', '2001:db8:1::/48'), [18]);
      assert.deepEqual(await ids('--dst', '10.0.0.1'), [17]);
      assert.deepEqual(await ids('--port', '53'), [18]);
      assert.deepEqual(await ids('--tunnel', 'tun0'), [17]);
      assert.deepEqual(await ids('--state', 'offloaded'), [17]);
      assert.deepEqual(await ids('--proto', 'udp', '--state', 'offloaded'), []);
      const text = await flowgate('flows', '--socket', socketPath, '--port', '443');
      assert.equal(text.stdout, `${formatFlow(fixedFlows()[0]!)}\n`);
      assert.equal(text.stderr, 'flowgate v0.1.0: 1 flow entry has been shown.\n');
    });

    it('prints only the number of matching flows with --count', async () => {
      assert.deepEqual(await flowgate('flows', '--count', '--socket', socketPath), { status: 0, stdout: '2\n', stderr: '' });
      assert.deepEqual(await flowgate('flows', '--count', '--proto', 'udp', '--socket', socketPath), { status: 0, stdout: '1\n', stderr: '' });
    });

    it('refuses a filter it cannot use with a message naming the option, and exits 2', async () => {
      const cases: [string[], string][] = [
        [['--proto', 'icmp'], "--proto: expected tcp, udp, found 'icmp'"],
        [['--state', 'open'], "--state: expected offloaded, closing, teardown, found 'open'"],
        [['--port', 'http'], "--port: expected a port number 0..65535, found 'http'"],
        [['--port', '70000'], '--port: expected a port number 0..65535, found 70000'],
        [['--dst', '10.0.0.0/33'], "--dst: expected an IPv4 or IPv6 address, or a prefix ADDR/LEN, found '10.0.0.0/33'"],
        [['--src', 'lan'], "--src: expected an IPv4 or IPv6 address, or a prefix ADDR/LEN, found 'lan'"],
        [['--json', '--count'], 'give --json or --count, not both'],
      ];
      for (const [args, message] of cases) {
        const r = await flowgate('flows', '--socket', socketPath, ...args);
        assert.equal(r.status, 2, args.join(' '));
        assert.ok(r.stderr.startsWith(`flowgate flows: ${message}`), r.stderr);
        assert.match(r.stderr, /\n\nusage: flowgate flows /);
      }
    });

    it('exits quietly with status 0 when the reader of its output goes away (flowgate flows | head -1)', async () => {
      // Enough flows that the output outlasts a pipe buffer after head has gone.
      const [template] = fixedFlows();
      view.flowsValue = Array.from({ length: 20_000 }, (_, id) => ({ ...template!, id }));
      view.pageSize = 1000;
      const pipeline = `set -o pipefail; ${JSON.stringify(process.execPath)} ${JSON.stringify(main)} flows --socket ${JSON.stringify(socketPath)} | head -1`;
      const r = await new Promise<Result>((resolve) =>
        execFile('bash', ['-c', pipeline], { encoding: 'utf8' }, (err, stdout, stderr) =>
          resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
        ),
      );
      assert.equal(r.stderr, '');
      assert.equal(r.status, 0, 'the pipeline, flowgate included, succeeded');
      assert.equal(r.stdout, `${formatFlow({ ...template!, id: 0 })}\n`);
    });
  });

  describe('stats', () => {
    it('prints a readable summary of ports, fast path, slow path, drops, flows, learner and workers', async () => {
      const r = await flowgate('stats', '--socket', socketPath);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(
        r.stdout,
        [
          'uptime     1d 02:03:04',
          '',
          'port  rx packets  rx bytes  rx dropped  rx errors  tx packets  tx bytes  tx dropped  tx errors',
          'eth0        1200    180000           3          1        1100    170000           2          0',
          'eth1        2300    290000           0          0        2200    280000           0          4',
          '',
          'fast path  packets 3000, bytes 420000',
          'slow path  packets 200 (miss 180, teardown 20), policed 7',
          'drops      packets 5 (truncated 5)',
          'flows      active 3, entries 6 of 1048576, added 10, removed 7 (idle 5, teardown 2), insert failures 1',
          'learner    observations 400, lost 2, offload latency p50 1.25 ms, p99 4.00 ms',
          'conntrack  queries 60, not found 1, refused 43 (not_established 40, helper 3), updates 9, update failures 1, events 12, resyncs 0',
          'kernel     routes 1000003 IPv4, 12 IPv6; events 41 in 9 batches, errors 1, resyncs 1, next hops moved 2, MTUs refused 1',
          'memory     mbufs 2048 of 32767 in use, rss 94.2 MiB, event loop delay p99 3.50 ms, max 12.25 ms',
          '',
          'worker  cpu   busy  rx packets  fast packets',
          '0         1  12.5%        3500          3000',
          '',
        ].join('\n'),
      );
    });

    it('prints the counters as JSON with ports.<name>.{rx_packets,tx_packets}, fastpath, slowpath.packets and flows.active', async () => {
      const r = await flowgate('stats', '--json', '--socket', socketPath);
      assert.equal(r.status, 0, r.stderr);
      const stats = JSON.parse(r.stdout) as ReturnType<typeof fixedStats>;
      assert.deepEqual(stats, fixedStats());
      assert.equal(stats.ports.eth0?.rx_packets, 1200);
      assert.equal(stats.ports.eth1?.tx_packets, 2200);
      assert.deepEqual(stats.fastpath, { packets: 3000, bytes: 420000 });
      assert.equal(stats.slowpath.packets, 200);
      assert.equal(stats.flows.active, 3);
    });
  });

  it('finds the socket through control.socket of the config given with -c', async () => {
    const cpus = detectMachine().cpus;
    const config = path.join(dir, 'flowgate.yaml');
    writeFileSync(
      config,
      [
        'ports:',
        '  eth0: { device: "net_null0", addresses: ["192.168.0.1/24"] }',
        'flowtable: { devices: [eth0] }',
        `workers: { cpus: [${cpus[cpus.length - 1]}] }`,
        `control: { socket: "${socketPath}" }`,
        '',
      ].join('\n'),
    );
    const r = await flowgate('stats', '--json', '-c', config);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), fixedStats());
  });

  it('says why when -c names an invalid config, and suggests --socket', async () => {
    const config = path.join(dir, 'broken.yaml');
    writeFileSync(config, 'ports: 5\n');
    const r = await flowgate('flows', '-c', config);
    assert.equal(r.status, 1);
    assert.ok(r.stderr.startsWith(`flowgate flows: cannot read control.socket from ${config}: the config is invalid (use --socket PATH):\n`), r.stderr);
    assert.ok(r.stderr.includes(`${config}:1:8: ports: expected a mapping of port names to port settings, found 5\n`), r.stderr);
  });

  it('fails with one line naming the socket when no instance serves it', async () => {
    const missing = path.join(dir, 'nobody.sock');
    for (const command of ['flows', 'stats']) {
      const r = await flowgate(command, '--socket', missing);
      assert.equal(r.status, 1);
      assert.equal(
        r.stderr,
        `flowgate: no flowgate is serving ${missing}: the socket does not exist (is 'flowgate run' running with this control.socket?) [ERR_FLOWGATE_CONTROL_UNAVAILABLE]\n`,
      );
    }
  });

  it('refuses -c together with --socket', async () => {
    const r = await flowgate('stats', '-c', 'config/seed.yaml', '--socket', socketPath);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^flowgate stats: give -c FILE or --socket PATH, not both\n/);
  });

  describe('formatting', () => {
    it('shows idle time in whole seconds, as conntrack shows its timeout', () => {
      const [flow] = fixedFlows();
      assert.match(formatFlow({ ...flow!, idle: 59.99 }), / idle=59 /);
    });

    it('shows uptime as hh:mm:ss, with days when there are some', () => {
      assert.equal(formatDuration(0), '00:00:00');
      assert.equal(formatDuration(3599.9), '00:59:59');
      assert.equal(formatDuration(86400 * 3 + 61), '3d 00:01:01');
    });
  });
});
