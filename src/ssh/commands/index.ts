import { EXIT, findCommand, runCommand, type Program } from '../../cli/framework.js';
import { SSH_ERROR_PHRASES } from '../../cli/terminal-errors.js';
import type { SessionContext, SshCommand } from '../command.js';
import type { Completions } from '../line-editor.js';
import { tokenize } from '../tokenize.js';
import { create } from './create.js';
import { helpCommand } from './help.js';
import { list } from './list.js';
import { login } from './login.js';
import { orgs } from './orgs.js';
import { revoke } from './revoke.js';
import { whoami } from './whoami.js';

export const COMMANDS: SshCommand[] = [create, list, revoke, orgs, whoami, login, helpCommand(sshProgram)];

/** What Tab completes at the prompt: command names, then the typed command's flags. */
export const COMPLETIONS: Completions = {
  commands: [...COMMANDS.map((c) => c.name), 'exit'],
  flagsOf(name) {
    const command = COMMANDS.find((c) => c.name === name);
    return command ? [...Object.keys(command.options).map((o) => `--${o}`), '--help'] : [];
  },
};

export function sshProgram(ctx: Pick<SessionContext, 'sshHint' | 'deps' | 'inShell'>): Program<SessionContext> {
  return {
    commands: COMMANDS,
    invocation: ctx.sshHint,
    helpHint: ctx.inShell ? 'type "help" for the list' : `run "${ctx.sshHint} help" for the list`,
    errorPhrases: SSH_ERROR_PHRASES,
    log: ctx.deps.log,
  };
}

/** One exec command line or shell line: split like a POSIX shell (nothing expanded), then run. */
export async function runCommandLine(line: string, ctx: SessionContext): Promise<number> {
  const tokens = tokenize(line);
  if (!tokens.ok) {
    ctx.stderr(`error: ${tokens.error}\n`);
    return EXIT.USAGE;
  }
  return runCommand(sshProgram(ctx), tokens.words, ctx);
}

/**
 * The command a line runs, as the access log and metrics name it: a known command's name (`help`
 * for `--help`), `none` for an empty line, else `unknown`. Never more of the line: labels and
 * arguments can hold secrets, and a mistyped word could be one too.
 */
export function commandNameOf(line: string): string {
  const tokens = tokenize(line);
  if (!tokens.ok) return 'unknown';
  const [first] = tokens.words;
  if (first === undefined || first === '') return 'none';
  if (first === '--help' || first === '-h') return 'help';
  return findCommand(COMMANDS, tokens.words)?.name ?? 'unknown';
}
