// `flowgate stats --watch` and `--xstats`: the rate computation as a pure function, and the
// command against a control socket served in this process from views with made-up figures
// (test/gateway/stats-watch.test.ts runs them against a real instance with traffic).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { formatXstats, normalizeWatch } from '../../lib/cli/stats';
import { computeRates, PORT_RATES } from '../../lib/cli/stats-rates';
import { formatRate, terminalFrame, type WatchRecord } from '../../lib/cli/stats-watch';
import { ControlServer } from '../../lib/control';
import type { GatewayStats } from '../../lib/gateway/types';
import { FixedView, fixedStats, fixedXstats } from '../control/fixed-view';
import { until } from '../helpers/wait';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');

interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: repo, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

const flowgate = (...args: string[]) => run(process.execPath, [main, ...args]);

/** `stats` a second later of the instance's time, with each counter grown by `grow` of its own. */
function later(stats: GatewayStats, seconds: number, grow: (n: number) => number = (n) => n): GatewayStats {
  const next = structuredClone(stats);
  next.monotonic += seconds;
  next.uptime += seconds;
  for (const counters of Object.values(next.ports)) for (const { counter } of PORT_RATES) counters[counter] += grow(counters[counter]);
  next.fastpath = { packets: stats.fastpath.packets + grow(stats.fastpath.packets), bytes: stats.fastpath.bytes + grow(stats.fastpath.bytes) };
  next.flows.added += 4;
  next.flows.removed += 2;
  next.flows.removed_by = { idle: (stats.flows.removed_by.idle ?? 0) + 2, teardown: stats.flows.removed_by.teardown ?? 0 };
  next.slowpath.reasons = { miss: (stats.slowpath.reasons.miss ?? 0) + 30, teardown: stats.slowpath.reasons.teardown ?? 0 };
  next.slowpath.packets += 30;
  return next;
}

