import type net from 'node:net';
import type { Logger } from 'pino';
import type { SshLimits } from '../config.js';
import type { RateLimitName } from '../core/index.js';
import { NO_METRICS, type DoorMetrics } from '../door-metrics.js';
import { ConnectionRecord } from './access-log.js';
import { TokenBuckets } from './token-bucket.js';

/**
 * A connection let in: report when it authenticates; closing the socket releases it. `access`
 * is its record for the access log and the metrics.
 */
export type Admitted = { ip: string; authenticated(): void; access: ConnectionRecord };

/**
 * The listener's gate, before any SSH byte is read: per-address caps on unauthenticated and on
 * all connections, a per-address rate of new connections, and the login grace time (OpenSSH
 * LoginGraceTime) after which a connection that has not authenticated is dropped.
 */
export function createAdmission(limits: SshLimits, log: Logger, metrics: DoorMetrics = NO_METRICS) {
  const newConnections = new TokenBuckets(limits.connectionsPerSecond, limits.connectionBurst);
  const unauthenticated = new Map<string, number>();
  const open = new Map<string, number>();
  const sockets = new Map<net.Socket, ConnectionRecord>();
  const notAuthenticated = new Set<net.Socket>();
  const graceTimers = new Set<NodeJS.Timeout>();

  const bump = (counts: Map<string, number>, ip: string, by: number) => {
    const next = (counts.get(ip) ?? 0) + by;
    if (next <= 0) counts.delete(ip);
    else counts.set(ip, next);
  };

  return {
    /** Counts the socket in, or destroys it and returns null when its address is over a cap. */
    admit(socket: net.Socket): Admitted | null {
      const ip = socket.remoteAddress ?? '';
      const refusedBy: RateLimitName | null =
        (unauthenticated.get(ip) ?? 0) >= limits.maxUnauthenticatedPerIp
          ? 'ssh_unauthenticated_per_ip'
          : (open.get(ip) ?? 0) >= limits.maxConnectionsPerIp
            ? 'ssh_connections_per_ip'
            : !newConnections.take(ip)
              ? 'ssh_connections'
              : null;
      if (refusedBy) {
        // Counted, not logged one by one: a flood must not become a flood of log lines.
        metrics.sshConnectionRefused();
        metrics.events.rateLimited(refusedBy);
        socket.destroy();
        return null;
      }
      const access = new ConnectionRecord(socket, ip, log, metrics);
      bump(unauthenticated, ip, 1);
      bump(open, ip, 1);
      sockets.set(socket, access);
      notAuthenticated.add(socket);
      let pending = true;
      const grace = setTimeout(() => {
        log.info({ ip }, 'ssh: login grace time over, dropping connection');
        access.ended('login_timeout');
        socket.destroy();
      }, limits.loginGraceMs);
      graceTimers.add(grace);
      const authenticated = () => {
        if (!pending) return;
        pending = false;
        notAuthenticated.delete(socket);
        clearTimeout(grace);
        graceTimers.delete(grace);
        bump(unauthenticated, ip, -1);
      };
      socket.once('close', () => {
        sockets.delete(socket);
        bump(open, ip, -1);
        authenticated();
      });
      return { ip, authenticated, access };
    },
    /** Drops the connections that have not authenticated (drain: they have nothing to finish). */
    closeUnauthenticated(): void {
      for (const socket of notAuthenticated) {
        sockets.get(socket)?.ended('server_shutdown');
        socket.destroy();
      }
    },
    /** Connections still open. */
    get size(): number {
      return sockets.size;
    },
    /** Drops every connection (shutdown). */
    closeAll(): void {
      for (const timer of graceTimers) clearTimeout(timer);
      graceTimers.clear();
      for (const [socket, access] of sockets) {
        access.ended('server_shutdown');
        socket.destroy();
      }
    },
  };
}

export type Admission = ReturnType<typeof createAdmission>;
