#!/usr/bin/env node
/**
 * The `flowgate` command. Each subcommand lives in its own module and exports
 * `run(argv): Promise<number>` (the exit code); this file only dispatches.
 */
import { flowgateVersion } from '../control/protocol';
import { FlowgateError } from '../errors';
import { HELP_OPTION, type CliOptions } from './options';

export interface Subcommand {
  summary: string;
  /** The command's module; its OPTIONS (and OPERANDS, words it takes) are what `flowgate completion` offers after it. */
  load(): Promise<{ run(argv: string[]): Promise<number>; OPTIONS?: CliOptions; OPERANDS?: readonly string[] }>;
}

export const SUBCOMMANDS: Record<string, Subcommand> = {
  run: { summary: 'run the gateway of a config file in the foreground (SIGHUP reloads, SIGTERM stops)', load: () => import('./run.js') },
  check: { summary: 'validate a config file and print every problem', load: () => import('./check.js') },
  flows: { summary: 'list the flows the running instance has offloaded, like conntrack -L', load: () => import('./flows.js') },
  stats: { summary: "show the running instance's counters: ports, fast and slow path, flows", load: () => import('./stats.js') },
  trace: { summary: 'trace the next packets the running instance handles: headers, decision and reason, flow, output', load: () => import('./trace.js') },
  capture: { summary: "write a port's packets as pcapng, filtered like tcpdump (-w - | tshark -r -)", load: () => import('./capture.js') },
  cleanup: { summary: 'undo what a flowgate that was killed or crashed left in the kernel, from its journal', load: () => import('./cleanup.js') },
  bench: { summary: 'measure the fast path: Mpps and cycles per packet on virtual devices', load: () => import('./bench.js') },
  demo: { summary: 'show the reference scenario at work in network namespaces (npm start)', load: () => import('./demo.js') },
  completion: { summary: 'print the shell completion script: source <(flowgate completion bash)', load: () => import('./completion.js') },
};

/** What `flowgate` takes before a command. */
export const GLOBAL_OPTIONS = {
  help: HELP_OPTION,
  version: { type: 'boolean', short: 'V' },
} as const satisfies CliOptions;

/** `--version` or `-V`, as `ip -V` and `node --version`: the package's version, one line. */
function isVersionFlag(word: string): boolean {
  return word === '--version' || word === `-${GLOBAL_OPTIONS.version.short}`;
}

function usage(): string {
  const width = Math.max(...Object.keys(SUBCOMMANDS).map((c) => c.length));
  const lines = Object.entries(SUBCOMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return (
    `usage: flowgate <command> [options]\n       flowgate --version\n\ncommands:\n${lines.join('\n')}\n\n` +
    `flowgate <command> --help shows a command's options; flowgate -V, --version the version.\n`
  );
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  if (isVersionFlag(name)) {
    process.stdout.write(`flowgate ${flowgateVersion()}\n`);
    return 0;
  }
  const sub = SUBCOMMANDS[name];
  if (sub === undefined) {
    process.stderr.write(`flowgate: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return (await sub.load()).run(rest);
}

if (require.main === module) {
  // `flowgate flows | head`: once the reader has what it wants, the rest of the output has
  // nowhere to go. As a command killed by SIGPIPE would, stop at once, but quietly and with
  // success, since nothing went wrong (Node ignores SIGPIPE and reports EPIPE instead).
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(0);
  });
  // stderr carries diagnostics: losing its reader (`flowgate run -c F 2>&1 | head`) must not
  // stop a command half-way (run would leave its kernel state behind) nor change its exit
  // status. Later writes to the closed stream are dropped without another error.
  process.stderr.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // Expected failures (bad options, a device that is missing) are one line, not a stack.
      if (err instanceof FlowgateError) process.stderr.write(`flowgate: ${err.message} [${err.code}]\n`);
      else process.stderr.write(`flowgate: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
