import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { ControlClient, ControlServer, controlRequest, controlStream, GatewayNotReadyError } from '../../lib/control';
import { LineSplitter } from '../../lib/control/protocol';
import { FlowgateError } from '../../lib/errors';
import type { GatewayFlow, GatewayView } from '../../lib/gateway/types';
import { parsePrefix } from '../../lib/net/addr';
import { until } from '../helpers/wait';
import { FixedView, fixedFlows, fixedStats } from './fixed-view';

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a throw');
}

/** Pages of made-up flows, made as they are pulled, counting how far the server has pulled. */
class ManyFlowsView implements GatewayView {
  pagesPulled = 0;
  finished = false;

  constructor(
    readonly pages: number,
    readonly pageSize: number,
  ) {}

  stats(): never {
    throw new Error('not under test');
  }

  xstats(): never {
    throw new Error('not under test');
  }

  trace(): never {
    throw new Error('not under test');
  }

  async *flows(): AsyncGenerator<GatewayFlow[]> {
    const [template] = fixedFlows();
    try {
      for (; this.pagesPulled < this.pages; this.pagesPulled++) {
        yield Array.from({ length: this.pageSize }, (_, i) => ({ ...template!, id: this.pagesPulled * this.pageSize + i }));
      }
    } finally {
      this.finished = true;
    }
  }

  /** Resolves once the server has stopped pulling pages (its client reads nothing). */
  async stalled(): Promise<void> {
    let last = -1;
    let unchangedPolls = 0;
    await until('the server to stop pulling pages', async () => {
      unchangedPolls = this.pagesPulled === last ? unchangedPolls + 1 : 0;
      last = this.pagesPulled;
      return unchangedPolls >= 5 || this.finished ? true : undefined;
    });
  }
}

/** Sends raw lines and collects `count` response lines, parsed: the wire format itself. */
function exchange(socketPath: string, payload: string, count: number): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path: socketPath });
    let buffered = '';
    const lines: unknown[] = [];
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline: number;
      while ((newline = buffered.indexOf('\n')) !== -1) {
        lines.push(JSON.parse(buffered.slice(0, newline)));
        buffered = buffered.slice(newline + 1);
      }
      if (lines.length >= count) {
        socket.destroy();
        resolve(lines);
      }
    });
    socket.on('close', () => (lines.length < count ? reject(new Error(`connection closed after ${lines.length} of ${count} lines`)) : undefined));
    socket.write(payload);
  });
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<FlowgateError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof FlowgateError, `expected a FlowgateError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected a rejection with ${code}`);
}

