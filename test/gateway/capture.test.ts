// The capture request as the control socket hands it over: hostile params and paths are
// refused before anything reaches the dataplane (which is never started here: a request
// that got as far would fail on it instead, with another message).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Dataplane } from '../../lib/dataplane';
import { parseCaptureParams, runCapture } from '../../lib/gateway/capture';

describe('capture requests', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-capture-req-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads params with their defaults, and names the param that is wrong', () => {
    assert.deepEqual(parseCaptureParams({ port: 'eth0', fifo: '/tmp/x' }), {
      port: 'eth0',
      direction: 'both',
      filter: '',
      snaplen: 262144,
      count: 0,
      fifo: '/tmp/x',
    });
    const refused = (params: Record<string, unknown>) => {
      try {
        parseCaptureParams(params);
        return null;
      } catch (err) {
        return (err as Error).message;
      }
    };
    assert.deepEqual(
      [
        refused({ fifo: '/tmp/x' }),
        refused({ port: 'eth0', fifo: 'relative/x' }),
        refused({ port: 'eth0', fifo: '/tmp/x', direction: 'up' }),
        refused({ port: 'eth0', fifo: '/tmp/x', filter: ['udp'] }),
        refused({ port: 'eth0', fifo: '/tmp/x', count: -1 }),
        refused({ port: 'eth0', fifo: '/tmp/x', snaplen: 1e9 }),
      ],
      [
        'params.port: expected a port name, found nothing',
        'params.fifo: expected the absolute path of a FIFO open for reading, found "relative/x"',
        'params.direction: expected rx, tx or both, found "up"',
        'params.filter: expected a tcpdump filter expression, found ["udp"]',
        'params.count: expected an integer 0..4294967295, found -1',
        'params.snaplen: expected an integer 64..262144, found 1000000000',
      ],
    );
  });

  it('writes only into a FIFO that has a reader: not a regular file, a symbolic link, a missing path or a FIFO nobody reads', async () => {
    const dp = new Dataplane();
    const file = path.join(dir, 'file');
    fs.writeFileSync(file, 'keep me');
    const fifo = path.join(dir, 'fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const link = path.join(dir, 'link');
    fs.symlinkSync(fifo, link);
    const attempt = async (at: string, port = 'eth0') => {
      try {
        await runCapture(dp, ['eth0'], parseCaptureParams({ port, fifo: at }), async () => undefined);
        return null;
      } catch (err) {
        return (err as Error).message.replace(dir, 'DIR');
      }
    };
    assert.deepEqual(
      [await attempt(file), await attempt(link), await attempt(path.join(dir, 'missing')), await attempt(fifo), await attempt(fifo, 'tap:eth0')],
      [
        'params.fifo: DIR/file is not a FIFO',
        `params.fifo: cannot open DIR/link for writing: ELOOP: too many symbolic links encountered, open '${link}'`,
        `params.fifo: cannot open DIR/missing for writing: ENOENT: no such file or directory, open '${path.join(dir, 'missing')}'`,
        'params.fifo: cannot open DIR/fifo for writing: nothing has it open for reading',
        "params.port: no port named 'tap:eth0' (ports: eth0)",
      ],
    );
    assert.equal(fs.readFileSync(file, 'utf8'), 'keep me', 'the regular file is untouched');
  });
});
