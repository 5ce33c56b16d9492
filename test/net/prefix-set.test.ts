import assert from 'node:assert/strict';

import { parsePrefix } from '../../lib/net/addr';
import { PrefixSet } from '../../lib/net/prefix-set';

describe('PrefixSet', () => {
  const set = (...prefixes: string[]) => {
    const s = new PrefixSet();
    for (const p of prefixes) s.add(parsePrefix(p));
    return s;
  };

  it('covers the addresses of its prefixes at any length, host bits of the prefix ignored', () => {
    const s = set('10.1.0.0/16', '192.0.2.77/27', '2001:db8:ab00::/40', '2001:db8::1/128');
    for (const address of ['10.1.0.0', '10.1.255.255', '192.0.2.64', '192.0.2.95', '2001:db8:abff::1', '2001:db8::1']) assert.ok(s.covers(address), address);
    for (const address of ['10.2.0.0', '10.0.255.255', '192.0.2.63', '192.0.2.96', '2001:db8:ac00::', '2001:db8::2']) assert.ok(!s.covers(address), address);
    assert.equal(s.size, 4);
  });

  it('keeps the families apart, and a default route covers everything of its family only', () => {
    const s = set('0.0.0.0/0');
    assert.ok(s.covers('203.0.113.9'));
    assert.ok(!s.covers('::ffff:203.0.113.9'));
    assert.ok(set('::/0').covers('fe80::1'));
    assert.ok(!set('::/0').covers('0.0.0.0'));
  });

  it('counts a prefix once however often it is added', () => {
    const s = set('10.0.0.0/8', '10.9.9.9/8', '10.0.0.0/8');
    assert.equal(s.size, 1);
    assert.ok(!new PrefixSet().covers('10.0.0.1'));
  });
});
