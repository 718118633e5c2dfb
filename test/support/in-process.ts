import pino from 'pino';
import { adminContext, adminProgram } from '../../src/admin/commands.js';
import { runCommand, type Output } from '../../src/command/framework.js';
import type { CoreDeps, Identity } from '../../src/core/index.js';
import { runCommandLine } from '../../src/ssh/commands/index.js';
import { interruptionOf } from '../../src/ssh/lazy-abort.js';
import { sessionContext, sessionIdentity, type SessionContext } from '../../src/ssh/session-context.js';

/**
 * The in-process command layer: SSH and admin commands with string buffers as their terminal,
 * on a real core and database, no SSH client and no socket.
 */
export type Captured = { code: number; stdout: string; stderr: string };

export function buffers(): Output & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, stdout: (t) => void out.push(t), stderr: (t) => void err.push(t) };
}

/** The context of one exec line (the SSH door's own factory), from a test address. */
export function sshContext(deps: CoreDeps, identity: Identity, io: Output, options: { signal?: AbortSignal; ip?: string } = {}): SessionContext {
  return sessionContext(
    {
      deps,
      origin: { channel: 'ssh', ip: options.ip ?? '192.0.2.1' },
      sshHint: 'ssh -p 2222 keys@host',
      shuttingDown: new AbortController().signal,
      activity: () => undefined,
    },
    io,
    { identity: sessionIdentity(deps, identity), interrupted: interruptionOf(options.signal ?? new AbortController().signal), inShell: false },
  );
}

/** Runs one SSH command line as `identity`, like an exec request over the SSH door. */
export async function runSshLine(deps: CoreDeps, identity: Identity, line: string): Promise<Captured> {
  const io = buffers();
  const { code } = await runCommandLine(line, sshContext(deps, identity, io));
  return { code, stdout: io.out.join(''), stderr: io.err.join('') };
}

/** Runs one admin command (`npm run admin -- WORDS...`). */
export async function runAdmin(deps: CoreDeps, ...words: string[]): Promise<Captured> {
  const io = buffers();
  const { code } = await runCommand(adminProgram(pino({ level: 'silent' })), words, adminContext(deps, io));
  return { code, stdout: io.out.join(''), stderr: io.err.join('') };
}
