import type { Logger } from 'pino';
import type { ServerChannel, Session } from 'ssh2';
import { resolveSshIdentity, type CoreDeps, type Identity, type PublicKey } from '../core/index.js';
import { errorFields } from '../observability/log.js';
import type { SshLimits } from '../config/config.js';
import type { ConnectionRecord } from './access-log.js';
import { runExec } from './exec.js';
import { channelWriters, type ChannelStart } from './session-io.js';
import { EXIT } from '../command/framework.js';
import { escapeForTerminal } from '../text/table.js';
import { runShell } from './shell.js';
import type { AbortWatch } from './lazy-abort.js';

/** Connected as another user than the door's (`ssh root@host`). */
export type WrongUser = { used: string; expected: string };

/** The connection a session runs on, as the session sees it (SshConnection, once authenticated). */
export interface SessionConnection {
  readonly deps: CoreDeps;
  readonly log: Logger;
  readonly limits: Pick<SshLimits, 'outputHighWaterBytes' | 'maxQueuedLines'>;
  readonly key: PublicKey;
  readonly access: ConnectionRecord;
  readonly origin: ChannelStart['origin'];
  /** Aborted when the client goes. */
  readonly gone: AbortWatch;
  readonly shuttingDown: AbortSignal;
  /** Every program says how to connect instead of running. */
  readonly wrongUser: WrongUser | null;
  sshHint(): string;
  activity(): void;
  /** Who the key is as authentication just found it, for the connection's first program only (later ones ask afresh). */
  takeKnownIdentity(): Promise<Identity> | null;
}

/** What the connection learns of this one session. */
export type SessionHooks = {
  /** The session asked for its program (exec or shell): a drain waits for it. `idleNotice` tells its client why the connection is closing. */
  programStarted(idleNotice: (message: string) => void): void;
  /** Called once, when the session ends. */
  closed(): void;
};

/**
 * One SSH session channel: accepts a pty and its resizes, refuses environment variables, and
 * runs one program, exec or shell.
 */
export function handleSession(session: Session, connection: SessionConnection, hooks: SessionHooks): void {
  let closed = false;
  const sessionEnded = () => {
    if (closed) return;
    closed = true;
    hooks.closed();
  };
  session.once('close', sessionEnded);
  let pty = false;
  let started = false;
  session.on('pty', (accept) => {
    pty = true;
    accept?.();
  });
  session.on('window-change', (accept) => accept?.());
  session.on('env', (_accept, reject) => reject?.());

  const begin = (channel: ServerChannel | undefined): ChannelStart | null => {
    if (!channel || started) return null;
    started = true;
    // Said on the channel, which is then closed: a client drops data that arrives after a disconnect.
    hooks.programStarted((message) => {
      if (channel.stderr.writable) channel.stderr.write(pty ? message.replace(/\n/g, '\r\n') : message);
      channel.end();
    });
    channel.on('error', (err: Error) => connection.log.debug({ err: err.message }, 'ssh channel error'));
    channel.once('close', sessionEnded);
    const identity = connection.takeKnownIdentity() ?? resolveSshIdentity(connection.deps, connection.key);
    identity.then(
      (found) => connection.access.identity(found),
      (err) => connection.log.warn({ err: errorFields(err) }, 'ssh: could not load identity'),
    );
    return {
      channel,
      pty,
      identity,
      deps: connection.deps,
      key: connection.key,
      access: connection.access,
      origin: connection.origin,
      sshHint: connection.sshHint(),
      connectionGone: connection.gone,
      shuttingDown: connection.shuttingDown,
      activity: () => connection.activity(),
      outputHighWaterBytes: connection.limits.outputHighWaterBytes,
      maxQueuedLines: connection.limits.maxQueuedLines,
    };
  };
  session.on('exec', (accept, _reject, info) => {
    const start = begin(accept());
    if (start && !toldWrongUser(start, info.command)) void runExec({ ...start, command: info.command });
  });
  session.on('shell', (accept) => {
    const start = begin(accept());
    if (start && !toldWrongUser(start, '')) void runShell(start);
  });
  /** `ssh root@host whoami`: no command runs; the user learns the name to use, and exit 1. */
  const toldWrongUser = (start: ChannelStart, command: string): boolean => {
    const wrong = connection.wrongUser;
    if (!wrong) return false;
    const io = channelWriters(start.channel, start.pty, { highWater: start.outputHighWaterBytes, activity: start.activity });
    // The hint already names the right user: `ssh -p 2222 keys@host`.
    const host = /@(\S+)$/.exec(start.sshHint)?.[1] ?? 'HOST';
    io.stderr(`Connect as ${wrong.expected}@${host} (not ${escapeForTerminal(wrong.used)}): ${start.sshHint} ${command.trim() ? 'COMMAND' : 'help'}\n`);
    start.access.command('wrong_user', EXIT.FAILED, 0, undefined);
    io.finish(EXIT.FAILED);
    return true;
  };
}
