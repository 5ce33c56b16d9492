/**
 * EAL arguments. Decided here rather than in C++ so that they can be shown, logged and
 * tested: lcore mapping, memory mode (hugepages or the --no-huge fallback) and which PCI
 * devices EAL may touch.
 */
import * as fs from 'node:fs';

import { FlowgateError, InvalidArgumentError } from './errors';
import { detectMachine, formatCpuList } from './machine';

export type HugepageMode = 'auto' | 'on' | 'off';

export interface EalPlan {
  args: string[];
  /** The CPUs of the process when EAL was set up: the main lcore floats over all of them. */
  mainCpus: number[];
  hugepages: boolean;
  /** Set when hugepages were wanted but could not be had. */
  warning?: string;
}

export interface EalPlanInput {
  workerCpus: number[];
  hugepages: HugepageMode;
  /** Bytes the dataplane will allocate (mbufs, flowtable, ...), to size --no-huge memory. */
  memoryBytes: number;
  /** PCI addresses of the ports known at start; EAL probes only these (or none). */
  pciDevices: string[];
  extraArgs?: string[];
  logLevel?: 'debug' | 'info' | 'notice' | 'warning' | 'error';
  /** For tests: where hugepage counters and the CPU mask are read from. */
  system?: SystemFacts;
}

export interface SystemFacts {
  allowedCpus(): number[];
  freeHugepageBytes(): number;
}

const HUGEPAGES_2M = '/sys/kernel/mm/hugepages/hugepages-2048kB';
const HUGEPAGE_BYTES = 2 * 1024 * 1024;

export const linuxSystem: SystemFacts = {
  allowedCpus(): number[] {
    return [...detectMachine().cpus];
  },
  freeHugepageBytes(): number {
    try {
      return Number(fs.readFileSync(`${HUGEPAGES_2M}/free_hugepages`, 'utf8').trim()) * HUGEPAGE_BYTES;
    } catch {
      return 0;
    }
  },
};

/** Is this device string a PCI address (DDDD:BB:DD.F or BB:DD.F), possibly with arguments? */
export function isPciDevice(device: string): boolean {
  return /^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7](,|$)/.test(device);
}

export function planEal(input: EalPlanInput): EalPlan {
  const system = input.system ?? linuxSystem;
  const allowed = system.allowedCpus();
  if (input.workerCpus.length === 0) throw new InvalidArgumentError('workers.cpus: expected at least one CPU, found none');
  for (const cpu of input.workerCpus) {
    if (!allowed.includes(cpu))
      throw new InvalidArgumentError(
        `workers.cpus: CPU ${cpu} is not available to this process (available: ${formatCpuList(allowed)})`,
      );
  }
  if (new Set(input.workerCpus).size !== input.workerCpus.length)
    throw new InvalidArgumentError(`workers.cpus: each CPU may run one worker, found ${input.workerCpus.join(',')}`);

  // lcore 0 is the main lcore: the JavaScript thread that calls rte_eal_init. Mapping it to
  // every allowed CPU leaves it, and the libuv threads it starts later, unpinned. Workers
  // are lcores 1..n, one CPU each.
  const lcores = [`0@(${formatCpuList(allowed)})`, ...input.workerCpus.map((cpu, i) => `${i + 1}@${cpu}`)];
  const args = ['flowgate', '--lcores', lcores.join(','), '--no-telemetry'];
  args.push(`--log-level=${input.logLevel ?? 'warning'}`);
  // EAL warns at start about hugepage sizes that have no pages reserved: noise, not advice.
  if (input.logLevel === undefined) args.push('--log-level=lib.eal:error');
  if (input.pciDevices.length === 0) args.push('--no-pci');
  for (const dev of input.pciDevices) args.push('-a', dev);

  const plan: EalPlan = { args, mainCpus: allowed, hugepages: true };
  const free = system.freeHugepageBytes();
  const enough = free >= input.memoryBytes;
  if (input.hugepages === 'on' && !enough) {
    throw new FlowgateError(
      'ERR_FLOWGATE_NO_HUGEPAGES',
      `hugepages: on, but only ${mib(free)} MiB of 2 MiB hugepages are free and the dataplane needs about ` +
        `${mib(input.memoryBytes)} MiB; reserve more (echo N > ${HUGEPAGES_2M}/nr_hugepages) or set hugepages: auto`,
    );
  }
  if (input.hugepages === 'off' || !enough) {
    // Without hugepages EAL takes -m megabytes of ordinary memory up front; --no-huge
    // implies legacy memory, which --in-memory refuses, so only shared config is turned off.
    args.push('--no-huge', '-m', String(Math.ceil(input.memoryBytes / (1024 * 1024))), '--no-shconf');
    plan.hugepages = false;
    if (input.hugepages === 'auto')
      plan.warning =
        `only ${mib(free)} MiB of 2 MiB hugepages are free (about ${mib(input.memoryBytes)} MiB needed): ` +
        'running with --no-huge, which costs 37-60 % of the packet rate; reserve hugepages with ' +
        `echo N > ${HUGEPAGES_2M}/nr_hugepages`;
  }
  // Hugepage memory without files in hugetlbfs and without shared config: several flowgate
  // processes can run side by side and nothing is left behind.
  if (plan.hugepages) args.push('--in-memory');
  args.push(...(input.extraArgs ?? []));
  return plan;
}

function mib(bytes: number): number {
  return Math.round(bytes / (1024 * 1024));
}

/** What the dataplane allocates from EAL memory, with room for DPDK's own structures. */
export function estimateMemory(opts: {
  flowCapacity: number;
  workers: number;
  mbufs: number;
  mbufDataRoom: number;
}): number {
  const FLOW_ENTRY = 64;
  const FLOW_NAT = 64; // the NAT record array, parallel to the entries
  const FLOW_COUNTER = 16;
  const BUCKET = 64;
  const MBUF_OVERHEAD = 128 /* struct rte_mbuf */ + 128 /* headroom */ + 64 /* mempool header */;
  const buckets = 2 ** Math.ceil(Math.log2(Math.max(2, Math.ceil(opts.flowCapacity / 4))));
  const flowtable = opts.flowCapacity * (FLOW_ENTRY + FLOW_NAT + FLOW_COUNTER * opts.workers) + buckets * BUCKET;
  const mbufs = opts.mbufs * (opts.mbufDataRoom + MBUF_OVERHEAD);
  const adjacencies = 65536 * 16;
  const slack = 96 * 1024 * 1024; // ethdev rings, mempool caches, PMD state
  return flowtable + mbufs + adjacencies + slack;
}
