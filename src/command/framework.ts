import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AppError, toAppError } from '../core/index.js';
import { errorFields } from '../observability/log.js';
import { escapeForTerminal } from '../text/table.js';
import { describeParseError, terminalMessage, type ErrorPhrases } from './terminal-errors.js';

/**
 * The one command model, for the SSH door's commands and the operator's admin CLI: a command
 * declares its name, usage, options and positionals and returns a result; `runCommand` parses,
 * runs it, prints the result (`--json` included), and maps any failure to a message and an exit
 * code the same way everywhere.
 */

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2 } as const;

export type Output = { stdout(text: string): void; stderr(text: string): void };

type Options = NonNullable<ParseArgsConfig['options']>;

export type Parsed = {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  /** Options declared `multiple: true`: every value given, in order (not in `values`). */
  lists?: Record<string, string[]>;
};

/**
 * What a command ends with; `runCommand` prints it, so every command of every program reads the
 * same way: with `--json`, `data` as JSON on stdout (undefined: nothing); otherwise `text` as is
 * (complete lines; empty: nothing). Then `note` on stderr, and `advice` too without `--json`.
 */
export type CommandResult = {
  data: unknown;
  text: string;
  /** Said besides the result, in both modes (create's notice, why a command failed). */
  note?: string;
  /** For a person only (what to do next); a script asking for JSON has it in `data` already. */
  advice?: string;
  /** Default: 0. */
  exit?: number;
};

/** A command that failed in its own words: nothing on stdout, the reason on stderr, exit 1. */
export function failure(note: string): CommandResult {
  return { data: undefined, text: '', note, exit: EXIT.FAILED };
}

export type Command<Ctx> = {
  /** One word (`create`) or a group and an action (`org create`). */
  name: string;
  summary: string;
  /** First line: the synopsis; the rest: details. */
  usage: string;
  /** The command's own options; `--json` and `--help` are every command's, handled by runCommand. */
  options: Options;
  positionals: { min: number; max: number; names: string };
  run(ctx: Ctx, args: Parsed): Promise<CommandResult>;
};

/**
 * What `runCommand` ran, as the access log and metrics name it: a command's name (`help` for
 * `--help`), `none` for no command, `unknown` for anything else. Never more of the line:
 * arguments can hold secrets, and a mistyped word could be one too.
 */
export type CommandRun = { code: number; command: string };

export type Program<Ctx> = {
  commands: Command<Ctx>[];
  /** How to call the program, for the general help: `ssh keys@host`, `npm run admin --`; null at a prompt (the shell), where commands are typed bare. */
  invocation: string | null;
  /** Where the list of commands is, said after an unknown one: `type "help" for the list`. */
  helpHint: string;
  /** Core errors reworded for this program's users (see terminal-errors.ts); none: the error table's text. */
  errorPhrases?: ErrorPhrases;
  log: Logger;
};

/** A mistake in how the command was called: exit 2, with usage. */
export class UsageError extends Error {}

export function usageText(command: Command<never>): string {
  return `usage: ${command.usage}\n`;
}

export function helpText<Ctx>(program: Program<Ctx>): string {
  const { commands } = program;
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    ...(program.invocation === null ? [] : [`usage: ${program.invocation} COMMAND [OPTIONS]`, '']),
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run "COMMAND --help" for a command\'s options.',
    '',
  ].join('\n');
}

/** The words of a command line without a leading `--` (`ssh keys@host -- --help`: it ends ssh's own options, not ours). */
function commandWords(words: string[]): string[] {
  return words[0] === '--' ? words.slice(1) : words;
}

/** The command `words` start with, if any. */
function findCommand<Ctx>(commands: Command<Ctx>[], words: string[]): Command<Ctx> | undefined {
  return commands.find((c) => {
    const nameWords = c.name.split(' ');
    return nameWords.every((word, i) => words[i] === word);
  });
}

/**
 * The command `words` would run, as logs and metrics name it (runCommand returns the same): a
 * known command's name, `help` for --help, `none` for nothing, else `unknown`. Never more of the
 * line: labels and arguments can hold secrets, and a mistyped word could be one too.
 */
export function commandNameIn<Ctx>(commands: Command<Ctx>[], words: string[]): string {
  words = commandWords(words);
  const [first] = words;
  if (first === undefined || first === '') return 'none';
  if (first === '--help' || first === '-h') return 'help';
  return findCommand(commands, words)?.name ?? 'unknown';
}

/** Options every command takes: runCommand handles them, commands never see them. */
export const COMMON_OPTIONS: Options = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } };

