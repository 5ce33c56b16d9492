// The fast path under libFuzzer (test/fuzz/pipeline_fuzz.cc) for 30 seconds of every
// `npm test`: process_burst() on guard-page mbufs with ASan and UBSan, in worlds with
// tunnels of every mode (ip4ip6, ip6ip6, ipip, sit) and VLANs (802.1Q, 802.1ad, QinQ; a
// tunnel's underlay or a flow's output may be one) with tagged frames, checked by the
// target's oracles (the two parsers agree, nothing written outside a packet, punts arrive
// unmodified but for their popped tags, or as the inner packet on their tunnel's TUN,
// forwarded packets are what their flow, tunnel and VLAN say, a decap flow takes only its
// own tunnel's packets). Any finding fails the test and
// leaves its input in .cache/fuzz/artifacts/ (replay: test/fuzz/run.sh --reproduce FILE).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '../../..');
const SECONDS = 30;

interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

function runFuzzer(args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['test/fuzz/run.sh', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    // libFuzzer reports on stderr; keep the end, which holds the finding or the final stats.
    let output = '';
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-64 * 1024);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, output }));
  });
}

describe('fast path fuzzing (libFuzzer, ASan, UBSan)', function () {
  // Building the target takes a minute on a slow machine, fuzzing SECONDS more.
  this.timeout(15 * 60_000);

  it(`runs ${SECONDS} s of fuzzed bursts through process_burst() without a finding`, async () => {
    const r = await runFuzzer(['--seconds', String(SECONDS)]);
    const tail = r.output.slice(-6000);
    assert.equal(r.status, 0, `the fuzzer reported a finding (status ${r.status}, signal ${r.signal}):\n${tail}`);
    // It really fuzzed: the seed corpus alone is a few hundred inputs.
    const executed = /stat::number_of_executed_units:\s*(\d+)/.exec(r.output);
    assert.ok(executed, `no final statistics from libFuzzer:\n${tail}`);
    assert.ok(Number(executed[1]) > 1000, `only ${executed[1]} inputs executed:\n${tail}`);
  });
});
