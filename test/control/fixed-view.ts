// A GatewayView with fixed, distinct figures, for tests of what serves or shows a view (the
// control socket, /metrics, the flows and stats commands) rather than of the gateway.
import type { GatewayFlow, GatewayStats, GatewayTraceRecord, GatewayView, PortXstats } from '../../lib/gateway/types';

export function fixedStats(): GatewayStats {
  return {
    uptime: 93784.5,
    monotonic: 1234567.125,
    ports: {
      eth0: { rx_packets: 1200, rx_bytes: 180000, rx_dropped: 3, rx_errors: 1, tx_packets: 1100, tx_bytes: 170000, tx_dropped: 2, tx_errors: 0 },
      eth1: { rx_packets: 2300, rx_bytes: 290000, rx_dropped: 0, rx_errors: 0, tx_packets: 2200, tx_bytes: 280000, tx_dropped: 0, tx_errors: 4 },
    },
    fastpath: { packets: 3000, bytes: 420000 },
    slowpath: { packets: 200, reasons: { miss: 180, teardown: 20 }, policed: 7 },
    drops: { packets: 5, reasons: { truncated: 5 } },
    flows: {
      active: 3,
      entries: 6,
      capacity: 1048576,
      added: 10,
      removed: 7,
      insert_failed: 1,
      removed_by: { idle: 5, teardown: 2 },
    },
    learner: {
      observations: 400,
      observations_lost: 2,
      offload_latency_ms: { p50: 1.25, p99: 4 },
      forwarded: 190,
      connections: 3,
      directions: 11,
      evicted: { pending: 0, directions: 4, queries: 0 },
      tick_ms: { last: 0.5, max: 2.25 },
      heap_bytes: 12_345_678,
      conntrack: {
        queries: 60,
        not_found: 1,
        refused: { not_established: 40, helper: 3 },
        updates: 9,
        update_failures: 1,
        events: 12,
        enobufs: 0,
        resyncs: 0,
      },
    },
    workers: [{ index: 0, cpu: 1, busy_ratio: 0.125, rx_packets: 3500, fast_packets: 3000 }],
    mbufs: { in_use: 2048, total: 32767 },
    kernel: { events: 41, batches: 9, errors: 1, next_hops_rewritten: 2, mtu_refused: 1, enobufs: 1, resyncs: 1, routes: { ipv4: 1000003, ipv6: 12 } },
    process: { rss_bytes: 98_765_432, event_loop_delay_ms: { p99: 3.5, max: 12.25 } },
  };
}

export function fixedFlows(): GatewayFlow[] {
  return [
    {
      id: 17,
      proto: 'tcp',
      src: '192.168.0.10',
      dst: '10.0.0.1',
      sport: 43210,
      dport: 443,
      nat: null,
      in: 'eth0',
      out: 'tun0',
      packets: 10,
      bytes: 1500,
      tunnel: 'tun0',
      tunnel_mode: 'ip4ip6',
      idle: 3.7,
      state: 'offloaded',
      reply: { proto: 'tcp', src: '10.0.0.1', dst: '192.168.0.10', sport: 443, dport: 43210, nat: null, in: 'tun0', out: 'eth0', packets: 8, bytes: 9000 },
    },
    {
      id: 18,
      proto: 'udp',
      src: '2001:db8:1::10',
      dst: '2001:db8:2::20',
      sport: 5353,
      dport: 53,
      nat: { src: '2001:db8:2::1', dst: '2001:db8:2::20', sport: 61000, dport: 53 },
      in: 'eth0',
      out: 'eth1',
      packets: 1,
      bytes: 80,
      tunnel: null,
      tunnel_mode: null,
      idle: 0,
      state: 'teardown',
      reply: null,
    },
  ];
}

/** Extended statistics as net_pcap reports them (eth0) and with a driver's own (eth1). */
export function fixedXstats(): PortXstats {
  return {
    eth0: { rx_good_packets: 1200, tx_good_packets: 1100, rx_good_bytes: 180000, tx_good_bytes: 170000, rx_missed_errors: 0, rx_errors: 1, rx_q0_packets: 1200 },
    eth1: { rx_good_packets: 2300, tx_good_packets: 2200, rx_crc_errors: 0, mac_local_errors: 7 },
  };
}

/** A view whose figures a test may change between requests. */
export class FixedView implements GatewayView {
  statsValue: GatewayStats = fixedStats();
  flowsValue: GatewayFlow[] = fixedFlows();

  stats(): GatewayStats {
    return this.statsValue;
  }

  xstatsValue: PortXstats = fixedXstats();

  xstats(): PortXstats {
    return this.xstatsValue;
  }

  /** Flows per page of flows(): the default sends them all in one. */
  pageSize = Number.MAX_SAFE_INTEGER;

  async *flows(): AsyncGenerator<GatewayFlow[]> {
    for (let i = 0; i < this.flowsValue.length; i += this.pageSize) yield this.flowsValue.slice(i, i + this.pageSize);
  }

  /** No dataplane: a trace that sees no packet and ends at once. */
  async *trace(): AsyncGenerator<GatewayTraceRecord[]> {}
}
