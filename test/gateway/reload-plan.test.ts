// What a reload changes in the dataplane for VLANs, worked out before anything changes: a
// VLAN whose tag, MAC or PCP changes is replaced and goes with its parent, children before
// parents on the way out and after them on the way in, and a tunnel goes with the VLAN under
// it; its MTU and punt policer change in place.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { checkConfigText, compileConfig, type CompiledConfig, type Config } from '../../lib/config';
import { planReload } from '../../lib/gateway/gateway';

const repo = path.resolve(__dirname, '../../..');
const FIXTURE = 'test/fixtures/config/valid/vlans.yaml';

function vlansConfig(): Config {
  const { config, issues } = checkConfigText(readFileSync(path.join(repo, FIXTURE), 'utf8'), FIXTURE, { machine: { cpus: [0, 1] } });
  assert.deepEqual(issues, []);
  assert.ok(config);
  return config;
}

/** The fixture's model, and the model of a copy changed by `change`. */
function models(change: (config: Config) => void): [CompiledConfig, CompiledConfig] {
  const next = structuredClone(vlansConfig());
  change(next);
  return [compileConfig(vlansConfig()), compileConfig(next)];
}

function summary(old: CompiledConfig, next: CompiledConfig) {
  const plan = planReload(old, next);
  return {
    removeTunnels: plan.removeTunnels.map((t) => t.name),
    removeVlans: plan.removeVlans.map((v) => v.name),
    removePorts: plan.removePorts.map((p) => p.name),
    addPorts: plan.addPorts.map((p) => p.name),
    changeVlans: plan.changeVlans.map(({ to }) => to.name),
    addVlans: plan.addVlans.map((v) => v.name),
    addTunnels: plan.addTunnels.map((t) => t.name),
    changes: plan.changes,
  };
}

const NOTHING = { removeTunnels: [], removeVlans: [], removePorts: [], addPorts: [], changeVlans: [], addVlans: [], addTunnels: [] };

describe('reload plan with VLANs', () => {
  it("changes nothing in the dataplane when only a VLAN's address changes: that is the kernel mirror's", () => {
    const [old, next] = models((config) => {
      config.ports['eth0.100']!.addresses = ['192.0.3.1/24'];
      config.routes[0]!.via = '192.0.3.254';
    });
    assert.deepEqual(summary(old, next), { ...NOTHING, changes: ['routes changed'] });
  });

  it('replaces an 802.1ad VLAN whose id changes together with the QinQ VLAN inside it and the tunnel over that, children out first and in last', () => {
    const [old, next] = models((config) => {
      config.ports['eth1.1000']!.vlan = 1001;
    });
    assert.deepEqual(summary(old, next), {
      ...NOTHING,
      removeTunnels: ['tun0'],
      removeVlans: ['eth1.1000.20', 'eth1.1000'],
      addVlans: ['eth1.1000', 'eth1.1000.20'],
      addTunnels: ['tun0'],
      changes: ['tunnel tun0 changed', 'VLAN eth1.1000.20 changed', 'VLAN eth1.1000 changed'],
    });
  });

  it("replaces the VLANs of a port whose device changes, and changes in place the MTU of the VLAN that follows its port's", () => {
    const [old, device] = models((config) => {
      config.ports.eth0!.device = 'net_af_packet9,iface=veth9';
    });
    assert.deepEqual(summary(old, device), {
      ...NOTHING,
      removeVlans: ['eth0.200', 'eth0.100'],
      removePorts: ['eth0'],
      addPorts: ['eth0'],
      addVlans: ['eth0.100', 'eth0.200'],
      changes: ['VLAN eth0.200 changed', 'VLAN eth0.100 changed', 'port eth0 changed'],
    });

    // eth0.100 has an MTU of its own (1500); eth0.200 has its parent's.
    const [, mtu] = models((config) => {
      config.ports.eth0!.mtu = 8000;
    });
    assert.deepEqual(summary(old, mtu), { ...NOTHING, changeVlans: ['eth0.200'], changes: ['port eth0 MTU 9000 -> 8000', 'VLAN eth0.200 MTU 9000 -> 8000'] });
    assert.ok(planReload(old, mtu).mtuChanged('eth0.200'), 'the tunnels over the VLAN follow its MTU');
  });

  it("changes a VLAN's punt policer in place", () => {
    const [old, next] = models((config) => {
      config.slowpath.ports['eth1.1000.20'] = { rate: 50 };
    });
    const plan = planReload(old, next);
    assert.deepEqual(summary(old, next), { ...NOTHING, changeVlans: ['eth1.1000.20'], changes: ['VLAN eth1.1000.20 punt policer'] });
    assert.deepEqual(plan.changeVlans[0]?.to.punt, { rate: 50, burst: 1000 });
  });

  it('adds and removes VLANs by name, and replaces one whose PCP or MAC changes', () => {
    const [old, next] = models((config) => {
      delete config.ports['eth0.200'];
      config.ports['eth0.300'] = { parent: 'eth0', vlan: 300, addresses: [] };
      config.ports['eth0.100']!.pcp = 3;
      config.ports['eth1.1000']!.mac = '02:00:00:00:10:00';
    });
    assert.deepEqual(summary(old, next), {
      ...NOTHING,
      // The QinQ VLAN takes its MAC from its parent: it changes with it, and the tunnel over it goes too.
      removeTunnels: ['tun0'],
      removeVlans: ['eth1.1000.20', 'eth1.1000', 'eth0.200', 'eth0.100'],
      // Parents before children; the new eth0.300 comes last of the config, as written.
      addVlans: ['eth0.100', 'eth1.1000', 'eth0.300', 'eth1.1000.20'],
      addTunnels: ['tun0'],
      changes: [
        'tunnel tun0 changed',
        'VLAN eth1.1000.20 changed',
        'VLAN eth1.1000 changed',
        'VLAN eth0.200 removed',
        'VLAN eth0.100 changed',
        'VLAN eth0.300 added',
        'routes changed',
      ],
    });
  });
});
