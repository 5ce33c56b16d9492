/**
 * What a running gateway exposes to the control socket, the metrics endpoint and the CLI.
 * The Gateway (lib/gateway/gateway.ts) owns the dataplane, the kernel mirror and the
 * learner; everything that only observes it depends on these types, not on the class.
 */
import type { TunnelMode } from '../config/schema';
import type { CaptureRequest, CaptureResult } from './capture';

export interface PortCounters {
  rx_packets: number;
  rx_bytes: number;
  /** Packets the device could not take in (ring full, no mbuf). */
  rx_dropped: number;
  rx_errors: number;
  tx_packets: number;
  tx_bytes: number;
  /** Packets flowgate could not hand to the device (queue full). */
  tx_dropped: number;
  tx_errors: number;
}

/** Every port counter, with what it counts: the stats table and the metrics list these. */
export const PORT_COUNTERS: readonly { field: keyof PortCounters; help: string }[] = [
  { field: 'rx_packets', help: 'Packets received on the port.' },
  { field: 'rx_bytes', help: 'Bytes received on the port.' },
  { field: 'rx_dropped', help: 'Packets the port could not take in (ring full, no mbuf).' },
  { field: 'rx_errors', help: 'Receive errors reported by the port.' },
  { field: 'tx_packets', help: 'Packets sent on the port.' },
  { field: 'tx_bytes', help: 'Bytes sent on the port.' },
  { field: 'tx_dropped', help: 'Packets flowgate could not hand to the port (queue full).' },
  { field: 'tx_errors', help: 'Transmit errors reported by the port.' },
];

export interface GatewayStats {
  /** Seconds since the gateway started. */
  uptime: number;
  /**
   * When the counters were read, in seconds on the instance's monotonic clock (arbitrary
   * origin): the time base of rates, free of the client's clock and of the time a request
   * takes to arrive.
   */
  monotonic: number;
  /** Ports and VLAN sub-interfaces (a VLAN's: the frames demultiplexed to it and tagged for it). */
  ports: Record<string, PortCounters>;
  /** Packets and bytes the fast path forwarded (L3 bytes; the inner packet when tunnelled). */
  fastpath: { packets: number; bytes: number };
  /** Packets handed to the kernel, by reason (miss, ttl_expired, too_big, ...). */
  slowpath: { packets: number; reasons: Record<string, number>; policed: number };
  /** Packets dropped by the fast path, by reason (truncated, bad_header, ...). */
  drops: { packets: number; reasons: Record<string, number> };
  flows: {
    /** Offloaded connections now. */
    active: number;
    /** Flowtable entries (one per direction) and capacity. */
    entries: number;
    capacity: number;
    added: number;
    removed: number;
    insert_failed: number;
    /**
     * Removed by reason: idle timeout, teardown (a SYN on a closing TCP flow), invalidation
     * (route, neighbour, MTU, config), destroyed (conntrack destroyed the connection) and
     * resync (gone from conntrack while its events were lost).
     */
    removed_by: Record<string, number>;
  };
  learner: {
    /** Observation records received from the fast path (punts and kernel egress). */
    observations: number;
    /** Observation records lost because the ring was full. */
    observations_lost: number;
    /** Median and 99th percentile of offload latency, milliseconds (null: none yet): from the packet that made the connection offloadable. */
    offload_latency_ms: { p50: number | null; p99: number | null };
    /** Packets the kernel forwarded (punt and egress paired). */
    forwarded: number;
    /** Offloaded connections, and forwarded directions remembered for the others. */
    connections: number;
    directions: number;
    /** State dropped to stay within the learner's bounds. */
    evicted: { pending: number; directions: number; queries: number };
    /** Time the last periodic pass took, and the longest one, milliseconds. */
    tick_ms: { last: number; max: number };
    /** The JavaScript heap in use, bytes. */
    heap_bytes: number;
    conntrack: {
      /** Connections looked up through ctnetlink, and those not found. */
      queries: number;
      not_found: number;
      /** Why conntrack's answer did not allow offloading: unconfirmed, not_established, helper, seq_adjust, nat_clash, l4proto. */
      refused: Record<string, number>;
      /** Connections updated (timeout, liberal, CLOSE) through ctnetlink, and failures. */
      updates: number;
      update_failures: number;
      /** Conntrack events received, ENOBUFS seen and the resynchronisations they caused. */
      events: number;
      enobufs: number;
      resyncs: number;
    };
  };
  workers: { index: number; cpu: number; busy_ratio: number; rx_packets: number; fast_packets: number }[];
  /** The packet buffer pool: mbufs taken (queues, rings, caches) and its size. */
  mbufs: { in_use: number; total: number };
  /** What the gateway did with the kernel's link, address, route and neighbour changes. */
  kernel: {
    /** Events received, and the batches they were handled in (each batch: one pass over the flows). */
    events: number;
    batches: number;
    /** Events that failed to apply (logged; the others still applied). */
    errors: number;
    /** Next hops moved to a neighbour's new MAC in place. */
    next_hops_rewritten: number;
    /** MTUs set on a port's kernel interface that its NIC refused (set back). */
    mtu_refused: number;
    /** Overruns of the rtnetlink event socket, and the resynchronisations they caused. */
    enobufs: number;
    resyncs: number;
    /** Routes in the kernel's tables (all of them), by family. */
    routes: { ipv4: number; ipv6: number };
  };
  process: {
    /** Resident memory, bytes. */
    rss_bytes: number;
    /** Event-loop delay over the last completed 10 s window, milliseconds. */
    event_loop_delay_ms: { p99: number; max: number };
  };
}

