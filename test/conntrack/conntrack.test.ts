// The kernel's conntrack through lib/conntrack.ts, against the real kernel: each test in its
// own network namespace (the Conntrack opens its sockets there with the netns option),
// connections made with `conntrack -I` or real traffic.
import assert from 'node:assert/strict';

import { Conntrack, CT_RECORD, CT_RECORD_SIZE, CT_RECORD_TUPLE, CT_TUPLE, CT_UPDATE, CtConnection, CtEvent, CtTuple, IPS, TCP_FLAG, conntrackSysctl } from '../../lib/conntrack';
import { native } from '../../lib/native';
import { sh, withNetns } from '../helpers/netns';
import { until } from '../helpers/wait';

interface Opened {
  ct: Conntrack;
  events: CtEvent[];
  resyncs: CtConnection[][];
}

async function withConntrack<T>(fn: (o: Opened, netns: string) => Promise<T>, options: { events?: ('new' | 'update' | 'destroy')[]; rcvbuf?: number } = {}): Promise<T> {
  return withNetns(async (netns) => {
    const events: CtEvent[] = [];
    const resyncs: CtConnection[][] = [];
    const ct = Conntrack.open({
      netns,
      events: options.events ?? [],
      ...(options.rcvbuf === undefined ? {} : { rcvbuf: options.rcvbuf }),
      onEvents: (e) => events.push(...e),
      onResync: (all) => resyncs.push(all),
    });
    try {
      return await fn({ ct, events, resyncs }, netns);
    } finally {
      ct.close();
    }
  }, 'fgct');
}

const insert = (netns: string, args: string) => sh(`conntrack -I ${args}`, { netns });

