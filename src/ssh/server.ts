import { setMaxListeners } from 'node:events';
import net from 'node:net';
import type { Logger } from 'pino';
import ssh2, { type ParsedKey } from 'ssh2';
import type { CoreDeps } from '../core/index.js';
import type { SshLimits } from '../config/config.js';
import type { DoorMetrics } from '../observability/door-metrics.js';
import { errorFields } from '../observability/log.js';
import { createAdmission, refuseConnection, sessionSlots, type Admitted } from './admission.js';
import { NO_METRICS } from '../observability/door-metrics.js';
import { SshConnection } from './connection.js';
import type { HostKey } from './host-key.js';
import { addressMatcher, adoptProxySource, readProxyHeader } from './proxy-protocol.js';
import { TokenBuckets } from '../limits/token-buckets.js';
import { coalesceWrites, decodedKeysApplied, DecodedKeyCache, socketOf, withDecodedKeys } from './ssh2-tuning.js';
import { RepeatedLines } from '../observability/repeated-lines.js';

export type SshServerOptions = {
  hostKey: HostKey;
  sshUser: string;
  /** How users reach this door, for messages; known only once the listener has its port. */
  sshHint: () => string;
  limits: SshLimits;
  log: Logger;
  /** Connection, authentication and command metrics; none when absent. */
  metrics?: DoorMetrics;
};

export type SshServer = {
  listen(port: number, host: string): Promise<net.AddressInfo>;
  /** True from a successful listen until drain or close. */
  listening(): boolean;
  /**
   * Stops accepting; drops connections that have not authenticated; lets running commands finish
   * (shells are told and close at their prompt) for up to `graceMs`, then cuts what is left.
   */
  drain(graceMs: number): Promise<void>;
  close(): Promise<void>;
};

function hostKeyOf(pem: Buffer): ParsedKey {
  const parsed = ssh2.utils.parseKey(pem);
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('host key is not a readable private key');
  return parsed;
}

/**
 * The SSH door: our own TCP listener admits sockets (per-address caps, login grace) and hands
 * them to ssh2; each connection authenticates and runs its sessions (`connection.ts`).
 */