export interface FlowEndpointView {
  proto: 'tcp' | 'udp';
  /** The tuple as packets arrive (conntrack's original tuple, or its reply tuple for the reply). */
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** NAT: the tuple as packets leave, when it differs. */
  nat: { src: string; dst: string; sport: number; dport: number } | null;
  /** Input and output device: a port, or a tunnel name for tunnelled traffic. */
  in: string;
  out: string;
  packets: number;
  bytes: number;
}

export interface GatewayFlow extends FlowEndpointView {
  id: number;
  /** The tunnel the connection goes through, if any. */
  tunnel: string | null;
  /** That tunnel's mode (ip4ip6, ip6ip6, ipip or sit); null without a tunnel. */
  tunnel_mode: TunnelMode | null;
  idle: number;
  /** 'offloaded'; 'closing' once FIN/RST passed (still forwarded); 'teardown' after a SYN on a closing flow (until reaped). */
  state: 'offloaded' | 'closing' | 'teardown';
  reply: FlowEndpointView | null;
}

export interface ReloadResult {
  /** Human-readable summary of what changed ("port eth2 added", "route default changed"). */
  changes: string[];
  /** Flows dropped because they were no longer valid. */
  flowsRemoved: number;
}

/** Port name to its NIC's extended statistics (rte_eth_xstats), name to value in the driver's order. */
export type PortXstats = Record<string, Record<string, number>>;
/** One traced packet (`flowgate trace`, Dataplane.traceRead). */
export interface GatewayTraceRecord {
  /** 0.. in the order packets were taken. */
  seq: number;
  /** When it was handled (ISO 8601). */
  time: string;
  /** The worker that handled it, or 'slowpath': what the kernel sent out of a TAP or TUN. */
  worker: number | 'slowpath';
  /** Input port or VLAN (a TAP or TUN for 'slowpath'). */
  in: string;
  /** Output port, or the TAP/TUN it was punted to; null when it went nowhere. */
  out: string | null;
  decision: 'forward' | 'decap' | 'encap' | 'punt' | 'drop';
  /** The punt or drop reason (`flowgate stats` names them). */
  reason: string | null;
  /** Why it was punted, also when the punt ended in a drop. */
  punt_reason: string | null;
  /** The flow it hit, as `flowgate flows` numbers them, and which direction of it. */
  flow: number | null;
  flow_direction: 'original' | 'reply' | null;
  wire_length: number;
  /** Its first bytes (up to 128, hex) as received: an Ethernet frame, or an IP packet from a TUN. */
  rx_link: 'ethernet' | 'ip';
  rx: string;
  /** As sent, when it left somewhere. */
  tx_length: number | null;
  tx_link: 'ethernet' | 'ip' | null;
  tx: string | null;
}

/** The read-only view the control socket and metrics use. */
export interface GatewayView {
  stats(): GatewayStats;
  /** The offloaded connections a page at a time, so that a listing never holds them all. */
  flows(): AsyncIterable<readonly GatewayFlow[]>;
  /** Each port's NIC extended statistics (VLAN sub-interfaces have no NIC); read from the devices at each call. */
  xstats(): PortXstats;
  /**
   * Trace the next packets (lib/gateway/trace-view.ts): their records a page at a time until
   * the count; stopping the iteration stops the trace. One at a time: ERR_FLOWGATE_TRACE_BUSY.
   * `summary.lost` says at the end how many records were lost.
   */
  trace(options: { count?: number; port?: string; filter?: string }, summary?: { lost: number }): AsyncIterable<readonly GatewayTraceRecord[]>;
  /**
   * Copies of a port's frames into the request's FIFO as pcapng (lib/gateway/capture.ts),
   * until its count, its reader or the client (`alive` throws) goes. Absent: the instance
   * cannot capture.
   */
  capture?(request: CaptureRequest, alive: (written: number) => Promise<void>): Promise<CaptureResult>;
}
