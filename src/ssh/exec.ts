import { toAppError } from '../core/index.js';
import { EXIT, type CommandRun } from '../command/framework.js';
import { commandNameOfLine, runCommandLine } from './commands/index.js';
import { sessionContext, sessionIdentity, type SessionIdentity } from './session-context.js';
import { channelGone, channelWriters, type ChannelStart } from './session-io.js';

/** `ssh keys@HOST COMMAND ...`: one command, its output, its exit status. */
export async function runExec(start: ChannelStart & { command: string }): Promise<void> {
  const io = channelWriters(start.channel, start.pty, { highWater: start.outputHighWaterBytes, activity: start.activity });
  const abort = channelGone(start);
  // Commands take no input; reading (and dropping) it lets ssh2 see the client close the channel.
  // With a terminal (`ssh -t`), Ctrl-C arrives as a byte rather than as ssh's death: it stops the
  // command (a `login` wait), as at the prompt, and the command can still say what happens next.
  start.channel.on('data', (data: Buffer) => {
    start.activity();
    if (start.pty && data.includes(0x03)) abort.abort();
  });
  const began = performance.now();
  let identity: SessionIdentity | undefined;
  let ran: CommandRun;
  try {
    identity = sessionIdentity(start.deps, await start.identity);
    ran = await runCommandLine(start.command, sessionContext(start, io, { identity, interrupted: abort, inShell: false }));
  } catch (err) {
    io.stderr(`error: ${toAppError(err).message}\n`);
    // The identity could not be read (the database is away): the line never ran, but it is still
    // counted under its command, so an outage shows where operators look for it.
    ran = { code: EXIT.FAILED, command: commandNameOfLine(start.command) };
  }
  // As the key is now: a `login` may have linked it.
  start.access.command(ran.command, ran.code, performance.now() - began, identity?.latest());
  io.finish(ran.code);
}
