// What the learner children (learner-flood-child, learner-churn-child) stand on instead of a
// dataplane: an installer that accepts every flow and a clock the child advances itself. The
// learner's own code is what they measure.
import { DEFAULT_LIMITS, Learner, type ConnectionTracker } from '../../lib/slowpath/learner';

/** A Learner over eth0/eth1 (tun0 on eth1) with a stub installer; `clock()` is its time in ms. */
export function stubLearner(tracker: ConnectionTracker, clock: () => number): Learner {
  let nextFlow = 1;
  const installer = {
    addFlow: () => nextFlow++,
    removeFlow: () => true,
    reap: () => [],
    portName: (id: number) => ['eth0', 'eth1'][id],
    tunnelName: () => 'tun0',
    tsc: () => 0,
    tscHz: 1e9,
  };
  return new Learner(
    installer,
    tracker,
    {
      devices: ['eth0', 'eth1'],
      l4proto: ['tcp', 'udp'],
      timeout: { tcp: 30, udp: 30 },
      tunnelUnderlay: new Map([['tun0', 'eth1']]),
      conntrack: { tcpClose: 10, udp: 30, udpStream: 120 },
    },
    DEFAULT_LIMITS,
    clock,
  );
}