export function createSshServer(deps: CoreDeps, options: SshServerOptions): SshServer {
  const { log, limits } = options;
  const hostKey = withDecodedKeys(hostKeyOf(options.hostKey.privateKey));
  if (!decodedKeysApplied(hostKey)) {
    log.warn('ssh2 internals changed: keys are not pre-decoded, so every signature re-reads a PEM (slower, still correct)');
  }
  const keyCache = new DecodedKeyCache();
  const verifications = new TokenBuckets(limits.authPerMinute / 60, limits.authBurst);
  const metrics = options.metrics ?? NO_METRICS;
  const repeated = new RepeatedLines(log);
  const admission = createAdmission(limits, log, repeated, options.metrics);
  const admitted = new WeakMap<net.Socket, Admitted>();
  const sessions = sessionSlots(limits.maxSessions, limits.maxSessionsPerIp, options.metrics);
  const shutdown = new AbortController();
  // Every live connection, shell and waiting login listens for it: no listener count is a leak.
  setMaxListeners(0, shutdown.signal);
  let coalescingChecked = false;

  const ssh = new ssh2.Server(
    {
      // {key: ParsedKey} is passed through as is by ssh2's parser.
      hostKeys: [{ key: hostKey as unknown as Buffer }],
      ident: 'shell-auth',
      keepaliveInterval: 15_000,
      keepaliveCountMax: 3,
    },
    (client, info) => {
      const socket = socketOf(client);
      const ticket = socket ? admitted.get(socket) : undefined;
      if (!socket || !ticket) {
        if (!socket) log.error('ssh2 internals changed: a connection\'s socket cannot be found, so it is refused');
        client.end();
        return;
      }
      admitted.delete(socket);
      // Lives on in the client's event handlers.
      new SshConnection(client, ticket, {
        deps,
        log,
        limits,
        sshHint: options.sshHint,
        shuttingDown: shutdown.signal,
        sshUser: options.sshUser,
        verifications,
        sessions,
        clientSoftware: info.header.versions.software,
        auth: {
          verify(keyBlob, data, signature, hashAlgo) {
            const verifier = keyCache.get(keyBlob);
            return verifier !== null && verifier.verify(data, signature, hashAlgo) === true;
          },
          securityKeys: { requireUserVerification: deps.settings.securityKeys?.requireUserVerification ?? false },
        },
      });
    },
  );
  ssh.on('error', (err: Error) => log.warn({ err: errorFields(err) }, 'ssh server error'));

  // PROXY protocol: the balancer's header is read first, and its client address becomes the
  // socket's, so admission, ssh2's info.ip, logs and audit rows all see the client.
  const proxy = limits.proxyProtocol;
  const fromBalancer = proxy ? addressMatcher(proxy.from) : null;
  const awaitingHeader = new Set<net.Socket>();
  if (proxy) log.info({ from: proxy.from }, 'ssh: PROXY protocol required on the SSH port');

  const tcp = net.createServer((socket) => {
    socket.on('error', () => undefined); // ECONNRESET before ssh2 takes over must not kill us
    if (!proxy || !fromBalancer) return admit(socket);
    const peer = socket.remoteAddress;
    if (!fromBalancer(peer)) {
      // Anyone can reach the port: logged once a minute per address, then with a count.
      repeated.warn(peer ?? '', { peer }, 'ssh: connection from outside SSH_PROXY_FROM closed');
      socket.destroy();
      return;
    }
    // Balancer connections still owe their header: bounded like unauthenticated ones.
    if (awaitingHeader.size >= limits.maxUnauthenticated) return void refuseConnection(socket, 'ssh_unauthenticated_total', metrics);
    awaitingHeader.add(socket);
    void readProxyHeader(socket, proxy.headerTimeoutMs).then((outcome) => {
      awaitingHeader.delete(socket);
      if (socket.destroyed) return;
      if (!outcome.ok) {
        log.info({ peer, reason: outcome.reason }, 'ssh: no valid PROXY protocol header, connection closed');
        socket.destroy();
        return;
      }
      // LOCAL / UNKNOWN: the balancer speaks for itself (a health check); keep the socket's peer.
      if (outcome.header.source) adoptProxySource(socket, outcome.header.source);
      admit(socket);
    });
  });
  // Not before listening succeeds: listen()'s own failure (a port in use) is reported by the caller, in one line.
  tcp.on('error', (err) => tcp.listening && log.error({ err: errorFields(err) }, 'ssh listener error'));

  function admit(socket: net.Socket): void {
    const ticket = admission.admit(socket);
    if (!ticket) return;
    // ssh2 writes every packet separately; with Nagle on, each waits for a delayed ACK (~40 ms).
    socket.setNoDelay(true);
    const writes = coalesceWrites(socket);
    admitted.set(socket, ticket);
    if (!coalescingChecked) {
      // ssh2 sends its banner at once: if our write wrapper did not see it, coalescing is off.
      socket.once('data', () => {
        if (coalescingChecked) return;
        coalescingChecked = true;
        if (writes.writes === 0) log.warn('ssh2 internals changed: packet writes are not coalesced (more syscalls per connection)');
      });
    }
    ssh.injectSocket(socket);
  }

  // Resolves once the listener is closed and every socket it accepted has closed too.
  let stopped: Promise<void> | null = null;
  const stopListening = () => (stopped ??= new Promise((resolve) => tcp.close(() => resolve())));

  return {
    listening: () => tcp.listening,
    async drain(graceMs) {
      shutdown.abort();
      const allClosed = stopListening().finally(() => repeated.close());
      for (const socket of awaitingHeader) socket.destroy();
      admission.closeUnauthenticated();
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<'grace-over'>((resolve) => (timer = setTimeout(() => resolve('grace-over'), graceMs)));
      const outcome = await Promise.race([allClosed.then(() => 'closed' as const), graceOver]);
      clearTimeout(timer);
      if (outcome === 'grace-over') {
        log.warn({ connections: admission.size, graceMs }, 'ssh: shutdown grace over, closing the connections still open');
        admission.closeAll();
      }
      await allClosed;
    },
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
      shutdown.abort();
      admission.closeAll();
      for (const socket of awaitingHeader) socket.destroy();
      return stopListening().finally(() => repeated.close());
    },
  };
}
