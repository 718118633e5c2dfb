import pino from 'pino';
import { adminProgram } from '../../src/admin/commands.js';
import { runCommand, type Output, type Program } from '../../src/command/framework.js';
import { resolveSshIdentity, type CoreDeps, type Identity } from '../../src/core/index.js';
import type { SessionContext } from '../../src/ssh/command.js';
import { runCommandLine } from '../../src/ssh/commands/index.js';

/**
 * The in-process command layer: SSH and admin commands with string buffers as their terminal,
 * on a real core and database, no SSH client and no socket.
 */
export type Captured = { code: number; stdout: string; stderr: string };

function buffers(): Output & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, stdout: (t) => void out.push(t), stderr: (t) => void err.push(t) };
}

/** Runs one SSH command line as `identity`, like an exec request over the SSH door. */
export async function runSshLine(deps: CoreDeps, identity: Identity, line: string): Promise<Captured> {
  const io = buffers();
  const ctx: SessionContext = {
    ...io,
    deps,
    identity,
    origin: { channel: 'ssh', ip: '192.0.2.1' },
    sshHint: 'ssh -p 2222 keys@host',
    signal: new AbortController().signal,
    shuttingDown: new AbortController().signal,
    markActive: () => undefined,
    async refreshIdentity() {
      ctx.identity = await resolveSshIdentity(deps, identity.key);
      return ctx.identity;
    },
  };
  const code = await runCommandLine(line, ctx);
  return { code, stdout: io.out.join(''), stderr: io.err.join('') };
}

/** Runs one admin command (`npm run admin -- WORDS...`). */
export async function runAdmin(deps: CoreDeps, ...words: string[]): Promise<Captured> {
  const program = adminProgram(pino({ level: 'silent' }));
  const io = buffers();
  const code = await runCommand(program, words, { ...io, deps });
  return { code, stdout: io.out.join(''), stderr: io.err.join('') };
}
