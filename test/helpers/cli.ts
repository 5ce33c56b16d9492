// Running the built flowgate CLI (dist/lib/cli/main.js) as a separate process, as an operator would.
import { execFile } from 'node:child_process';
import * as path from 'node:path';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');

export interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `flowgate ARGS` without blocking this process (which may serve what it talks to),
 * behind `prefix` (setpriv, ip netns exec) and with its locks and journals in `runtimeDir`
 * when given.
 */
export function spawnFlowgate(args: string[], options: { prefix?: string[]; runtimeDir?: string } = {}): Promise<Result> {
  const [file, ...rest] = [...(options.prefix ?? []), process.execPath, main, ...args];
  const env = options.runtimeDir === undefined ? process.env : { ...process.env, FLOWGATE_RUNTIME_DIR: options.runtimeDir };
  return new Promise((resolve) => {
    execFile(file as string, rest, { cwd: repo, encoding: 'utf8', timeout: 30_000, env }, (err, stdout, stderr) => {
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}
