/**
 * Prometheus metrics: the text exposition format at `metrics.listen`, /metrics only.
 *
 * Figures are read from the GatewayView when Prometheus scrapes, never pushed per packet:
 * the fast path keeps per-lcore counters and the gateway sums them in stats(), once per
 * scrape. Every flowgate metric is listed in METRICS below, each derived from one field of
 * GatewayStats, so that the exposition and the stats command cannot disagree; the NICs'
 * extended statistics, which stats does not carry, come from the view's xstats(), also
 * once per scrape.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

import { GATEWAY_NOT_READY } from './control/errors';
import { flowgateVersion } from './control/protocol';
import { FlowgateError } from './errors';
import { PORT_COUNTERS, type GatewayStats, type GatewayView } from './gateway/types';
import { silentLogger, type Logger } from './log';

type Labels = Record<string, string>;

interface Sample {
  labels?: Labels;
  value: number;
}

export interface MetricDefinition {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labelNames: readonly string[];
  /** `view`: for what is read only when scraped, not part of stats. */
  samples(stats: GatewayStats, view: GatewayView): Sample[];
}

function byLabel(label: string, values: Record<string, number>): Sample[] {
  return Object.entries(values).map(([key, value]) => ({ labels: { [label]: key }, value }));
}

function single(value: number): Sample[] {
  return [{ value }];
}

const MS_PER_SECOND = 1000;

