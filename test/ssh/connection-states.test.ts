import { EventEmitter } from 'node:events';
import type { Connection } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig, type SshLimits } from '../../src/config/config.js';
import { resolveSshIdentity, type PublicKey } from '../../src/core/index.js';
import { TokenBuckets } from '../../src/limits/token-buckets.js';
import type { ConnectionRecord } from '../../src/ssh/access-log.js';
import { sessionSlots, type SessionSlots } from '../../src/ssh/admission.js';
import { SshConnection } from '../../src/ssh/connection.js';
import { publicKeyOf, startTestCore, type TestCore } from '../support/core.js';
import { makeKey } from '../support/keys.js';

// An SSH connection's states, driven by a fake ssh2 connection: no socket, no signature (the
// policy's verify says yes), the real core on the test database.

let core: TestCore;
let unlinkedKey: PublicKey;
let linkedKey: PublicKey;
beforeAll(async () => {
  core = await startTestCore();
  unlinkedKey = publicKeyOf(makeKey().publicKey);
  linkedKey = (await core.verifiedUser()).publicKey;
});
afterAll(() => core?.close());

/** ssh2's Connection as the connection uses it: events in, `end()` out. */
class FakeClient extends EventEmitter {
  ended = false;
  end() {
    this.ended = true;
    return this;
  }
  /** The socket goes, as when ssh2 sees it close. */
  hangUp() {
    this.emit('end');
    this.emit('close');
  }
}

/** A channel that takes output at once and keeps it. */
class FakeChannel extends EventEmitter {
  writable = true;
  output = '';
  readonly stderr = { writable: true, write: (data: Buffer | string, done?: () => void) => this.write(data, done) };
  write(data: Buffer | string, done?: () => void) {
    this.output += data.toString();
    done?.();
    return true;
  }
  exit = vi.fn();
  end = vi.fn();
}

/** An ssh2 session; `exec` starts a program on a fresh channel. */
class FakeSession extends EventEmitter {
  readonly channel = new FakeChannel();
  exec(command: string) {
    this.emit('exec', () => this.channel, () => undefined, { command });
  }
}

type Started = {
  connection: SshConnection;
  client: FakeClient;
  access: { [K in 'ended' | 'failed' | 'authAttempt' | 'authenticated' | 'identity' | 'command']: ReturnType<typeof vi.fn> };
  admitted: ReturnType<typeof vi.fn>;
};

function connect(options: { limits?: Partial<SshLimits>; slots?: SessionSlots; shuttingDown?: AbortSignal; group?: string; clientSoftware?: string } = {}): Started {
  const client = new FakeClient();
  const access = { ended: vi.fn(), failed: vi.fn(), authAttempt: vi.fn(), authenticated: vi.fn(), identity: vi.fn(), command: vi.fn() };
  const admitted = vi.fn();
  const limits = { ...loadConfig({}).ssh, ...options.limits };
  const group = options.group ?? '192.0.2.1';
  const connection = new SshConnection(
    client as unknown as Connection,
    { ip: group, group, authenticated: admitted, access: access as unknown as ConnectionRecord },
    {
      deps: core.deps,
      log: core.deps.log,
      limits,
      auth: { verify: () => true, securityKeys: { requireUserVerification: false } },
      verifications: new TokenBuckets(1, 100),
      sessions: options.slots ?? sessionSlots(limits.maxSessions, limits.maxSessionsPerIp),
      sshHint: () => 'ssh keys@test',
      shuttingDown: options.shuttingDown ?? new AbortController().signal,
      sshUser: 'keys',
      clientSoftware: options.clientSoftware,
    },
  );
  return { connection, client, access, admitted };
}

/** A publickey request with a signature, as ssh2 hands it over. */
function signedRequest(key: PublicKey) {
  return {
    method: 'publickey',
    username: 'keys',
    key: { algo: key.type, data: Buffer.from(key.blob, 'base64') },
    signature: Buffer.from('signature'),
    blob: Buffer.from('signed data'),
    accept: vi.fn(),
    reject: vi.fn(),
  };
}

