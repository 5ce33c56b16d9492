import assert from 'node:assert/strict';

import { FlowgateError } from '../../lib/errors';
import { createLogger, formatLogfmtValue, parseLogLevel } from '../../lib/log';

function capture(level: 'debug' | 'info' | 'warn' | 'error') {
  const lines: string[] = [];
  const log = createLogger({ level, stream: { write: (text: string) => lines.push(text) > 0 }, now: () => new Date('2026-01-05T10:00:00.000Z') });
  return { log, lines };
}

describe('structured log', () => {
  it('writes one logfmt line per event: time, level, message, then the fields', () => {
    const { log, lines } = capture('info');
    log.info('config reloaded', { changes: 2, flows_removed: 0, config: '/etc/flowgate/flowgate.yaml' });
    assert.deepEqual(lines, ['ts=2026-01-05T10:00:00.000Z level=info msg="config reloaded" changes=2 flows_removed=0 config=/etc/flowgate/flowgate.yaml\n']);
  });

  it('drops events below its level and takes a new level at once, for every child', () => {
    const { log, lines } = capture('warn');
    const child = log.child({ component: 'gateway' });
    log.info('hidden');
    child.debug('hidden');
    child.warn('shown');
    log.setLevel('debug');
    child.debug('now shown');
    assert.deepEqual(lines.map((l) => /msg=("[^"]*"|\S+)/.exec(l)?.[1]), ['shown', '"now shown"']);
    assert.match(lines[0] ?? '', / component=gateway$/m);
  });

  it('quotes and escapes values that contain spaces, quotes, equals signs, backslashes or newlines', () => {
    assert.equal(formatLogfmtValue('plain'), 'plain');
    assert.equal(formatLogfmtValue(''), '""');
    assert.equal(formatLogfmtValue('two words'), '"two words"');
    assert.equal(formatLogfmtValue('a="b"'), '"a=\\"b\\""');
    assert.equal(formatLogfmtValue('C:\\path'), '"C:\\\\path"');
    assert.equal(formatLogfmtValue('line1\nline2'), '"line1\\nline2"');
    assert.equal(formatLogfmtValue('bell\u0007'), '"bell\\u0007"');
  });

  it('writes lists and records as JSON inside one value, and null, booleans and numbers as they are', () => {
    const { log, lines } = capture('info');
    log.info('running', { ports: ['eth0', 'eth1'], workers: [1], ok: true, missing: null, skipped: undefined, ratio: 0.5 });
    assert.equal(lines[0], 'ts=2026-01-05T10:00:00.000Z level=info msg=running ports="[\\"eth0\\",\\"eth1\\"]" workers=[1] ok=true missing=null ratio=0.5\n');
  });

  it('writes an error field as its message with its code and errno, never its stack', () => {
    const { log, lines } = capture('info');
    log.error('reload failed', { err: new FlowgateError('ERR_FLOWGATE_DEVICE', 'cannot attach device', { errno: 19 }) });
    assert.equal(lines[0], 'ts=2026-01-05T10:00:00.000Z level=error msg="reload failed" err="cannot attach device" err_code=ERR_FLOWGATE_DEVICE err_errno=19\n');
  });

  it('keeps each event on one line whatever the message and field names hold', () => {
    const { log, lines } = capture('info');
    log.info('multi\nline', { 'bad key': 'x\ny' });
    assert.equal(lines.length, 1);
    assert.equal(lines[0], 'ts=2026-01-05T10:00:00.000Z level=info msg="multi\\nline" bad_key="x\\ny"\n');
  });

  it('accepts the four levels and names them when given another', () => {
    assert.equal(parseLogLevel('warn', '--log-level'), 'warn');
    assert.throws(() => parseLogLevel('verbose', '--log-level'), {
      code: 'ERR_FLOWGATE_INVALID_ARGUMENT',
      message: "--log-level: expected one of debug, info, warn, error, found 'verbose'",
    });
  });
});
