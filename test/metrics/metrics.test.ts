import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';

import { GatewayNotReadyError } from '../../lib/control';
import { FlowgateError } from '../../lib/errors';
import { METRICS, MetricsServer } from '../../lib/metrics';
import { FixedView } from '../control/fixed-view';
import { parseExposition, sampleValue, type ExpositionFamily } from './exposition';

interface Reply {
  status: number;
  contentType: string;
  body: string;
}

function get(url: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('metrics endpoint', () => {
  let view: FixedView;
  let server: MetricsServer;
  let base: string;

  async function scrape(): Promise<Map<string, ExpositionFamily>> {
    const reply = await get(`${base}/metrics`);
    assert.equal(reply.status, 200, reply.body);
    return parseExposition(reply.body);
  }

  beforeEach(async () => {
    view = new FixedView();
    server = await MetricsServer.listen({ host: '127.0.0.1', port: 0, view });
    base = `http://${server.listen}`;
  });

  afterEach(async () => {
    await server.close();
  });

  it('serves the Prometheus text format at /metrics', async () => {
    const reply = await get(`${base}/metrics`);
    assert.equal(reply.status, 200);
    assert.match(reply.contentType, /^text\/plain; version=0\.0\.4/);
    assert.ok(parseExposition(reply.body).size > 0);
  });

  it('exposes per-port rx and tx packets, bytes, drops and errors as counters labelled by port', async () => {
    const families = await scrape();
    const expected: [string, string, number][] = [
      ['flowgate_port_rx_packets_total', 'eth0', 1200],
      ['flowgate_port_rx_bytes_total', 'eth0', 180000],
      ['flowgate_port_rx_dropped_total', 'eth0', 3],
      ['flowgate_port_rx_errors_total', 'eth0', 1],
      ['flowgate_port_tx_packets_total', 'eth0', 1100],
      ['flowgate_port_tx_bytes_total', 'eth0', 170000],
      ['flowgate_port_tx_dropped_total', 'eth0', 2],
      ['flowgate_port_tx_errors_total', 'eth0', 0],
      ['flowgate_port_rx_packets_total', 'eth1', 2300],
      ['flowgate_port_tx_errors_total', 'eth1', 4],
    ];
    for (const [name, port, value] of expected) {
      assert.equal(families.get(name)?.type, 'counter', name);
      assert.equal(sampleValue(families, name, { port }), value, `${name}{port="${port}"}`);
    }
    assert.equal(families.get('flowgate_port_rx_packets_total')?.samples.length, 2);
  });

  it('exposes fast-path traffic, slow-path packets and drops by reason', async () => {
    const families = await scrape();
    assert.equal(sampleValue(families, 'flowgate_fastpath_packets_total'), 3000);
    assert.equal(sampleValue(families, 'flowgate_fastpath_bytes_total'), 420000);
    assert.equal(sampleValue(families, 'flowgate_slowpath_packets_total', { reason: 'miss' }), 180);
    assert.equal(sampleValue(families, 'flowgate_slowpath_packets_total', { reason: 'teardown' }), 20);
    assert.equal(sampleValue(families, 'flowgate_slowpath_policed_packets_total'), 7);
    assert.equal(sampleValue(families, 'flowgate_dropped_packets_total', { reason: 'truncated' }), 5);
  });

  it('exposes flowtable occupancy as gauges and churn as counters', async () => {
    const families = await scrape();
    const gauges: [string, number][] = [
      ['flowgate_flows_active', 3],
      ['flowgate_flowtable_entries', 6],
      ['flowgate_flowtable_capacity', 1048576],
    ];
    for (const [name, value] of gauges) {
      assert.equal(families.get(name)?.type, 'gauge', name);
      assert.equal(sampleValue(families, name), value, name);
    }
    assert.equal(sampleValue(families, 'flowgate_flows_added_total'), 10);
    assert.equal(sampleValue(families, 'flowgate_flows_removed_total'), 7);
    assert.equal(sampleValue(families, 'flowgate_flows_removed_by_reason_total', { reason: 'idle' }), 5);
    assert.equal(sampleValue(families, 'flowgate_flows_removed_by_reason_total', { reason: 'teardown' }), 2);
    assert.equal(sampleValue(families, 'flowgate_flowtable_insert_failures_total'), 1);
  });

  it('exposes the learner figures, with the offload latency quantiles in seconds', async () => {
    const families = await scrape();
    assert.equal(sampleValue(families, 'flowgate_learner_observations_total'), 400);
    assert.equal(sampleValue(families, 'flowgate_learner_observations_lost_total'), 2);
    assert.equal(sampleValue(families, 'flowgate_learner_offload_latency_seconds', { quantile: '0.5' }), 0.00125);
    assert.equal(sampleValue(families, 'flowgate_learner_offload_latency_seconds', { quantile: '0.99' }), 0.004);
  });

  it('leaves the offload latency without samples until a connection has been offloaded', async () => {
    view.statsValue.learner.offload_latency_ms = { p50: null, p99: null };
    const families = await scrape();
    assert.equal(families.get('flowgate_learner_offload_latency_seconds')?.type, 'gauge');
    assert.deepEqual(families.get('flowgate_learner_offload_latency_seconds')?.samples, []);
  });

  it('exposes each worker busy ratio and packet counts labelled by worker', async () => {
    const families = await scrape();
    assert.equal(sampleValue(families, 'flowgate_worker_busy_ratio', { worker: '0' }), 0.125);
    assert.equal(sampleValue(families, 'flowgate_worker_rx_packets_total', { worker: '0' }), 3500);
    assert.equal(sampleValue(families, 'flowgate_worker_fastpath_packets_total', { worker: '0' }), 3000);
  });

  it("exposes each port NIC's extended statistics as the gauge flowgate_port_xstat labelled by port and name, read at each scrape", async () => {
    let reads = 0;
    view.xstats = () => {
      reads++;
      return view.xstatsValue;
    };
    const families = await scrape();
    assert.equal(reads, 1);
    assert.equal(families.get('flowgate_port_xstat')?.type, 'gauge');
    assert.equal(sampleValue(families, 'flowgate_port_xstat', { port: 'eth0', name: 'rx_good_packets' }), 1200);
    assert.equal(sampleValue(families, 'flowgate_port_xstat', { port: 'eth1', name: 'mac_local_errors' }), 7);
    assert.equal(sampleValue(families, 'flowgate_port_xstat', { port: 'eth1', name: 'rx_crc_errors' }), 0, 'zeros are exposed too');
    assert.equal(families.get('flowgate_port_xstat')?.samples.length, 11);
    view.xstatsValue = { eth1: { rx_good_packets: 2400 } };
    const next = await scrape();
    assert.equal(reads, 2);
    assert.deepEqual(next.get('flowgate_port_xstat')?.samples, [{ name: 'flowgate_port_xstat', labels: { port: 'eth1', name: 'rx_good_packets' }, value: 2400 }]);
  });

  it('names every flowgate metric flowgate_*, counters with _total, labels only port, reason, worker, quantile, family, version or name', async () => {
    const families = await scrape();
    const ours = [...families.values()].filter((f) => f.name.startsWith('flowgate_'));
    assert.deepEqual(
      ours.map((f) => f.name).sort(),
      METRICS.map((m) => m.name).sort(),
    );
    for (const family of ours) {
      assert.ok(family.help.length > 0, `${family.name} has HELP`);
      assert.equal(family.name.endsWith('_total'), family.type === 'counter', `${family.name} is a ${family.type}`);
      for (const sample of family.samples) {
        for (const label of Object.keys(sample.labels)) assert.ok(['port', 'reason', 'worker', 'quantile', 'family', 'version', 'name'].includes(label), `${family.name} label ${label}`);
      }
    }
  });

  it('reads the view at each scrape: new figures appear and a removed port disappears', async () => {
    await scrape();
    const stats = view.stats();
    view.statsValue = { ...stats, ports: { eth1: { ...stats.ports.eth1!, rx_packets: 9999 } }, fastpath: { packets: 4000, bytes: 500000 } };
    const families = await scrape();
    assert.equal(sampleValue(families, 'flowgate_port_rx_packets_total', { port: 'eth1' }), 9999);
    assert.equal(sampleValue(families, 'flowgate_port_rx_packets_total', { port: 'eth0' }), undefined);
    assert.equal(sampleValue(families, 'flowgate_fastpath_packets_total'), 4000);
  });

  it('asks the view for its figures once per scrape', async () => {
    let calls = 0;
    const stats = view.stats();
    view.stats = () => {
      calls++;
      return stats;
    };
    await scrape();
    assert.equal(calls, 1);
  });

  it('also serves the standard process metrics', async () => {
    const families = await scrape();
    assert.equal(families.get('process_resident_memory_bytes')?.type, 'gauge');
  });

  it('answers 404 for every path but /metrics, and 405 for other methods on it', async () => {
    for (const pathname of ['/', '/metrics/', '/metricsx', '/stats', '/favicon.ico']) {
      const reply = await get(`${base}${pathname}`);
      assert.equal(reply.status, 404, pathname);
      assert.equal(reply.body, 'not found: flowgate serves /metrics only\n');
    }
    assert.equal((await get(`${base}/metrics?name[]=x`)).status, 200, 'a query string is still /metrics');
    assert.equal((await get(`${base}/metrics`, 'POST')).status, 405);
  });

  it('answers 503 while the gateway is starting and 500 when the view fails', async () => {
    view.stats = () => {
      throw new GatewayNotReadyError();
    };
    const starting = await get(`${base}/metrics`);
    assert.equal(starting.status, 503);
    assert.equal(starting.body, 'flowgate is starting: the gateway is not up yet\n');
    view.stats = () => {
      throw new Error('boom');
    };
    const failing = await get(`${base}/metrics`);
    assert.equal(failing.status, 500);
    assert.equal(failing.body, 'scrape failed: boom\n');
  });

  it('listens on an IPv6 address and reports it in brackets', async () => {
    const v6 = await MetricsServer.listen({ host: '::1', port: 0, view });
    try {
      assert.match(v6.listen, /^\[::1\]:[0-9]+$/);
      const reply = await get(`http://${v6.listen}/metrics`);
      assert.equal(reply.status, 200);
      assert.equal(sampleValue(parseExposition(reply.body), 'flowgate_flows_active'), 3);
    } finally {
      await v6.close();
    }
  });

  it('fails with a clear error when the address is taken', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = taken.address() as net.AddressInfo;
    try {
      await assert.rejects(MetricsServer.listen({ host: '127.0.0.1', port, view }), (err: unknown) => {
        assert.ok(err instanceof FlowgateError);
        assert.equal(err.code, 'ERR_FLOWGATE_METRICS_LISTEN');
        assert.equal(err.message, `metrics.listen 127.0.0.1:${port}: the address is already in use`);
        return true;
      });
    } finally {
      taken.close();
    }
  });
});
