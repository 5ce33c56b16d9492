/**
 * The dataplane's flows as the control socket shows them (GatewayFlow): what `flowgate flows`
 * lists, shared by the Gateway and anything else that serves a dataplane's flows.
 */
import type { TunnelMode } from '../config/schema';
import type { Dataplane, Flow, FlowCounter, FlowDirection } from '../dataplane';
import type { FlowEndpointView, GatewayFlow } from './types';

function endpointView(d: FlowDirection & FlowCounter): FlowEndpointView {
  return {
    proto: d.proto,
    src: d.src,
    dst: d.dst,
    sport: d.sport,
    dport: d.dport,
    nat: d.nat === undefined ? null : { src: d.nat.src ?? d.src, dst: d.nat.dst ?? d.dst, sport: d.nat.sport ?? d.sport, dport: d.nat.dport ?? d.dport },
    in: d.tunnel ?? d.in,
    out: 'tunnel' in d.out ? d.out.tunnel : d.out.port,
    packets: d.packets,
    bytes: d.bytes,
  };
}

/** `tunnelModes`: the mode of each tunnel by name, which the dataplane's flows do not carry. */
export function gatewayFlow(f: Flow, tunnelModes: ReadonlyMap<string, TunnelMode>): GatewayFlow {
  const o = f.original;
  const tunnel = o.tunnel ?? ('tunnel' in o.out ? o.out.tunnel : (f.reply?.tunnel ?? null));
  return {
    id: f.id,
    ...endpointView(o),
    tunnel,
    tunnel_mode: tunnel === null ? null : (tunnelModes.get(tunnel) ?? null),
    idle: f.idleSeconds,
    state: f.teardown ? 'teardown' : f.closing ? 'closing' : 'offloaded',
    reply: f.reply === null ? null : endpointView(f.reply),
  };
}

/**
 * Every offloaded connection, a page at a time: the consumer (the control socket) lets the
 * event loop run between pages, so the learner keeps learning during a long listing.
 */
export async function* gatewayFlowPages(dp: Dataplane, tunnelModes: ReadonlyMap<string, TunnelMode>): AsyncGenerator<GatewayFlow[], void, undefined> {
  for (const page of dp.flowPages()) yield page.map((f) => gatewayFlow(f, tunnelModes));
}