/** Every flowgate_* metric, in exposition order. */
export const METRICS: readonly MetricDefinition[] = [
  ...PORT_COUNTERS.map(
    ({ field, help }): MetricDefinition => ({
      name: `flowgate_port_${field}_total`,
      help,
      type: 'counter',
      labelNames: ['port'],
      samples: (stats) => Object.entries(stats.ports).map(([port, counters]) => ({ labels: { port }, value: counters[field] })),
    }),
  ),
  {
    name: 'flowgate_port_xstat',
    // A gauge: drivers mix counters with levels, and the names (rx_*_packets, *_errors) say which.
    help: "The port NIC's extended statistics (rte_eth_xstats, as ethtool -S), by statistic name; VLAN sub-interfaces have none.",
    type: 'gauge',
    labelNames: ['port', 'name'],
    samples: (_stats, view) =>
      Object.entries(view.xstats()).flatMap(([port, xstats]) => Object.entries(xstats).map(([name, value]) => ({ labels: { port, name }, value }))),
  },
  {
    name: 'flowgate_fastpath_packets_total',
    help: 'Packets forwarded by the fast path.',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.fastpath.packets),
  },
  {
    name: 'flowgate_fastpath_bytes_total',
    help: 'L3 bytes forwarded by the fast path (the inner packet when tunnelled).',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.fastpath.bytes),
  },
  {
    name: 'flowgate_slowpath_packets_total',
    help: 'Packets handed to the kernel slow path, by reason (miss, ttl_expired, too_big, ...).',
    type: 'counter',
    labelNames: ['reason'],
    samples: (stats) => byLabel('reason', stats.slowpath.reasons),
  },
  {
    name: 'flowgate_slowpath_policed_packets_total',
    help: 'Packets the punt policer kept from the kernel slow path.',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.slowpath.policed),
  },
  {
    name: 'flowgate_dropped_packets_total',
    help: 'Packets dropped by the fast path, by reason (truncated, bad_header, ...).',
    type: 'counter',
    labelNames: ['reason'],
    samples: (stats) => byLabel('reason', stats.drops.reasons),
  },
  {
    name: 'flowgate_flows_active',
    help: 'Connections offloaded to the fast path now.',
    type: 'gauge',
    labelNames: [],
    samples: (stats) => single(stats.flows.active),
  },
  {
    name: 'flowgate_flowtable_entries',
    help: 'Flowtable entries in use (one per direction of a connection).',
    type: 'gauge',
    labelNames: [],
    samples: (stats) => single(stats.flows.entries),
  },
  {
    name: 'flowgate_flowtable_capacity',
    help: 'Flowtable capacity in entries (flowtable.size).',
    type: 'gauge',
    labelNames: [],
    samples: (stats) => single(stats.flows.capacity),
  },
  {
    name: 'flowgate_flows_added_total',
    help: 'Connections offloaded since start.',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.flows.added),
  },
  {
    name: 'flowgate_flows_removed_total',
    help: 'Connections removed from the fast path since start.',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.flows.removed),
  },
  {
    name: 'flowgate_flows_removed_by_reason_total',
    help: 'Connections removed from the fast path, by reason (idle timeout, TCP FIN/RST, invalidation).',
    type: 'counter',
    labelNames: ['reason'],
    samples: (stats) => byLabel('reason', stats.flows.removed_by),
  },
  {
    name: 'flowgate_flowtable_insert_failures_total',
    help: 'Connections that could not be offloaded (flowtable full or bucket overflow).',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.flows.insert_failed),
  },
  {
    name: 'flowgate_learner_observations_total',
    help: 'Observation records the learner received from the fast path (punts and kernel egress).',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.learner.observations),
  },
  {
    name: 'flowgate_learner_observations_lost_total',
    help: 'Observation records lost because the ring to the learner was full.',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.learner.observations_lost),
  },
  {
    name: 'flowgate_conntrack_queries_total',
    help: 'Connections the learner looked up in conntrack (ctnetlink) after the kernel forwarded one of their packets.',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.learner.conntrack.queries),
  },
  {
    name: 'flowgate_conntrack_refused_total',
    help: 'Conntrack answers that did not allow offloading, by reason (not_established, helper, unconfirmed, seq_adjust, nat_clash, l4proto).',
    type: 'counter',
    labelNames: ['reason'],
    samples: (stats) => byLabel('reason', stats.learner.conntrack.refused),
  },
  {
    name: 'flowgate_conntrack_resyncs_total',
    help: 'Resynchronisations from a conntrack dump after its events were lost (ENOBUFS).',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.learner.conntrack.resyncs),
  },
  {
    name: 'flowgate_learner_evicted_total',
    help: 'Learner state dropped to stay within its bounds, by the bound that was reached (pending records, forwarded directions, queued conntrack queries).',
    type: 'counter',
    labelNames: ['reason'],
    samples: (stats) => byLabel('reason', stats.learner.evicted),
  },
  {
    name: 'flowgate_kernel_events_total',
    help: "Kernel link, address, route and neighbour changes the gateway received.",
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.kernel.events),
  },
  {
    name: 'flowgate_kernel_event_errors_total',
    help: 'Kernel changes the gateway failed to apply (logged; the others of their batch still applied).',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.kernel.errors),
  },
  {
    name: 'flowgate_kernel_routes',
    help: "Routes in the kernel's tables (all of them), by family.",
    type: 'gauge',
    labelNames: ['family'],
    samples: (stats) => byLabel('family', stats.kernel.routes),
  },
  {
    name: 'flowgate_kernel_resyncs_total',
    help: 'Resynchronisations from rtnetlink dumps after kernel events were lost (ENOBUFS).',
    type: 'counter',
    labelNames: [],
    samples: (stats) => single(stats.kernel.resyncs),
  },
  {
    name: 'flowgate_mbufs_in_use',
    help: 'Packet buffers (mbufs) taken from the pool: in queues, rings and lcore caches.',
    type: 'gauge',
    labelNames: [],
    samples: (stats) => single(stats.mbufs.in_use),
  },
  {
    name: 'flowgate_event_loop_delay_seconds',
    help: "The control thread's event-loop delay over the last completed 10 s window: 99th percentile and maximum.",
    type: 'gauge',
    labelNames: ['quantile'],
    samples: (stats) => [
      { labels: { quantile: '0.99' }, value: stats.process.event_loop_delay_ms.p99 / MS_PER_SECOND },
      { labels: { quantile: '1' }, value: stats.process.event_loop_delay_ms.max / MS_PER_SECOND },
    ],
  },
  {
    name: 'flowgate_learner_offload_latency_seconds',
    help: 'Time from the packet that made a connection offloadable to its offload: median and 99th percentile.',
    type: 'gauge',
    labelNames: ['quantile'],
    samples: (stats) => {
      const { p50, p99 } = stats.learner.offload_latency_ms;
      // No sample until a connection has been offloaded: 0 would claim an instant offload.
      const samples: Sample[] = [];
      if (p50 !== null) samples.push({ labels: { quantile: '0.5' }, value: p50 / MS_PER_SECOND });
      if (p99 !== null) samples.push({ labels: { quantile: '0.99' }, value: p99 / MS_PER_SECOND });
      return samples;
    },
  },
  {
    name: 'flowgate_worker_busy_ratio',
    help: 'Share of its cycles a worker lcore spent on packets (0..1).',
    type: 'gauge',
    labelNames: ['worker'],
    samples: (stats) => stats.workers.map((w) => ({ labels: { worker: String(w.index) }, value: w.busy_ratio })),
  },
  {
    name: 'flowgate_worker_rx_packets_total',
    help: 'Packets a worker lcore received from its rx queues.',
    type: 'counter',
    labelNames: ['worker'],
    samples: (stats) => stats.workers.map((w) => ({ labels: { worker: String(w.index) }, value: w.rx_packets })),
  },
  {
    name: 'flowgate_worker_fastpath_packets_total',
    help: 'Packets a worker lcore forwarded on the fast path.',
    type: 'counter',
    labelNames: ['worker'],
    samples: (stats) => stats.workers.map((w) => ({ labels: { worker: String(w.index) }, value: w.fast_packets })),
  },
  {
    name: 'flowgate_uptime_seconds',
    help: 'Seconds since the gateway started.',
    type: 'gauge',
    labelNames: [],
    samples: (stats) => single(stats.uptime),
  },
  {
    name: 'flowgate_build_info',
    help: 'Always 1; the version label says which flowgate is running.',
    type: 'gauge',
    labelNames: ['version'],
    samples: () => [{ labels: { version: flowgateVersion() }, value: 1 }],
  },
];

