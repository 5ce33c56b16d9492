/**
 * Checks the nftables ruleset `flowgate run` would apply (flowgate's own tables and the
 * config's `nftables:`) without applying it: `nft -c` in a throwaway network namespace, so
 * that the answer depends on the ruleset alone, not on the host's tables. The namespace has
 * an interface of each name the mirror creates (and each af_packet interface), since nft
 * resolves `iif` and flowtable devices when it reads the ruleset. `flowgate check`, start-up
 * and reload all call validateRuleset() before anything changes.
 *
 * nft's errors (`/dev/stdin:LINE:COL-COL: Error: ...`) are turned into config issues at the
 * line and column of the config file where the ruleset text sits.
 */
import { readFile } from 'node:fs/promises';

import type { CompiledConfig } from '../config/compile';
import type { ConfigIssue } from '../config/load';
import { ConfigSource } from '../config/source';
import { CommandRunner, KernelCommandError } from './command';
import { afPacketInterfaces, mirrorState } from './kernel';
import { refusedStatements } from './nftables';

const CONFIG_PATH = 'nftables';

/** nft's location of a problem in what it read on stdin; the source line and caret it prints after are skipped. */
const NFT_PROBLEM = /^\/dev\/stdin:(\d+):(\d+)(?:-\d+)?: Error: (.*)$/;

/**
 * Creates the interfaces (its arguments, as `ip` batch lines) in the new namespace, then
 * checks stdin; exit 125 says the namespace could not be prepared.
 */
const CHECK_SCRIPT = '[ $# -eq 0 ] || printf "%s\\n" "$@" | ip -batch - || exit 125; exec nft -c -f -';

/** Where the config's ruleset is written: the way from a line of the ruleset to the file. */
class RulesetPlace {
  private constructor(
    private readonly file: string,
    /** Where the `nftables:` value starts. */
    private readonly start: { line: number; col: number },
    /** The file's lines, when the ruleset is a literal block whose lines are the file's from `start.line + 1`. */
    private readonly blockLines: string[] | null,
    private readonly rulesetLines: string[],
  ) {}

  /** Reads the config file again for positions only: if it cannot be read or changed since, issues point at line 1. */
  static async of(file: string, ruleset: string): Promise<RulesetPlace> {
    const rulesetLines = ruleset.split('\n');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      return new RulesetPlace(file, { line: 1, col: 1 }, null, rulesetLines);
    }
    const source = new ConfigSource(text);
    const start = source.position([CONFIG_PATH], 'value');
    const fileLines = text.split('\n');
    // A literal block (`nftables: |`) keeps the ruleset's lines as they are, indented, from
    // the line after its header; any other style (quoted, folded) does not.
    const isBlock = rulesetLines.every((line, i) => (fileLines[start.line + i] ?? '').endsWith(line));
    return new RulesetPlace(file, start, isBlock ? fileLines : null, rulesetLines);
  }

  /** An issue at line `line`, column `col` (1-based) of the config's ruleset. */
  issue(line: number, col: number, message: string): ConfigIssue {
    const fileLine = this.blockLines?.[this.start.line + line - 1];
    const rulesetLine = this.rulesetLines[line - 1];
    if (fileLine === undefined || rulesetLine === undefined) {
      return { file: this.file, ...this.start, path: CONFIG_PATH, message: `line ${line} of the ruleset: ${message}` };
    }
    const indent = fileLine.length - rulesetLine.length;
    return { file: this.file, line: this.start.line + line, col: indent + col, path: CONFIG_PATH, message };
  }

  /** An issue of the ruleset as a whole, at the `nftables:` value. */
  whole(message: string): ConfigIssue {
    return { file: this.file, ...this.start, path: CONFIG_PATH, message };
  }
}

/** Runs `nft -c` on `ruleset` in a new network namespace holding interfaces named `devices`. */
async function nftCheck(ruleset: string, devices: { name: string; mode: 'tap' | 'tun' }[]): Promise<{ ok: true } | { ok: false; stderr: string; exitCode: number | null }> {
  // Root has CAP_NET_ADMIN to create the namespace; anyone else gets it in a user namespace of their own.
  const unshare = process.getuid?.() === 0 ? ['unshare', '--net'] : ['unshare', '--net', '--map-root-user'];
  const batch = devices.map(({ name, mode }) => `tuntap add dev ${name} mode ${mode}`);
  try {
    await new CommandRunner().exec([...unshare, 'sh', '-c', CHECK_SCRIPT, 'sh', ...batch], ruleset);
    return { ok: true };
  } catch (err) {
    if (!(err instanceof KernelCommandError)) throw err;
    return { ok: false, stderr: err.stderr, exitCode: err.exitCode };
  }
}

/**
 * The problems nft finds in the ruleset `flowgate run` would apply for `model`, as issues
 * pointing into `configFile` (read again only to find where the ruleset is written). Empty
 * when the ruleset is valid.
 */
export async function validateRuleset(model: CompiledConfig, configFile: string): Promise<ConfigIssue[]> {
  const full = mirrorState(model).nftables;
  if (full === null) return [];
  const own = model.nftables ?? '';
  const place = await RulesetPlace.of(configFile, own);

  // Refused before nft runs: nft would read an included file, which is not flowgate's.
  const refused = refusedStatements(own);
  if (refused.length > 0) return refused.map(({ line, col, message }) => place.issue(line, col, message));

  const devices = [
    ...model.ports.map((port) => ({ name: port.name, mode: 'tap' as const })),
    ...model.vlans.map((vlan) => ({ name: vlan.name, mode: 'tap' as const })),
    ...model.tunnels.map((tunnel) => ({ name: tunnel.name, mode: 'tun' as const })),
    ...afPacketInterfaces(model).map((name) => ({ name, mode: 'tap' as const })),
  ].filter((device, i, all) => all.findIndex((d) => d.name === device.name) === i);
  const result = await nftCheck(full, devices);
  if (result.ok) return [];
  if (result.exitCode === 125) return [place.whole(`cannot check the ruleset: creating its interfaces in a scratch namespace failed: ${result.stderr.trim()}`)];

  // The config's ruleset comes last in the full one (mirrorState), after flowgate's own tables.
  const ownFirstLine = full.endsWith(own) ? full.slice(0, full.length - own.length).split('\n').length : 1;
  const issues: ConfigIssue[] = [];
  for (const text of result.stderr.split('\n')) {
    const match = NFT_PROBLEM.exec(text);
    if (match === null) continue;
    const [, line, col, message] = match;
    const rulesetLine = Number(line) - ownFirstLine + 1;
    issues.push(
      rulesetLine >= 1
        ? place.issue(rulesetLine, Number(col), `nft: ${message}`)
        : place.whole(`nft refuses the tables flowgate adds itself (line ${line}): ${message}`),
    );
  }
  // No line to point at: nft could not run (not installed, no namespace for us) or failed as a whole.
  return issues.length > 0 ? issues : [place.whole(`nft -c in a scratch network namespace (nft and unshare needed) failed: ${result.stderr.trim()}`)];
}
