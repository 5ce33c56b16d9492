import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../lib/errors';
import {
  formatIPv4,
  formatIPv6,
  formatMac,
  hasHostBits,
  isValidIfName,
  parseIPv4,
  parseIPv6,
  parseIp,
  parseMac,
  parsePrefix,
  prefixContains,
  prefixNetwork,
} from '../../lib/net/addr';

const hex = (text: string): Buffer => Buffer.from(text.replace(/[\s:]/g, ''), 'hex');

function assertInvalid(parse: () => unknown, message: string): void {
  assert.throws(parse, (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_FLOWGATE_INVALID_ARGUMENT');
    assert.equal(err.message, message);
    return true;
  });
}

describe('IPv4 addresses', () => {
  const valid: [string, number[]][] = [
    ['0.0.0.0', [0, 0, 0, 0]],
    ['192.0.2.1', [192, 0, 2, 1]],
    ['255.255.255.255', [255, 255, 255, 255]],
    ['10.0.100.9', [10, 0, 100, 9]],
  ];
  for (const [text, bytes] of valid) {
    it(`parses '${text}' into its four octets and formats them back`, () => {
      assert.deepEqual(parseIPv4(text), Buffer.from(bytes));
      assert.equal(formatIPv4(Buffer.from(bytes)), text);
    });
  }

  const invalid: [string, string][] = [
    ['', "expected an IPv4 address such as 192.0.2.1, found '' (1 dot-separated parts instead of 4)"],
    ['1.2.3', "expected an IPv4 address such as 192.0.2.1, found '1.2.3' (3 dot-separated parts instead of 4)"],
    ['1.2.3.4.5', "expected an IPv4 address such as 192.0.2.1, found '1.2.3.4.5' (5 dot-separated parts instead of 4)"],
    ['256.0.0.1', "expected an IPv4 address such as 192.0.2.1, found '256.0.0.1' (octet '256' is above 255)"],
    ['010.0.0.1', "expected an IPv4 address such as 192.0.2.1, found '010.0.0.1' (octet '010' has a leading zero)"],
    ['1.2.3.-4', "expected an IPv4 address such as 192.0.2.1, found '1.2.3.-4' (octet '-4' is not a decimal number 0-255)"],
    ['1.2..4', "expected an IPv4 address such as 192.0.2.1, found '1.2..4' (octet '' is not a decimal number 0-255)"],
    [' 1.2.3.4', "expected an IPv4 address such as 192.0.2.1, found ' 1.2.3.4' (octet ' 1' is not a decimal number 0-255)"],
    ['0x1.2.3.4', "expected an IPv4 address such as 192.0.2.1, found '0x1.2.3.4' (octet '0x1' is not a decimal number 0-255)"],
    ['1.2.3.1000', "expected an IPv4 address such as 192.0.2.1, found '1.2.3.1000' (octet '1000' is not a decimal number 0-255)"],
  ];
  for (const [text, message] of invalid) {
    it(`rejects '${text}' saying why`, () => assertInvalid(() => parseIPv4(text), message));
  }

  it('rejects a value that is not a string, naming its type', () => {
    assertInvalid(() => parseIPv4(42 as unknown as string), 'expected an IPv4 address such as 192.0.2.1, found number 42');
  });
});

