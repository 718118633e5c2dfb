import net from 'node:net';
import type { Logger } from 'pino';
import ssh2, { type AuthContext, type Connection, type ParsedKey, type ServerChannel } from 'ssh2';
import { parsePublicKeyBlob, type CoreDeps, type PublicKey } from '../core/index.js';
import { errorFields } from '../log.js';
import type { Identity } from './command.js';
import { runExec } from './exec.js';
import type { HostKey } from './host-key.js';
import { withDecodedKeys } from './fast-keys.js';
import { runShell } from './shell.js';

export type SshServerOptions = {
  hostKey: HostKey;
  sshUser: string;
  sshHint: string;
  log: Logger;
  /** Unauthenticated connections are dropped after this long (OpenSSH LoginGraceTime). */
  loginGraceMs?: number;
  /** Authentication requests per connection before we hang up (OpenSSH MaxAuthTries). */
  maxAuthAttempts?: number;
  /** Sessions (exec/shell) per connection (GitLab Shell's limit). */
  maxSessionsPerConnection?: number;
  /** Unauthenticated connections at once from one address. */
  maxUnauthenticatedPerIp?: number;
  /** All connections at once from one address (unknown keys get in, so this caps them too). */
  maxConnectionsPerIp?: number;
  /** An authenticated connection with no open session is closed after this long. */
  idleTimeoutMs?: number;
};

export type SshServer = {
  listen(port: number, host: string): Promise<net.AddressInfo>;
  close(): Promise<void>;
};

/** Parsed client keys, so a key is decoded once rather than on every signature check. */
class KeyCache {
  private readonly keys = new Map<string, ParsedKey>();
  constructor(private readonly max = 2000) {}

  get(blob: Buffer): ParsedKey | null {
    const id = blob.toString('base64');
    let key = this.keys.get(id);
    if (key) {
      this.keys.delete(id);
    } else {
      const parsed = ssh2.utils.parseKey(blob);
      if (parsed instanceof Error || Array.isArray(parsed)) return null;
      key = withDecodedKeys(parsed);
      if (this.keys.size >= this.max) this.keys.delete(this.keys.keys().next().value!);
    }
    this.keys.set(id, key);
    return key;
  }
}

function hostKeyOf(pem: Buffer): ParsedKey {
  const parsed = ssh2.utils.parseKey(pem);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('host key is not a readable private key');
  return parsed;
}

/**
 * With Nagle off, each of ssh2's per-packet writes would be its own syscall and TCP segment.
 * Corking until the end of the tick sends the packets produced together in one writev, without
 * bringing back Nagle's wait for a delayed ACK.
 */
function coalesceWrites(socket: net.Socket): void {
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = ((...args: unknown[]) => {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return write(...args);
  }) as typeof socket.write;
}

/** The account behind a key, in one round trip; no account unless the binding is proven. */
export async function resolveIdentity(deps: CoreDeps, key: PublicKey): Promise<Identity> {
  const row = await deps.db
    .selectFrom('ssh_keys')
    .innerJoin('users', 'users.id', 'ssh_keys.user_id')
    .selectAll('ssh_keys')
    .select([
      'users.email as user_email',
      'users.base_user_id as user_base_user_id',
      'users.is_active as user_is_active',
      'users.verified_at as user_verified_at',
      'users.created_at as user_created_at',
    ])
    .where('ssh_keys.key_blob', '=', key.blob)
    .executeTakeFirst();
  // A binding made over HTTP never proved possession: anyone can submit anyone's public key
  // there. It becomes an SSH identity only after `login` (which proves it, or takes it over).
  if (!row || row.proven_at === null) return { key, user: null, sshKey: null };
  const { user_email, user_base_user_id, user_is_active, user_verified_at, user_created_at, ...sshKey } = row;
  const user = {
    id: sshKey.user_id,
    email: user_email,
    base_user_id: user_base_user_id,
    is_active: user_is_active,
    verified_at: user_verified_at,
    created_at: user_created_at,
  };
  return { key, user, sshKey };
}

