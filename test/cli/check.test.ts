import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { checkConfigText, detectMachine, formatIssue } from '../../lib/config';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');

function flowgate(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { cwd: repo, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('flowgate check', () => {
  it('says config/seed.yaml is valid, with what it describes, and exits 0', () => {
    const r = flowgate('check', '-c', 'config/seed.yaml');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'config/seed.yaml: valid (2 ports, 1 tunnel, 4 routes, 1 worker)\n');
    assert.equal(r.stderr, '');
  });

  it('counts the VLAN sub-interfaces of a valid file apart from its ports', () => {
    const r = flowgate('check', '-c', 'test/fixtures/config/valid/vlans.yaml');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'test/fixtures/config/valid/vlans.yaml: valid (2 ports, 4 VLANs, 1 tunnel, 8 routes, 1 worker)\n');
  });

  it('prints every problem of an invalid file as FILE:LINE:COL: PATH: message, then the count, and exits 1', () => {
    const file = 'test/fixtures/config/invalid/several-cross-field-errors.yaml';
    // The same checks on this machine, so that the CPU checks agree with the child's.
    const expected = checkConfigText(readFileSync(path.join(repo, file), 'utf8'), file).issues.map(formatIssue);
    assert.ok(expected.length > 10, 'the fixture has many problems');
    const r = flowgate('check', '-c', file);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `${expected.join('\n')}\n${file}: invalid, ${expected.length} problems\n`);
  });

  it('says a config with a tunnel of every mode on one underlay port is valid', () => {
    const file = 'test/fixtures/config/valid/every-tunnel-mode.yaml';
    const r = flowgate('check', '-c', file);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${file}: valid (2 ports, 4 tunnels, 10 routes, 1 worker)\n`);
  });

  it("names, at its line, a tunnel key of the other underlay family and a sit tunnel's IPv6 local", () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'fg-check-')), 'sit.yaml');
    writeFileSync(
      file,
      [
        'ports:',
        '  eth0: { device: "0000:03:00.0", addresses: ["2001:db8:1::1/64"] }',
        '  eth1: { device: "0000:03:00.1", addresses: ["2001:db8:2::1/64", "198.51.100.1/24"] }',
        'tunnels:',
        '  sit0:',
        '    mode: sit',
        '    local: "2001:db8:2::1"',
        '    remote: 198.51.100.2',
        '    hoplimit: 64',
        'flowtable: { devices: [eth0, eth1] }',
        'workers: { cpus: [1] }',
        '',
      ].join('\n'),
    );
    try {
      const first = flowgate('check', '-c', file);
      assert.equal(first.status, 1);
      assert.equal(
        first.stderr,
        `${file}:9:15: tunnels.sit0.hoplimit: expected no 'hoplimit' in a sit tunnel (sit tunnels run over IPv4 and take ttl, tos and pmtudisc; did you mean 'ttl'?), found 64\n` +
          `${file}: invalid, 1 problem\n`,
      );
      // The cross-field checks run once the file has the shape the schema wants.
      writeFileSync(file, readFileSync(file, 'utf8').replace('hoplimit', 'ttl'));
      const second = flowgate('check', '-c', file);
      assert.equal(second.status, 1);
      assert.equal(
        second.stderr,
        `${file}:7:12: tunnels.sit0.local: expected an IPv4 address (sit tunnels run over IPv4), found IPv6 '2001:db8:2::1'\n${file}: invalid, 1 problem\n`,
      );
    } finally {
      rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  it('reports a YAML syntax error at its position', () => {
    const file = 'test/fixtures/config/invalid/yaml-syntax.yaml';
    const r = flowgate('check', '-c', file);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`^${file.replace(/[.]/g, '\\.')}:[0-9]+:[0-9]+: `));
  });

  it('reports a file that cannot be read as a problem of the config, and exits 1', () => {
    const r = flowgate('check', '-c', 'no/such/file.yaml');
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      "no/such/file.yaml:1:1: expected a readable config file, found: ENOENT: no such file or directory, open 'no/such/file.yaml'\nno/such/file.yaml: invalid, 1 problem\n",
    );
  });

  it('exits 2 with the usage when -c is missing or an option is unknown', () => {
    const missing = flowgate('check');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /^flowgate check: -c FILE is required\n\nusage: flowgate check -c FILE \[--json\]\n/);
    const unknown = flowgate('check', '--bogus');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /^flowgate check: Unknown option '--bogus'/);
  });

  it('prints its usage on --help and exits 0', () => {
    const r = flowgate('check', '--help');
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^usage: flowgate check -c FILE \[--json\]\n/);
  });

  describe('the nftables ruleset', () => {
    let dir: string;

    beforeEach(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'fg-check-'));
    });

    afterEach(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    /** A valid config whose `nftables:` literal block is `ruleset`, starting on line 7 (the header on line 6). */
    function configWith(ruleset: string[]): string {
      const cpus = detectMachine().cpus;
      const file = path.join(dir, 'flowgate.yaml');
      const lines = [
        'ports:',
        '  eth0: { device: "net_null0", addresses: ["192.168.0.1/24"] }',
        '  eth1: { device: "net_null1", addresses: ["2001:db8:2::1/64"] }',
        'flowtable: { devices: [eth0, eth1] }',
        `workers: { cpus: [${cpus[cpus.length - 1]}] }`,
        'nftables: |',
        ...ruleset.map((line) => (line === '' ? '' : `  ${line}`)),
        '',
      ];
      assert.equal(lines[6], ruleset[0] === '' ? '' : `  ${ruleset[0]}`);
      writeFileSync(file, lines.join('\n'));
      return file;
    }

    it('passes a valid ruleset, whose rules may name the interfaces flowgate creates', () => {
      const file = configWith([
        'table inet filter {',
        '  chain forward {',
        '    type filter hook forward priority 0; policy drop;',
        '    iif "eth0" oif "eth1" accept',
        '    ct state established,related accept',
        '  }',
        '}',
      ]);
      const r = flowgate('check', '-c', file);
      assert.equal(r.stderr, '');
      assert.equal(r.status, 0);
      assert.equal(r.stdout, `${file}: valid (2 ports, 0 tunnels, 2 routes, 1 worker)\n`);
    });

    it("reports nft's syntax error at the line and column of the config file where it is written", () => {
      const file = configWith([
        'table inet filter {',
        '  chain forward {',
        '    type filter hook forward priority 0; policy acept;',
        '  }',
        '}',
      ]);
      const r = flowgate('check', '-c', file);
      assert.equal(r.status, 1);
      // Line 9 of the file, where 'acept' starts in column 51.
      assert.match(r.stderr, new RegExp(`^${file}:9:51: nftables: nft: syntax error, unexpected string, expecting accept or drop`));
      assert.ok(r.stderr.endsWith(`${file}: invalid, 1 problem\n`), r.stderr);
      assert.equal(readFileSync(file, 'utf8').split('\n')[8]?.indexOf('acept'), 50);
    });

    it('reports a rule naming an interface flowgate does not create, at the interface', () => {
      const file = configWith(['table inet filter {', '  chain forward {', '    type filter hook forward priority 0;', '    iif "eth9" accept', '  }', '}']);
      const r = flowgate('check', '-c', file);
      assert.equal(r.status, 1);
      assert.match(r.stderr, new RegExp(`^${file}:10:11: nftables: nft: Interface does not exist\n`));
    });

    it("refuses 'flush ruleset' at its line: it would delete every other table", () => {
      const file = configWith(['', 'flush ruleset', 'table inet filter {', '}']);
      const r = flowgate('check', '-c', file);
      assert.equal(r.status, 1);
      assert.equal(
        r.stderr,
        `${file}:8:3: nftables: expected an nftables ruleset that declares its own tables, found 'flush ruleset', which would delete the tables of everything else in the namespace (flowgate replaces its own tables on each reload)\n` +
          `${file}: invalid, 1 problem\n`,
      );
    });

    it("refuses 'include' at its line, at the top or inside a block, without reading the file", () => {
      const file = configWith(['include "x"', 'table inet filter {', '  include "/etc/nftables.conf"', '}']);
      const r = flowgate('check', '-c', file);
      assert.equal(r.status, 1);
      assert.equal(
        r.stderr,
        `${file}:7:3: nftables: expected an nftables ruleset without includes, found 'include "x"' (flowgate must see every table it declares to remove them again)\n` +
          `${file}:9:5: nftables: expected an nftables ruleset without includes, found 'include "/etc/nftables.conf"' (flowgate must see every table it declares to remove them again)\n` +
          `${file}: invalid, 2 problems\n`,
      );
    });
  });
});
