/**
 * What the config checks need to know about the machine, kept apart so tests inject it.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { InvalidArgumentError } from './errors';

export interface Machine {
  /** CPUs this process may run worker lcores on, ascending. */
  cpus: readonly number[];
}

/** Parses the kernel's cpulist format ("0-3,8,10-11"), as in /sys/devices/system/cpu/online. */
export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  const trimmed = text.trim();
  if (trimmed === '') return [];
  for (const part of trimmed.split(',')) {
    const match = /^([0-9]+)(?:-([0-9]+))?$/.exec(part);
    if (match === null) throw new InvalidArgumentError(`expected a CPU list such as 0-3,8, found '${text.trim()}'`);
    const first = Number(match[1]);
    const last = match[2] === undefined ? first : Number(match[2]);
    if (last < first) throw new InvalidArgumentError(`expected a CPU list such as 0-3,8, found '${text.trim()}' (range ${part} is reversed)`);
    for (let cpu = first; cpu <= last; cpu++) cpus.add(cpu);
  }
  return [...cpus].sort((a, b) => a - b);
}

function readCpuList(file: string, pattern?: RegExp): number[] | undefined {
  try {
    const text = readFileSync(file, 'utf8');
    if (pattern === undefined) return parseCpuList(text);
    const match = pattern.exec(text);
    return match?.[1] === undefined ? undefined : parseCpuList(match[1]);
  } catch {
    return undefined;
  }
}

/**
 * Online CPUs, narrowed to this process's affinity: in a container or under taskset the
 * online list names CPUs that EAL could not pin a worker to.
 */
export function detectMachine(): Machine {
  const online =
    readCpuList('/sys/devices/system/cpu/online') ??
    Array.from({ length: availableParallelism() }, (_, cpu) => cpu);
  const allowed = readCpuList('/proc/self/status', /^Cpus_allowed_list:\s*(\S+)\s*$/m);
  const cpus = allowed === undefined ? online : online.filter((cpu) => allowed.includes(cpu));
  return { cpus: cpus.length > 0 ? cpus : online };
}

/** "0-3,8": the compact form used in messages. */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  const sorted = [...cpus].sort((a, b) => a - b);
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] ?? 0) + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}