export function createSshServer(deps: CoreDeps, options: SshServerOptions): SshServer {
  const { log, sshUser } = options;
  const loginGraceMs = options.loginGraceMs ?? 30_000;
  const maxAuthAttempts = options.maxAuthAttempts ?? 6;
  const maxSessions = options.maxSessionsPerConnection ?? 10;
  const maxUnauthPerIp = options.maxUnauthenticatedPerIp ?? 64;
  const keyCache = new KeyCache();
  const pending = new Map<string, { socket: net.Socket; timer: NodeJS.Timeout }>();
  const unauthByIp = new Map<string, number>();
  const connectionsByIp = new Map<string, number>();
  const maxConnectionsPerIp = options.maxConnectionsPerIp ?? 256;
  const idleMs = options.idleTimeoutMs ?? 5 * 60_000;
  const sockets = new Set<net.Socket>();

  const ssh = new ssh2.Server(
    {
      // {key: ParsedKey} is passed through as is by ssh2's parser.
      hostKeys: [{ key: withDecodedKeys(hostKeyOf(options.hostKey.privateKey)) as unknown as Buffer }],
      ident: 'shell-auth',
      keepaliveInterval: 15_000,
      keepaliveCountMax: 3,
    },
    (client, info) => handleClient(client, info.ip, `${info.ip}|${info.port}`),
  );
  ssh.on('error', (err: Error) => log.warn({ err: errorFields(err) }, 'ssh server error'));

  function markAuthenticated(connKey: string) {
    const entry = pending.get(connKey);
    if (!entry) return;
    clearTimeout(entry.timer);
    pending.delete(connKey);
    releaseUnauth(entry.socket.remoteAddress ?? '');
  }

  function releaseUnauth(ip: string) {
    const count = (unauthByIp.get(ip) ?? 1) - 1;
    if (count <= 0) unauthByIp.delete(ip);
    else unauthByIp.set(ip, count);
  }

  const tcp = net.createServer((socket) => {
    // ssh2 writes every packet separately; with Nagle on, each waits for a delayed ACK (~40 ms).
    socket.setNoDelay(true);
    coalesceWrites(socket);
    socket.on('error', () => undefined); // ECONNRESET before ssh2 takes over must not kill us
    const ip = socket.remoteAddress ?? '';
    const inFlight = unauthByIp.get(ip) ?? 0;
    const open = connectionsByIp.get(ip) ?? 0;
    if (inFlight >= maxUnauthPerIp || open >= maxConnectionsPerIp) {
      socket.destroy();
      return;
    }
    unauthByIp.set(ip, inFlight + 1);
    connectionsByIp.set(ip, open + 1);
    const connKey = `${ip}|${socket.remotePort}`;
    const timer = setTimeout(() => {
      log.info({ ip }, 'ssh: login grace time over, dropping connection');
      socket.destroy();
    }, loginGraceMs);
    pending.set(connKey, { socket, timer });
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      const left = (connectionsByIp.get(ip) ?? 1) - 1;
      if (left <= 0) connectionsByIp.delete(ip);
      else connectionsByIp.set(ip, left);
      if (pending.has(connKey)) {
        clearTimeout(timer);
        pending.delete(connKey);
        releaseUnauth(ip);
      }
    });
    ssh.injectSocket(socket);
  });
  tcp.on('error', (err) => log.error({ err: errorFields(err) }, 'ssh listener error'));

  function handleClient(client: Connection, ip: string, connKey: string) {
    client.on('error', (err) => log.debug({ err: err.message, ip }, 'ssh connection error'));
    let attempts = 0;
    let signedKey: PublicKey | null = null;

    client.on('authentication', (ctx: AuthContext) => {
      if (++attempts > maxAuthAttempts) {
        ctx.reject();
        client.end();
        return;
      }
      if (ctx.method !== 'publickey' || ctx.username !== sshUser) return ctx.reject(['publickey']);
      const parsed = parsePublicKeyBlob(ctx.key.data);
      if (!parsed.ok) return ctx.reject(['publickey']);
      // The signature-less query ("would you accept this key?") binds nothing: a client may offer
      // someone else's public key here and sign with its own next (GHSA-pchf-49fh-w34r).
      if (!ctx.signature || !ctx.blob) return ctx.accept();
      // Plain "ssh-rsa" signs with SHA-1; like OpenSSH >= 8.8 we take only rsa-sha2-256/512.
      if (parsed.key.type === 'ssh-rsa' && ctx.hashAlgo !== 'sha256' && ctx.hashAlgo !== 'sha512') return ctx.reject(['publickey']);
      const verifier = keyCache.get(ctx.key.data);
      if (!verifier || verifier.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) return ctx.reject(['publickey']);
      signedKey = parsed.key;
      ctx.accept();
    });

    client.on('ready', () => {
      markAuthenticated(connKey);
      const key = signedKey!;
      const origin = { channel: 'ssh' as const, ip };
      const connection = new AbortController();
      client.once('close', () => connection.abort());
      client.once('end', () => connection.abort());
      void recordLastSeen(key);

      let openSessions = 0;
      let idleTimer: NodeJS.Timeout | undefined;
      const armIdle = () => {
        clearTimeout(idleTimer);
        if (openSessions === 0) idleTimer = setTimeout(() => client.end(), idleMs);
      };
      client.once('close', () => clearTimeout(idleTimer));
      armIdle();

      client.on('session', (accept, reject) => {
        if (openSessions >= maxSessions) return reject();
        const session = accept();
        openSessions++;
        clearTimeout(idleTimer);
        let ended = false;
        const sessionEnded = () => {
          if (ended) return;
          ended = true;
          openSessions--;
          armIdle();
        };
        session.once('close', sessionEnded);
        let pty: { cols: number; rows: number } | null = null;
        let started = false;
        session.on('pty', (acceptPty, _reject, info) => {
          pty = { cols: info.cols, rows: info.rows };
          acceptPty?.();
        });
        session.on('window-change', (acceptChange) => acceptChange?.());
        session.on('env', (_accept, rejectEnv) => rejectEnv?.());
        /** One program per session; resolves the identity now, so a login on another session counts. */
        const begin = (channel: ServerChannel | undefined) => {
          if (!channel || started) return null;
          started = true;
          channel.on('error', (err: Error) => log.debug({ err: err.message }, 'ssh channel error'));
          channel.once('close', sessionEnded);
          const identity = resolveIdentity(deps, key);
          identity.catch((err) => log.warn({ err: errorFields(err) }, 'ssh: could not load identity'));
          return { channel, identity, deps, origin, sshHint: options.sshHint, connectionGone: connection.signal };
        };
        session.on('exec', (acceptExec, _reject, info) => {
          const start = begin(acceptExec());
          if (start) void runExec({ ...start, command: info.command, pty: pty !== null });
        });
        session.on('shell', (acceptShell) => {
          const start = begin(acceptShell());
          if (start) void runShell({ ...start, pty: pty !== null });
        });
      });
    });
  }

  /** Best effort: a failed update must not cost the user their session. */
  async function recordLastSeen(key: PublicKey): Promise<void> {
    try {
      await deps.db.updateTable('ssh_keys').set({ last_seen_at: new Date() }).where('key_blob', '=', key.blob).execute();
    } catch (err) {
      log.warn({ err: errorFields(err) }, 'ssh: could not record last_seen_at');
    }
  }

  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, host, () => {
          tcp.off('error', reject);
          resolve(tcp.address() as net.AddressInfo);
        });
      });
    },
    close() {
      for (const { timer } of pending.values()) clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => tcp.close(() => resolve()));
    },
  };
}