describe('stats rates', () => {
  it('divides each counter difference by the seconds of the instance between the samples, bytes as bits', () => {
    const start = fixedStats();
    const end = later(start, 2);
    const { interval, rates, notes } = computeRates(start, end);
    assert.deepEqual(interval, { start: start.monotonic, end: start.monotonic + 2, seconds: 2 });
    assert.deepEqual(notes, []);
    assert.ok(rates !== null);
    assert.deepEqual(rates.ports.eth0, {
      rx_packets: 600,
      rx_bits: 720000,
      rx_dropped: 1.5,
      rx_errors: 0.5,
      tx_packets: 550,
      tx_bits: 680000,
      tx_dropped: 1,
      tx_errors: 0,
    });
    assert.deepEqual(rates.fastpath, { packets: 1500, bits: 1680000 });
    assert.deepEqual(rates.slowpath, { packets: 15, reasons: { miss: 15, teardown: 0 }, policed: 0 });
    assert.deepEqual(rates.drops, { packets: 0, reasons: { truncated: 0 } });
    assert.deepEqual(rates.flows, { added: 2, removed: 1, removed_by: { idle: 1, teardown: 0 } });
  });

  it('gives no rate, never a negative one, for a port counter that went backwards, and says which', () => {
    const start = fixedStats();
    const end = later(start, 1);
    // eth1 re-added: its device counts from zero again.
    end.ports.eth1 = { ...end.ports.eth1!, rx_packets: 5, rx_bytes: 500 };
    const { rates, notes } = computeRates(start, end);
    assert.ok(rates !== null);
    assert.equal(rates.ports.eth1?.rx_packets, null);
    assert.equal(rates.ports.eth1?.rx_bits, null);
    assert.equal(rates.ports.eth1?.tx_packets, 2200, 'the counters that did not go backwards keep their rates');
    assert.equal(rates.ports.eth0?.rx_packets, 1200);
    assert.deepEqual(notes, ['eth1: rx_packets, rx_bytes went backwards (the port was restarted or re-added): no rate for them']);
  });

  it('gives no rate for any other counter that went backwards, and names it', () => {
    const start = fixedStats();
    const end = later(start, 1);
    end.flows.removed = 0;
    end.drops.reasons = { truncated: 1 };
    const { rates, notes } = computeRates(start, end);
    assert.equal(rates?.flows.removed, null);
    assert.equal(rates?.drops.reasons.truncated, null);
    assert.equal(rates?.flows.added, 4);
    assert.deepEqual(notes, ['drops.reasons.truncated, flows.removed went backwards: no rate for them']);
  });

  it('gives no rates at all over a restart of the instance, even for counters that grew', () => {
    const start = fixedStats();
    const end = later(start, 1, (n) => n * 10);
    end.uptime = 3;
    const sample = computeRates(start, end);
    assert.equal(sample.rates, null);
    assert.deepEqual(sample.notes, ['the instance restarted (uptime 93784.5 s, then 3 s): no rates for this interval']);
  });

  it('gives no rates when no time passed between the samples, rather than dividing by zero', () => {
    const start = fixedStats();
    const end = later(start, 0);
    const sample = computeRates(start, end);
    assert.equal(sample.rates, null);
    assert.equal(sample.interval.seconds, 0);
    assert.deepEqual(sample.notes, ['no time passed between the samples (0 s): no rates for this interval']);
    assert.equal(computeRates(end, start).rates, null, 'nor when the samples come in the wrong order');
  });

  it('gives no rates, and says why, for an instance that does not say when it read its counters', () => {
    const start = fixedStats() as Partial<GatewayStats>;
    delete start.monotonic;
    const sample = computeRates(start as GatewayStats, fixedStats());
    assert.equal(sample.rates, null);
    assert.deepEqual(sample.notes, ['the instance does not say when it read its counters (it runs an older flowgate): no rates']);
  });

  it('rates a port from its second sample: one that appears gets a note, one that goes is named', () => {
    const start = fixedStats();
    const end = later(start, 1);
    end.ports.eth2 = { ...end.ports.eth0! };
    delete end.ports.eth1;
    const { rates, notes } = computeRates(start, end);
    assert.deepEqual(Object.keys(rates?.ports ?? {}), ['eth0']);
    assert.deepEqual(notes, ['eth2: a new port, rates from the next interval', 'eth1: the port went away']);
  });

  it('counts a reason first seen during the interval from zero', () => {
    const start = fixedStats();
    const end = later(start, 0.5);
    end.slowpath.reasons = { ...end.slowpath.reasons, ttl_expired: 3 };
    assert.equal(computeRates(start, end).rates?.slowpath.reasons.ttl_expired, 6);
  });
});

describe('stats --watch and --xstats formatting', () => {
  it('formats rates with a precision that suits their size, and no rate as -', () => {
    assert.deepEqual(
      [0, 0.25, 7, 12.5, 950.4, 1234, 12_345_678].map((r) => formatRate(r)),
      ['0', '0.25', '7', '12.5', '950', '1.23 k', '12.3 M'],
    );
    assert.equal(formatRate(1_500_000, 'bit/s'), '1.50 Mbit/s');
    assert.equal(formatRate(null, 'bit/s'), '-');
  });

  it('takes SECONDS after --watch only when it is not another option', () => {
    assert.deepEqual(normalizeWatch(['--watch'], 1), ['--watch=1']);
    assert.deepEqual(normalizeWatch(['--watch', '2.5', '--json'], 1), ['--watch=2.5', '--json']);
    assert.deepEqual(normalizeWatch(['--watch', '--json'], 1), ['--watch=1', '--json']);
    assert.deepEqual(normalizeWatch(['--watch=3', '-c', 'f.yaml'], 1), ['--watch=3', '-c', 'f.yaml']);
  });

  it('redraws a terminal frame from the top left, each line cleared to its end and the rest of the screen below', () => {
    assert.equal(terminalFrame(['a', 'bc']), '\x1b[Ha\x1b[K\nbc\x1b[K\n\x1b[J');
  });

  it('lists xstats as ethtool -S does, leaving out zeros unless all are asked for', () => {
    assert.equal(
      formatXstats(fixedXstats(), false),
      'eth0:\n     rx_good_packets: 1200\n     tx_good_packets: 1100\n     rx_good_bytes: 180000\n     tx_good_bytes: 170000\n' +
        '     rx_errors: 1\n     rx_q0_packets: 1200\n     (1 more at 0: --all lists them)\n' +
        '\neth1:\n     rx_good_packets: 2300\n     tx_good_packets: 2200\n     mac_local_errors: 7\n     (1 more at 0: --all lists them)\n',
    );
    assert.match(formatXstats(fixedXstats(), true), /^ {5}rx_crc_errors: 0$/m);
    assert.doesNotMatch(formatXstats(fixedXstats(), true), /more at 0/);
  });
});

