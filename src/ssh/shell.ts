import { StringDecoder } from 'node:string_decoder';
import { countKeysExpiringSoon, describeKeyType, toAppError } from '../core/index.js';
import { runCommandLine, sessionCompletions } from './commands/index.js';
import { KeyDecoder, LineEditor, type Key } from './line-editor.js';
import { sessionContext, sessionIdentity, type SessionIdentity } from './session-context.js';
import { interruptionOf } from './lazy-abort.js';
import { channelGone, channelWriters, type ChannelStart } from './session-io.js';

const PROMPT = 'keys> ';
const SHUTDOWN_NOTICE = 'shell-auth is restarting: this session closes now (a running command finishes first). Reconnect in a moment.';
const MAX_LINE = 4096;

/**
 * Interactive `ssh keys@HOST`: a greeting, a `keys> ` prompt running the same commands as exec.
 * On a pty, a line editor (line-editor.ts: cursor keys, readline's control keys, history, Tab);
 * what is typed while a command runs is kept, silently, and shown again at the next prompt.
 * Without a pty (`ssh -T`, piped input) it reads lines without echo, so scripts can drive it.
 */
export async function runShell(start: ChannelStart): Promise<void> {
  const { channel, pty } = start;
  const io = channelWriters(channel, pty, { highWater: start.outputHighWaterBytes, activity: start.activity });
  const gone = channelGone(start);
  let running: AbortController | null = null;
  gone.onAbort(() => running?.abort());

  let identity: SessionIdentity;
  try {
    identity = sessionIdentity(start.deps, await start.identity);
  } catch (err) {
    io.stderr(`error: ${toAppError(err).message}\n`);
    io.finish(1);
    return;
  }
  // One stream on a terminal, so errors appear in order with everything else.
  const terminal = pty ? { stdout: io.stdout, stderr: io.stdout } : io;

  const greeted = identity.latest();
  const { key } = greeted;
  // Read while the first line goes out; a failure only leaves the reminder out.
  const expiringSoon = greeted.kind === 'account' ? countKeysExpiringSoon(start.deps, greeted.user.id).catch(() => 0) : Promise.resolve(0);
  io.stdout(
    greeted.kind === 'account'
      ? `Hi ${greeted.user.email}! You are connected with key ${key.fingerprint} (${describeKeyType(key.type)}).\n`
      : `Hi! Your key ${key.fingerprint} (${describeKeyType(key.type)}) is not linked to an account yet: type "login you@example.com".\n`,
  );
  const expiring = await expiringSoon;
  if (expiring > 0) {
    io.stdout(`${expiring === 1 ? '1 of your API keys expires' : `${expiring} of your API keys expire`} within 7 days: see "list" (STATE expiring), and "rotate KEY_ID" to renew one.\n`);
  }
  io.stdout('Type "help" for commands, "exit" or Ctrl-D to leave.\n');
  io.stdout(PROMPT);

  const decoder = new StringDecoder('utf8');
  const keys = new KeyDecoder(!pty);
  const completion = sessionCompletions(start.deps, identity.latest);
  const editor = new LineEditor(PROMPT, completion.completions, MAX_LINE);
  // Keys that arrived while a Tab waits for its choices (key ids) to be read: handled after it, in order.
  let held: Key[] | null = null;
  // Complete lines typed or pasted while a command runs (bounded); `shown`: echoed as typed.
  const queue: Array<{ text: string; shown: boolean }> = [];
  // `open`; `input ended` (Ctrl-D, the end of piped input): run what is queued, then close;
  // `shutting down` (the service drains): said once, nothing more is queued, closed at the prompt.
  let phase: 'open' | 'input ended' | 'shutting down' = 'open';
  const endInput = () => {
    if (phase === 'open') phase = 'input ended';
  };
  let runningQueue = false;
  // "input dropped" was said since the queue last emptied.
  let dropSaid = false;

  const onShutdown = () => {
    if (!io.isOpen() || phase === 'shutting down') return;
    phase = 'shutting down';
    start.access.ended('server_shutdown');
    io.stdout(`\n${SHUTDOWN_NOTICE}\n`);
    queue.length = 0;
    if (!running) io.finish(0);
  };
  if (start.shuttingDown.aborted) queueMicrotask(onShutdown);
  else start.shuttingDown.addEventListener('abort', onShutdown, { once: true });
  channel.once('close', () => start.shuttingDown.removeEventListener('abort', onShutdown));

  const enqueue = (text: string, shown: boolean) => {
    if (phase === 'shutting down') return;
    if (queue.length >= start.maxQueuedLines) {
      // Typed (or pasted, or flooded) far ahead: drop it, and say so once until the queue empties.
      if (!dropSaid) io.stdout(`\n(input dropped: at most ${start.maxQueuedLines} lines can wait while a command runs)\n`);
      dropSaid = true;
      return;
    }
    queue.push({ text, shown });
  };

  const runQueuedLines = async () => {
    if (runningQueue) return;
    runningQueue = true;
    try {
      while (queue.length > 0 && io.isOpen()) {
        // Back-pressure: nothing more runs (or echoes) until the client has read what it was sent.
        await io.writable();
        const { text, shown } = queue.shift() ?? { text: '', shown: true };
        if (queue.length === 0) dropSaid = false;
        // Typed while the last command ran (and not echoed then): show what runs now.
        if (!shown && pty) io.stdout(`${PROMPT}${text}\n`);
        const trimmed = text.trim();
        if (trimmed === 'exit' || trimmed === 'quit' || trimmed === 'logout') {
          io.finish(0);
          return;
        }
        if (trimmed !== '') {
          running = new AbortController();
          // Ctrl-C stops this command (e.g. login's wait) without closing the session.
          const signal = AbortSignal.any([running.signal, gone.signal]);
          const began = performance.now();
          try {
            // Each line acts as the account is now: a link confirmed since (a login interrupted with
            // Ctrl-C, then clicked), a key unlinked, an org left or its billing suspended. (Unreadable:
            // as last read.)
            await identity.read().catch(() => undefined);
            const { code, command } = await runCommandLine(text, sessionContext(start, terminal, { identity, interrupted: interruptionOf(signal), inShell: true }));
            start.access.command(command, code, performance.now() - began, identity.latest());
          } finally {
            running = null;
            completion.changed(); // a create or revoke changes which key ids Tab offers
          }
        }
        // The prompt, with whatever is already typed of the next line (kept while this one ran).
        if (io.isOpen() && phase !== 'shutting down' && (!pty || queue.length === 0)) io.stdout(pty ? editor.render() : PROMPT);
      }
      if (phase !== 'open' && queue.length === 0) io.finish(0);
    } finally {
      runningQueue = false;
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

  /** One chunk of input: keys to the editor, whose echo is written once per chunk. */
  const onText = (text: string) => onKeys(keys.decode(text));
  const onKeys = (pressed: Key[]) => {
    if (held) {
      held.push(...pressed.slice(0, Math.max(0, MAX_LINE - held.length)));
      return;
    }
    let echo = '';
    for (const [index, key] of pressed.entries()) {
      // A Tab that offers key ids waits for them (one bounded query); keys after it wait their turn.
      const loading = key.kind === 'tab' && pty && !runningQueue ? completion.prepare(editor.beforeCursor) : null;
      if (loading) {
        if (echo) io.stdout(echo);
        held = pressed.slice(index);
        void loading.then(() => {
          const later = held ?? [];
          held = null;
          if (io.isOpen()) onKeys(later);
        });
        return;
      }
      if (running && key.kind === 'ctrl' && key.letter === 'c') {
        // Ctrl-C stops the command (e.g. login's wait), not the session; lines typed ahead go too.
        if (pty) echo += '^C\r\n';
        running.abort();
        queue.length = 0;
        continue;
      }
      // Editing is silent while commands run (their output owns the screen) and without a pty.
      const visible = pty && !runningQueue;
      const result = editor.press(key, visible);
      echo += result.output;
      if (result.submitted !== undefined) {
        enqueue(result.submitted, visible);
        void runQueuedLines();
      }
      if (result.endOfInput) {
        endInput();
        void runQueuedLines();
      }
    }
    if (echo) io.stdout(echo);
  };

  channel.on('data', (data: Buffer) => {
    start.activity();
    onText(decoder.write(data));
    flowInput();
  });
  // End of input (piped stdin): run what was queued, then leave.
  channel.once('end', () => {
    onText(decoder.end());
    if (editor.text.trim()) enqueue(editor.text, true);
    endInput();
    void runQueuedLines();
  });
}
