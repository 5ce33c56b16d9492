// The README documents what the code defines: the config reference is the schema's own
// table, and the metrics and start-up error codes it lists are those the code has.
// FLOWGATE_UPDATE_README=1 rewrites the config reference from the schema instead of checking it.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { USAGE as CHECK_USAGE } from '../../lib/cli/check';
import { USAGE as FLOWS_USAGE } from '../../lib/cli/flows';
import { STARTUP_ERROR_CODES, USAGE as RUN_USAGE } from '../../lib/cli/run';
import { USAGE as STATS_USAGE } from '../../lib/cli/stats';
import { renderConfigReference } from '../../lib/config';
import { METRICS } from '../../lib/metrics';

const README = path.resolve(__dirname, '../../../README.md');
const BEGIN = /<!-- config-reference:begin[^>]*-->\n/;
const END = '<!-- config-reference:end -->';

/** The text of a `## title` section, up to the next `## `. */
function section(text: string, title: string): string {
  const start = text.indexOf(`\n## ${title}\n`);
  assert.notEqual(start, -1, `README has a '## ${title}' section`);
  const next = text.indexOf('\n## ', start + 1);
  return text.slice(start, next === -1 ? undefined : next);
}

/** `a_{x,y}_b` -> a_x_b, a_y_b (the README's shorthand for metric families). */
function expandBraces(name: string): string[] {
  const match = /\{([^{}]*)\}/.exec(name);
  if (match === null) return [name];
  return (match[1] as string).split(',').flatMap((part) => expandBraces(name.slice(0, match.index) + part + name.slice(match.index + match[0].length)));
}

describe('README', () => {
  const text = readFileSync(README, 'utf8');

  it("has the schema's config reference table in its Configuration section", () => {
    const configuration = section(text, 'Configuration');
    const begin = BEGIN.exec(configuration);
    const end = configuration.indexOf(END);
    assert.ok(begin !== null && end > begin.index, 'the Configuration section has the config-reference markers');
    const table = configuration.slice(begin.index + begin[0].length, end);
    const expected = renderConfigReference();
    if (process.env.FLOWGATE_UPDATE_README === '1' && table !== expected) {
      writeFileSync(README, text.replace(table, expected));
      return;
    }
    assert.equal(table, expected, 'README config reference differs from the schema: run with FLOWGATE_UPDATE_README=1 to regenerate it');
  });

  it('lists every flowgate metric in its Metrics table, and only those', () => {
    const metrics = section(text, 'Command line').split('\n### Metrics\n')[1] ?? '';
    const listed = new Set(
      [...metrics.matchAll(/^\| (.*?) \|/gm)].flatMap((row) => [...(row[1] as string).matchAll(/`(flowgate_[^`]+)`/g)].flatMap((m) => expandBraces(m[1] as string))),
    );
    assert.deepEqual([...listed].sort(), METRICS.map((m) => m.name).sort());
  });

  it('explains every start-up error code in its Troubleshooting section', () => {
    const troubleshooting = section(text, 'Troubleshooting');
    const missing = STARTUP_ERROR_CODES.filter((code) => !troubleshooting.includes(`\`${code}\``));
    assert.deepEqual(missing, []);
  });

  it('documents each command it ships under Command line', () => {
    const commandLine = section(text, 'Command line');
    for (const command of ['run', 'check', 'flows', 'stats', 'cleanup']) assert.match(commandLine, new RegExp(`^### \`flowgate ${command}[ \`]`, 'm'), command);
  });

  it("heads each command's section with the synopsis of its usage text, and names every option of flows", () => {
    const commandLine = section(text, 'Command line');
    for (const usage of [RUN_USAGE, CHECK_USAGE, FLOWS_USAGE, STATS_USAGE]) {
      const synopsis = /^usage: (.*)$/m.exec(usage)?.[1];
      assert.ok(synopsis !== undefined, usage);
      assert.ok(commandLine.includes(`\n### \`${synopsis}\`\n`), `README has '### \`${synopsis}\`'`);
    }
    const flows = commandLine.slice(commandLine.indexOf('\n### `flowgate flows'), commandLine.indexOf('\n### `flowgate stats'));
    const options = [...FLOWS_USAGE.matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)].map((m) => m[1] as string);
    assert.ok(options.length >= 10, `the usage lists the options: ${options.join(' ')}`);
    const missing = options.filter((option) => !['--config', '--socket', '--help'].includes(option) && !flows.includes(`\`${option}`));
    assert.deepEqual(missing, [], 'options of flowgate flows that its README section does not explain');
  });
});
