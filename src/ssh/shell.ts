import { StringDecoder } from 'node:string_decoder';
import { toAppError } from '../core/index.js';
import type { SessionContext } from './command.js';
import { commandNameOf, runCommandLine } from './commands/index.js';
import { channelGone, channelWriters, sessionContext, type ChannelStart } from './session-io.js';

const PROMPT = 'keys> ';
const SHUTDOWN_NOTICE = 'shell-auth is restarting: this session closes now (a running command finishes first). Reconnect in a moment.';
const MAX_LINE = 4096;

/**
 * Interactive `ssh keys@HOST`: a greeting, a `keys> ` prompt running the same commands as exec,
 * and just enough line editing (backspace, Ctrl-U, Ctrl-C, Ctrl-D) for a person at a terminal.
 * Without a pty (`ssh -T`, piped input) it reads lines without echo, so scripts can drive it.
 */
export async function runShell(start: ChannelStart): Promise<void> {
  const { channel, pty } = start;
  const io = channelWriters(channel, pty, { highWater: start.outputHighWaterBytes, activity: start.activity });
  const gone = channelGone(start);
  let running: AbortController | null = null;
  gone.signal.addEventListener('abort', () => running?.abort(), { once: true });

  let ctx: SessionContext;
  try {
    const identity = await start.identity;
    // One stream on a terminal, so errors appear in order with everything else.
    ctx = sessionContext(start, identity, pty ? { stdout: io.stdout, stderr: io.stdout } : io, gone.signal);
    ctx.inShell = true;
  } catch (err) {
    io.stderr(`error: ${toAppError(err).message}\n`);
    io.finish(1);
    return;
  }

  const { identity } = ctx;
  const { key } = identity;
  io.stdout(
    identity.kind === 'account'
      ? `Hi ${identity.user.email}! You are connected with key ${key.fingerprint} (${key.type}).\n`
      : `Hi! Your key ${key.fingerprint} (${key.type}) is not linked to an account yet: type "login you@example.com".\n`,
  );
  io.stdout('Type "help" for commands, "exit" or Ctrl-D to leave.\n');
  io.stdout(PROMPT);

  const decoder = new StringDecoder('utf8');
  const queue: string[] = []; // complete lines typed or pasted while a command runs (bounded)
  let line = '';
  let escape: 'none' | 'esc' | 'sequence' = 'none'; // arrow keys and the like: swallowed
  let closing = false;
  let draining = false;
  let droppedSaid = false;
  let shuttingDown = false;

  // Draining: say so once, take no more input, and close at the prompt.
  const onShutdown = () => {
    if (!io.isOpen() || shuttingDown) return;
    shuttingDown = true;
    start.access.ended('server_shutdown');
    io.stdout(`\n${SHUTDOWN_NOTICE}\n`);
    queue.length = 0;
    closing = true;
    if (!running) io.finish(0);
  };
  if (start.shuttingDown.aborted) queueMicrotask(onShutdown);
  else start.shuttingDown.addEventListener('abort', onShutdown, { once: true });
  channel.once('close', () => start.shuttingDown.removeEventListener('abort', onShutdown));

  const enqueue = (text: string) => {
    if (shuttingDown) return;
    if (queue.length >= start.maxQueuedLines) {
      // Typed (or pasted, or flooded) far ahead: drop it, and say so once until the queue empties.
      if (!droppedSaid) io.stdout(`\n(input dropped: at most ${start.maxQueuedLines} lines can wait while a command runs)\n`);
      droppedSaid = true;
      return;
    }
    queue.push(text);
  };

  const drain = async () => {
    if (draining) return;
    draining = true;
    try {
      while (queue.length > 0 && io.isOpen()) {
        // Back-pressure: nothing more runs (or echoes) until the client has read what it was sent.
        await io.writable();
        const text = queue.shift() ?? '';
        if (queue.length === 0) droppedSaid = false;
        const trimmed = text.trim();
        if (trimmed === 'exit' || trimmed === 'quit' || trimmed === 'logout') {
          io.finish(0);
          return;
        }
        if (trimmed !== '') {
          running = new AbortController();
          // Ctrl-C stops this command (e.g. login's wait) without closing the session.
          ctx.signal = AbortSignal.any([running.signal, gone.signal]);
          const began = performance.now();
          try {
            const code = await runCommandLine(text, ctx);
            start.access.command(commandNameOf(text), code, performance.now() - began, ctx.identity);
          } finally {
            running = null;
          }
        }
        if (io.isOpen() && !shuttingDown) io.stdout(PROMPT);
      }
      if (closing && queue.length === 0) io.finish(0);
    } finally {
      draining = false;
      flowInput();
    }
  };

  /** Reads input only while output is flowing: a client that sends much and reads nothing stalls itself. */
  const flowInput = () => {
    if (!io.isOpen()) return;
    if (io.blocked()) {
      channel.pause();
      void io.writable().then(flowInput);
    } else {
      channel.resume();
    }
  };

  // Echo is collected per chunk of input and written once: one write, not one per keystroke.
  let echoed = '';
  const echo = (text: string) => {
    if (pty) echoed += text;
  };

  const onText = (text: string) => {
    try {
      readChars(text);
    } finally {
      io.stdout(echoed);
      echoed = '';
    }
  };

  const readChars = (text: string) => {
    for (const char of text) {
      if (running && char === '\x03') {
        echo('^C\n');
        running.abort();
        queue.length = 0;
        continue;
      }
      if (escape === 'esc') {
        escape = char === '[' || char === 'O' ? 'sequence' : 'none';
        continue;
      }
      if (escape === 'sequence') {
        if (char >= '@' && char <= '~') escape = 'none'; // the final byte
        continue;
      }
      switch (char) {
        case '\x1b':
          escape = 'esc';
          break;
        case '\r':
        case '\n':
          if (char === '\n' && pty) break; // terminals send \r; ignore a following \n
          echo('\n');
          enqueue(line);
          line = '';
          void drain();
          break;
        case '\x7f': // Backspace
        case '\b':
          if (line.length > 0) {
            line = Array.from(line).slice(0, -1).join('');
            echo('\b \b');
          }
          break;
        case '\x15': // Ctrl-U
          echo('\b \b'.repeat(Array.from(line).length));
          line = '';
          break;
        case '\x03': // Ctrl-C
          echo(`^C\n${PROMPT}`);
          line = '';
          break;
        case '\x04': // Ctrl-D
          if (line.length === 0) {
            echo('\n');
            closing = true;
            void drain();
          }
          break;
        default:
          if (char >= ' ' && char !== '\x7f' && line.length < MAX_LINE) {
            line += char;
            echo(char);
          }
      }
    }
  };

  channel.on('data', (data: Buffer) => {
    start.activity();
    onText(decoder.write(data));
    flowInput();
  });
  // End of input (piped stdin): run what was queued, then leave.
  channel.once('end', () => {
    onText(decoder.end());
    if (line.trim()) enqueue(line);
    line = '';
    closing = true;
    void drain();
  });
}
