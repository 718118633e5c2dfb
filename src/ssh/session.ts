import type { Logger } from 'pino';
import type { ServerChannel, Session } from 'ssh2';
import { resolveSshIdentity, type CoreDeps, type Identity, type PublicKey } from '../core/index.js';
import { errorFields } from '../observability/log.js';
import type { ConnectionRecord } from './access-log.js';
import { runExec } from './exec.js';
import { channelWriters, type ChannelStart } from './session-io.js';
import { EXIT } from '../command/framework.js';
import { escapeForTerminal } from '../text/table.js';
import { runShell } from './shell.js';

export type SessionSetting = {
  deps: CoreDeps;
  log: Logger;
  key: PublicKey;
  access: ConnectionRecord;
  origin: ChannelStart['origin'];
  sshHint: string;
  connectionGone: AbortSignal;
  shuttingDown: AbortSignal;
  /** Connected as another user than the door's (`ssh root@host`): every program says how to connect. */
  wrongUser: { used: string; expected: string } | null;
  activity(): void;
  outputHighWaterBytes: number;
  maxQueuedLines: number;
  /** Registers a way to tell this session's client why the connection is closing. */
  onIdleClose(notify: (message: string) => void): void;
  /** The session has asked for its program (exec or shell): a drain waits for it. */
  programStarted(): void;
  /** Who the key is as authentication just found it, for the connection's first program only (later ones ask afresh). */
  knownIdentity(): Promise<Identity> | null;
};

/**
 * One SSH session channel: accepts a pty and its resizes, refuses environment variables, and
 * runs one program, exec or shell. `onClose` is called once when the session ends.
 */
export function handleSession(session: Session, setting: SessionSetting, onClose: () => void): void {
  let closed = false;
  const sessionEnded = () => {
    if (closed) return;
    closed = true;
    onClose();
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
    setting.programStarted();
    channel.on('error', (err: Error) => setting.log.debug({ err: err.message }, 'ssh channel error'));
    channel.once('close', sessionEnded);
    // Said on the channel, which is then closed: a client drops data that arrives after a disconnect.
    setting.onIdleClose((message) => {
      if (channel.stderr.writable) channel.stderr.write(pty ? message.replace(/\n/g, '\r\n') : message);
      channel.end();
    });
    const identity = setting.knownIdentity() ?? resolveSshIdentity(setting.deps, setting.key);
    identity.then(
      (found) => setting.access.identity(found),
      (err) => setting.log.warn({ err: errorFields(err) }, 'ssh: could not load identity'),
    );
    return { ...setting, channel, pty, identity };
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
    const wrong = setting.wrongUser;
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