/** Parses and runs one command, and prints its result. Never throws. */
export async function runCommand<Ctx extends Output>(program: Program<Ctx>, words: string[], ctx: Ctx): Promise<CommandRun> {
  words = commandWords(words);
  const [first] = words;
  if (first === undefined || first === '') {
    ctx.stderr(`error: no command given\n\n${helpText(program)}`);
    return { code: EXIT.USAGE, command: 'none' };
  }
  if (first === '--help' || first === '-h') {
    ctx.stdout(helpText(program));
    return { code: EXIT.OK, command: 'help' };
  }
  const command = findCommand(program.commands, words);
  if (!command) {
    const isGroup = program.commands.some((c) => c.name.startsWith(`${first} `));
    const shown = isGroup && words[1] !== undefined ? `${first} ${words[1]}` : first;
    const guess = closestCommand(program.commands, words);
    const suggestion = guess === undefined ? '' : `did you mean "${guess}"? `;
    ctx.stderr(`error: unknown command "${escapeForTerminal(shown)}": ${suggestion}${program.helpHint}\n`);
    return { code: EXIT.USAGE, command: 'unknown' };
  }
  return { code: await runFound(program, command, words.slice(command.name.split(' ').length), ctx), command: command.name };
}

async function runFound<Ctx extends Output>(program: Program<Ctx>, command: Command<Ctx>, args: string[], ctx: Ctx): Promise<number> {
  let parsed: Parsed;
  let asJson: boolean;
  try {
    const result = parseCommandArgs(args, { ...command.options, ...COMMON_OPTIONS });
    const { help, json: jsonWanted, ...values } = result.values;
    if (help) {
      ctx.stdout(usageText(command));
      return EXIT.OK;
    }
    asJson = jsonWanted === true;
    parsed = splitLists(values, result.positionals);
    const count = parsed.positionals.length;
    if (count < command.positionals.min) throw new UsageError(`missing ${command.positionals.names}`);
    if (count > command.positionals.max) throw new UsageError(`unexpected argument "${parsed.positionals[command.positionals.max]}"`);
  } catch (err) {
    return reportFailure(program, command, ctx, err instanceof UsageError ? err : new UsageError(describeParseError(err)));
  }
  let result: CommandResult;
  try {
    result = await command.run(ctx, parsed);
  } catch (err) {
    return reportFailure(program, command, ctx, err, parsed);
  }
  return printResult(ctx, result, asJson);
}

type ParsedArgs = { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] };

/**
 * `args` as node's parseArgs reads them (strict, positionals allowed), and no option but a
 * `multiple` one given twice. The common shapes, `--name`, `--name value` and plain words, are
 * read here; anything else (`--name=value`, `-h`, `--`, an unknown option, a value that is
 * missing or starts with "-", a repeat) goes to parseArgs, whose errors describeParseError words.
 * parseArgs checks its whole configuration on every call: 1.1% of the server's CPU per SSH
 * `create` (perf, c=8), for two words.
 */
export function parseCommandArgs(args: string[], options: Options): ParsedArgs {
  const values: Record<string, string | boolean | string[]> = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('-')) {
      positionals.push(arg);
      continue;
    }
    const name = arg.slice(2);
    const option = arg.startsWith('--') && !arg.includes('=') && Object.hasOwn(options, name) ? options[name]! : undefined;
    if (!option || (Object.hasOwn(values, name) && !option.multiple)) return parseWithNode(args, options);
    if (option.type === 'boolean') {
      values[name] = true;
      continue;
    }
    const value = args[i + 1];
    if (value === undefined || (value.length > 1 && value.startsWith('-'))) return parseWithNode(args, options);
    i++;
    if (option.multiple) ((values[name] as string[] | undefined) ?? (values[name] = [])).push(value);
    else values[name] = value;
  }
  return { values, positionals };
}

function parseWithNode(args: string[], options: Options): ParsedArgs {
  const result = parseArgs({ args, options, allowPositionals: true, strict: true, tokens: true });
  // parseArgs keeps the last of a repeated flag; `--org a --org b` must not silently pick b.
  const seen = new Set<string>();
  for (const token of result.tokens ?? []) {
    if (token.kind !== 'option' || options[token.name]?.multiple) continue;
    if (seen.has(token.name)) throw new UsageError(`--${token.name} given more than once`);
    seen.add(token.name);
  }
  return { values: result.values, positionals: result.positionals };
}

