import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CoreDeps, PublicKey, RequestOrigin } from '../core/index.js';
import { AppError, toAppError } from '../core/index.js';
import type { SshKeyRow, User } from '../db/schema.js';
import { errorFields } from '../log.js';
import { tokenize } from './tokenize.js';

/** Who is on the other end: always the key that signed; an account only if that key is verified. */
export type Identity = {
  key: PublicKey;
  user: User | null;
  sshKey: SshKeyRow | null;
};

export type CommandContext = {
  deps: CoreDeps;
  identity: Identity;
  origin: RequestOrigin;
  /** How users reach this door, for messages: `ssh -p 2222 keys@host`. */
  sshHint: string;
  stdout(text: string): void;
  stderr(text: string): void;
  /** Aborted when the client goes away (or presses Ctrl-C in the shell). */
  signal: AbortSignal;
  /** Re-reads the identity from the database (after `login` binds the key). */
  refreshIdentity(): Promise<void>;
};

type Options = NonNullable<ParseArgsConfig['options']>;

export type Parsed = { values: Record<string, string | boolean | undefined>; positionals: string[] };

export type Command = {
  name: string;
  summary: string;
  /** First line: the synopsis; the rest: details. */
  usage: string;
  options: Options;
  positionals: { min: number; max: number; names: string };
  /** Usable by a key that is not linked to an account yet. */
  allowUnverified?: boolean;
  run(ctx: CommandContext, args: Parsed): Promise<number>;
};

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2 } as const;

/** A mistake in how the command was called: exit 2, with usage. */
export class UsageError extends Error {}

export function usageText(command: Command): string {
  return `usage: ${command.usage}\n`;
}

export function helpText(commands: Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run "COMMAND --help" for a command\'s options.',
    '',
  ].join('\n');
}

/** Parses and runs one command line; returns the exit code. Never throws. */
export async function runCommandLine(line: string, commands: Command[], ctx: CommandContext): Promise<number> {
  const tokens = tokenize(line);
  if (!tokens.ok) {
    ctx.stderr(`error: ${tokens.error}\n`);
    return EXIT.USAGE;
  }
  const [name, ...args] = tokens.words;
  if (!name) {
    ctx.stderr(`error: no command given\n\n${helpText(commands)}`);
    return EXIT.USAGE;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    ctx.stderr(`error: unknown command "${name}"\n\n${helpText(commands)}`);
    return EXIT.USAGE;
  }
  let parsed: Parsed;
  try {
    const result = parseArgs({
      args,
      options: { ...command.options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
      tokens: true,
    });
    if (result.values.help) {
      ctx.stdout(usageText(command));
      return EXIT.OK;
    }
    // parseArgs keeps the last of a repeated flag; `--org a --org b` must not silently pick b.
    const seen = new Set<string>();
    for (const token of result.tokens ?? []) {
      if (token.kind !== 'option') continue;
      if (seen.has(token.name)) throw new UsageError(`--${token.name} given more than once`);
      seen.add(token.name);
    }
    parsed = { values: result.values as Parsed['values'], positionals: result.positionals };
    const count = parsed.positionals.length;
    if (count < command.positionals.min) throw new UsageError(`missing ${command.positionals.names}`);
    if (count > command.positionals.max) throw new UsageError(`unexpected argument "${parsed.positionals[command.positionals.max]}"`);
  } catch (err) {
    ctx.stderr(`error: ${(err as Error).message}\n${usageText(command)}`);
    return EXIT.USAGE;
  }
  if (!command.allowUnverified && !ctx.identity.user) {
    ctx.stderr(unverifiedMessage(ctx));
    return EXIT.FAILED;
  }
  try {
    return await command.run(ctx, parsed);
  } catch (err) {
    if (err instanceof UsageError) {
      ctx.stderr(`error: ${err.message}\n${usageText(command)}`);
      return EXIT.USAGE;
    }
    const appError = err instanceof AppError ? err : toAppError(err);
    if (!(err instanceof AppError) || appError.status >= 500) {
      ctx.deps.log.error({ err: errorFields(err), command: name }, 'ssh command failed');
    }
    ctx.stderr(`error: ${appError.message}${appError.detail ? ` (${appError.detail})` : ''}\n`);
    return EXIT.FAILED;
  }
}

export function unverifiedMessage(ctx: Pick<CommandContext, 'identity' | 'sshHint'>): string {
  return (
    `This key (${ctx.identity.key.fingerprint}) is not linked to an account yet.\n` +
    `Verify it by email with: ${ctx.sshHint} login you@example.com\n` +
    '(Linked it over HTTP already? Run login once with that email: the signature proves the key, no email needed.)\n'
  );
}

/** A required string flag; missing or empty is a usage error (exit 2). */
export function requireString(args: Parsed, name: string): string {
  const value = args.values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

export function optionalString(args: Parsed, name: string): string | undefined {
  const value = args.values[name];
  return typeof value === 'string' ? value : undefined;
}

export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
