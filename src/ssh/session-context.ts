import { resolveSshIdentity, type CoreDeps, type Identity, type RequestOrigin } from '../core/index.js';
import type { Output } from '../command/framework.js';
import type { Interruption } from './lazy-abort.js';

/** What an SSH command runs with: one per command line, never changed (a new line gets a new one). */
export type SessionContext<I extends Identity = Identity> = Readonly<
  Output & {
    deps: CoreDeps;
    /** The key that signed, and its account if any, as read just before this line ran. */
    identity: I;
    origin: RequestOrigin & { channel: 'ssh' };
    /** How users reach this door, for messages: `ssh -p 2222 keys@host`. */
    sshHint: string;
    /** Running at the interactive `keys> ` prompt: hints name commands without the `ssh …` prefix. */
    inShell: boolean;
    /**
     * The client went away (or pressed Ctrl-C in the shell): `interrupted.aborted`; an AbortSignal
     * for APIs that take one: `interrupted.signal` (made on first use).
     */
    interrupted: Interruption;
    /**
     * Aborted when the service starts draining: a command that would wait past the shutdown grace
     * (login) stops early and says what to do instead.
     */
    shuttingDown: AbortSignal;
    /** A command that waits without output (login) says it is still working, so the idle timeout spares it. */
    markActive(): void;
    /** Reads the identity afresh (login, once the key is linked); later lines of the session see it too. */
    readIdentity(): Promise<Identity>;
  }
>;

/** What every command line of a session shares: fixed when its channel opens. */
export type SessionFacts = Pick<SessionContext, 'deps' | 'origin' | 'sshHint' | 'shuttingDown'> & {
  /** Called on every sign of life: the connection's idle timer counts from the last one. */
  activity(): void;
};

/**
 * The session's key as last read: the shell reads it before every line, login after it links
 * the key; the access log and Tab completion take the latest.
 */
export type SessionIdentity = {
  latest(): Identity;
  read(): Promise<Identity>;
};

export function sessionIdentity(deps: CoreDeps, first: Identity): SessionIdentity {
  let latest = first;
  return {
    latest: () => latest,
    async read() {
      latest = await resolveSshIdentity(deps, first.key);
      return latest;
    },
  };
}

/** The context one command line runs with (exec: the only line; shell: each line anew). */
export function sessionContext(
  facts: SessionFacts,
  io: Output,
  line: { identity: SessionIdentity; interrupted: Interruption; inShell: boolean },
): SessionContext {
  return Object.freeze({
    stdout: io.stdout,
    stderr: io.stderr,
    deps: facts.deps,
    identity: line.identity.latest(),
    origin: facts.origin,
    sshHint: facts.sshHint,
    inShell: line.inShell,
    interrupted: line.interrupted,
    shuttingDown: facts.shuttingDown,
    markActive: facts.activity,
    readIdentity: line.identity.read,
  });
}