const TCP_ARGS = '-p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1000 --dport 80 --state ESTABLISHED -u ASSURED,SEEN_REPLY -t 120';
const TCP_TUPLE: CtTuple = { family: 4, proto: 'tcp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 80 };

describe('conntrack (ctnetlink, real kernel, network namespaces)', function () {
  this.timeout(120_000);

  it('has the record layouts the addon has', () => {
    const l = native().Conntrack.layout();
    assert.deepEqual(l.record, { size: CT_RECORD_SIZE, ...CT_RECORD });
    assert.deepEqual(l.recordTuple, { ...CT_RECORD_TUPLE });
    assert.deepEqual(l.tuple, { ...CT_TUPLE });
    assert.deepEqual(l.update, { ...CT_UPDATE });
  });

  it('finds a connection by its original tuple and by its reply tuple, and answers null for an unknown one', () =>
    withConntrack(async ({ ct }, netns) => {
      await insert(netns, TCP_ARGS);
      // A NAT-like connection: the reply comes from another address and port.
      await insert(netns, '-p udp -s 192.168.0.10 -d 198.51.100.1 --sport 5000 --dport 53 --reply-src 198.51.100.1 --reply-dst 203.0.113.1 --reply-port-src 53 --reply-port-dst 61000 -t 60');
      await insert(netns, '-p tcp -s 2001:db8::1 -d 2001:db8::2 --sport 40000 --dport 443 --state ESTABLISHED -u ASSURED,SEEN_REPLY -t 100');
      const [byOrig, byReply, nat, natByReply, v6, missing] = await ct.get([
        TCP_TUPLE,
        { family: 4, proto: 'tcp', src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 1000 },
        { family: 4, proto: 'udp', src: '192.168.0.10', dst: '198.51.100.1', sport: 5000, dport: 53 },
        { family: 4, proto: 'udp', src: '198.51.100.1', dst: '203.0.113.1', sport: 53, dport: 61000 },
        { family: 6, proto: 'tcp', src: '2001:db8::1', dst: '2001:db8::2', sport: 40000, dport: 443 },
        { family: 4, proto: 'tcp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1001, dport: 80 },
      ]);
      assert.ok(byOrig && byReply && nat && natByReply && v6);
      assert.deepEqual(byOrig.orig, TCP_TUPLE);
      assert.deepEqual(byOrig.reply, { family: 4, proto: 'tcp', src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 1000 });
      assert.equal(byOrig.tcpState, 'ESTABLISHED');
      assert.ok(byOrig.status & IPS.ASSURED && byOrig.status & IPS.SEEN_REPLY && byOrig.status & IPS.CONFIRMED);
      assert.ok(byOrig.timeout > 100 && byOrig.timeout <= 120);
      assert.equal(byOrig.helper, null);
      assert.equal(byOrig.zone, 0);
      assert.equal(byReply.id, byOrig.id);
      assert.deepEqual(byReply.orig, byOrig.orig);
      assert.equal(nat.tcpState, null);
      assert.deepEqual(nat.reply, { family: 4, proto: 'udp', src: '198.51.100.1', dst: '203.0.113.1', sport: 53, dport: 61000 });
      assert.equal(natByReply.id, nat.id);
      assert.equal(v6.orig.src, '2001:db8::1');
      assert.equal(v6.reply.src, '2001:db8::2');
      assert.equal(missing, null);

      const all = await ct.dump();
      assert.deepEqual(all.map((c) => c.id).sort(), [byOrig.id, nat.id, v6.id].sort());
    }));

  it('answers a batch of 10,000 lookups in order', () =>
    withConntrack(async ({ ct }, netns) => {
      await sh('for p in $(seq 2000 2049); do conntrack -I -p udp -s 10.1.0.1 -d 10.1.0.2 --sport $p --dport 53 -t 100 >/dev/null 2>&1; done', { netns });
      const tuples: CtTuple[] = [];
      for (let i = 0; i < 10_000; i++) tuples.push({ family: 4, proto: 'udp', src: '10.1.0.1', dst: '10.1.0.2', sport: 2000 + (i % 100), dport: 53 });
      const answers = await ct.get(tuples);
      assert.equal(answers.length, 10_000);
      answers.forEach((a, i) => {
        if (i % 100 < 50) assert.equal(a?.orig.sport, 2000 + (i % 100), `answer ${i}`);
        else assert.equal(a, null, `answer ${i}`);
      });
      assert.equal(ct.stats().gets, 10_000);
    }));

  it('updates the timeout and the TCP state, and counts unknown connections', () =>
    withConntrack(async ({ ct }, netns) => {
      await insert(netns, TCP_ARGS);
      await insert(netns, '-p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1002 --dport 80 --state ESTABLISHED -u ASSURED,SEEN_REPLY -t 120');
      const second: CtTuple = { ...TCP_TUPLE, sport: 1002 };
      const r = await ct.update([
        { orig: TCP_TUPLE, timeout: 3000 },
        // By the reply tuple: the kernel finds the connection either way.
        { orig: { ...second, src: second.dst, dst: second.src, sport: second.dport, dport: second.sport }, tcpState: 'CLOSE', timeout: 7 },
        { orig: { ...TCP_TUPLE, sport: 9 }, timeout: 5 },
      ]);
      assert.deepEqual(r, { ok: 2, notFound: 1, failed: 0 });

      const listed = await sh('conntrack -L -p tcp -o extended', { netns });
      const line1 = listed.split('\n').find((l) => l.includes('sport=1000 '));
      const line2 = listed.split('\n').find((l) => l.includes('sport=1002 '));
      assert.match(line1 ?? '', / 6 (2999|3000) ESTABLISHED /);
      assert.match(line2 ?? '', / 6 [67] CLOSE /);
      const [closed] = await ct.get([second]);
      assert.equal(closed!.tcpState, 'CLOSE');
      assert.equal(ct.stats().updates, 3);
    }));

  it('sets the liberal flag on both directions of a real TCP connection', () =>
    withConntrack(async ({ ct }, netns) => {
      // conntrack -I connections are liberal from the start (the kernel sets BE_LIBERAL on
      // TCP connections ctnetlink creates): this one comes from real traffic.
      await sh(`nft -f - <<'EOF'
table inet fgct { chain out { type filter hook output priority 0; ct state new,established counter accept; }; }
EOF
python3 - <<'EOF'
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 8080)); s.listen()
c = socket.socket(); c.bind(('127.0.0.1', 45000)); c.connect(('127.0.0.1', 8080)); a, _ = s.accept()
c.send(b'x'); a.recv(1); a.send(b'y'); c.recv(1)
EOF`, { netns });
      const tuple: CtTuple = { family: 4, proto: 'tcp', src: '127.0.0.1', dst: '127.0.0.1', sport: 45000, dport: 8080 };
      const [before] = await ct.get([tuple]);
      assert.ok(before);
      assert.ok(before.status & IPS.ASSURED);
      assert.equal((before.tcpFlags.orig | before.tcpFlags.reply) & TCP_FLAG.BE_LIBERAL, 0);
      assert.deepEqual(await ct.update([{ orig: tuple, liberal: true }]), { ok: 1, notFound: 0, failed: 0 });
      const [after] = await ct.get([tuple]);
      assert.equal(after!.tcpFlags.orig & TCP_FLAG.BE_LIBERAL, TCP_FLAG.BE_LIBERAL);
      assert.equal(after!.tcpFlags.reply & TCP_FLAG.BE_LIBERAL, TCP_FLAG.BE_LIBERAL);
      assert.equal(after!.tcpState, before.tcpState);
      assert.equal(after!.id, before.id);
    }));

  it('reports NEW, UPDATE and DESTROY events for conntrack -I, -U and -D', () =>
    withConntrack(
      async ({ ct, events }, netns) => {
        await insert(netns, TCP_ARGS);
        await sh('conntrack -U -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1000 --dport 80 -m 42', { netns });
        await sh('conntrack -D -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1000 --dport 80', { netns });
        await until('three events', () => (events.length >= 3 ? true : undefined));
        assert.deepEqual(
          events.map((e) => e.type),
          ['new', 'update', 'destroy'],
        );
        for (const e of events) assert.deepEqual(e.conn.orig, TCP_TUPLE);
        assert.equal(events[0]!.conn.tcpState, 'ESTABLISHED');
        assert.equal(events[1]!.conn.mark, 42);
        assert.equal(new Set(events.map((e) => e.conn.id)).size, 1);
        assert.equal(ct.stats().events, 3);
      },
      { events: ['new', 'update', 'destroy'] },
    ));

  it('hears a DESTROY event for every connection when the table is flushed', () =>
    withConntrack(
      async ({ events }, netns) => {
        await sh('for p in $(seq 3000 3019); do conntrack -I -p udp -s 10.2.0.1 -d 10.2.0.2 --sport $p --dport 53 -t 100 >/dev/null 2>&1; done', { netns });
        await sh('conntrack -F', { netns });
        await until('20 destroy events', () => (events.length >= 20 ? true : undefined));
        assert.equal(events.length, 20);
        assert.ok(events.every((e) => e.type === 'destroy'));
        assert.deepEqual(events.map((e) => e.conn.orig.sport).sort(), Array.from({ length: 20 }, (_, i) => 3000 + i));
      },
      { events: ['destroy'] },
    ));

  it('sees a connection made by real UDP traffic as confirmed, with its reply seen', () =>
    withConntrack(async ({ ct }, netns) => {
      await sh(`nft -f - <<'EOF'
table inet fgct { chain out { type filter hook output priority 0; ct state new,established counter accept; }; }
EOF
python3 - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 7000))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(('127.0.0.1', 7001))
c.sendto(b'ping', ('127.0.0.1', 7000)); data, peer = s.recvfrom(100); s.sendto(b'pong', peer); c.recvfrom(100)
EOF`, { netns });
      const [conn] = await ct.get([{ family: 4, proto: 'udp', src: '127.0.0.1', dst: '127.0.0.1', sport: 7001, dport: 7000 }]);
      assert.ok(conn);
      assert.ok(conn.status & IPS.CONFIRMED);
      assert.ok(conn.status & IPS.SEEN_REPLY);
      assert.equal(conn.tcpState, null);
    }));

  it('resynchronises with the whole table after the event socket overruns', () =>
    withConntrack(
      async ({ ct, events, resyncs }, netns) => {
        // Thousands of new connections at once (real UDP flows on lo) into a tiny buffer.
        await sh(`nft -f - <<'EOF'
table inet fgct { chain out { type filter hook output priority 0; ct state new counter accept; }; }
EOF
python3 - <<'EOF'
import socket
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(20000, 24000): c.sendto(b'x', ('127.0.0.1', port))
EOF`, { netns });
        await until('a resync', () => (resyncs.length >= 1 ? true : undefined));
        const s = ct.stats();
        assert.ok(s.enobufs >= 1, `enobufs ${s.enobufs}`);
        assert.ok(s.resyncs >= 1);
        // The overrun can come while the flows are still being made, and another one can follow
        // the first resync: what a consumer knows is the last resync's table and the events that
        // got through around it, and that must come to cover every connection once the events
        // stop (nothing is destroyed here).
        const sample: number[] = [];
        for (let p = 20000; p < 24000; p += 97) sample.push(p);
        const knownPorts = (): Set<number> => {
          const last = resyncs[resyncs.length - 1]!;
          const known = [...last, ...events.filter((e) => e.type === 'new').map((e) => e.conn)];
          return new Set(known.filter((c) => c.orig.proto === 'udp' && c.orig.dst === '127.0.0.1').map((c) => c.orig.dport));
        };
        assert.ok(resyncs[resyncs.length - 1]!.length > 0, 'the resync holds the table');
        await until('every connection in the last resync or an event', () => (sample.every((p) => knownPorts().has(p)) ? true : undefined)).catch(() => {
          const missing = sample.filter((p) => !knownPorts().has(p));
          assert.fail(`ports ${missing.join(', ')} in neither the last resync (${resyncs.length} resyncs) nor an event`);
        });
      },
      { events: ['new', 'update', 'destroy'], rcvbuf: 4096 },
    ));

  it('lets a process exit that never closed its Conntrack, with requests answered first', () =>
    withNetns(async (netns) => {
      const script = `const { Conntrack } = require(${JSON.stringify(require.resolve('../../lib/conntrack'))});
const ct = Conntrack.open({ netns: ${JSON.stringify(netns)}, events: ['new', 'update', 'destroy'], onEvents() {}, onResync() {} });
ct.dump().then((all) => console.log('dumped', all.length));`;
      const out = await sh(['node', '-e', script], { timeoutMs: 20_000 });
      assert.equal(out.trim(), 'dumped 0');
    }, 'fgct'));

  it('rejects invalid tuples, updates and options with messages naming the parameter', () =>
    withConntrack(async ({ ct }) => {
      await assert.rejects(ct.get([{ ...TCP_TUPLE, sport: 70000 }]), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT', message: /tuples\[0\]\.sport: expected an integer 0\.\.65535/ });
      await assert.rejects(ct.get([{ ...TCP_TUPLE, family: 6 }]), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT', message: /tuples\[0\]\.src: 10\.0\.0\.1 is not an IPv6 address/ });
      await assert.rejects(ct.get([{ ...TCP_TUPLE, proto: 'icmp' as 'tcp' }]), { message: /tuples\[0\]\.proto: expected 'tcp' or 'udp'/ });
      await assert.rejects(ct.get([{ ...TCP_TUPLE, dst: 'nope' }]), { message: /tuples\[0\]\.dst/ });
      await assert.rejects(ct.update([{ orig: TCP_TUPLE, tcpState: 'OPEN' as 'CLOSE' }]), { message: /updates\[0\]\.tcpState: expected one of/ });
      await assert.rejects(ct.update([{ orig: { ...TCP_TUPLE, proto: 'udp' }, liberal: true }]), { message: /updates\[0\]\.liberal/ });
      await assert.rejects(ct.update([{ orig: TCP_TUPLE, timeout: -1 }]), { message: /updates\[0\]\.timeout/ });
      assert.throws(() => Conntrack.open({ events: ['created' as 'new'], onEvents: () => {}, onResync: () => {} }), { message: /options\.events\[0\]/ });
      assert.throws(() => Conntrack.open({ events: [], onEvents: () => {}, onResync: () => {}, netns: '/nonexistent/ns' }), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT' });
      ct.close();
      await assert.rejects(ct.get([TCP_TUPLE]), { code: 'ERR_FLOWGATE_CONNTRACK_CLOSED' });
    }));

  it('reads conntrack timeout sysctls', () => {
    assert.equal(conntrackSysctl('tcp_timeout_close'), Number(require('node:fs').readFileSync('/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close', 'utf8')));
    assert.throws(() => conntrackSysctl('../x'), { code: 'ERR_FLOWGATE_INVALID_ARGUMENT' });
    assert.throws(() => conntrackSysctl('no_such_timeout'), { code: 'ERR_FLOWGATE_CONNTRACK' });
  });

  it('measures 100k gets and updates (prints, asserts nothing about speed)', () =>
    withConntrack(async ({ ct }, netns) => {
      const N = 100_000;
      await sh(`nft -f - <<'EOF'
table inet fgct { chain out { type filter hook output priority 0; ct state new counter accept; }; }
EOF
sysctl -qw net.netfilter.nf_conntrack_max=262144
python3 - <<'EOF'
import socket
for src in ('127.0.0.2', '127.0.0.3'):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind((src, 9))
    for port in range(10000, 60000): c.sendto(b'x', ('127.0.0.1', port))
EOF`, { netns, timeoutMs: 60_000 });
      const tuples: CtTuple[] = [];
      for (const src of ['127.0.0.2', '127.0.0.3']) for (let p = 10000; p < 60000; p++) tuples.push({ family: 4, proto: 'udp', src, dst: '127.0.0.1', sport: 9, dport: p });
      let t0 = process.hrtime.bigint();
      const got = await ct.get(tuples);
      const getS = Number(process.hrtime.bigint() - t0) / 1e9;
      const found = got.filter((c) => c !== null).length;
      t0 = process.hrtime.bigint();
      const r = await ct.update(tuples.map((orig) => ({ orig, timeout: 300 })));
      const updS = Number(process.hrtime.bigint() - t0) / 1e9;
      console.log(`      ${N} gets: ${(N / getS).toFixed(0)}/s (${found} found); ${N} updates: ${(N / updS).toFixed(0)}/s (ok ${r.ok}, not found ${r.notFound}, failed ${r.failed})`);
      assert.equal(got.length, N);
      assert.equal(r.ok + r.notFound + r.failed, N);
    }));
});
