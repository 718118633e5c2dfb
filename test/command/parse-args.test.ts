import { parseArgs } from 'node:util';
import { describe, expect, it } from 'vitest';
import { COMMON_OPTIONS, parseCommandArgs, UsageError } from '../../src/command/framework.js';
import { COMMANDS } from '../../src/ssh/commands/index.js';

// parseCommandArgs reads the common shapes itself and hands the rest to node's parseArgs: whatever
// it is given, it must answer as parseArgs (strict, positionals allowed) plus the repeat check would.

const create = COMMANDS.find((c) => c.name === 'create')!;
const OPTIONS = { ...create.options, ...COMMON_OPTIONS };

/** The oracle: node's parseArgs and the repeat check, as runCommand did before the fast path. */
function reference(args: string[]): unknown {
  try {
    const result = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
    const seen = new Set<string>();
    for (const token of result.tokens ?? []) {
      if (token.kind !== 'option' || OPTIONS[token.name]?.multiple) continue;
      if (seen.has(token.name)) throw new UsageError(`--${token.name} given more than once`);
      seen.add(token.name);
    }
    return { values: { ...result.values }, positionals: result.positionals };
  } catch (err) {
    return { error: (err as Error).constructor.name, code: (err as { code?: string }).code, message: (err as Error).message };
  }
}

function ours(args: string[]): unknown {
  try {
    const result = parseCommandArgs(args, OPTIONS);
    return { values: { ...result.values }, positionals: result.positionals };
  } catch (err) {
    return { error: (err as Error).constructor.name, code: (err as { code?: string }).code, message: (err as Error).message };
  }
}

const WORDS = ['--label', 'perfx', '--org', 'acme', '--perm', 'clusters:view', '--json', '--help', '-h', '--', '-', '--label=y', '--nope', '-x', 'word', '--expires-in', '-5', '30d', '--perm=a,b', '---', '--constructor', '-hj'];

describe('parseCommandArgs answers as node parseArgs does', () => {
  it.each([
    [['--label', 'perfx']],
    [['--label', 'perfx', '--json']],
    [['--perm', 'a', '--perm', 'b,c', '--label', 'x']],
    [['--label', 'a', '--label', 'b']],
    [['--json', '--json']],
    [['--label']],
    [['--label', '--json']],
    [['--label', '-']],
    [['--label=x']],
    [['--label', 'x', '--', '--json']],
    [['-h']],
    [['--nope']],
    [['word', '--label', 'x']],
    [['--toString']],
    [['--__proto__', 'x']],
  ])('%j', (args) => {
    expect(ours(args)).toEqual(reference(args));
  });

  it('on 20,000 random lines of its words and their mistakes', () => {
    let seed = 21;
    const next = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed);
    for (let n = 0; n < 20_000; n++) {
      const args = Array.from({ length: next() % 6 }, () => WORDS[next() % WORDS.length]!);
      expect(ours(args), JSON.stringify(args)).toEqual(reference(args));
    }
  });

  it('reads the common shapes without parseArgs (whose values have no prototype)', () => {
    expect(Object.getPrototypeOf(parseCommandArgs(['--label', 'perfx', '--json'], OPTIONS).values)).toBe(Object.prototype);
    // And hands the rest to it.
    expect(Object.getPrototypeOf(parseCommandArgs(['--label=perfx'], OPTIONS).values)).toBeNull();
  });
});