/**
 * A view whose every stats() is `secondsPerSample` of instance time after the previous one,
 * with its counters grown: the client's own timing, much shorter, must not matter.
 */
class AdvancingView extends FixedView {
  samples = 0;
  constructor(readonly secondsPerSample: number) {
    super();
  }

  override stats(): GatewayStats {
    if (this.samples++ > 0) this.statsValue = later(this.statsValue, this.secondsPerSample, (n) => Math.floor(n / 10) + this.samples);
    return this.statsValue;
  }
}

/** Starts `flowgate ARGS`, collects its output, and resolves once `ready(stdout)` is true. */
function startFlowgate(args: string[], ready: (stdout: string) => boolean) {
  const child = spawn(process.execPath, [main, ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`flowgate ${args.join(' ')} did not produce the expected output in time:\n${stdout}\n${stderr}`));
    }, 20_000);
    const check = () => {
      if (!ready(stdout)) return;
      clearTimeout(timer);
      resolve();
    };
    child.stdout.on('data', check);
    child.on('exit', () => {
      clearTimeout(timer);
      if (ready(stdout)) resolve();
      else reject(new Error(`flowgate ${args.join(' ')} exited early:\n${stdout}\n${stderr}`));
    });
  });
  return { child, done, exited, output: () => ({ stdout, stderr }) };
}

const lines = (text: string) => text.split('\n').filter((line) => line !== '');

