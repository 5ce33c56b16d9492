/**
 * How a command declares its options: once, as `OPTIONS`, read both by its parser
 * (node:util parseArgs takes the declaration as it is) and by `flowgate completion`, so that
 * the shell never offers an option the command refuses or misses one it takes.
 */

/** What a string option's value is, for the shell to complete. */
export type ValueCompletion =
  /** Any file or directory. */
  | 'file'
  /** A config file: *.yaml and *.yml files, and directories to find them in. */
  | 'config'
  | 'directory'
  /** A network namespace of `ip netns`. */
  | 'netns'
  /** One of these words (a value the shell cannot guess, such as an address, has no `complete`). */
  | readonly string[];

export interface CliOption {
  type: 'string' | 'boolean';
  /** One letter: `-c` for `--config`. */
  short?: string;
  /** Only for a string option. */
  complete?: ValueCompletion;
}

/** A command's options by long name, as parseArgs's `options`. */
export type CliOptions = Readonly<Record<string, CliOption>>;

/** -h, --help: every command has it. */
export const HELP_OPTION = { type: 'boolean', short: 'h' } as const satisfies CliOption;
