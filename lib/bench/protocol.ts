/**
 * What the benchmark parent and its measurement child say to each other over the fork()
 * IPC channel. EAL initialises once per process, so every measurement is a fresh child.
 */

export interface ResourcePlan {
  mbufs: number;
  /** Packet bytes per mbuf, without headroom. */
  mbufDataRoom: number;
  flowCapacity: number;
  /** What the dataplane will take from EAL memory (estimateMemory). */
  memoryBytes: number;
}

export interface ChildJobBase {
  /** Scenario name (scenarioFromName). */
  scenario: string;
  flows: number;
  /** The rx queues' pcaps, one per worker. */
  pcapFiles: string[];
  workerCpus: number[];
  resources: ResourcePlan;
  hugepages: 'on' | 'off';
}

export interface MeasureJob extends ChildJobBase {
  kind: 'measure';
  warmupSeconds: number;
  seconds: number;
}

export interface CaptureJob extends ChildJobBase {
  kind: 'capture';
  /** The pcap the forwarded packets are written to (net_pcap tx_pcap). */
  file: string;
  packets: number;
  timeoutSeconds: number;
}

export type ChildJob = MeasureJob | CaptureJob;

export interface FlowInstallReport {
  /** addFlow() calls that succeeded. */
  installed: number;
  /** addFlow() calls that failed (a full bucket pair, ...). */
  failed: number;
  /** The first failure's message, for the report. */
  firstError: string | null;
  /** Flowtable entries afterwards (one per direction). */
  entries: number;
  seconds: number;
}

/** Counter deltas over the measured window, summed over workers. */
export interface Measurement {
  kind: 'measure';
  elapsedSeconds: number;
  /** Worker threads' CPU time / (window x workers): below 1 when something else ran on their CPUs. */
  workerCpuShare: number;
  tscHz: number;
  /** busy + idle cycles of every worker over the window. */
  workerCycles: number;
  busyCycles: number;
  rxPackets: number;
  fastPackets: number;
  fastBytes: number;
  punts: Record<string, number>;
  drops: Record<string, number>;
  install: FlowInstallReport;
  hugepages: boolean;
  ealArgs: string[];
  warnings: string[];
}

export interface CaptureOutcome {
  kind: 'capture';
  /** Packets the sink reported sent when the dataplane stopped (>= the packets asked for). */
  sent: number;
  install: FlowInstallReport;
  warnings: string[];
}

export type ChildMessage =
  | { type: 'progress'; phase: string; fraction?: number }
  | { type: 'result'; result: Measurement | CaptureOutcome }
  | { type: 'error'; message: string; code?: string };
