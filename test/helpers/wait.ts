// Waiting for a condition in tests that watch processes and the kernel: no fixed sleeps.

const POLL_MS = 50;

/**
 * Polls `probe` until it returns something other than undefined (a probe that throws counts
 * as not yet); fails after `timeoutMs` naming `what` and the probe's last error.
 */
export async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}${last === undefined ? '' : ` (last error: ${(last as Error).message})`}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
