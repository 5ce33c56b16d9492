// EAL arguments as planned from the options and the machine, without starting EAL.
import assert from 'node:assert/strict';

import { estimateMemory, isPciDevice, planEal, SystemFacts } from '../../lib/eal';

const MiB = 1024 * 1024;
const machine = (cpus: number[], freeHugeMiB: number): SystemFacts => ({
  allowedCpus: () => cpus,
  freeHugepageBytes: () => freeHugeMiB * MiB,
});

describe('EAL plan', () => {
  const base = { hugepages: 'auto' as const, memoryBytes: 300 * MiB, pciDevices: [] };

  it('floats the main lcore (the JavaScript thread) over every allowed CPU and pins one lcore per worker', () => {
    const plan = planEal({ ...base, workerCpus: [2, 3], system: machine([0, 1, 2, 3], 1024) });
    const i = plan.args.indexOf('--lcores');
    assert.equal(plan.args[i + 1], '0@(0-3),1@2,2@3');
  });

  it('uses hugepages in memory, with no files and no shared config, when enough are free', () => {
    const plan = planEal({ ...base, workerCpus: [1], system: machine([0, 1], 1024) });
    assert.equal(plan.hugepages, true);
    assert.ok(plan.args.includes('--in-memory'));
    assert.ok(!plan.args.includes('--no-huge'));
    assert.equal(plan.warning, undefined);
  });

  it('falls back to --no-huge with a warning when too few hugepages are free', () => {
    const plan = planEal({ ...base, workerCpus: [1], system: machine([0, 1], 100) });
    assert.equal(plan.hugepages, false);
    const m = plan.args.indexOf('-m');
    assert.ok(plan.args.includes('--no-huge'));
    assert.equal(plan.args[m + 1], '300');
    assert.ok(!plan.args.includes('--in-memory'), '--in-memory refuses --no-huge');
    assert.match(plan.warning ?? '', /only 100 MiB of 2 MiB hugepages are free .*--no-huge/);
  });

  it('refuses to start without hugepages when they are required', () => {
    assert.throws(() => planEal({ ...base, hugepages: 'on', workerCpus: [1], system: machine([0, 1], 10) }), {
      code: 'ERR_FLOWGATE_NO_HUGEPAGES',
    });
  });

  it('runs without hugepages when told to, without a warning', () => {
    const plan = planEal({ ...base, hugepages: 'off', workerCpus: [1], system: machine([0, 1], 4096) });
    assert.equal(plan.hugepages, false);
    assert.equal(plan.warning, undefined);
  });

  it('lets EAL probe only the PCI devices of the configured ports, or none', () => {
    const none = planEal({ ...base, workerCpus: [1], system: machine([0, 1], 1024) });
    assert.ok(none.args.includes('--no-pci'));
    const two = planEal({ ...base, pciDevices: ['0000:03:00.0', '0000:03:00.1'], workerCpus: [1], system: machine([0, 1], 1024) });
    assert.ok(!two.args.includes('--no-pci'));
    assert.deepEqual(two.args.filter((_, i) => two.args[i - 1] === '-a'), ['0000:03:00.0', '0000:03:00.1']);
  });

  it('rejects worker CPUs the process may not use, and a CPU given twice', () => {
    assert.throws(() => planEal({ ...base, workerCpus: [5], system: machine([0, 1], 1024) }), /CPU 5 is not available to this process \(available: 0-1\)/);
    assert.throws(() => planEal({ ...base, workerCpus: [1, 1], system: machine([0, 1], 1024) }), /each CPU may run one worker/);
  });

  it('appends extra EAL arguments after its own', () => {
    const plan = planEal({ ...base, extraArgs: ['--log-level=pmd.net.af_packet:debug'], workerCpus: [1], system: machine([0, 1], 1024) });
    assert.equal(plan.args[plan.args.length - 1], '--log-level=pmd.net.af_packet:debug');
  });

  it('tells PCI addresses from vdev strings', () => {
    assert.ok(isPciDevice('0000:03:00.0'));
    assert.ok(isPciDevice('03:00.1'));
    assert.ok(isPciDevice('0000:81:00.0,representor=[0-3]'));
    assert.ok(!isPciDevice('net_af_packet0,iface=veth0'));
    assert.ok(!isPciDevice('net_pcap0,rx_pcap=/tmp/a.pcap'));
  });

  it('estimates memory that grows with the flowtable and the mbufs', () => {
    const small = estimateMemory({ flowCapacity: 1024, workers: 1, mbufs: 4095, mbufDataRoom: 2048 });
    const big = estimateMemory({ flowCapacity: 1 << 20, workers: 1, mbufs: 4095, mbufDataRoom: 2048 });
    // A million flows: 64-byte entries and NAT records, 16-byte counters per worker, 64-byte
    // buckets at 4 keys each.
    assert.equal(big - small, ((1 << 20) - 1024) * (64 + 64 + 16) + ((1 << 18) - 256) * 64);
  });
});
