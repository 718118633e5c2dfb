import { toAppError } from '../core/index.js';
import { channelGone, channelWriters, commandContext, type ChannelStart } from './channel-io.js';
import { EXIT, runCommandLine } from './command.js';
import { COMMANDS } from './commands/index.js';

/** `ssh keys@HOST COMMAND ...`: one command, its output, its exit status. */
export async function runExec(start: ChannelStart & { command: string; pty: boolean }): Promise<void> {
  const io = channelWriters(start.channel, start.pty);
  const abort = channelGone(start);
  // Commands take no input; reading (and dropping) it lets ssh2 see the client close the channel.
  start.channel.resume();
  let code: number;
  try {
    const identity = await start.identity;
    code = await runCommandLine(start.command, COMMANDS, commandContext(start, identity, io, abort.signal));
  } catch (err) {
    io.stderr(`error: ${toAppError(err).message}\n`);
    code = EXIT.FAILED;
  }
  io.finish(code);
}
