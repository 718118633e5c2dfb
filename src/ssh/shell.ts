import { toAppError } from '../core/index.js';
import { channelGone, channelWriters, commandContext, type ChannelStart } from './channel-io.js';
import { runCommandLine, type CommandContext } from './command.js';
import { COMMANDS } from './commands/index.js';

const PROMPT = 'keys> ';
const MAX_LINE = 4096;

/**
 * Interactive `ssh keys@HOST`: a greeting, a `keys> ` prompt running the same commands as exec,
 * and just enough line editing (backspace, Ctrl-U, Ctrl-C, Ctrl-D) for a person at a terminal.
 */
export async function runShell(start: ChannelStart): Promise<void> {
  const { channel } = start;
  const io = channelWriters(channel, true);
  let ctx: CommandContext;
  let running: AbortController | null = null;
  const gone = channelGone(start);
  gone.signal.addEventListener('abort', () => running?.abort(), { once: true });
  try {
    const identity = await start.identity;
    // One stream on a terminal, so errors appear in order with everything else.
    ctx = commandContext(start, identity, { stdout: io.stdout, stderr: io.stdout }, gone.signal);
  } catch (err) {
    io.stderr(`error: ${toAppError(err).message}\n`);
    io.finish(1);
    return;
  }

  const { user, key } = ctx.identity;
  io.stdout(
    user
      ? `Hi ${user.email}! You are connected with key ${key.fingerprint} (${key.type}).\n`
      : `Hi! Your key ${key.fingerprint} (${key.type}) is not linked to an account yet: type "login you@example.com".\n`,
  );
  io.stdout('Type "help" for commands, "exit" or Ctrl-D to leave.\n');
  io.stdout(PROMPT);

  let line = '';
  let escape: 'none' | 'esc' | 'sequence' = 'none'; // arrow keys and the like: swallowed

  const runLine = async (text: string) => {
    const trimmed = text.trim();
    if (trimmed === 'exit' || trimmed === 'quit' || trimmed === 'logout') {
      io.finish(0);
      return;
    }
    running = new AbortController();
    // Ctrl-C stops this command (e.g. login's wait) without closing the session.
    ctx.signal = AbortSignal.any([running.signal, gone.signal]);
    try {
      await runCommandLine(text, COMMANDS, ctx);
    } finally {
      running = null;
    }
    if (io.isOpen()) io.stdout(PROMPT);
  };

  channel.on('data', (data: Buffer) => {
    for (const byte of data) {
      if (running) {
        if (byte === 0x03) {
          io.stdout('^C\n');
          running.abort();
        }
        continue; // typing while a command runs is ignored
      }
      if (escape === 'esc') {
        escape = byte === 0x5b || byte === 0x4f ? 'sequence' : 'none'; // ESC [ or ESC O
        continue;
      }
      if (escape === 'sequence') {
        if (byte >= 0x40 && byte <= 0x7e) escape = 'none'; // the final byte
        continue;
      }
      switch (byte) {
        case 0x1b: // ESC
          escape = 'esc';
          break;
        case 0x0d: // Enter
        case 0x0a: {
          io.stdout('\n');
          const text = line;
          line = '';
          void runLine(text);
          break;
        }
        case 0x7f: // Backspace
        case 0x08:
          if (line.length > 0) {
            line = line.slice(0, -1);
            io.stdout('\b \b');
          }
          break;
        case 0x15: // Ctrl-U
          io.stdout('\b \b'.repeat(line.length));
          line = '';
          break;
        case 0x03: // Ctrl-C
          io.stdout('^C\n' + PROMPT);
          line = '';
          break;
        case 0x04: // Ctrl-D
          if (line.length === 0) {
            io.stdout('\n');
            io.finish(0);
            return;
          }
          break;
        default:
          if (byte >= 0x20 && byte < 0x7f && line.length < MAX_LINE) {
            const char = String.fromCharCode(byte);
            line += char;
            io.stdout(char);
          }
      }
    }
  });
}