async function signIn(started: Started, key: PublicKey): Promise<void> {
  const request = signedRequest(key);
  started.client.emit('authentication', request);
  await vi.waitFor(() => expect(request.accept).toHaveBeenCalled());
  started.client.emit('ready');
}

/** Asks for a session; resolves with it once accepted, or null once refused. */
function askSession(client: FakeClient): Promise<FakeSession | null> {
  return new Promise((resolve) => {
    const session = new FakeSession();
    const accept = () => {
      resolve(session);
      return session;
    };
    client.emit('session', accept, () => resolve(null));
  });
}

async function openSessions(client: FakeClient, count: number): Promise<FakeSession[]> {
  const sessions: FakeSession[] = [];
  for (let i = 0; i < count; i++) {
    const session = await askSession(client);
    if (!session) throw new Error(`session ${i + 1} was refused`);
    sessions.push(session);
  }
  return sessions;
}

/** A program that ran: its channel got its exit status. */
async function runProgram(session: FakeSession): Promise<void> {
  session.exec('help');
  await vi.waitFor(() => expect(session.channel.exit).toHaveBeenCalled());
}

describe('authenticating → ready', () => {
  it('no session before authentication; a verified signature and ssh2\'s ready make it ready', async () => {
    const started = connect();
    expect(started.connection.state).toBe('authenticating');
    expect(await askSession(started.client)).toBeNull();
    await signIn(started, unlinkedKey);
    expect(started.connection.state).toBe('ready');
    expect(started.admitted).toHaveBeenCalledOnce();
    expect(started.access.authenticated).toHaveBeenCalledWith(unlinkedKey.fingerprint);
    expect(await askSession(started.client)).not.toBeNull();
    started.client.hangUp();
  });

  it('ready while the service shuts down: the connection ends instead', async () => {
    const shutdown = new AbortController();
    const started = connect({ shuttingDown: shutdown.signal });
    const request = signedRequest(unlinkedKey);
    started.client.emit('authentication', request);
    await vi.waitFor(() => expect(request.accept).toHaveBeenCalled());
    shutdown.abort();
    started.client.emit('ready');
    expect(started.connection.state).toBe('authenticating');
    expect(started.client.ended).toBe(true);
    expect(started.access.ended).toHaveBeenCalledWith('server_shutdown');
  });

  it('a client that hangs up while its key is looked up is not let in', async () => {
    // An OpenSSH client: its verified key is looked up to prefer a linked one.
    const started = connect({ clientSoftware: 'OpenSSH_9.2p1' });
    const request = signedRequest(linkedKey);
    started.client.emit('authentication', request);
    started.client.hangUp();
    expect(started.connection.state).toBe('closed');
    // Its lookup is answered by now.
    await resolveSshIdentity(core.deps, linkedKey);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(request.accept).not.toHaveBeenCalled();
    expect(request.reject).not.toHaveBeenCalled();
  });

  it("authentication's lookup of who the key is goes to the first program only", async () => {
    const started = connect({ clientSoftware: 'OpenSSH_9.2p1' });
    await signIn(started, linkedKey);
    const known = started.connection.takeKnownIdentity();
    expect((await known)?.kind).toBe('account');
    expect(started.connection.takeKnownIdentity()).toBeNull();
    started.client.hangUp();
  });
});

