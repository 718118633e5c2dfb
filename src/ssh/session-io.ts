import type { ServerChannel } from 'ssh2';
import { resolveSshIdentity, type CoreDeps, type Identity, type PublicKey } from '../core/index.js';
import type { Output } from '../cli/framework.js';
import type { SessionContext } from './command.js';

/** What a session's program (exec or shell) starts with. */
export type ChannelStart = {
  channel: ServerChannel;
  pty: boolean;
  deps: CoreDeps;
  key: PublicKey;
  /** Resolved when the program starts, so a `login` on another session of the connection counts. */
  identity: Promise<Identity>;
  origin: SessionContext['origin'];
  sshHint: string;
  /** Aborted when the whole connection goes (a channel may never see its own 'close' then). */
  connectionGone: AbortSignal;
};

/** Aborts when this channel closes or its connection goes away. */
export function channelGone(start: ChannelStart): AbortController {
  const gone = new AbortController();
  const abort = () => gone.abort();
  start.channel.once('close', abort);
  if (start.connectionGone.aborted) abort();
  else start.connectionGone.addEventListener('abort', abort, { once: true });
  return gone;
}

/** Writes that are safe after the client has gone, with CRLF line ends on a pty. */
export function channelWriters(channel: ServerChannel, pty: boolean) {
  let open = true;
  channel.once('close', () => {
    open = false;
  });
  const crlf = (text: string) => (pty ? text.replace(/\r?\n/g, '\r\n') : text);
  return {
    isOpen: () => open,
    stdout(text: string) {
      if (open && channel.writable) channel.write(crlf(text));
    },
    stderr(text: string) {
      if (open && channel.stderr.writable) channel.stderr.write(crlf(text));
    },
    /** Sends the exit status, then closes the channel (status must come before EOF/close). */
    finish(code: number) {
      if (!open) return;
      open = false;
      channel.exit(code);
      channel.end();
    },
  };
}

/** The context commands run with; `refreshIdentity` updates it for every later command too. */
export function sessionContext(start: ChannelStart, identity: Identity, io: Output, signal: AbortSignal): SessionContext {
  const ctx: SessionContext = {
    deps: start.deps,
    identity,
    origin: start.origin,
    sshHint: start.sshHint,
    stdout: io.stdout,
    stderr: io.stderr,
    signal,
    async refreshIdentity() {
      ctx.identity = await resolveSshIdentity(start.deps, start.key);
      return ctx.identity;
    },
  };
  return ctx;
}