describe('IPv6 addresses', () => {
  const valid: [string, string][] = [
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['1::', '00010000000000000000000000000000'],
    ['2001:db8::1', '20010db8000000000000000000000001'],
    ['2001:DB8:0:0:0:0:0:1', '20010db8000000000000000000000001'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '20010db8000000000000000000000001'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
    ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
    ['1:2:3::6:7:8', '00010002000300000000000600070008'],
    ['::ffff:192.0.2.1', '00000000000000000000ffffc0000201'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221'],
    ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304'],
    ['::1.2.3.4', '00000000000000000000000001020304'],
    ['fe80::1:2', 'fe800000000000000000000000010002'],
  ];
  for (const [text, bytes] of valid) {
    it(`parses '${text}' into 16 bytes`, () => assert.deepEqual(parseIPv6(text), hex(bytes)));
  }

  const expected = 'expected an IPv6 address such as 2001:db8::1';
  const invalid: [string, string][] = [
    ['', `${expected}, found '' (no ':' in it)`],
    [':', `${expected}, found ':' (empty group (a single ':' at the start or end, or ':::'))`],
    [':::', `${expected}, found ':::' (empty group (a single ':' at the start or end, or ':::'))`],
    [':1::', `${expected}, found ':1::' (empty group (a single ':' at the start or end, or ':::'))`],
    ['1::2:', `${expected}, found '1::2:' (empty group (a single ':' at the start or end, or ':::'))`],
    ['1:2:3:4:5:6:7', `${expected}, found '1:2:3:4:5:6:7' (7 groups instead of 8)`],
    ['1:2:3:4:5:6:7:8:9', `${expected}, found '1:2:3:4:5:6:7:8:9' (9 groups instead of 8)`],
    ['1:2:3:4:5:6:7:1.2.3.4', `${expected}, found '1:2:3:4:5:6:7:1.2.3.4' (9 groups instead of 8)`],
    ['1::2::3', `${expected}, found '1::2::3' ('::' appears more than once)`],
    ['12345::', `${expected}, found '12345::' (group '12345' is not 1-4 hex digits)`],
    ['g::', `${expected}, found 'g::' (group 'g' is not 1-4 hex digits)`],
    ['1:2:3:4:5:6:7:8::', `${expected}, found '1:2:3:4:5:6:7:8::' ('::' with 8 other groups leaves no group for it to stand for)`],
    ['::1.2.3', `${expected}, found '::1.2.3' (embedded IPv4 address '1.2.3': 3 dot-separated parts instead of 4)`],
    ['1.2.3.4::', `${expected}, found '1.2.3.4::' (embedded IPv4 address '1.2.3.4' is not at the end)`],
    ['::1.2.3.4:5', `${expected}, found '::1.2.3.4:5' (group '1.2.3.4' is not 1-4 hex digits)`],
    ['fe80::1%eth0', `${expected}, found 'fe80::1%eth0' (zone indexes are not accepted)`],
    ['192.0.2.1', `${expected}, found '192.0.2.1' (no ':' in it)`],
  ];
  for (const [text, message] of invalid) {
    it(`rejects '${text}' saying why`, () => assertInvalid(() => parseIPv6(text), message));
  }

  // RFC 5952 section 4 and 5, case by case.
  const canonical: [string, string, string][] = [
    ['shortens the longest zero run to ::', '20010db8000000000000000000020001', '2001:db8::2:1'],
    ['keeps a single zero group as 0', '20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
    ['compresses the longest of two zero runs', '20010000000000010000000000000001', '2001:0:0:1::1'],
    ['compresses the first of two equal zero runs', '20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['writes hex digits in lowercase without leading zeros', '20010db8abcd00ef0000000000000001', '2001:db8:abcd:ef::1'],
    ['writes the unspecified address as ::', '00000000000000000000000000000000', '::'],
    ['writes the loopback address as ::1', '00000000000000000000000000000001', '::1'],
    ['compresses a trailing zero run', '00010000000000000000000000000000', '1::'],
    ['does not compress a trailing single zero group', '00010002000300040005000600070000', '1:2:3:4:5:6:7:0'],
    ['writes an IPv4-mapped address with its IPv4 part dotted', '00000000000000000000ffffc0000201', '::ffff:192.0.2.1'],
    ['keeps a deprecated IPv4-compatible address in hex', '000000000000000000000000c0000201', '::c000:201'],
    ['writes a link-local address compactly', 'fe800000000000000000000000000001', 'fe80::1'],
  ];
  for (const [behaviour, bytes, text] of canonical) {
    it(`formats per RFC 5952: ${behaviour} (${text})`, () => {
      assert.equal(formatIPv6(hex(bytes)), text);
      assert.deepEqual(parseIPv6(text), hex(bytes));
    });
  }

  it('refuses to format a buffer that is not 16 bytes long', () => {
    assertInvalid(() => formatIPv6(Buffer.alloc(4)), 'expected 16 bytes of IPv6 address, found 4 bytes');
  });

  it('formats a view into a larger buffer from its own offset', () => {
    const backing = hex('ff'.repeat(4) + '20010db8000000000000000000000001');
    assert.equal(formatIPv6(backing.subarray(4)), '2001:db8::1');
  });
});

describe('IP addresses of either family', () => {
  it('picks IPv6 for text with a colon and IPv4 otherwise', () => {
    assert.deepEqual(parseIp('192.0.2.1'), { family: 4, bytes: Buffer.from([192, 0, 2, 1]) });
    assert.deepEqual(parseIp('2001:db8::1'), { family: 6, bytes: hex('20010db8000000000000000000000001') });
  });

  it('reports text without a colon as a bad IPv4 address', () => {
    assertInvalid(() => parseIp('gateway'), "expected an IPv4 address such as 192.0.2.1, found 'gateway' (1 dot-separated parts instead of 4)");
  });
});

describe('prefixes', () => {
  it('keeps the host bits of an interface address', () => {
    assert.deepEqual(parsePrefix('192.168.0.2/24'), { family: 4, bytes: Buffer.from([192, 168, 0, 2]), length: 24 });
    assert.deepEqual(parsePrefix('2001:db8:2::1/64'), { family: 6, bytes: hex('20010db8000200000000000000000001'), length: 64 });
  });

  it('accepts the zero-length and full-length prefixes of both families', () => {
    assert.equal(parsePrefix('0.0.0.0/0').length, 0);
    assert.equal(parsePrefix('192.0.2.1/32').length, 32);
    assert.equal(parsePrefix('::/0').length, 0);
    assert.equal(parsePrefix('::1/128').length, 128);
  });

  const expected = 'expected an address with a prefix length such as 192.0.2.1/24 or 2001:db8::1/64';
  const invalid: [string, string][] = [
    ['192.168.0.2', `${expected}, found '192.168.0.2' (no '/length')`],
    ['192.168.0.2/33', `${expected}, found '192.168.0.2/33' (prefix length '33' is not a decimal number 0-32)`],
    ['2001:db8::/129', `${expected}, found '2001:db8::/129' (prefix length '129' is not a decimal number 0-128)`],
    ['10.0.0.0/08', `${expected}, found '10.0.0.0/08' (prefix length '08' is not a decimal number 0-32)`],
    ['10.0.0.0/', `${expected}, found '10.0.0.0/' (prefix length '' is not a decimal number 0-32)`],
    ['10.0.0.0/+8', `${expected}, found '10.0.0.0/+8' (prefix length '+8' is not a decimal number 0-32)`],
    ['10.0.0.0/8/8', `${expected}, found '10.0.0.0/8/8' (prefix length '8/8' is not a decimal number 0-32)`],
    ['/24', `${expected}, found '/24' (1 dot-separated parts instead of 4)`],
    ['192.168.0.256/24', `${expected}, found '192.168.0.256/24' (octet '256' is above 255)`],
  ];
  for (const [text, message] of invalid) {
    it(`rejects '${text}' saying why`, () => assertInvalid(() => parsePrefix(text), message));
  }

  const containment: [string, string, boolean][] = [
    ['192.168.0.0/24', '192.168.0.255', true],
    ['192.168.0.0/24', '192.168.1.0', false],
    ['192.168.0.2/24', '192.168.0.77', true],
    ['10.0.0.0/9', '10.127.255.255', true],
    ['10.0.0.0/9', '10.128.0.0', false],
    ['0.0.0.0/0', '203.0.113.9', true],
    ['0.0.0.0/0', '::1', false],
    ['2001:db8:2::/64', '2001:db8:2::2', true],
    ['2001:db8:2::/64', '2001:db8:3::2', false],
    ['2001:db8::/127', '2001:db8::1', true],
    ['2001:db8::/127', '2001:db8::2', false],
    ['::/0', '192.0.2.1', false],
  ];
  for (const [prefix, address, contained] of containment) {
    it(`${contained ? 'finds' : 'does not find'} ${address} in ${prefix}`, () => {
      assert.equal(prefixContains(parsePrefix(prefix), parseIp(address)), contained);
    });
  }

  it('clears the host bits to get the network of an interface address', () => {
    assert.deepEqual(prefixNetwork(parsePrefix('192.168.0.2/23')).bytes, Buffer.from([192, 168, 0, 0]));
    assert.deepEqual(prefixNetwork(parsePrefix('2001:db8:2::1/64')).bytes, hex('20010db8000200000000000000000000'));
    assert.equal(hasHostBits(parsePrefix('192.168.0.2/24')), true);
    assert.equal(hasHostBits(parsePrefix('192.168.0.0/24')), false);
  });
});

describe('MAC addresses', () => {
  it('parses colon and hyphen forms and formats them in lowercase colon form', () => {
    assert.deepEqual(parseMac('00:11:22:33:44:55'), Buffer.from([0, 0x11, 0x22, 0x33, 0x44, 0x55]));
    assert.equal(formatMac(parseMac('AA-BB-CC-DD-EE-0F')), 'aa:bb:cc:dd:ee:0f');
  });

  const expected = 'expected a MAC address such as 02:00:00:00:00:01';
  const invalid: [string, string][] = [
    ['00:11:22:33:44', `${expected}, found '00:11:22:33:44' (5 octets instead of 6)`],
    ['00:11:22:33:44:5', `${expected}, found '00:11:22:33:44:5' (octet '5' is not 2 hex digits)`],
    ['00:11:22:33:44:gg', `${expected}, found '00:11:22:33:44:gg' (octet 'gg' is not 2 hex digits)`],
    ['0011.2233.4455', `${expected}, found '0011.2233.4455' (1 octets instead of 6)`],
    ['00:11-22:33:44:55', `${expected}, found '00:11-22:33:44:55' (2 octets instead of 6)`],
  ];
  for (const [text, message] of invalid) {
    it(`rejects '${text}' saying why`, () => assertInvalid(() => parseMac(text), message));
  }
});

describe('interface names', () => {
  const cases: [string, boolean, string][] = [
    ['eth0', true, 'an ordinary name'],
    ['eth0.100', true, 'a VLAN-style name with a dot'],
    ['123456789012345', true, 'a name of exactly 15 bytes'],
    ['...', true, 'three dots'],
    ['1234567890123456', false, 'a name of 16 bytes'],
    ['é'.repeat(8), false, 'eight two-byte characters (16 bytes)'],
    ['', false, 'the empty name'],
    ['.', false, "'.'"],
    ['..', false, "'..'"],
    ['a/b', false, 'a name with a slash'],
    ['a b', false, 'a name with a space'],
    ['a\tb', false, 'a name with a tab'],
    ['eth0:1', false, 'an alias-style name with a colon'],
    ['eth%d', false, 'a kernel name template'],
  ];
  for (const [name, valid, what] of cases) {
    it(`${valid ? 'accepts' : 'rejects'} ${what}`, () => assert.equal(isValidIfName(name), valid));
  }
});
