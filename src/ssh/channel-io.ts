import type { ServerChannel } from 'ssh2';
import type { CoreDeps, RequestOrigin } from '../core/index.js';
import type { CommandContext, Identity } from './command.js';
import { resolveIdentity } from './server.js';

export type ChannelStart = {
  channel: ServerChannel;
  identity: Promise<Identity>;
  deps: CoreDeps;
  origin: RequestOrigin;
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

export function commandContext(
  start: ChannelStart,
  identity: Identity,
  io: { stdout(text: string): void; stderr(text: string): void },
  signal: AbortSignal,
): CommandContext {
  const ctx: CommandContext = {
    deps: start.deps,
    identity,
    origin: start.origin,
    sshHint: start.sshHint,
    stdout: io.stdout,
    stderr: io.stderr,
    signal,
    async refreshIdentity() {
      ctx.identity = await resolveIdentity(start.deps, identity.key);
    },
  };
  return ctx;
}
