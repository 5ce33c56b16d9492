import assert from 'node:assert/strict';
import { closestMatch, describeValue, editDistance, formatPath, listWords } from '../../lib/config/describe';

describe('config message wording', () => {
  const distances: [string, string, number][] = [
    ['addresses', 'addresses', 0],
    ['adresses', 'addresses', 1],
    ['adrdesses', 'addresses', 1],
    ['tpc', 'tcp', 1],
    ['', 'mtu', 3],
    ['kitten', 'sitting', 3],
  ];
  for (const [a, b, distance] of distances) {
    it(`counts ${distance} edits between '${a}' and '${b}', a transposition being one`, () => {
      assert.equal(editDistance(a, b), distance);
      assert.equal(editDistance(b, a), distance);
    });
  }

  it('suggests the closest known word only when it is a plausible typo', () => {
    const keys = ['device', 'mac', 'mtu', 'addresses'];
    assert.equal(closestMatch('adresses', keys), 'addresses');
    assert.equal(closestMatch('MTU', keys), 'mtu');
    assert.equal(closestMatch('colour', keys), undefined);
    assert.equal(closestMatch('gw', ['to', 'via', 'dev', 'metric']), undefined);
  });

  it('shows found values by kind', () => {
    assert.deepEqual(
      [undefined, null, 'x', 3, false, [], [1], {}].map(describeValue),
      ['nothing', 'an empty value', "'x'", '3', 'false', 'an empty list', 'a list', 'a mapping'],
    );
  });

  it('writes config paths with dots, indexes and quoted keys that are not identifiers', () => {
    assert.equal(formatPath(['ports', 'eth0', 'addresses', 0]), 'ports.eth0.addresses[0]');
    assert.equal(formatPath(['ports', 'eth0.100', 'mtu']), 'ports["eth0.100"].mtu');
    assert.equal(formatPath([]), '');
  });

  it('joins words as a sentence', () => {
    assert.equal(listWords([]), '');
    assert.equal(listWords(['eth0']), 'eth0');
    assert.equal(listWords(['eth0', 'eth1', 'tun0'], 'or'), 'eth0, eth1 or tun0');
  });
});
