import { commandNameIn, COMMON_OPTIONS, EXIT, runCommand, type CommandRun, type Program } from '../../command/framework.js';
import { revocableKeyIds, type CoreDeps, type Identity } from '../../core/index.js';
import { SSH_ERROR_PHRASES } from '../error-phrases.js';
import type { SshCommand } from '../command.js';
import type { SessionContext } from '../session-context.js';
import { completionSlot, type Completions } from '../line-editor.js';
import { tokenize } from '../tokenize.js';
import { audit } from './audit.js';
import { create } from './create.js';
import { helpCommand } from './help.js';
import { list } from './list.js';
import { login } from './login.js';
import { orgs } from './orgs.js';
import { policy, policySet } from './policy.js';
import { revoke } from './revoke.js';
import { rotate } from './rotate.js';
import { whoami } from './whoami.js';

export const COMMANDS: SshCommand[] = [create, list, revoke, rotate, audit, orgs, policySet, policy, whoami, login, helpCommand(sshProgram)];

/** What Tab completes at the prompt: command names, then the typed command's flags. */
export const COMPLETIONS: Completions = {
  commands: [...COMMANDS.map((c) => c.name), 'exit'],
  flagsOf(name) {
    const command = COMMANDS.find((c) => c.name === name);
    return command ? Object.keys({ ...command.options, ...COMMON_OPTIONS }).map((o) => `--${o}`) : [];
  },
};

/** Tab's choices of key ids: the newest few, read at most this often (and again after any command). */
const KEY_IDS_SHOWN = 50;
const KEY_IDS_FRESH_MS = 30_000;
/** Tab waits this long at most for them; past it, it completes from what it has. */
const KEY_IDS_WAIT_MS = 2_000;
const PLAIN_VALUE = /^[A-Za-z0-9._-]+$/;

/**
 * A shell session's completions: COMPLETIONS, plus the session's own org names after `--org` and
 * key ids after `revoke` and `rotate`. The org names come with the identity (read before each line anyway);
 * the key ids need a query, so the shell calls `prepare` before a Tab and waits for it only when
 * that Tab would offer them and none were read in the last 30 s; `changed` (after each command)
 * forgets them.
 */
export function sessionCompletions(deps: CoreDeps, identityNow: () => Identity) {
  let keyIds: { ids: string[]; at: number } | null = null;
  // `revoke <Tab>`, `rotate <Tab>` (or after a flag without a value: `revoke --json <Tab>`), not a second id.
  const wantsKeyIds = (command: string, previous: string) =>
    (command === 'revoke' || command === 'rotate') &&
    (previous === command || (previous.startsWith('-') && COMMANDS.find((c) => c.name === command)?.options[previous.replace(/^-+/, '')]?.type !== 'string'));
  const completions: Completions = {
    ...COMPLETIONS,
    valuesOf(command, previous) {
      if (command === 'help') return previous === 'help' ? COMMANDS.map((c) => c.name) : [];
      const identity = identityNow();
      if (identity.kind !== 'account') return [];
      if (previous === '--org' && COMMANDS.find((c) => c.name === command)?.options.org) {
        return identity.orgs.map((o) => o.name).filter((name) => PLAIN_VALUE.test(name));
      }
      return wantsKeyIds(command, previous) ? (keyIds?.ids ?? []) : [];
    },
  };
  return {
    completions,
    /** A promise to wait for before completing `before` (the line up to the cursor), or null: nothing to read. */
    prepare(before: string): Promise<void> | null {
      const identity = identityNow();
      const slot = completionSlot(before);
      if (identity.kind !== 'account' || slot.kind !== 'value' || !wantsKeyIds(slot.command, slot.previous)) return null;
      if (keyIds && Date.now() - keyIds.at < KEY_IDS_FRESH_MS) return null;
      let timer: NodeJS.Timeout | undefined;
      const read = revocableKeyIds(deps, identity.user, identity.orgs, KEY_IDS_SHOWN).catch(() => []);
      const timeout = new Promise<string[]>((resolve) => (timer = setTimeout(() => resolve([]), KEY_IDS_WAIT_MS)));
      // Remembered even when empty or failed: the next Tab does not wait again for 30 s.
      return Promise.race([read, timeout]).then((ids) => {
        clearTimeout(timer);
        keyIds = { ids, at: Date.now() };
      });
    },
    changed() {
      keyIds = null;
    },
  };
}

export type SessionCompletions = ReturnType<typeof sessionCompletions>;

export function sshProgram(ctx: Pick<SessionContext, 'sshHint' | 'deps' | 'inShell'>): Program<SessionContext> {
  return {
    commands: COMMANDS,
    // At the prompt commands are typed bare: `help` lists them, with no `ssh …` synopsis.
    invocation: ctx.inShell ? null : ctx.sshHint,
    helpHint: ctx.inShell ? 'type "help" for the list' : `run "${ctx.sshHint} help" for the list`,
    errorPhrases: SSH_ERROR_PHRASES,
    log: ctx.deps.log,
  };
}

/** The name a line runs under (see commandNameIn), for a line that could not run: its key's identity could not be read. */
export function commandNameOfLine(line: string): string {
  const tokens = tokenize(line);
  return tokens.ok ? commandNameIn(COMMANDS, tokens.words) : 'unknown';
}

/** One exec command line or shell line: split like a POSIX shell (nothing expanded), then run. */
export async function runCommandLine(line: string, ctx: SessionContext): Promise<CommandRun> {
  const tokens = tokenize(line);
  if (!tokens.ok) {
    ctx.stderr(`error: ${tokens.error}\n`);
    return { code: EXIT.USAGE, command: 'unknown' };
  }
  return runCommand(sshProgram(ctx), tokens.words, ctx);
}