describe('flowgate stats --watch and --xstats against a control socket', function () {
  this.timeout(60_000);
  let dir: string;
  let socketPath: string;
  let server: ControlServer;
  let view: AdvancingView;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'fg-watch-'));
    socketPath = path.join(dir, 'flowgate.sock');
    view = new AdvancingView(2);
    server = await ControlServer.listen({ socketPath, view });
  });

  afterEach(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints a JSON object per interval whose rates are the differences of its counters over the instance seconds, and exits 0 on Ctrl-C', async () => {
    const watch = startFlowgate(['stats', '--watch', '0.2', '--json', '--socket', socketPath], (out) => lines(out).length >= 3);
    await watch.done;
    watch.child.kill('SIGINT');
    assert.deepEqual(await watch.exited, { code: 0, signal: null });
    const { stdout, stderr } = watch.output();
    assert.equal(stderr, '');
    const records = lines(stdout).map((line) => JSON.parse(line) as WatchRecord);
    for (const [i, record] of records.entries()) {
      const { start, end } = record.counters;
      if (i > 0) assert.deepEqual(start, records[i - 1]?.counters.end, 'each interval starts where the previous one ended');
      // The view's clock: 2 s per sample, whatever the 0.2 s of the watch.
      assert.deepEqual(record.interval, { start: start.monotonic, end: end.monotonic, seconds: 2 });
      assert.deepEqual(record.notes, []);
      const rates = record.rates;
      assert.ok(rates !== null);
      for (const [port, counters] of Object.entries(end.ports)) {
        for (const { rate, counter, scale } of PORT_RATES) {
          assert.equal(rates.ports[port]?.[rate], ((counters[counter] - start.ports[port]![counter]) * scale) / 2, `${port} ${rate}`);
        }
      }
      assert.equal(rates.fastpath.packets, (end.fastpath.packets - start.fastpath.packets) / 2);
      assert.equal(rates.fastpath.bits, ((end.fastpath.bytes - start.fastpath.bytes) * 8) / 2);
      assert.equal(rates.flows.added, 2);
      assert.equal(rates.flows.removed, 1);
      assert.equal(rates.slowpath.reasons.miss, 15);
    }
  });

  it('appends a block of rates per interval for people when its output is not a terminal, without escape sequences', async () => {
    const watch = startFlowgate(['stats', '--watch', '0.2', '--socket', socketPath], (out) => (out.match(/^every /gm) ?? []).length >= 3);
    await watch.done;
    watch.child.kill('SIGINT');
    assert.deepEqual(await watch.exited, { code: 0, signal: null });
    const { stdout, stderr } = watch.output();
    assert.equal(stderr, '');
    assert.doesNotMatch(stdout, /\x1b/);
    const blocks = stdout.split(/\n(?=every )/);
    assert.ok(blocks.length >= 3);
    const block = blocks[0]!;
    assert.match(block, /^every 0\.2 s: rates over the instance's last 2\.000 s; uptime 1d 02:03:0\d\n\n/);
    assert.match(block, /^port +rx packets\/s +rx bit\/s +rx dropped\/s +rx errors\/s +tx packets\/s +tx bit\/s +tx dropped\/s +tx errors\/s$/m);
    assert.match(block, /^eth0 +[\d.]+ +[\d.]+ [kM]bit\/s /m);
    assert.match(block, /^eth1 /m);
    assert.match(block, /^slow path  packets\/s 15 \(miss 15\), policed\/s 0$/m);
    assert.match(block, /^flows      added\/s 2, removed\/s 1 \(idle 1\), active 3$/m);
  });

  it('redraws in place on a terminal: the screen cleared once, then each interval drawn from the top left; Ctrl-C exits 0', async () => {
    // script(1) gives the command a terminal; timeout sends the Ctrl-C and reports the exit status.
    const command = `timeout --preserve-status -s INT 3 ${JSON.stringify(process.execPath)} ${JSON.stringify(main)} stats --watch 0.5 --socket ${JSON.stringify(socketPath)}; echo "exit=$?"`;
    const r = await run('script', ['-qfec', command, '/dev/null']);
    assert.equal(r.status, 0, r.stderr);
    const screen = r.stdout.replace(/\r/g, '');
    assert.ok(screen.startsWith('\x1b[H\x1b[2J\x1b[Hevery 0.5 s: the first rates in 0.5 s\x1b[K\n\x1b[J'), JSON.stringify(screen.slice(0, 80)));
    const frames = screen.split('\x1b[H').slice(3);
    assert.ok(frames.length >= 2, `${frames.length} frames`);
    for (const frame of frames.slice(0, -1)) {
      assert.match(frame, /^every 0\.5 s: rates over the instance's last 2\.000 s; uptime .*\x1b\[K\n/);
      assert.ok(frame.endsWith('\x1b[J'), 'what was below is cleared');
      assert.ok(frame.split('\n').slice(0, -1).every((line) => line.endsWith('\x1b[K')), 'each line is cleared to its end');
    }
    assert.match(screen, /\x1b\[Jexit=0\n$/, 'Ctrl-C ends it with status 0 and nothing more said');
  });

  it('says in its output that a counter went backwards instead of giving a negative rate', async () => {
    let n = 0;
    const base = fixedStats();
    // Every other sample, eth1's device has just been re-added.
    view.stats = () => {
      const s = later(base, 2 * n, (c) => c * n);
      if (n++ % 2 === 1) s.ports.eth1 = { ...s.ports.eth1!, rx_packets: 1 };
      return s;
    };
    const watch = startFlowgate(['stats', '--watch', '0.2', '--json', '--socket', socketPath], (out) => lines(out).length >= 2);
    await watch.done;
    watch.child.kill('SIGINT');
    await watch.exited;
    const records = lines(watch.output().stdout).map((line) => JSON.parse(line) as WatchRecord);
    const reset = records.find((r) => r.counters.end.ports.eth1?.rx_packets === 1);
    assert.ok(reset, 'an interval ends at the reset');
    assert.equal(reset.rates?.ports.eth1?.rx_packets, null);
    assert.deepEqual(reset.notes, ['eth1: rx_packets went backwards (the port was restarted or re-added): no rate for them']);
    const text = startFlowgate(['stats', '--watch', '0.2', '--socket', socketPath], (out) => out.includes('note: eth1: rx_packets went backwards'));
    await text.done;
    text.child.kill('SIGINT');
    await text.exited;
    assert.match(text.output().stdout, /^eth1 +- +/m, 'no rate is shown as -');
  });

  it('says once on stderr that the instance stopped answering, asks again each interval, and resumes its rates when it answers', async () => {
    const watch = startFlowgate(['stats', '--watch', '0.2', '--json', '--socket', socketPath], (out) => lines(out).length >= 1);
    await watch.done;
    await server.close();
    await until('the watch to say the instance is gone', () => (watch.output().stderr.includes('asking again') ? true : undefined));
    const before = lines(watch.output().stdout).length;
    // Several intervals without an instance: said once, not once per interval.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    server = await ControlServer.listen({ socketPath, view });
    await until('rates again', () => (lines(watch.output().stdout).length >= before + 2 ? true : undefined));
    watch.child.kill('SIGINT');
    assert.deepEqual(await watch.exited, { code: 0, signal: null });
    const { stdout, stderr } = watch.output();
    assert.match(stderr, /^flowgate stats: no flowgate is serving \S+: the socket does not exist .*; asking again every 0\.2 s\n$/);
    const resumed = lines(stdout).slice(before).map((line) => JSON.parse(line) as WatchRecord);
    for (const record of resumed) assert.ok(record.rates !== null && record.interval.seconds === 2, 'rates from two answers of the instance back');
  });

  it('exits quietly with status 0 when the reader of its output goes away (stats --watch --json | head -1)', async () => {
    const pipeline = `set -o pipefail; ${JSON.stringify(process.execPath)} ${JSON.stringify(main)} stats --watch 0.1 --json --socket ${JSON.stringify(socketPath)} | head -1`;
    const r = await run('bash', ['-c', pipeline]);
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0, 'the pipeline, flowgate included, succeeded');
    assert.equal(lines(r.stdout).length, 1);
    assert.ok((JSON.parse(r.stdout) as WatchRecord).rates !== null);
  });

  it('refuses an interval it cannot use, and --watch with --xstats, exiting 2 with the usage', async () => {
    const cases: [string[], string][] = [
      [['--watch', '0'], "--watch: expected a number of seconds from 0.1 to 86400, found '0'"],
      [['--watch', 'fast'], "--watch: expected a number of seconds from 0.1 to 86400, found 'fast'"],
      [['--watch=0.05'], "--watch: expected a number of seconds from 0.1 to 86400, found '0.05'"],
      [['--watch', '3000000'], "--watch: expected a number of seconds from 0.1 to 86400, found '3000000'"],
      [['--watch', '1e3'], "--watch: expected a number of seconds from 0.1 to 86400, found '1e3'"],
      [['--watch', '-1'], "Unknown option '-1'"],
      [['--watch', '--xstats'], 'give --watch or --xstats, not both'],
      [['--all'], '--all goes with --xstats'],
    ];
    for (const [args, message] of cases) {
      const r = await flowgate('stats', '--socket', socketPath, ...args);
      assert.equal(r.status, 2, args.join(' '));
      assert.ok(r.stderr.startsWith(`flowgate stats: ${message}\n\nusage: flowgate stats `), r.stderr);
    }
  });

  it('fails as stats does when no instance answers at the first sample', async () => {
    const r = await flowgate('stats', '--watch', '--socket', path.join(dir, 'none.sock'));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^flowgate: no flowgate is serving .*none\.sock.*\[ERR_FLOWGATE_CONTROL_UNAVAILABLE\]\n$/);
  });

  it('lists each port NIC statistics with --xstats, and all of them as JSON with --json', async () => {
    const text = await flowgate('stats', '--xstats', '--socket', socketPath);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stdout, formatXstats(fixedXstats(), false));
    const all = await flowgate('stats', '--xstats', '--all', '--socket', socketPath);
    assert.equal(all.stdout, formatXstats(fixedXstats(), true));
    const json = await flowgate('stats', '--xstats', '--json', '--socket', socketPath);
    assert.deepEqual(JSON.parse(json.stdout), { ports: fixedXstats() });
  });
});
