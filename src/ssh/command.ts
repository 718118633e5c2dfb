import type { AccountIdentity, AnonymousIdentity, Identity } from '../core/index.js';
import { failure, type Command, type CommandResult, type Parsed } from '../command/framework.js';
import type { SessionContext } from './session-context.js';

export type SshCommand = Command<SessionContext> & {
  /** Open commands run for any key; every other command needs an account. */
  open: boolean;
};

type Definition<I extends Identity> = Omit<Command<SessionContext<I>>, 'run'> & {
  run(ctx: SessionContext<I>, args: Parsed): Promise<CommandResult>;
};

/**
 * Gated by default: the command runs only for a key linked to an account, and the compiler
 * gives its `run` an identity whose user is never null.
 */
export function accountCommand(definition: Definition<AccountIdentity>): SshCommand {
  return {
    ...definition,
    open: false,
    run(ctx, args) {
      const { identity } = ctx;
      if (identity.kind !== 'account') return Promise.resolve(failure(unverifiedMessage(identity, commandHint(ctx))));
      return definition.run(Object.freeze({ ...ctx, identity }), args);
    },
  };
}

/** A command any key may run (login, whoami, help). */
export function openCommand(definition: Definition<Identity>): SshCommand {
  return { ...definition, open: true };
}

/** How to type a command here: `login …` at the prompt, `ssh -p 2222 keys@host login …` elsewhere. */
export function commandHint(ctx: Pick<SessionContext, 'sshHint' | 'inShell'>): string {
  return ctx.inShell ? '' : `${ctx.sshHint} `;
}

/** What a key without an account here is told: one story, whether it was linked over HTTP or never. */
export function unverifiedMessage(identity: AnonymousIdentity, prefix: string): string {
  const { fingerprint } = identity.key;
  if (identity.linkedOverHttp) {
    return (
      `This key (${fingerprint}) was linked over HTTP (e.g. by "vers login"), which proves an inbox, not the key.\n` +
      `Prove it here once, with the same email: ${prefix}login you@example.com (your signature is the proof: no email is sent)\n`
    );
  }
  return (
    `This key (${fingerprint}) is not linked to an account yet.\n` +
    `Verify it by email with: ${prefix}login you@example.com\n` +
    '(Linked it over HTTP already? Run login once with that email: the signature proves the key, no email needed.)\n'
  );
}