/** parseArgs's values as Parsed: a `multiple` option's array goes to `lists`. */
function splitLists(values: Record<string, string | boolean | (string | boolean)[] | undefined>, positionals: string[]): Parsed {
  const parsed: Parsed = { values: {}, positionals, lists: {} };
  for (const [name, value] of Object.entries(values)) {
    if (Array.isArray(value)) parsed.lists![name] = value.map(String);
    else parsed.values[name] = value;
  }
  return parsed;
}

function printResult(ctx: Output, result: CommandResult, asJson: boolean): number {
  if (asJson) {
    if (result.data !== undefined) ctx.stdout(`${JSON.stringify(result.data, null, 2)}\n`);
  } else if (result.text !== '') {
    ctx.stdout(result.text);
  }
  if (result.note) ctx.stderr(result.note);
  if (result.advice && !asJson) ctx.stderr(result.advice);
  return result.exit ?? EXIT.OK;
}

/**
 * The command a mistyped one most likely meant (`craete` -> `create`, `keys lsit` -> `keys
 * list`): at most two edits away (a swap of neighbours counts as one; short words get one), and
 * nearer than any other. Undefined when nothing is that close, or two are equally close.
 */
export function closestCommand<Ctx>(commands: Command<Ctx>[], words: string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  let tie = false;
  for (const { name } of commands) {
    const count = name.split(' ').length;
    if (words.length < count) continue;
    const typed = words.slice(0, count).join(' ');
    const distance = editDistance(typed, name);
    if (distance === 0 || distance > Math.min(2, Math.floor(typed.length / 3))) continue;
    if (best === undefined || distance < best.distance) {
      best = { name, distance };
      tie = false;
    } else if (distance === best.distance) tie = true;
  }
  return tie ? undefined : best?.name;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps. */
function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2 || a.length > 64 || b.length > 64) return Infinity;
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The one error -> message and exit code mapping: a usage mistake is 2 with the command's usage;
 * a core error is 1 with its message (and detail); anything else is logged and reads as the
 * core's internal or unavailable error.
 */
export function reportFailure<Ctx extends Output>(
  program: Program<Ctx>,
  command: Command<Ctx> | null,
  ctx: Ctx,
  err: unknown,
  args: Parsed | null = null,
): number {
  if (err instanceof UsageError) {
    // The synopsis only: the whole text is one `--help` away.
    ctx.stderr(`error: ${err.message}\n${command ? `usage: ${command.usage.split('\n')[0]}\n` : `\n${helpText(program)}`}`);
    return EXIT.USAGE;
  }
  const appError = toAppError(err);
  if (!(err instanceof AppError) || appError.status >= 500) {
    program.log.error({ err: errorFields(err), command: command?.name }, 'command failed');
  }
  ctx.stderr(`error: ${terminalMessage(appError, args, program.errorPhrases)}\n`);
  return EXIT.FAILED;
}

/** A required string flag; missing or empty is a usage error (exit 2). */
export function requireString(args: Parsed, name: string): string {
  const value = args.values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

/** A `multiple: true` option's values, split at commas too (`--perm a --perm b,c`); undefined when not given. */
export function optionalList(args: Parsed, name: string): string[] | undefined {
  const given = args.lists?.[name];
  return given === undefined ? undefined : given.flatMap((value) => value.split(',')).map((value) => value.trim());
}

export function optionalString(args: Parsed, name: string): string | undefined {
  const value = args.values[name];
  return typeof value === 'string' ? value : undefined;
}

/**
 * Validates one argument with zod; failure is a usage error naming the argument
 * (`--label must be at least 5 characters`), or saying what `explain` says.
 */
export function parseArgument<S extends z.ZodType>(schema: S, value: unknown, what: string, explain?: (value: string) => string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new UsageError(explain ? explain(escapeForTerminal(String(value))) : issueInWords(result.error.issues[0], what, value));
  }
  return result.data;
}

/**
 * A failed check in words. The schemas' own messages are written for people; zod's built-in ones
 * (`Invalid option: expected one of "active"|"suspended"`, `Invalid input: expected string,
 * received undefined`) are not, so those two are said here.
 */
function issueInWords(issue: z.core.$ZodIssue | undefined, what: string, value: unknown): string {
  if (issue?.code === 'invalid_value' && issue.values.length > 0) {
    const choices = issue.values.map(String);
    const list = choices.length === 1 ? choices[0] : `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}`;
    if (value === undefined) return `${what} is required: ${list}`;
    return `${what} must be ${list}, not "${escapeForTerminal(String(value))}"`;
  }
  if (value === undefined) return `${what} is required`;
  if (issue?.code === 'invalid_type') return `${what} is not valid`;
  return `${what} ${issue?.message ?? 'is not valid'}`;
}
