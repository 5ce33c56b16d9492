/**
 * Every error flowgate throws is a FlowgateError with a stable `code` (as Node's own
 * `ERR_*` codes), so callers branch on the code, never on the message.
 */
export class FlowgateError extends Error {
  readonly code: string;
  /** The OS or DPDK errno behind the failure, when there is one (positive, as in errno.h). */
  readonly errno: number | undefined;

  constructor(code: string, message: string, options?: { errno?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.errno = options?.errno;
  }
}

/** A value given to an API call or found in a config was not what was expected. */
export class InvalidArgumentError extends FlowgateError {
  constructor(message: string) {
    super('ERR_FLOWGATE_INVALID_ARGUMENT', message);
  }
}

/** `value` when it is an integer in [min, max]; else an InvalidArgumentError naming `what`. */
export function intIn(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    throw new InvalidArgumentError(`${what}: expected an integer ${min}..${max}, found ${String(value)}`);
  return value;
}

/** A call that needs a state the dataplane is not in (start twice, stop before start...). */
export class StateError extends FlowgateError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/**
 * An error raised by the native addon. The addon throws plain Errors carrying `code` and
 * `errno`; `fromNative` rewraps them so that they are instances of this class and carry the
 * JavaScript call site's stack rather than the binding's.
 */
export class DataplaneError extends FlowgateError {
  static fromNative(err: unknown): unknown {
    if (!(err instanceof Error)) return err;
    const e = err as Error & { code?: unknown; errno?: unknown };
    if (typeof e.code !== 'string' || !e.code.startsWith('ERR_FLOWGATE_')) return err;
    const errno = typeof e.errno === 'number' ? e.errno : undefined;
    const wrapped = new DataplaneError(e.code, e.message, errno === undefined ? {} : { errno });
    Error.captureStackTrace(wrapped, DataplaneError.fromNative);
    return wrapped;
  }
}
