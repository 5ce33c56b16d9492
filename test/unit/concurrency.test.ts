// The control thread's flow management against a forwarding thread, both running the real
// code (flow_manager, process_burst) on the C heap, without EAL.
import assert from 'node:assert/strict';

import { native } from '../../lib/native';

const { testing } = native();

describe('flow management under forwarding', function () {
  this.timeout(180_000);

  it('never sends a packet of one flow with the MAC addresses of another while flows are removed, added, refused and reaped', () => {
    // Each flow direction has next hops of its own, so a freed adjacency soon serves another
    // flow: a reader that could still use it after its grace period would write the
    // other flow's addresses.
    const r = testing.flowChurn({ flows: 64, rounds: 200_000, seed: 7 });
    assert.ok(r.forwarded > 0 && r.bursts > 0, 'the forwarding thread forwarded while flows churned');
    assert.ok(r.clashes > 0, 'adds failed after publishing their orig direction');
    assert.ok(r.reaped > 0, 'flows were reaped');
    assert.equal(r.wrongMac, 0);
  });
});
