/**
 * Structured logging: one line per event on stderr, in logfmt.
 *
 *   ts=2026-01-05T10:00:00.000Z level=info msg="config reloaded" changes=2 flows_removed=0
 *
 * Why logfmt rather than JSON: flowgate runs in the foreground, read by people in a terminal
 * and by journald under systemd (which adds its own timestamp and unit and keeps stderr lines
 * as they are). logfmt reads as plain text there, `journalctl -u flowgate | grep level=error`
 * works, and log shippers (Loki, Vector, Grafana Agent) parse it without configuration. JSON
 * would make every line harder to read for the same machine-readability.
 *
 * Events carry fields, never values spliced into the message, so that the message stays a
 * fixed string to search for. Nothing here may be called per packet: the fast path does not
 * log (DESIGN.md), and the TypeScript side logs events (start, reload, a flow teardown
 * storm), not traffic.
 */
import type { Writable } from 'node:stream';

import { InvalidArgumentError } from './errors';
import { LOG_LEVELS } from './config/schema';

export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every event (a component name, a port). */
  child(fields: LogFields): Logger;
}

/** The logger createLogger() returns: its level can change while running (a reload). */
export interface RootLogger extends Logger {
  readonly level: LogLevel;
  setLevel(level: LogLevel): void;
}

export interface LoggerOptions {
  level: LogLevel;
  /** Default process.stderr. */
  stream?: Pick<Writable, 'write'>;
  /** For tests: the time written as `ts`. */
  now?: () => Date;
}

const SEVERITY: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function isLogLevel(text: string): text is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(text);
}

export function parseLogLevel(text: string, what: string): LogLevel {
  if (!isLogLevel(text)) throw new InvalidArgumentError(`${what}: expected one of ${LOG_LEVELS.join(', ')}, found '${text}'`);
  return text;
}

/** Keys are written as given when they are safe, otherwise with the offending characters replaced. */
function formatKey(key: string): string {
  const safe = key.replace(/[^A-Za-z0-9_.\-/]/g, '_');
  return safe === '' ? '_' : safe;
}

function formatScalar(value: unknown): string {
  if (value === undefined) return '';
  if (value === null) return 'null';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value instanceof Date) return value.toISOString();
  // Arrays and records (a list of changes, a tuple) stay structured: JSON inside one value.
  try {
    return JSON.stringify(value, (_key, item: unknown) => (typeof item === 'bigint' ? String(item) : item)) ?? String(value);
  } catch {
    return String(value);
  }
}

/** A logfmt value: bare when it is one plain word, otherwise quoted with \" \\ \n escaped. */
export function formatLogfmtValue(value: unknown): string {
  const text = formatScalar(value);
  if (text !== '' && !/[\s"=\\]/.test(text) && !/[\u0000-\u001f\u007f]/.test(text)) return text;
  const escaped = text
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"')
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t')
    .replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return `"${escaped}"`;
}

/** An Error becomes `err` (its message) and `code` / `errno` when it has them; no stack in the line. */
function expandField(key: string, value: unknown, out: [string, unknown][]): void {
  if (value instanceof Error) {
    const e = value as Error & { code?: unknown; errno?: unknown };
    out.push([key, e.message]);
    if (typeof e.code === 'string') out.push([`${key}_code`, e.code]);
    if (typeof e.errno === 'number') out.push([`${key}_errno`, e.errno]);
    return;
  }
  out.push([key, value]);
}

export function formatLogLine(time: Date, level: LogLevel, msg: string, fields: LogFields): string {
  const pairs: [string, unknown][] = [
    ['ts', time.toISOString()],
    ['level', level],
    ['msg', msg],
  ];
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    expandField(key, value, pairs);
  }
  return `${pairs.map(([key, value]) => `${formatKey(key)}=${formatLogfmtValue(value)}`).join(' ')}\n`;
}

/** State shared by a root logger and all its children: changing the level reaches all of them. */
interface Sink {
  level: LogLevel;
  stream: Pick<Writable, 'write'>;
  now: () => Date;
}

class LogfmtLogger implements RootLogger {
  constructor(
    private readonly sink: Sink,
    private readonly context: LogFields,
  ) {}

  get level(): LogLevel {
    return this.sink.level;
  }

  setLevel(level: LogLevel): void {
    this.sink.level = level;
  }

  debug(msg: string, fields?: LogFields): void {
    this.write('debug', msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    this.write('info', msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    this.write('warn', msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    this.write('error', msg, fields);
  }

  child(fields: LogFields): Logger {
    return new LogfmtLogger(this.sink, { ...this.context, ...fields });
  }

  private write(level: LogLevel, msg: string, fields: LogFields | undefined): void {
    if (SEVERITY[level] < SEVERITY[this.sink.level]) return;
    this.sink.stream.write(formatLogLine(this.sink.now(), level, msg, { ...this.context, ...fields }));
  }
}

export function createLogger(options: LoggerOptions): RootLogger {
  return new LogfmtLogger({ level: options.level, stream: options.stream ?? process.stderr, now: options.now ?? (() => new Date()) }, {});
}

/** A logger that drops everything, for library callers that pass none. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};
