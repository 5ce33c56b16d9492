/**
 * The optional nftables ruleset of the config. flowgate owns the tables it declares: each
 * (re)load replaces them, together with those an earlier ruleset declared, in one nft
 * transaction, so the slow path is never without its policy; teardown deletes them. Tables
 * the ruleset does not declare are never touched.
 */
import { InvalidArgumentError } from '../errors';

const FAMILIES = new Set(['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev']);

// A string, a comment, a line end, a statement separator, a brace, or a word.
const TOKEN = /"(?:[^"\\\n]|\\.)*"|#[^\n]*|\n|;|[{}]|[^\s;{}"#]+/g;

/** The statements outside any block, as words ("table inet filter" of "table inet filter { ... }"). */
function topLevelStatements(ruleset: string): string[][] {
  const statements: string[][] = [];
  let words: string[] = [];
  let depth = 0;
  const end = () => {
    if (words.length > 0) statements.push(words);
    words = [];
  };
  for (const token of ruleset.replace(/\\\n/g, ' ').match(TOKEN) ?? []) {
    if (token.startsWith('#')) continue;
    if (token === '{') {
      if (depth === 0) end();
      depth++;
    } else if (token === '}') {
      depth = Math.max(0, depth - 1);
    } else if (token === '\n' || token === ';') {
      if (depth === 0) end();
    } else if (depth === 0) {
      words.push(token);
    }
  }
  end();
  return statements;
}

/**
 * The tables a ruleset declares, as "family name" ("inet flowgate"; the family defaults to
 * ip, as in nft), from `table ...` blocks and `add table` / `create table` commands.
 * Throws for what would reach beyond them: `flush ruleset` would delete every other table
 * in the namespace, and an `include`d file could declare tables flowgate does not know of.
 */
export function declaredTables(ruleset: string): string[] {
  const tables = new Set<string>();
  for (const statement of topLevelStatements(ruleset)) {
    const words = statement[0] === 'add' || statement[0] === 'create' ? statement.slice(1) : statement;
    const [command, second, third] = words;
    if (command === 'flush' && second === 'ruleset') {
      throw new InvalidArgumentError(
        "expected an nftables ruleset that declares its own tables, found 'flush ruleset', which would delete the tables of everything else in the namespace (flowgate replaces its own tables on each reload)",
      );
    }
    if (command === 'include') {
      throw new InvalidArgumentError(`expected an nftables ruleset without includes, found 'include ${second ?? ''}' (flowgate must see every table it declares to remove them again)`);
    }
    if (command !== 'table' || second === undefined) continue;
    const hasFamily = FAMILIES.has(second) && third !== undefined;
    tables.add(hasFamily ? `${second} ${third}` : `ip ${second}`);
  }
  return [...tables];
}

/**
 * An nft script deleting `tables` if they exist: nft 1.0.6 has no `destroy`, and `add table`
 * of an existing table changes nothing, so add-then-delete removes it in either case.
 */
export function deleteTablesScript(tables: Iterable<string>): string {
  return [...tables].map((table) => `add table ${table}\ndelete table ${table}\n`).join('');
}
