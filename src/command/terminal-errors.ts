import type { AppError, ErrorCode } from '../core/index.js';

/** The command line as parsed (framework.ts's Parsed, named here so the two files do not import each other). */
type Parsed = { values: Record<string, string | boolean | undefined>; positionals: string[] };

/**
 * A program's own wording of the error table's codes, in terms of what its user typed (the SSH
 * door's are in ssh/error-phrases.ts). Codes not listed, and every code in a program without
 * phrases (the admin CLI), read as the error table says.
 */
export type Phrase = (args: Parsed, err: AppError) => string;
export type ErrorPhrases = Partial<Record<ErrorCode, Phrase>>;

/** The message for a core error on a terminal (no "error: " prefix, no newline). */
export function terminalMessage(err: AppError, args: Parsed | null, phrases: ErrorPhrases = {}): string {
  const phrase = phrases[err.code];
  if (phrase && args) return phrase(args, err);
  return `${err.message}${err.detail ? ` (${err.detail})` : ''}`;
}

/**
 * node:util parseArgs explains in its own words ("Option '--label <value>' argument missing",
 * "Unknown option '--bogus'. To specify a positional argument starting with a '-', …"): these
 * are ours.
 */
export function describeParseError(err: unknown): string {
  const { code, message } = err as { code?: string; message?: string };
  const option = /'(-{1,2}[^' ]+)/.exec(message ?? '')?.[1] ?? 'an option';
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${option}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/argument missing/.test(message ?? '')) return `${option} needs a value`;
      if (/ambiguous/.test(message ?? '')) return `${option} needs a value (one that starts with "-" is written ${option}=-value)`;
      return `${option} takes no value`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return 'unexpected argument';
    default:
      return message ?? 'invalid arguments';
  }
}