describe('control socket', () => {
  let dir: string;
  let socketPath: string;
  const servers: ControlServer[] = [];

  async function serve(view: GatewayView = new FixedView(), at = socketPath): Promise<ControlServer> {
    const server = await ControlServer.listen({ socketPath: at, view });
    servers.push(server);
    return server;
  }

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'fg-control-'));
    socketPath = path.join(dir, 'flowgate.sock');
  });

  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers newline-delimited JSON requests with the id echoed and the view as result', async () => {
    await serve();
    const [stats] = await exchange(socketPath, '{"id":1,"method":"stats"}\n', 1);
    assert.deepEqual(stats, { id: 1, result: fixedStats() });
  });

  it('streams flows as one record line per flow, then a result line with their count', async () => {
    const view = new FixedView();
    view.pageSize = 1;
    await serve(view);
    assert.deepEqual(await exchange(socketPath, '{"id":"b","method":"flows"}\n', 3), [{ id: 'b', record: fixedFlows()[0] }, { id: 'b', record: fixedFlows()[1] }, { id: 'b', result: { count: 2 } }]);
  });

  it('sends only the flows that match every filter given, and with count only their number', async () => {
    const view = new FixedView();
    await serve(view);
    const ids = async (params: Record<string, unknown>) => {
      const flows: GatewayFlow[] = [];
      const { count } = await controlStream(socketPath, 'flows', params, (records) => void flows.push(...records));
      assert.equal(count, flows.length);
      return flows.map((f) => f.id);
    };
    assert.deepEqual(await ids({}), [17, 18]);
    assert.deepEqual(await ids({ proto: 'udp' }), [18]);
    assert.deepEqual(await ids({ src: '192.168.0.0/24' }), [17]);
    assert.deepEqual(await ids({ src: '2001:db8:1:0::10' }), [18], 'an address matches whichever way it is written');
    assert.deepEqual(await ids({ dst: '10.0.0.1' }), [17]);
    assert.deepEqual(await ids({ dst: '10.0.0.2' }), []);
    assert.deepEqual(await ids({ port: 53 }), [18], 'the destination port');
    assert.deepEqual(await ids({ port: 43210 }), [17], 'the source port');
    assert.deepEqual(await ids({ tunnel: 'tun0' }), [17]);
    assert.deepEqual(await ids({ state: 'teardown' }), [18]);
    assert.deepEqual(await ids({ proto: 'tcp', state: 'teardown' }), []);
    const [counted] = await exchange(socketPath, '{"id":5,"method":"flows","params":{"count":true,"dst":"2001:db8::/32"}}\n', 1);
    assert.deepEqual(counted, { id: 5, result: { count: 1 } }, 'no record line comes before the count');
  });

  it('refuses a flows filter it cannot use, naming the param and what it expected', async () => {
    await serve();
    const answers = await exchange(
      socketPath,
      [
        '{"id":1,"method":"flows","params":{"proto":"icmp"}}',
        '{"id":2,"method":"flows","params":{"src":"10.0.0.300/8"}}',
        '{"id":3,"method":"flows","params":{"port":"http"}}',
        '{"id":4,"method":"flows","params":{"colour":"red"}}',
        '',
      ].join('\n'),
      4,
    );
    assert.deepEqual(
      answers.map((a) => (a as { error: { code: string; message: string } }).error),
      [
        { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: "params.proto: expected tcp, udp, found 'icmp'" },
        {
          code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST',
          message: `params.src: expected an IPv4 or IPv6 address, or a prefix ADDR/LEN, found '10.0.0.300/8' (${errorOf(() => parsePrefix('10.0.0.300/8'))})`,
        },
        { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: "params.port: expected a port number 0..65535, found 'http'" },
        { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: 'params.colour: unknown filter (filters: proto, src, dst, port, tunnel, state, count)' },
      ],
    );
  });

  /** A listing of 100,000 flows to a client that reads nothing, once the socket buffers are full. */
  async function stalledListing(): Promise<{ view: ManyFlowsView; socket: net.Socket }> {
    const view = new ManyFlowsView(400, 250);
    await serve(view);
    const socket = net.createConnection({ path: socketPath });
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.pause();
    socket.write('{"id":1,"method":"flows"}\n');
    await view.stalled();
    return { view, socket };
  }

  it('sends no more records than the client reads, and all of them once it reads', async () => {
    const { view, socket } = await stalledListing();
    const pulledWhileStalled = view.pagesPulled;
    console.log(`      pages pulled while the client read nothing: ${pulledWhileStalled} of ${view.pages}`);
    assert.ok(pulledWhileStalled < view.pages, `the server stopped pulling pages (${pulledWhileStalled} of ${view.pages})`);

    let records = 0;
    let end: unknown;
    const lines = new LineSplitter(1 << 20);
    socket.on('data', (chunk: Buffer) =>
      lines.push(
        chunk,
        (line) => {
          const message = JSON.parse(line) as { record?: unknown };
          if (message.record !== undefined) records++;
          else end = message;
        },
        () => assert.fail('line too long'),
      ),
    );
    socket.resume();
    await until('the listing to end', async () => (end === undefined ? undefined : true));
    socket.destroy();
    assert.equal(records, view.pages * view.pageSize);
    assert.deepEqual(end, { id: 1, result: { count: view.pages * view.pageSize } });
  });

  it('stops listing when the client goes away, and keeps serving others', async () => {
    const { view, socket } = await stalledListing();
    socket.destroy();
    await until('the listing to be abandoned', async () => (view.finished ? true : undefined));
    assert.ok(view.pagesPulled < view.pages, `the server stopped pulling pages (${view.pagesPulled} of ${view.pages})`);
    assert.deepEqual(await controlRequest(socketPath, 'ping'), { pid: process.pid });
  });

  it('says a count is still at work with a progress line when it has sent nothing for a second', async () => {
    const view = new FixedView();
    view.flows = async function* () {
      yield fixedFlows().slice(0, 1);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      yield fixedFlows().slice(1);
    };
    await serve(view);
    const socket = net.createConnection({ path: socketPath });
    const lines: Record<string, unknown>[] = [];
    const splitter = new LineSplitter(1 << 20);
    socket.on('data', (chunk: Buffer) => splitter.push(chunk, (line) => lines.push(JSON.parse(line) as Record<string, unknown>), () => undefined));
    socket.write('{"id":1,"method":"flows","params":{"count":true}}\n');
    await until('the count', async () => (lines.some((l) => 'result' in l) ? true : undefined));
    socket.destroy();
    const result = lines.pop();
    assert.deepEqual(result, { id: 1, result: { count: 2 } });
    assert.ok(lines.length >= 1, 'a progress line came before the count');
    assert.ok(lines.every((l) => l.id === 1 && 'progress' in l), JSON.stringify(lines));
    assert.deepEqual(lines.at(-1), { id: 1, progress: { scanned: 2 } });
  });

  it('streams to a client consumer that takes its time, settling only after the last record is consumed', async () => {
    const view = new ManyFlowsView(40, 250);
    await serve(view);
    const client = await ControlClient.connect(socketPath);
    try {
      let consumed = 0;
      let busy = false;
      const result = await client.stream('flows', {}, async (records) => {
        assert.equal(busy, false, 'one batch at a time');
        busy = true;
        await new Promise((resolve) => setTimeout(resolve, 1));
        consumed += records.length;
        busy = false;
      });
      assert.deepEqual(result, { count: 10_000 });
      assert.equal(consumed, 10_000);
    } finally {
      client.close();
    }
  });

  it("fails a stream with its consumer's error and ends the connection", async () => {
    const view = new ManyFlowsView(40, 250);
    await serve(view);
    const client = await ControlClient.connect(socketPath);
    const broken = new Error('stdout is gone');
    await assert.rejects(
      client.stream('flows', {}, () => {
        throw broken;
      }),
      (err) => err === broken,
    );
    await rejectsWithCode(client.request('ping'), 'ERR_FLOWGATE_CONTROL_CLOSED');
    await until('the listing to be abandoned', async () => (view.finished ? true : undefined));
  });

  it('ends a listing that fails part way with the error, after the records already sent', async () => {
    const view = new FixedView();
    view.flows = async function* () {
      yield fixedFlows().slice(0, 1);
      throw new GatewayNotReadyError();
    };
    await serve(view);
    const answers = await exchange(socketPath, '{"id":1,"method":"flows"}\n', 2);
    assert.deepEqual(answers, [
      { id: 1, record: fixedFlows()[0] },
      { id: 1, error: { code: 'ERR_FLOWGATE_NOT_READY', message: 'flowgate is starting: the gateway is not up yet' } },
    ]);
  });

  it('answers ping with its pid and version with the package version and protocol', async () => {
    await serve();
    const [ping, version] = await exchange(socketPath, '{"id":1,"method":"ping"}\n{"id":2,"method":"version"}\n', 2);
    assert.deepEqual(ping, { id: 1, result: { pid: process.pid } });
    const { version: expected } = JSON.parse(readFileSync(path.resolve(__dirname, '../../../package.json'), 'utf8')) as { version: string };
    assert.deepEqual(version, { id: 2, result: { version: expected, protocol: 2, pid: process.pid, node: process.version } });
  });

  it('answers requests sent in one write in order, and keeps the connection for more', async () => {
    await serve();
    const requests = Array.from({ length: 20 }, (_, i) => `{"id":${i},"method":"${i % 2 === 0 ? 'ping' : 'stats'}"}\n`).join('');
    const answers = (await exchange(socketPath, requests, 20)) as { id: number }[];
    assert.deepEqual(
      answers.map((a) => a.id),
      Array.from({ length: 20 }, (_, i) => i),
    );
  });

  it('keeps answering other connections while a listing is under way, and answers each connection in order', async () => {
    // A flows listing that takes a while, as the gateway's does, yielding between pages.
    let release: () => void = () => undefined;
    const view = new FixedView();
    const slow = new Promise<void>((resolve) => (release = resolve));
    view.flows = async function* () {
      await slow;
      yield fixedFlows();
    };
    await serve(view);
    const listing = exchange(socketPath, '{"id":1,"method":"flows"}\n{"id":2,"method":"ping"}\n', 4);
    const [other] = await exchange(socketPath, '{"id":"other","method":"ping"}\n', 1);
    assert.deepEqual(other, { id: 'other', result: { pid: process.pid } });
    release();
    const answers = await listing;
    assert.deepEqual(answers, [
      { id: 1, record: fixedFlows()[0] },
      { id: 1, record: fixedFlows()[1] },
      { id: 1, result: { count: 2 } },
      { id: 2, result: { pid: process.pid } },
    ]);
  });

  it('creates the socket with mode 0600 and its missing directory with mode 0755 whatever the umask', async () => {
    const nested = path.join(dir, 'run', 'flowgate', 'flowgate.sock');
    const previous = process.umask(0o077);
    try {
      await serve(new FixedView(), nested);
    } finally {
      process.umask(previous);
    }
    assert.ok(lstatSync(nested).isSocket());
    assert.equal(statSync(nested).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(nested)).mode & 0o777, 0o755);
    assert.equal(statSync(path.join(dir, 'run')).mode & 0o777, 0o755);
  });

  it('reports an unknown method with its code and the known methods, and keeps serving', async () => {
    await serve();
    const [unknown, ping] = await exchange(socketPath, '{"id":7,"method":"reboot"}\n{"id":8,"method":"ping"}\n', 2);
    assert.deepEqual(unknown, {
      id: 7,
      error: { code: 'ERR_FLOWGATE_CONTROL_UNKNOWN_METHOD', message: "unknown method 'reboot' (methods: ping, version, stats, flows, xstats, trace, capture)" },
    });
    assert.deepEqual(ping, { id: 8, result: { pid: process.pid } });
  });

  it('answers lines that are not requests with a bad-request error, echoing the id when there is one', async () => {
    await serve();
    const answers = await exchange(socketPath, 'not json\n[1,2]\n{"id":3}\n{"id":4,"method":"stats","params":5}\n{"id":{},"method":"ping"}\n', 5);
    assert.deepEqual(answers, [
      { id: null, error: { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: `expected a JSON request such as {"id":1,"method":"stats"}, found 'not json'` } },
      { id: null, error: { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: 'expected a JSON object such as {"id":1,"method":"stats"}, found [1,2]' } },
      { id: 3, error: { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: 'expected "method" to be a string, found nothing' } },
      { id: 4, error: { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: 'expected "params" to be an object when present, found 5' } },
      { id: null, error: { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: 'expected "id" to be a number or a string, found {}' } },
    ]);
  });

  it('refuses a request line over 64 KiB and answers the next line', async () => {
    await serve();
    const [tooLong, ping] = await exchange(socketPath, `${'x'.repeat(70 * 1024)}\n{"id":1,"method":"ping"}\n`, 2);
    assert.deepEqual(tooLong, { id: null, error: { code: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST', message: 'expected a request line of at most 65536 bytes' } });
    assert.deepEqual(ping, { id: 1, result: { pid: process.pid } });
  });

  it("passes on a view's FlowgateError code and reports other failures as internal errors", async () => {
    const view = new FixedView();
    view.stats = () => {
      throw new GatewayNotReadyError();
    };
    view.flows = () => {
      throw new TypeError('flows exploded');
    };
    await serve(view);
    const [stats, flows] = await exchange(socketPath, '{"id":1,"method":"stats"}\n{"id":2,"method":"flows"}\n', 2);
    assert.deepEqual(stats, { id: 1, error: { code: 'ERR_FLOWGATE_NOT_READY', message: 'flowgate is starting: the gateway is not up yet' } });
    assert.deepEqual(flows, { id: 2, error: { code: 'ERR_FLOWGATE_CONTROL_INTERNAL', message: 'flows failed: flows exploded' } });
  });

  it('refuses a second server on a socket another live instance serves, naming its pid, and the first keeps serving', async () => {
    await serve();
    const err = await rejectsWithCode(serve(), 'ERR_FLOWGATE_CONTROL_IN_USE');
    assert.match(err.message, new RegExp(`^control socket ${socketPath} is served by another flowgate \\(pid ${process.pid}\\)`));
    assert.deepEqual(await controlRequest(socketPath, 'ping'), { pid: process.pid });
  });

  it('replaces a stale socket file left by a process that was killed', async () => {
    // A real leftover: a process binds the path and dies by SIGKILL, leaving the file.
    const script = `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`;
    const child = spawnSync(process.execPath, ['-e', script]);
    assert.equal(child.signal, 'SIGKILL');
    assert.ok(lstatSync(socketPath).isSocket(), 'the killed process left its socket file');
    await rejectsWithCode(controlRequest(socketPath, 'ping'), 'ERR_FLOWGATE_CONTROL_UNAVAILABLE');

    await serve();
    assert.deepEqual(await controlRequest(socketPath, 'stats'), fixedStats());
    assert.equal(statSync(socketPath).mode & 0o777, 0o600);
  });

  it('refuses to replace a path that is not a socket, and leaves the file alone', async () => {
    writeFileSync(socketPath, 'precious');
    const err = await rejectsWithCode(serve(), 'ERR_FLOWGATE_CONTROL_NOT_SOCKET');
    assert.match(err.message, /exists and is not a socket/);
    assert.equal(readFileSync(socketPath, 'utf8'), 'precious');
  });

  it('removes its socket file on close, after which clients are told nothing serves it', async () => {
    const server = await serve();
    await server.close();
    assert.equal(existsSync(socketPath), false);
    const err = await rejectsWithCode(controlRequest(socketPath, 'ping'), 'ERR_FLOWGATE_CONTROL_UNAVAILABLE');
    assert.equal(err.message, `no flowgate is serving ${socketPath}: the socket does not exist (is 'flowgate run' running with this control.socket?)`);
  });

  it('ends open client connections on close', async () => {
    const server = await serve();
    const client = await ControlClient.connect(socketPath);
    assert.deepEqual(await client.request('ping'), { pid: process.pid });
    await server.close();
    await rejectsWithCode(client.request('ping'), 'ERR_FLOWGATE_CONTROL_CLOSED');
    client.close();
  });

  it('rejects with the code the instance answered, through the client', async () => {
    await serve();
    const client = await ControlClient.connect(socketPath);
    try {
      const err = await rejectsWithCode(client.request('reboot'), 'ERR_FLOWGATE_CONTROL_UNKNOWN_METHOD');
      assert.match(err.message, /unknown method 'reboot'/);
      const flows: GatewayFlow[] = [];
      assert.deepEqual(await client.stream('flows', {}, (records) => void flows.push(...records)), { count: 2 });
      assert.deepEqual(flows, fixedFlows());
    } finally {
      client.close();
    }
  });

  it('gives up on an instance that accepts but does not answer, with a timeout error', async () => {
    const mute = net.createServer(() => undefined);
    await new Promise<void>((resolve) => mute.listen(socketPath, resolve));
    try {
      const err = await rejectsWithCode(controlRequest(socketPath, 'stats', { timeoutMs: 200 }), 'ERR_FLOWGATE_CONTROL_TIMEOUT');
      assert.equal(err.message, `${socketPath} did not answer 'stats' within 200 ms`);
    } finally {
      mute.close();
    }
  });

  it('refuses to start on a socket whose owner accepts but does not answer, rather than removing it', async () => {
    const mute = net.createServer(() => undefined);
    await new Promise<void>((resolve) => mute.listen(socketPath, resolve));
    try {
      const err = await rejectsWithCode(serve(), 'ERR_FLOWGATE_CONTROL_IN_USE');
      assert.match(err.message, /served by another flowgate \(pid unknown: it did not answer\)/);
      assert.ok(lstatSync(socketPath).isSocket());
    } finally {
      mute.close();
    }
  });
});
