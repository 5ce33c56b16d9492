// A process that dies without cleaning up, for the crash-recovery tests: it applies a model
// with a KernelMirror in a namespace, or runs a long command through the mirror's
// CommandRunner, says so on stdout, and waits to be killed.
//
//   node mirror-child.js apply NETNS MODEL RUNTIME_DIR   prints "applied"
//   node mirror-child.js sleep                           prints "running"
import { CommandRunner } from '../../lib/slowpath/command';
import { KernelMirror } from '../../lib/slowpath/kernel';
import { MODELS, type ModelName } from './kernel-lab';

async function main(): Promise<void> {
  const [mode, netns, model, runtimeDir] = process.argv.slice(2);
  if (mode === 'apply' && netns !== undefined && model !== undefined && runtimeDir !== undefined) {
    await new KernelMirror({ netns, runtimeDir }).apply(MODELS[model as ModelName]());
    process.stdout.write('applied\n');
  } else if (mode === 'sleep') {
    void new CommandRunner().exec(['sleep', '600']);
    process.stdout.write('running\n');
  } else {
    throw new Error(`usage: mirror-child.js apply NETNS MODEL RUNTIME_DIR | sleep; got ${process.argv.slice(2).join(' ')}`);
  }
  // Until killed: the point is that it never stops on its own.
  setInterval(() => undefined, 60_000);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
