import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { configReferenceRows, renderConfigReference } from '../../lib/config';

const repo = path.resolve(__dirname, '../../..');

/** Collection keys whose children are names chosen by the user, not schema keys. */
const NAMED_ENTRIES = new Set(['ports', 'tunnels', 'slowpath.ports']);

/** The reference paths of every key written in a YAML value: ports.<name>.mtu, routes[].via */
function keyPaths(value: unknown, prefix = ''): string[] {
  if (Array.isArray(value)) {
    return value.flatMap((item) => (item !== null && typeof item === 'object' ? keyPaths(item, `${prefix}[]`) : []));
  }
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, child]) => {
    const own = prefix === '' ? key : `${prefix}.${key}`;
    if (NAMED_ENTRIES.has(own)) {
      return [own, ...Object.values(child as object).flatMap((entry) => keyPaths(entry, `${own}.<name>`))];
    }
    return [own, ...keyPaths(child, own)];
  });
}

describe('config reference', () => {
  const rows = configReferenceRows();
  const byPath = new Map(rows.map((row) => [row.path, row]));

  it('has a row for every key that the example configs use', () => {
    const files = ['config/seed.yaml', 'config/minimal.yaml', 'test/fixtures/config/valid/vdev-ports-and-every-section.yaml', 'test/fixtures/config/valid/every-tunnel-mode.yaml'];
    const used = new Set(files.flatMap((file) => keyPaths(parse(readFileSync(path.join(repo, file), 'utf8')))));
    const missing = [...used].filter((key) => !byPath.has(key));
    assert.deepEqual(missing, []);
  });

  it('describes every key and names its type', () => {
    const undescribed = rows.filter((row) => row.description.trim() === '' || row.type.trim() === '').map((row) => row.path);
    assert.deepEqual(undescribed, []);
  });

  it('shows defaults, required keys and optional keys without a default', () => {
    assert.deepEqual(byPath.get('ports.<name>.mtu'), {
      path: 'ports.<name>.mtu',
      type: 'integer 68..9702',
      default: "`1500`, or the parent's",
      description: "MTU of the port (IPv6 needs at least 1280); a sub-interface's may not exceed its parent's.",
    });
    assert.equal(byPath.get('ports.<name>.device')?.default, 'required without `parent`');
    assert.equal(byPath.get('ports.<name>.vlan')?.default, 'required with `parent`');
    assert.equal(byPath.get('ports.<name>.protocol')?.default, '`802.1Q`');
    assert.equal(byPath.get('ports.<name>.mac')?.default, '—');
    assert.equal(byPath.get('tunnels.<name>.encaplimit')?.type, "integer 0..255 or 'none'");
    assert.equal(byPath.get('tunnels.<name>.encaplimit')?.default, '`4`');
    // Defaults that apply to some tunnel modes only: the schema leaves them out, compile fills them in.
    assert.equal(byPath.get('tunnels.<name>.ttl')?.default, '`inherit`');
    assert.equal(byPath.get('tunnels.<name>.tos')?.default, '`0`');
    assert.equal(byPath.get('tunnels.<name>.pmtudisc')?.default, '`true`');
    assert.equal(byPath.get('tunnels.<name>.pmtudisc')?.type, 'true or false');
    assert.equal(byPath.get('flowtable.l4proto')?.default, '`[tcp, udp]`');
    assert.equal(byPath.get('control.socket')?.default, '`/run/flowgate/flowgate.sock`');
    assert.equal(byPath.get('routes[].via')?.default, '—');
  });

  it('renders a markdown table with one line per row', () => {
    const lines = renderConfigReference().trimEnd().split('\n');
    assert.deepEqual(lines.slice(0, 2), ['| Key | Type | Default | Description |', '| --- | --- | --- | --- |']);
    assert.equal(lines.length, rows.length + 2);
    assert.ok(lines.includes('| `log.level` | \'debug\', \'info\', \'warn\' or \'error\' | `info` | Least severe level logged. |'));
  });
});
