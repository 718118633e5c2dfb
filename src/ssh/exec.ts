import { toAppError } from '../core/index.js';
import { EXIT } from '../command/framework.js';
import type { SessionContext } from './command.js';
import { commandNameOf, runCommandLine } from './commands/index.js';
import { channelGone, channelWriters, sessionContext, type ChannelStart } from './session-io.js';

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
  let ctx: SessionContext | undefined;
  let code: number;
  try {
    const identity = await start.identity;
    ctx = sessionContext(start, identity, io, abort.signal);
    code = await runCommandLine(start.command, ctx);
  } catch (err) {
    io.stderr(`error: ${toAppError(err).message}\n`);
    code = EXIT.FAILED;
  }
  start.access.command(commandNameOf(start.command), code, performance.now() - began, ctx?.identity);
  io.finish(code);
}