describe('sessions of a ready connection', () => {
  it('a key linked to no account gets SSH_MAX_SESSIONS_UNLINKED; its refused session gives its slot back', async () => {
    const slots = sessionSlots(10, 3);
    const started = connect({ slots, limits: { maxSessionsPerConnection: 5, maxSessionsUnlinked: 2 } });
    await signIn(started, unlinkedKey);
    await openSessions(started.client, 2);
    expect(await askSession(started.client)).toBeNull();
    // The address holds 2 of its 3 slots again: one more connection of it gets one, not two.
    const other = connect({ slots });
    await signIn(other, linkedKey);
    await openSessions(other.client, 1);
    expect(await askSession(other.client)).toBeNull();
    started.client.hangUp();
    other.client.hangUp();
  });

  it('a linked key gets up to SSH_MAX_SESSIONS_PER_CONNECTION', async () => {
    const started = connect({ limits: { maxSessionsPerConnection: 3, maxSessionsUnlinked: 1 } });
    await signIn(started, linkedKey);
    await openSessions(started.client, 3);
    expect(await askSession(started.client)).toBeNull();
    started.client.hangUp();
  });

  it('closed: every slot comes back, also of sessions that never started a program', async () => {
    const slots = sessionSlots(10, 2);
    const started = connect({ slots });
    await signIn(started, linkedKey);
    await openSessions(started.client, 2);
    const other = connect({ slots });
    await signIn(other, linkedKey);
    expect(await askSession(other.client)).toBeNull();
    started.client.hangUp();
    expect(started.connection.state).toBe('closed');
    await openSessions(other.client, 2);
    other.client.hangUp();
  });
});

describe('ready → draining', () => {
  it('idle timeout: each session is told why, no new session, the connection ends with its last session', async () => {
    const started = connect({ limits: { idleTimeoutMs: 1_000 } });
    await signIn(started, linkedKey);
    const [running, quiet] = await openSessions(started.client, 2);
    await runProgram(running!);
    await vi.waitFor(() => expect(started.connection.state).toBe('draining'), { timeout: 5_000 });
    expect(started.access.ended).toHaveBeenCalledWith('idle_timeout');
    expect(running!.channel.output).toContain('Connection closed: no activity for 1s.');
    expect(await askSession(started.client)).toBeNull();
    running!.channel.emit('close');
    expect(started.client.ended).toBe(false);
    quiet!.emit('close');
    expect(started.client.ended).toBe(true);
  });

  it('idle timeout with no session: the connection ends at once', async () => {
    const started = connect({ limits: { idleTimeoutMs: 100 } });
    await signIn(started, linkedKey);
    await vi.waitFor(() => expect(started.client.ended).toBe(true));
    expect(started.connection.state).toBe('draining');
  });

  it('shutdown: a session whose program started holds the drain; one that never asked for a program does not', async () => {
    const shutdown = new AbortController();
    const started = connect({ shuttingDown: shutdown.signal });
    await signIn(started, linkedKey);
    const [running] = await openSessions(started.client, 2);
    await runProgram(running!);
    shutdown.abort();
    expect(started.connection.state).toBe('draining');
    expect(started.client.ended).toBe(false);
    expect(await askSession(started.client)).toBeNull();
    running!.channel.emit('close');
    expect(started.client.ended).toBe(true);
  });

  it('shutdown with nothing running: the connection ends now', async () => {
    const shutdown = new AbortController();
    const started = connect({ shuttingDown: shutdown.signal });
    await signIn(started, linkedKey);
    await openSessions(started.client, 1);
    shutdown.abort();
    expect(started.client.ended).toBe(true);
    expect(started.access.ended).toHaveBeenCalledWith('server_shutdown');
  });

  it('eviction at a full SSH_MAX_SESSIONS: its slots are free at once and it ends', async () => {
    const slots = sessionSlots(2, 2);
    const busy = connect({ slots, group: '192.0.2.1' });
    await signIn(busy, linkedKey);
    await openSessions(busy.client, 2);
    const newcomer = connect({ slots, group: '198.51.100.1' });
    await signIn(newcomer, linkedKey);
    await openSessions(newcomer.client, 1);
    expect(busy.connection.state).toBe('draining');
    expect(busy.client.ended).toBe(true);
    expect(busy.access.ended).toHaveBeenCalledWith('evicted');
    expect(await askSession(busy.client)).toBeNull();
    // Both of its slots came back: the newcomer takes the second without pushing anyone out.
    await openSessions(newcomer.client, 1);
    busy.client.hangUp();
    newcomer.client.hangUp();
  });
});