/** The registry of one gateway: flowgate_* metrics and the standard process_* and nodejs_* ones. */
export class GatewayMetrics {
  readonly registry = new Registry();
  /** The stats of the scrape being rendered: one stats() call per scrape, shared by every metric. */
  private scrape: GatewayStats | undefined;

  constructor(private readonly view: GatewayView) {
    for (const definition of METRICS) this.register(definition);
    collectDefaultMetrics({ register: this.registry });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text. Throws what view.stats() throws. */
  async render(): Promise<string> {
    this.scrape = this.view.stats();
    try {
      return await this.registry.metrics();
    } finally {
      this.scrape = undefined;
    }
  }

  private stats(): GatewayStats {
    // A registry.metrics() call from elsewhere still gets current figures.
    return this.scrape ?? this.view.stats();
  }

  private register(definition: MetricDefinition): void {
    const metrics = this;
    const config = { name: definition.name, help: definition.help, labelNames: [...definition.labelNames], registers: [this.registry] };
    if (definition.type === 'counter') {
      new Counter({
        ...config,
        collect(this: Counter) {
          // The gateway's counters are the source: replace, not add (a removed port's series goes too).
          this.reset();
          for (const sample of definition.samples(metrics.stats(), metrics.view)) this.inc(sample.labels ?? {}, sample.value);
        },
      });
    } else {
      new Gauge({
        ...config,
        collect(this: Gauge) {
          this.reset();
          for (const sample of definition.samples(metrics.stats(), metrics.view)) this.set(sample.labels ?? {}, sample.value);
        },
      });
    }
  }
}

/** The metrics endpoint could not listen (ERR_FLOWGATE_METRICS_LISTEN). */
export class MetricsListenError extends FlowgateError {
  constructor(listen: string, reason: string, cause: unknown) {
    super('ERR_FLOWGATE_METRICS_LISTEN', `metrics.listen ${listen}: ${reason}`, { cause });
  }
}

export interface MetricsServerOptions {
  /** Host name or address without brackets (compileConfig's metrics.host); port 0 picks a free one. */
  host: string;
  port: number;
  view: GatewayView;
  log?: Logger;
}

export class MetricsServer {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: http.Server,
    /** Where it listens, the port resolved when 0 was asked for. */
    readonly host: string,
    readonly port: number,
  ) {}

  /** "127.0.0.1:9464", "[::1]:9464": what metrics.listen would say. */
  get listen(): string {
    return this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  static async listen(options: MetricsServerOptions): Promise<MetricsServer> {
    const log = (options.log ?? silentLogger).child({ component: 'metrics' });
    const metrics = new GatewayMetrics(options.view);
    const server = http.createServer((req, res) => void handle(metrics, log, req, res));
    // Scrapers hold connections open between scrapes; stopping must not wait for them.
    server.keepAliveTimeout = 5000;
    const wanted = options.host.includes(':') ? `[${options.host}]:${options.port}` : `${options.host}:${options.port}`;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const reason = err.code === 'EADDRINUSE' ? 'the address is already in use' : err.code === 'EADDRNOTAVAIL' ? 'no interface has that address' : err.message;
        reject(new MetricsListenError(wanted, reason, err));
      });
      server.listen({ host: options.host, port: options.port }, () => resolve());
    });
    const address = server.address() as AddressInfo;
    const running = new MetricsServer(server, address.address, address.port);
    log.debug('metrics endpoint listening', { listen: running.listen });
    return running;
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closing;
  }
}

async function handle(metrics: GatewayMetrics, log: Logger, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
  if (pathname !== '/metrics') {
    reply(res, 404, 'text/plain; charset=utf-8', 'not found: flowgate serves /metrics only\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    reply(res, 405, 'text/plain; charset=utf-8', 'method not allowed: use GET\n');
    return;
  }
  try {
    const body = await metrics.render();
    // Node sends no body for HEAD, and keeps the Content-Length of the GET.
    reply(res, 200, metrics.contentType, body);
  } catch (err) {
    // Still starting: 503 tells Prometheus the target is there but has no figures yet.
    if (err instanceof FlowgateError && err.code === GATEWAY_NOT_READY) {
      reply(res, 503, 'text/plain; charset=utf-8', `${err.message}\n`);
      return;
    }
    log.error('metrics scrape failed', { err });
    reply(res, 500, 'text/plain; charset=utf-8', `scrape failed: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

function reply(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}
