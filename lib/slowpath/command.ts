/**
 * Running iproute2, nft and sysctl for the kernel mirror: without a shell, optionally inside
 * a network namespace, with errors that name the command and the kernel's answer. Every
 * command dies with flowgate, even with a flowgate killed by SIGKILL.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { FlowgateError } from '../errors';

/** A command the kernel mirror ran failed; the message is "<command>: <its stderr>". */
export class KernelCommandError extends FlowgateError {
  constructor(
    readonly argv: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | null,
    cause?: unknown,
  ) {
    super('ERR_FLOWGATE_KERNEL_COMMAND', `${argv.join(' ')}: ${stderr.trim() || `exited with status ${exitCode}`}`, { cause });
  }
}

// What iproute2, nft and sysctl say when the object to remove or restore is already gone:
// an address or route (ESRCH, EADDRNOTAVAIL; an IPv6 address in the kernel's own words,
// "ipv6: address not found"), an nft table (ENOENT), a whole device or its sysctl
// directory, taken away by DPDK when it closed the port.
const ABSENT = /No such process|Cannot assign requested address|[Aa]ddress not found|No such file or directory|Cannot find device|does not exist/;

/** The command failed because what it was to remove or restore no longer exists. */
export function isAbsent(err: unknown): boolean {
  return err instanceof KernelCommandError && ABSENT.test(err.stderr);
}

/**
 * `argv` run with PR_SET_PDEATHSIG (util-linux setpriv, which then execs it): the kernel
 * kills the command when flowgate's thread that started it ends, so that no `ip`
 * or half-done `nft` outlives a flowgate that was killed or crashed. Node starts children
 * from its main thread, which lives as long as the process.
 */
export function dyingWithParent(argv: readonly string[]): string[] {
  return ['setpriv', '--pdeathsig', 'KILL', '--', ...argv];
}

// Dumps of a namespace with many routes are large; the default of 1 MiB is not enough.
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/** Runs commands in one network namespace (or in the caller's when `netns` is undefined). */
export class CommandRunner {
  constructor(readonly netns?: string) {}

  /** iproute2 switches namespace itself (`ip -n`), which saves the exec of `ip netns exec`. */
  ip(args: readonly string[], input?: string): Promise<string> {
    return this.run(this.netns === undefined ? ['ip', ...args] : ['ip', '-n', this.netns, ...args], input);
  }

  /** The argv that runs `argv` in this namespace: for commands other than `ip`, and for spawning. */
  argv(argv: readonly string[]): string[] {
    if (argv[0] === 'ip') return this.netns === undefined ? [...argv] : ['ip', '-n', this.netns, ...argv.slice(1)];
    return this.netns === undefined ? [...argv] : ['ip', 'netns', 'exec', this.netns, ...argv];
  }

  /**
   * The values of sysctls ("net/ipv4/ip_forward"). In the caller's own namespace they are
   * read from /proc/sys directly: a start writes a dozen, and each `sysctl` spawned costs
   * milliseconds that a restart after a crash should not spend.
   */
  async readSysctls(keys: readonly string[]): Promise<string[]> {
    if (this.netns !== undefined) return (await this.exec(['sysctl', '-n', ...keys])).split('\n');
    return Promise.all(keys.map(async (key) => (await this.sysctlFile<string>(key, () => readFile(`/proc/sys/${key}`, 'utf8'))).trim()));
  }

  /** Writes a sysctl, as readSysctls reads them; fails like `sysctl -w` (isAbsent when it is gone). */
  async writeSysctl(key: string, value: string): Promise<void> {
    if (this.netns !== undefined) {
      await this.exec(['sysctl', '-q', '-w', `${key}=${value}`]);
      return;
    }
    await this.sysctlFile(key, () => writeFile(`/proc/sys/${key}`, value));
  }

  private async sysctlFile<T>(key: string, access: () => Promise<T>): Promise<T> {
    try {
      return await access();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // The message sysctl(8) gives, so that callers tell a vanished interface apart the same way.
      const reason = e.code === 'ENOENT' ? 'No such file or directory' : (e.message ?? String(err));
      throw new KernelCommandError(['sysctl', key], `sysctl: cannot access /proc/sys/${key}: ${reason}`, null, err);
    }
  }

  exec(argv: readonly string[], input?: string): Promise<string> {
    return this.run(this.argv(argv), input);
  }

  /** Starts a long-lived `argv` (from argv()), which dies with flowgate. */
  spawn(argv: readonly string[], options: SpawnOptions): ChildProcess {
    const [file, ...args] = dyingWithParent(argv);
    return spawn(file as string, args, options);
  }

  /** Errors name `argv`, the command itself, not the setpriv in front of it. */
  private run(argv: readonly string[], input?: string): Promise<string> {
    if (argv.length === 0) throw new TypeError('CommandRunner: empty command');
    const [file, ...args] = dyingWithParent(argv);
    return new Promise((resolve, reject) => {
      const child = execFile(file as string, args, { encoding: 'utf8', maxBuffer: MAX_OUTPUT_BYTES }, (err, stdout, stderr) => {
        if (err === null) {
          resolve(stdout);
          return;
        }
        // A number is the exit status; a string ('ENOENT') means the command could not start.
        const status = typeof err.code === 'number' ? err.code : null;
        reject(new KernelCommandError(argv, stderr || err.message, status, err));
      });
      // A command that exits without reading its input must not fail the call with EPIPE.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(input ?? '');
    });
  }
}
