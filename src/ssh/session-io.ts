import type { ServerChannel } from 'ssh2';
import type { CoreDeps, Identity, PublicKey } from '../core/index.js';
import type { ConnectionRecord } from './access-log.js';
import { LazyAbort, type AbortWatch } from './lazy-abort.js';
import type { SessionContext } from './session-context.js';

/** What a session's program (exec or shell) starts with. */
export type ChannelStart = {
  channel: ServerChannel;
  pty: boolean;
  deps: CoreDeps;
  key: PublicKey;
  /** The connection's record: each command's name, exit code and duration go there. */
  access: ConnectionRecord;
  /** Resolved when the program starts, so a `login` on another session of the connection counts. */
  identity: Promise<Identity>;
  origin: SessionContext['origin'];
  sshHint: string;
  /** Aborted when the whole connection goes (a channel may never see its own 'close' then). */
  connectionGone: AbortWatch;
  /** Aborted when the service starts draining (SIGTERM): finish up, start nothing long. */
  shuttingDown: AbortSignal;
  /** Called on every byte in or out: the connection's idle timer counts from the last one. */
  activity(): void;
  /** Bytes of output held for a client that does not read, before its input is paused. */
  outputHighWaterBytes: number;
  /** Complete lines the shell keeps while a command runs; more are dropped. */
  maxQueuedLines: number;
};

/**
 * The abort reason when a client leaves. One made in advance: `abort()` without a reason builds a
 * DOMException with a stack trace every time (1.4% of the server's CPU per create, profiled).
 */
export const CLIENT_GONE: Error = new Error('the SSH client went away');

/** Aborts when this channel closes or its connection goes away. */
export function channelGone(start: ChannelStart): LazyAbort {
  const gone = new LazyAbort();
  const abort = () => gone.abort(CLIENT_GONE);
  const unwatch = start.connectionGone.onAbort(abort);
  start.channel.once('close', () => {
    unwatch();
    abort();
  });
  return gone;
}

export type ChannelWriters = ReturnType<typeof channelWriters>;

/**
 * Writes that are safe after the client has gone, with CRLF line ends on a pty, and that respect
 * back-pressure: output not yet taken by the client's SSH window is counted, and past
 * `highWater` bytes `blocked()` is true until it drains (`writable()` waits for that).
 */
export function channelWriters(channel: ServerChannel, pty: boolean, options: { highWater: number; activity(): void }) {
  let open = true;
  let pending = 0;
  let waiters: Array<() => void> = [];
  channel.once('close', () => {
    open = false;
    wake();
  });
  function wake() {
    const ready = waiters;
    waiters = [];
    for (const resolve of ready) resolve();
  }
  const crlf = (text: string) => (pty ? text.replace(/\r?\n/g, '\r\n') : text);
  const send = (stream: NodeJS.WritableStream, writable: boolean, text: string) => {
    if (!open || !writable || text === '') return;
    options.activity();
    const data = Buffer.from(crlf(text));
    pending += data.length;
    // The callback runs once ssh2 has handed the bytes to the client's window.
    stream.write(data, () => {
      pending -= data.length;
      options.activity();
      if (pending < options.highWater) wake();
    });
  };
  return {
    isOpen: () => open,
    stdout(text: string) {
      send(channel, channel.writable, text);
    },
    stderr(text: string) {
      send(channel.stderr, channel.stderr.writable, text);
    },
    /** Output is backed up: stop reading input until it drains. */
    blocked: () => open && pending >= options.highWater,
    /** Resolves when the client has taken enough output (or has gone). */
    writable(): Promise<void> {
      if (!open || pending < options.highWater) return Promise.resolve();
      return new Promise((resolve) => waiters.push(resolve));
    },
    /** Sends the exit status, then closes the channel (status must come before EOF/close). */
    finish(code: number) {
      if (!open) return;
      open = false;
      channel.exit(code);
      channel.end();
      wake();
    },
  };
}
