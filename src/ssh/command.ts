import type { AccountIdentity, AnonymousIdentity, CoreDeps, Identity, RequestOrigin } from '../core/index.js';
import { EXIT, type Command, type Output, type Parsed } from '../command/framework.js';

/** What an SSH command runs with. `identity` is the key that signed, and its account if any. */
export type SessionContext<I extends Identity = Identity> = Output & {
  deps: CoreDeps;
  identity: I;
  origin: RequestOrigin & { channel: 'ssh' };
  /** How users reach this door, for messages: `ssh -p 2222 keys@host`. */
  sshHint: string;
  /** Running at the interactive `keys> ` prompt: hints name commands without the `ssh …` prefix. */
  inShell?: boolean;
  /** Aborted when the client goes away (or presses Ctrl-C in the shell). */
  signal: AbortSignal;
  /**
   * Aborted when the service starts draining: a command that would wait past the shutdown grace
   * (login) stops early and says what to do instead.
   */
  shuttingDown: AbortSignal;
  /** A command that waits without output (login) says it is still working, so the idle timeout spares it. */
  markActive(): void;
  /** Re-reads the identity (after `login` binds the key); later commands in the session see it too. */
  refreshIdentity(): Promise<Identity>;
};

export type SshCommand = Command<SessionContext> & {
  /** Open commands run for any key; every other command needs an account. */
  open: boolean;
};

type Definition<I extends Identity> = Omit<Command<SessionContext<I>>, 'run'> & {
  run(ctx: SessionContext<I>, args: Parsed): Promise<number>;
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
      if (identity.kind !== 'account') {
        ctx.stderr(unverifiedMessage(identity, commandHint(ctx)));
        return Promise.resolve(EXIT.FAILED);
      }
      return definition.run({ ...ctx, identity }, args);
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
